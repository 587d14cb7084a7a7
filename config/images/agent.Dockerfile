# The agent's image for a Docker or BuildKit daemon (from the checkout's top
# level: docker build -f config/images/agent.Dockerfile .). Holds what
# `make images` puts in it (config/images/build.sh): the binary, the
# userland tools it execs with their shared libraries, the alternatives
# links and iptables' extension modules; a unit test keeps the two in step.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang llvm libbpf-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard-agent --bin switchyard-agent \
 && objcopy --strip-debug target/release/switchyard-agent /switchyard-agent

FROM docker.io/library/debian:bookworm-slim AS collect
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables ipset iproute2 ipvsadm
COPY config/images/collect.sh /collect.sh
COPY --from=build /switchyard-agent /switchyard-agent
# TOOLS: the same list as AGENT_TOOLS in build.sh.
RUN /collect.sh /rootfs /switchyard-agent=/usr/local/bin/switchyard-agent \
  iptables iptables-save iptables-restore \
  ip6tables ip6tables-save ip6tables-restore \
  iptables-nft iptables-nft-save iptables-nft-restore \
  ip6tables-nft ip6tables-nft-save ip6tables-nft-restore \
  iptables-legacy iptables-legacy-save iptables-legacy-restore \
  ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore \
  nft ipset ip 'ipvsadm?' \
  /usr/lib/x86_64-linux-gnu/xtables

FROM scratch
COPY --from=collect /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 0:0
WORKDIR /
ENTRYPOINT ["/usr/local/bin/switchyard-agent"]

# The operator's image for a Docker or BuildKit daemon (from the checkout's
# top level: docker build -f config/images/operator.Dockerfile .). Holds what
# `make images` puts in it (config/images/build.sh): the binary, its shared
# libraries and loader, nothing else; a unit test keeps the two in step.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang llvm libbpf-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard-operator --bin switchyard-operator \
 && objcopy --strip-debug target/release/switchyard-operator /switchyard-operator

FROM docker.io/library/debian:bookworm-slim AS collect
COPY config/images/collect.sh /collect.sh
COPY --from=build /switchyard-operator /switchyard-operator
RUN /collect.sh /rootfs /switchyard-operator=/usr/local/bin/switchyard-operator

FROM scratch
COPY --from=collect /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/switchyard-operator"]

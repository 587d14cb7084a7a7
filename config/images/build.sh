#!/usr/bin/env bash
# build.sh [--profile release|debug] [operator] [agent]: builds switchyard's
# container images from this machine's cargo build and Debian userland, as
# an OCI image layout and a `docker load`-able tarball each, and prints one
# line per image: NAME<TAB>DIRECTORY (stdout only; progress goes to stderr).
#
# DIRECTORY is ~/.cache/switchyard/images/NAME/KEY, KEY a hash of the layer
# and the image config: the same binary and tools give the same directory
# and the same image digest, and an unchanged image is not built again.
# It holds oci/ (the layout), image.tar, digest and files.txt. The newest
# is also linked from $CARGO_TARGET_DIR/PROFILE/images/NAME.
#
# The images are built with crane (go-containerregistry): one layer, a tar
# with sorted entries, mtime 0 and owner 0:0, on an empty OCI base, then the
# config (entrypoint, user, env, workdir, platform) set by `crane mutate`
# through a registry served on the loopback for the length of the build.
# The Dockerfiles next to this script build the same images with a daemon.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/hack/lib.sh
source "$here/../../e2e/hack/lib.sh"

# What each image holds and how it runs; the Dockerfiles say the same
# (a unit test compares them).
OPERATOR_ENTRYPOINT=/usr/local/bin/switchyard-operator
OPERATOR_USER=65532:65532
OPERATOR_TOOLS=()
AGENT_ENTRYPOINT=/usr/local/bin/switchyard-agent
AGENT_USER=0:0
# Every program the agent execs (node-datapath: the kube-proxy evidence and
# cleanup, the conntrack keepalive table, the capability probe), the
# alternatives links, and iptables' extension modules. ipvsadm where the
# build host has it.
AGENT_TOOLS=(
  iptables iptables-save iptables-restore
  ip6tables ip6tables-save ip6tables-restore
  iptables-nft iptables-nft-save iptables-nft-restore
  ip6tables-nft ip6tables-nft-save ip6tables-nft-restore
  iptables-legacy iptables-legacy-save iptables-legacy-restore
  ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore
  nft ipset ip 'ipvsadm?'
  /usr/lib/x86_64-linux-gnu/xtables
)
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CRANE_VERSION=${CRANE_VERSION:-v0.22.1}

profile=release
names=()
while (($#)); do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    operator|agent) names+=("$1"); shift ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
((${#names[@]})) || names=(operator agent)

target=${CARGO_TARGET_DIR:?CARGO_TARGET_DIR must name the cargo target directory}
out_root="$SWITCHYARD_CACHE/images"

crane=$(go_install_cached crane "$SWITCHYARD_CACHE/crane/$CRANE_VERSION" \
  "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION" "-s -w")

work=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-images.XXXXXX")
registry_pid=
# The cache directory being built, removed if the build fails.
building=
cleanup() {
  [[ -n "$registry_pid" ]] && kill "$registry_pid" 2>/dev/null || true
  [[ -n "$building" ]] && rm -rf "$building"
  rm -rf "$work"
}
trap cleanup EXIT

# stage NAME ROOT: the image's files under ROOT.
stage() {
  local name=$1 root=$2 bin="$target/$profile/switchyard-$1"
  [[ -x "$bin" ]] || { echo "build.sh: $bin missing (cargo build --$profile)" >&2; return 1; }
  # Debug information is for the build host; the image needs the code.
  objcopy --strip-debug "$bin" "$work/switchyard-$name"
  local tools=()
  if [[ $name == agent ]]; then tools=("${AGENT_TOOLS[@]}"); fi
  "$here/collect.sh" "$root" "$work/switchyard-$name=/usr/local/bin/switchyard-$name" "${tools[@]}"
}

# layer ROOT OUT: a reproducible tar of ROOT.
layer() {
  (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/list"
  tar --create --file "$2" --directory "$1" --no-recursion --verbatim-files-from \
    --files-from "$work/list" --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime=@0 --owner=0 --group=0 --numeric-owner
}

start_registry() {
  [[ -n "$registry_pid" ]] && return 0
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/registry"
  "$crane" registry serve --address "127.0.0.1:$port" --disk "$work/registry" 2>"$work/registry.log" &
  registry_pid=$!
  registry="127.0.0.1:$port"
  for _ in $(seq 50); do
    "$crane" catalog --insecure "$registry" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "build.sh: the loopback registry did not start" >&2
  cat "$work/registry.log" >&2
  return 1
}

# build NAME: prints NAME<TAB>DIR.
build() {
  local name=$1 entrypoint user
  if [[ $name == agent ]]; then
    entrypoint=$AGENT_ENTRYPOINT; user=$AGENT_USER
  else
    entrypoint=$OPERATOR_ENTRYPOINT; user=$OPERATOR_USER
  fi
  local root="$work/$name-root"
  stage "$name" "$root"
  layer "$root" "$work/$name.tar"
  local config="entrypoint=$entrypoint user=$user PATH=$IMAGE_PATH workdir=/ crane=$CRANE_VERSION"
  local key
  key=$({ sha256sum <"$work/$name.tar"; echo "$config"; } | sha256sum | cut -c1-16)
  local dir="$out_root/$name/$key"
  if [[ ! -f "$dir/complete" ]]; then
    start_registry
    local tmp="$dir.tmp.$$"
    building=$tmp
    rm -rf "$tmp" && mkdir -p "$tmp"
    local mutate=(--entrypoint "$entrypoint" --user "$user" --env "PATH=$IMAGE_PATH"
      --workdir / --set-platform linux/amd64)
    # -v-free crane still logs each blob on stderr; keep it for a failure.
    "$crane" append --insecure --oci-empty-base -f "$work/$name.tar" -t "$registry/$name:base" >/dev/null
    "$crane" mutate --insecure "$registry/$name:base" "${mutate[@]}" -t "$registry/$name:image" >/dev/null
    "$crane" mutate --insecure "$registry/$name:base" "${mutate[@]}" \
      -t "switchyard/$name:dev" -o "$tmp/image.tar" >/dev/null
    "$crane" pull --insecure --format=oci "$registry/$name:image" "$tmp/oci"
    "$crane" digest --insecure "$registry/$name:image" >"$tmp/digest"
    tar --list --verbose --file "$work/$name.tar" >"$tmp/files.txt"
    touch "$tmp/complete"
    rm -rf "$dir" && mv "$tmp" "$dir"
    building=
    echo "build.sh: $name $(cat "$dir/digest") built in $dir" >&2
  fi
  mkdir -p "$target/$profile/images"
  ln -sfn "$dir" "$target/$profile/images/$name"
  prune "$out_root/$name"
  printf '%s\t%s\n' "$name" "$dir"
}

# Keeps the newest four builds of an image.
prune() {
  local old
  # shellcheck disable=SC2012 # names are hex keys
  for old in $(ls -1t "$1" | tail -n +5); do rm -rf "${1:?}/$old"; done
}

for name in "${names[@]}"; do build "$name"; done

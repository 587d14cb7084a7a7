# Shared settings for the e2e build scripts (sourced, not run).
# Every Go cache lives under ~/.cache/switchyard, keyed by version.

K8S_VERSION=${K8S_VERSION:-v1.34.4}
SWITCHYARD_CACHE=${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}
export GOMODCACHE=${SWITCHYARD_GOMODCACHE:-$SWITCHYARD_CACHE/go/mod}
export GOCACHE=${SWITCHYARD_GOCACHE:-$SWITCHYARD_CACHE/go/build}
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false

# go_install_cached NAME OUT PACKAGE@VERSION LDFLAGS: builds one program with
# `go install` into OUT/bin and prints the binary's path (stdout only; progress
# goes to stderr). Only the first run on a machine pays: a complete marker
# makes later runs print the path at once, and a lock makes concurrent runs
# wait instead of building twice. NAME is the binary's name (the last element
# of PACKAGE) and the prefix of the messages.
go_install_cached() {
  local name=$1 out=$2 pkg=$3 ldflags=$4
  local bin="$out/bin/$name"
  if [[ -f "$out/complete" && -x "$bin" ]]; then echo "$bin"; return 0; fi

  mkdir -p "$out"
  exec 9>"$out/lock"
  echo "build-$name: waiting for the build lock $out/lock" >&2
  flock 9
  if [[ -f "$out/complete" && -x "$bin" ]]; then echo "$bin"; return 0; fi

  command -v go >/dev/null || { echo "build-$name: Go is not installed" >&2; return 1; }
  local start
  start=$(date +%s)
  echo "build-$name: building $pkg" >&2
  rm -rf "$out/tmp" && mkdir -p "$out/tmp"
  # `go install module@version` builds with the module's own go.mod and
  # go.sum (checked against the checksum database), outside any module of
  # ours, so nothing here pins or rewrites a go.mod.
  GOBIN="$out/tmp" GOFLAGS="$GOFLAGS -mod=mod" go install -trimpath -ldflags "$ldflags" "$pkg" >&2
  [[ -x "$out/tmp/$name" ]] || { echo "build-$name: $name missing after build" >&2; return 1; }
  rm -rf "$out/bin" && mv "$out/tmp" "$out/bin"
  echo "$(($(date +%s) - start))" >"$out/build-seconds"
  touch "$out/complete"
  echo "build-$name: built in $(($(date +%s) - start)) s" >&2
  echo "$bin"
}

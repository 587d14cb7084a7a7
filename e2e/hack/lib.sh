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
  cached_build_begin "$name" "$out" || { echo "$out/bin/$name"; return 0; }
  # `go install module@version` builds with the module's own go.mod and
  # go.sum (checked against the checksum database), outside any module of
  # ours, so nothing here pins or rewrites a go.mod.
  GOBIN="$out/tmp" GOFLAGS="$GOFLAGS -mod=mod" go install -trimpath -ldflags "$ldflags" "$pkg" >&2
  cached_build_end "$name" "$out"
}

# go_build_cached OUT MODULE@VERSION LDFLAGS REPLACES NAME=PACKAGE...: as
# go_install_cached, for a module whose go.mod has replace directives (which
# `go install` refuses): builds each PACKAGE as OUT/bin/NAME inside a module
# generated under OUT that requires MODULE@VERSION and repeats its replaces
# (REPLACES: `old => new version` lines), so the build list is the module's
# own; go.sum is filled from the checksum database. Prints the bin dir.
go_build_cached() {
  local out=$1 module=$2 ldflags=$3 replaces=$4
  shift 4
  local first=${1%%=*}
  cached_build_begin "$first" "$out" || { echo "$out/bin"; return 0; }
  local src="$out/module"
  rm -rf "$src" && mkdir -p "$src"
  {
    echo "module switchyard.dev/build/$first"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/')"
    echo
    echo "require ${module%@*} ${module#*@}"
    [[ -z "$replaces" ]] || printf 'replace %s\n' "$replaces"
  } >"$src/go.mod"
  local pair
  for pair in "$@"; do
    (cd "$src" && GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "$ldflags" \
      -o "$out/tmp/${pair%%=*}" "${pair#*=}") >&2
  done
  cached_build_end "$first" "$out" >/dev/null
  echo "$out/bin"
}

# cached_build_begin NAME OUT: fails (nothing to build) when OUT holds a
# complete build of NAME; else waits for OUT's build lock, checks again, and
# prepares OUT/tmp. The lock stays held (fd 9) until the process ends.
cached_build_begin() {
  local name=$1 out=$2
  if [[ -f "$out/complete" && -x "$out/bin/$name" ]]; then return 1; fi
  mkdir -p "$out"
  exec 9>"$out/lock"
  echo "build-$name: waiting for the build lock $out/lock" >&2
  flock 9
  if [[ -f "$out/complete" && -x "$out/bin/$name" ]]; then return 1; fi
  command -v go >/dev/null || { echo "build-$name: Go is not installed" >&2; exit 1; }
  BUILD_STARTED=$(date +%s)
  echo "build-$name: building in $out" >&2
  rm -rf "$out/tmp" && mkdir -p "$out/tmp"
}

# cached_build_end NAME OUT: moves OUT/tmp to OUT/bin, marks OUT complete and
# prints the path of NAME.
cached_build_end() {
  local name=$1 out=$2
  [[ -x "$out/tmp/$name" ]] || { echo "build-$name: $name missing after build" >&2; return 1; }
  rm -rf "$out/bin" && mv "$out/tmp" "$out/bin"
  echo "$(($(date +%s) - BUILD_STARTED))" >"$out/build-seconds"
  touch "$out/complete"
  echo "build-$name: built in $(($(date +%s) - BUILD_STARTED)) s" >&2
  echo "$out/bin/$name"
}

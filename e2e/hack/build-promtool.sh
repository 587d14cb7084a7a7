#!/usr/bin/env bash
# Builds Prometheus's promtool from its Go module and prints the path of the
# binary; the tests run `promtool check rules` and `promtool test rules` on
# config/monitoring/ with it.
#
# Cached in ~/.cache/switchyard/prometheus/<version>/bin/promtool: only the
# first run on a machine pays (a few minutes on 2 cores), later runs print
# the path at once. Concurrent runs wait on a lock instead of building
# twice. Progress goes to stderr; stdout is only the binary's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/hack/lib.sh
source "$here/lib.sh"

# The Go module of Prometheus 3.x is versioned v0.<major><minor>.<patch>:
# v0.316.0 is Prometheus 3.16.0.
version=${PROMTOOL_MODULE_VERSION:-v0.316.0}
out="$SWITCHYARD_CACHE/prometheus/$version"
bin="$out/bin/promtool"

complete() { [[ -f "$out/complete" && -x "$bin" ]]; }

if complete; then echo "$bin"; exit 0; fi

mkdir -p "$out"
exec 9>"$out/lock"
echo "build-promtool: waiting for the build lock $out/lock" >&2
flock 9
if complete; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build-promtool: Go is not installed" >&2; exit 1; }
minor=${version#v0.}; minor=${minor%%.*}
release="${minor:0:1}.$((10#${minor:1})).${version##*.}"
start=$(date +%s)
echo "build-promtool: building promtool $version (Prometheus $release)" >&2
rm -rf "$out/tmp" && mkdir -p "$out/tmp"
# `go install module@version` builds with the module's own go.mod and
# go.sum (checked against the checksum database), outside any module of
# ours, so nothing here pins or rewrites a go.mod.
GOBIN="$out/tmp" GOFLAGS="$GOFLAGS -mod=mod" go install -trimpath \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
[[ -x "$out/tmp/promtool" ]] || { echo "build-promtool: promtool missing after build" >&2; exit 1; }
rm -rf "$out/bin" && mv "$out/tmp" "$out/bin"
echo "$(($(date +%s) - start))" >"$out/build-seconds"
touch "$out/complete"
echo "build-promtool: built in $(($(date +%s) - start)) s" >&2
echo "$bin"

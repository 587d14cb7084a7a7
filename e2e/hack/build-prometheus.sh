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
minor=${version#v0.}; minor=${minor%%.*}
release="${minor:0:1}.$((10#${minor:1})).${version##*.}"

go_install_cached promtool "$SWITCHYARD_CACHE/prometheus/$version" \
  "github.com/prometheus/prometheus/cmd/promtool@$version" \
  "-s -w -X github.com/prometheus/common/version.Version=$release"

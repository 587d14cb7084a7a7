#!/usr/bin/env bash
# Builds one program of Prometheus from its Go module and prints its path:
# `promtool` (the tests run `promtool check rules` and `promtool test rules`
# on config/monitoring/ with it) or `prometheus` (the server the e2e runs in
# the lab, scraping the operator and the agents, evaluating the alerting
# rules and answering the dashboard's queries).
#
# usage: build-prometheus.sh promtool|prometheus
#
# Cached in ~/.cache/switchyard/prometheus/<version>/<program>/bin: only the
# first run on a machine pays (a few minutes on 2 cores; the second program
# reuses most of the first one's compiled packages), later runs print the
# path at once. Concurrent runs wait on a lock instead of building twice.
# Progress goes to stderr; stdout is only the binary's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/hack/lib.sh
source "$here/lib.sh"

program=${1:-}
case "$program" in
  promtool | prometheus) ;;
  *) echo "usage: $0 promtool|prometheus" >&2; exit 2 ;;
esac

# The Go module of Prometheus 3.x is versioned v0.<major><minor>.<patch>:
# v0.316.0 is Prometheus 3.16.0.
version=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
minor=${version#v0.}; minor=${minor%%.*}
release="${minor:0:1}.$((10#${minor:1})).${version##*.}"

# Without the `builtinassets` tag the server has no web UI (it would serve
# it from a source checkout); its HTTP API, all the lab needs, is complete.
go_install_cached "$program" "$SWITCHYARD_CACHE/prometheus/$version/$program" \
  "github.com/prometheus/prometheus/cmd/$program@$version" \
  "-s -w -X github.com/prometheus/common/version.Version=$release"

#!/usr/bin/env bash
# Builds the real Hubble CLI (`hubble`) and `hubble-relay` from Cilium's Go
# module and prints the directory holding both; the e2e points them at the
# agents' Observer API to prove it speaks Hubble's protocol to clients we did
# not write.
#
# Cached in ~/.cache/switchyard/hubble/<version>/bin: only the first run on a
# machine pays (about 8 minutes on 2 cores, most of it downloading and
# compiling Cilium's dependencies), later runs print the path at once.
# Concurrent runs wait on a lock instead of building twice. Progress goes to
# stderr; stdout is only the directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/hack/lib.sh
source "$here/lib.sh"

version=${HUBBLE_CILIUM_VERSION:-v1.20.2}
# Cilium's go.mod replaces controller-tools (used by its code generators, not
# by these programs); repeated so the build list is exactly Cilium's.
replaces='sigs.k8s.io/controller-tools => github.com/cilium/controller-tools v0.21.0-1'

go_build_cached "$SWITCHYARD_CACHE/hubble/$version" "github.com/cilium/cilium@$version" \
  "-s -w" "$replaces" \
  hubble=github.com/cilium/cilium/hubble \
  hubble-relay=github.com/cilium/cilium/hubble-relay

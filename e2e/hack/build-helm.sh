#!/usr/bin/env bash
# Builds Helm from its Go module and prints the path of the binary; the chart
# test runs `helm lint` and `helm template` on config/helm/switchyard with it,
# and the lab can install switchyard through `helm install`.
#
# Cached in ~/.cache/switchyard/helm/<version>/bin/helm: only the first run on
# a machine pays (a few minutes on 2 cores), later runs print the path at
# once. Concurrent runs wait on a lock instead of building twice. Progress
# goes to stderr; stdout is only the binary's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/hack/lib.sh
source "$here/lib.sh"

version=${HELM_VERSION:-v4.3.2}

# Without the -X, `helm version` reports the development default instead of
# the release built, and charts gating on .Capabilities.HelmVersion see it.
go_install_cached helm "$SWITCHYARD_CACHE/helm/$version" \
  "helm.sh/helm/v4/cmd/helm@$version" \
  "-s -w -X helm.sh/helm/v4/internal/version.version=$version"

# Shared settings for the e2e build scripts (sourced, not run).
# Every Go cache lives under ~/.cache/switchyard, keyed by version.

K8S_VERSION=${K8S_VERSION:-v1.34.4}
SWITCHYARD_CACHE=${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}
export GOMODCACHE=${SWITCHYARD_GOMODCACHE:-$SWITCHYARD_CACHE/go/mod}
export GOCACHE=${SWITCHYARD_GOCACHE:-$SWITCHYARD_CACHE/go/build}
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false

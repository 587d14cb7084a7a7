#!/usr/bin/env bash
# Builds the local cluster's upstream programs (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl) from the
# committed e2e/tools Go module and prints the directory holding them.
#
# Binaries are cached in ~/.cache/switchyard/k8s/<version>-<go.sum hash>/bin,
# so only the first run on a machine pays (10-25 min on 2 cores); later runs
# print the directory at once. Concurrent runs wait on a lock instead of
# building twice. Progress goes to stderr; stdout is only the bin dir.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/hack/lib.sh
source "$here/lib.sh"
tools=$(cd "$here/../tools" && pwd)

version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$tools/go.mod")
key="$version-$(sha256sum "$tools/go.sum" | cut -c1-12)"
out="$SWITCHYARD_CACHE/k8s/$key"
bin="$out/bin"
programs=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)

complete() { [[ -f "$out/complete" ]]; }

if complete; then echo "$bin"; exit 0; fi

mkdir -p "$out"
exec 9>"$out/lock"
echo "build-k8s: waiting for the build lock $out/lock" >&2
flock 9
if complete; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build-k8s: Go is not installed" >&2; exit 1; }
minor=${version#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for p in $pkg $cpkg; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
done

start=$(date +%s)
echo "build-k8s: building ${programs[*]} $version (cold build: 10-25 min on 2 cores)" >&2
rm -rf "$out/tmp" && mkdir -p "$out/tmp"
cd "$tools"
# -mod=readonly: go.mod/go.sum are committed; never rewrite them here.
go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out/tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl >&2
go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/tmp/etcd" go.etcd.io/etcd/server/v3 >&2
for p in "${programs[@]}"; do [[ -x "$out/tmp/$p" ]] || { echo "build-k8s: $p missing after build" >&2; exit 1; }; done
rm -rf "$bin" && mv "$out/tmp" "$bin"
echo "$(($(date +%s) - start))" >"$out/build-seconds"
touch "$out/complete"
echo "build-k8s: built in $(($(date +%s) - start)) s" >&2
echo "$bin"

#!/usr/bin/env bash
# Installs the Debian packages switchyard's build and tests need, once.
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

PACKAGES=(
  clang llvm libbpf-dev bpftool  # BPF programs (C, -target bpf)
  iptables nftables ipset conntrack iproute2  # datapath, cleanup, e2e nodes
  openssl  # local cluster certificates
  curl  # by hand: requests from inside lab pods (switchyard-lab exec)
  chromium-headless-shell  # the web view's e2e: a real browser
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages ${missing[*]}; run as root (apt-get install)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

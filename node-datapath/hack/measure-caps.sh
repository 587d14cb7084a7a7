#!/usr/bin/env bash
# Measures which capabilities the agent's privileged operations need on this
# kernel: runs them (the datapath's load/pin/attach via the capability_check
# example, the iptables/nftables/ipset programs the agent and its kube-proxy
# cleanup execute) in a scratch network namespace, as root with the bounding
# (hence permitted and effective) set cut to each candidate set, and prints
# what fails. `nsenter --net`, not `ip netns exec`: the latter remounts /sys
# and so hides the cgroup and bpf filesystems. Root; run under `flock /tmp/sy-e2e.lock`.
#
#   node-datapath/hack/measure-caps.sh <capability_check binary> SET...
# where each SET is a comma-separated capability list, e.g. bpf,net_admin.
set -euo pipefail
check=$1
shift
ns=sy-capcheck-$$
cg=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)/sy-capcheck-$$
pins=/sys/fs/bpf/sy-capcheck-$$
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  rmdir "$cg" 2>/dev/null || true
  rm -rf "$pins"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add sy0 type veth peer name sy1
ip -n "$ns" link set sy0 up
ip -n "$ns" link set sy1 up
mkdir -p "$cg"

restore='*filter
:SY-CAPCHECK - [0:0]
-A SY-CAPCHECK -d 10.96.0.10/32 -j RETURN
COMMIT
'
keepalive='table ip sy-capcheck {
  chain c {
    type nat hook output priority 0;
  }
}'

run() { # caps, label, command...
  local caps=$1 label=$2
  shift 2
  local bset=-all
  [ -n "$caps" ] && bset="-all,+${caps//,/,+}"
  if out=$(nsenter --net=/run/netns/"$ns" setpriv --bounding-set="$bset" --inh-caps=-all \
      --ambient-caps=-all -- "$@" 2>&1); then
    echo "  $label: ok"
  else
    echo "  $label: FAILED $(echo "$out" | tail -1)"
  fi
}

for caps in "$@"; do
  echo "== {${caps}}"
  nsenter --net=/run/netns/"$ns" setpriv --bounding-set="-all${caps:+,+${caps//,/,+}}" \
    --inh-caps=-all --ambient-caps=-all -- "$check" "$cg" "$pins" sy0 | sed 's/^/  /'
  rm -rf "$pins"
  run "$caps" "iptables-nft-save" iptables-nft-save
  run "$caps" "iptables-legacy-save" iptables-legacy-save
  run "$caps" "iptables-nft-restore" sh -c "printf '%s' \"\$0\" | iptables-nft-restore --noflush" "$restore"
  run "$caps" "iptables-legacy-restore" sh -c "printf '%s' \"\$0\" | iptables-legacy-restore --noflush" "$restore"
  run "$caps" "nft -f (keepalive table)" sh -c "printf '%s\n' \"\$0\" | nft -f -" "$keepalive"
  run "$caps" "nft list table ip kube-proxy" sh -c "nft list tables >/dev/null"
  run "$caps" "ipset list -n" ipset list -n
  if command -v ipvsadm >/dev/null; then run "$caps" "ipvsadm -S -n" ipvsadm -S -n; fi
  ip netns exec "$ns" iptables-nft -F SY-CAPCHECK 2>/dev/null && ip netns exec "$ns" iptables-nft -X SY-CAPCHECK 2>/dev/null || true
  ip netns exec "$ns" iptables-legacy -F SY-CAPCHECK 2>/dev/null && ip netns exec "$ns" iptables-legacy -X SY-CAPCHECK 2>/dev/null || true
  ip netns exec "$ns" nft delete table ip sy-capcheck 2>/dev/null || true
done

#!/usr/bin/env bash
# Prepares the host for the privileged tests and the local cluster:
# a cgroup v2 hierarchy and a bpffs. Prints the cgroup v2 mount point.
# Idempotent; never remounts something already mounted.
set -euo pipefail

BPFFS=${SWITCHYARD_BPFFS:-/sys/fs/bpf}

cgroup2_mount() {
  awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts
}

cg=$(cgroup2_mount)
if [[ -z "$cg" ]]; then
  cg=${SWITCHYARD_CGROUP2:-/sys/fs/cgroup/unified}
  mkdir -p "$cg"
  mount -t cgroup2 none "$cg"
fi

if ! awk -v p="$BPFFS" '$2 == p && $3 == "bpf" { f = 1 } END { exit !f }' /proc/self/mounts; then
  mkdir -p "$BPFFS"
  mount -t bpf bpf "$BPFFS"
fi

# Forwarding between the lab's namespaces happens inside them; nothing global.
echo "$cg"

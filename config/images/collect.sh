#!/usr/bin/env bash
# collect.sh ROOT PATH...: copies each PATH into the directory ROOT with
# exactly what it needs to run: every symlink on the way kept as a symlink
# (the alternatives links of iptables included) and, for a dynamically
# linked ELF file, the shared libraries and loader ldd names. A directory is
# copied whole, each file with its libraries (iptables' xtables modules).
# A PATH ending in `?` is copied only where it exists (ipvsadm); one of the
# form SOURCE=TARGET puts the file SOURCE at TARGET (a freshly built binary).
#
# Used by build.sh on this machine and by the Dockerfiles in their builder
# stage, so both images hold the same files.
set -euo pipefail

root=$1
shift

# Debian's merged /usr: /lib, /lib64, /bin and /sbin are links into /usr,
# and ELF files name their loader through /lib64.
for top in bin sbin lib lib64; do
  if [[ -L "/$top" && ! -e "$root/$top" ]]; then
    mkdir -p "$root"
    ln -s "$(readlink "/$top")" "$root/$top"
  fi
done

declare -A seen=()

# The path with its directory's symlinks resolved, its last element kept.
canonical() {
  local dir
  dir=$(realpath "$(dirname "$1")")
  echo "${dir%/}/$(basename "$1")"
}

libraries() {
  # ldd prints "name => /path (addr)" or "/path (addr)"; a static or
  # non-ELF file makes it fail, and such a file needs nothing.
  ldd "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }' || true
}

add() {
  local path
  path=$(canonical "$1")
  [[ -n "${seen[$path]:-}" ]] && return 0
  seen[$path]=1
  mkdir -p "$root$(dirname "$path")"
  if [[ -L "$path" ]]; then
    local target
    target=$(readlink "$path")
    ln -sfn "$target" "$root$path"
    [[ "$target" == /* ]] || target="$(dirname "$path")/$target"
    add "$target"
  elif [[ -d "$path" ]]; then
    mkdir -p "$root$path"
    local entry
    for entry in "$path"/*; do
      [[ -e "$entry" || -L "$entry" ]] && add "$entry"
    done
  elif [[ -f "$path" ]]; then
    cp -p "$path" "$root$path"
    local lib
    for lib in $(libraries "$path"); do add "$lib"; done
  else
    echo "collect: $path does not exist" >&2
    return 1
  fi
}

for want in "$@"; do
  if [[ "$want" == *=* ]]; then
    mkdir -p "$root$(dirname "${want#*=}")"
    cp -p "${want%%=*}" "$root${want#*=}"
    for lib in $(libraries "${want%%=*}"); do add "$lib"; done
    continue
  fi
  if [[ "$want" == *'?' ]]; then
    want=${want%'?'}
    resolved=$(command -v "$want" 2>/dev/null || true)
    [[ -z "$resolved" && -e "$want" ]] && resolved=$want
    [[ -n "$resolved" ]] && add "$resolved"
    continue
  fi
  if [[ "$want" != /* ]]; then
    resolved=$(command -v "$want") || { echo "collect: $want not found" >&2; exit 1; }
    want=$resolved
  fi
  add "$want"
done

# The merged-/usr links nothing in the image goes through.
for top in bin sbin lib lib64; do
  if [[ -L "$root/$top" && ! -e "$root/$top" ]]; then rm "$root/$top"; fi
done

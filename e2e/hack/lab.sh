#!/usr/bin/env bash
# Entry point for `make cluster-up` / `make cluster-down` and people:
# builds switchyard-lab (and the test server it runs for web images), then
# runs it with the given arguments, e.g.
#   e2e/hack/lab.sh up --nodes 3 --proxy-mode nftables
#   e2e/hack/lab.sh status | exec --node node1 -- nft list ruleset | down
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}
if [[ ${1:-} == up ]]; then
  "$here/install-deps.sh"
  "$here/host-setup.sh" >/dev/null
fi
cargo build --quiet --manifest-path "$root/Cargo.toml" -p switchyard-e2e --bins
exec "$CARGO_TARGET_DIR/debug/switchyard-lab" "$@"

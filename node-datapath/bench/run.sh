#!/usr/bin/env bash
# The datapath benchmark (issue #7 items 1, 2 (rule load times and the eBPF
# full sync) and 4; issue #12 item 6, north-south; flow events' cost and
# loss): builds switchyard-bench with --release, runs it as root, plots, and
# regenerates BENCHMARKS.md. `make bench` calls this.
#
#   node-datapath/bench/run.sh            # full: N = 1,1000,5000,10000,20000,40000
#   node-datapath/bench/run.sh --quick    # N = 1,1000,10000
#   node-datapath/bench/run.sh --services 1,1000 --runs 1   # any `run` option
#   node-datapath/bench/run.sh --report-only   # re-plot + regenerate from raw.csv
#   node-datapath/bench/run.sh --only programming   # eBPF programming time, incremental
#       updates and agent memory only (no traffic); replaces those rows in raw.csv
#   node-datapath/bench/run.sh --only north-south --services 1,1000,10000
#       # external client → NodePort only (issue #12 item 6); replaces those rows
#   node-datapath/bench/run.sh --only flow-events [--services 10000]
#       # the eBPF datapath's flow events: on vs off, loss, the agent's flow
#       # ring memory (N = 10000 by default); replaces those rows
#
# A run without --only measures east-west, then north-south, then flow
# events (at 10000 Services, or its largest N when 10000 is not in its list).
#
# SWITCHYARD_BENCH_RESULTS / SWITCHYARD_BENCH_MARKDOWN redirect the outputs
# (default node-datapath/bench/results/ and BENCHMARKS.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH=$ROOT/node-datapath/bench
RESULTS=${SWITCHYARD_BENCH_RESULTS:-$BENCH/results}
MARKDOWN=${SWITCHYARD_BENCH_MARKDOWN:-$ROOT/BENCHMARKS.md}
CACHE=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=$CACHE/venv

if [[ $(id -u) -ne 0 ]]; then
  echo "run.sh: the benchmark creates network namespaces, cgroups and BPF programs: run as root" >&2
  exit 1
fi

report_only=0
args=()
for a in "$@"; do
  if [[ $a == --report-only ]]; then report_only=1; else args+=("$a"); fi
done

cd "$ROOT"
"$ROOT/e2e/hack/host-setup.sh" >/dev/null
cargo build --release --locked -p switchyard-bench
BIN=$CARGO_TARGET_DIR/release/switchyard-bench

if [[ $report_only -eq 0 ]]; then
  echo "run.sh: load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "$BIN" run --out "$RESULTS" "${args[@]}"
  echo "run.sh: load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
fi

# Plotting: matplotlib from PyPI in a cached venv (created once).
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'matplotlib>=3.7,<4'
fi
"$VENV/bin/python" "$BENCH/plot.py" "$RESULTS/raw.csv" "$RESULTS/connect_latency.png"

"$BIN" report --csv "$RESULTS/raw.csv" --facts "$RESULTS/facts.json" \
  --include "$RESULTS/operator-scale.md" \
  --include "$RESULTS/kube-proxy-sync.md" \
  --analysis "$BENCH/analysis.md" --out "$MARKDOWN"
echo "run.sh: wrote $MARKDOWN, $RESULTS/raw.csv, $RESULTS/connect_latency.png" >&2

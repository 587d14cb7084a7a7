"""Plots TCP connect latency (p50, p99) vs N per datapath from raw.csv.

Usage: plot.py RAW_CSV OUT_PNG. Medians over runs, target = last Service
(kube-proxy's order), log-log axes. Written for node-datapath/bench/run.sh.
"""
import csv
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["direct", "iptables-nft", "iptables-legacy", "nftables", "ebpf"]
STYLE = {
    "direct": dict(color="black", marker="o", linestyle="--"),
    "iptables-nft": dict(color="tab:red", marker="s"),
    "iptables-legacy": dict(color="tab:orange", marker="^"),
    "nftables": dict(color="tab:blue", marker="D"),
    "ebpf": dict(color="tab:green", marker="*", markersize=10),
}


def main(src, dst):
    runs = defaultdict(list)
    with open(src) as f:
        for r in csv.DictReader(f):
            if r["target"] == "last" and r["metric"] in ("connect_p50_us", "connect_p99_us"):
                runs[(r["metric"], r["datapath"], int(r["n"]))].append(float(r["value"]))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, metric, title in zip(
        axes, ["connect_p50_us", "connect_p99_us"], ["p50", "p99"]
    ):
        for dp in ORDER:
            pts = sorted((n, statistics.median(v)) for (m, d, n), v in runs.items() if m == metric and d == dp)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=dp, **STYLE[dp])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Services (10 endpoints each), log scale")
        ax.set_title(f"TCP connect latency {title}, last Service in kube-proxy order")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("connect() latency, µs (median of runs), log scale")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

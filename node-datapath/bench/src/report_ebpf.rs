//! The eBPF part of `BENCHMARKS.md`'s programming section: batched vs
//! per-op writes, the agent's incremental updates and its memory, and the
//! issue #7 checks on them. Pure (rendering from a [`Table`]).

use std::fmt::Write as _;

use crate::report::Table;

fn v(t: &Table, n: usize, m: &str, scale: f64, d: usize) -> String {
    t.get(n, "ebpf", m, "-")
        .map_or("—".to_string(), |a| format!("{:.*}", d, a.median * scale))
}

/// The text and table of the agent's sync path.
pub fn agent_section(t: &Table, out: &mut String) {
    let _ = writeln!(
        out,
        "\n### eBPF: batched writes, incremental updates, agent memory\n\n\
         - apply batched / per-op: the full sync's map writes as `PinnedLbMaps::apply_all` \
         does them (one `BPF_MAP_UPDATE_BATCH`/`BPF_MAP_DELETE_BATCH` per run of same-map, \
         same-kind operations, in the diff's order), and the same operations with one \
         `bpf(2)` call each (maps emptied first, untimed), in the same process.\n\
         - Agent path (`switchyard-bench agent`, a fresh process): the agent's stores \
         (`switchyard_agent::store`) filled with compact projections of the objects (as the \
         agent's watch tasks project each object on arrival and drop it), `switchyard_agent::sync::Syncer` adopting the pinned maps, its first sync \
         (relist: every Service computed and written), then single-endpoint changes: endpoint 0 \
         of one Service (spread over all N) moves to a new address or back. *sync*: from the \
         change handed to `Syncer::sync` to the map writes returning; *event→map*: plus the \
         watch task's part (projection, store write). Median and p99 over the changes (`samples`).\n\
         - no-op sync: `Syncer::sync` with nothing changed (a spurious wake-up); while nothing \
         changes the agent runs no sync at all.\n\
         - RSS: the agent-path process's `VmRSS` after its syncs and its peak `VmHWM` (stores, \
         per-Service desired state, map mirror, ids), without the API client and tokio runtime \
         of a full agent.\n"
    );
    let _ = writeln!(
        out,
        "| N | full sync s | apply batched / per-op s | agent first sync s | one endpoint change, sync p50 / p99 µs | event→map p50 / p99 µs | map ops per change | no-op sync µs | agent RSS / peak MiB |\n|---:|---:|---|---:|---|---|---:|---:|---|"
    );
    for n in t.ns() {
        if t.get(n, "ebpf", "program_s", "-").is_none() {
            continue;
        }
        let _ = writeln!(
            out,
            "| {n} | {} | {} / {} | {} | {} / {} | {} / {} | {} | {} | {} / {} |",
            v(t, n, "program_s", 1.0, 3),
            v(t, n, "ebpf_apply_s", 1.0, 3),
            v(t, n, "ebpf_apply_per_op_s", 1.0, 3),
            v(t, n, "agent_full_sync_s", 1.0, 3),
            v(t, n, "change_sync_p50_us", 1.0, 0),
            v(t, n, "change_sync_p99_us", 1.0, 0),
            v(t, n, "change_event_p50_us", 1.0, 0),
            v(t, n, "change_event_p99_us", 1.0, 0),
            v(t, n, "change_ops", 1.0, 0),
            v(t, n, "noop_sync_us", 1.0, 1),
            v(t, n, "agent_rss_mib", 1.0, 1),
            v(t, n, "agent_rss_peak_mib", 1.0, 1),
        );
    }
}

fn check(label: &str, value: f64, unit: &str, limit: f64, d: usize) -> String {
    let verdict = if value <= limit {
        "met".to_string()
    } else {
        format!("MISSED by {:.*} {unit}", d, value - limit)
    };
    format!("{label}: {value:.d$} {unit} (target ≤ {limit} {unit}): {verdict}")
}

/// The issue #7 programming and memory targets at N = 10 000.
pub fn checks(t: &Table) -> Vec<String> {
    let n = 10_000;
    let mut out = Vec::new();
    if let Some(a) = t.get(n, "ebpf", "program_s", "-") {
        out.push(check(
            "N=10000, eBPF full sync (batched)",
            a.median,
            "s",
            0.5,
            3,
        ));
    }
    if let Some(a) = t.get(n, "ebpf", "change_event_p50_us", "-") {
        out.push(check(
            "N=10000, one endpoint change, event→map (median)",
            a.median / 1e3,
            "ms",
            5.0,
            3,
        ));
    }
    if let Some(a) = t.get(n, "ebpf", "agent_rss_peak_mib", "-") {
        out.push(check(
            "N=10000, agent sync path peak RSS",
            a.median,
            "MiB",
            64.0,
            1,
        ));
    }
    out
}

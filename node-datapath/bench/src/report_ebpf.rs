//! The eBPF-only parts of `BENCHMARKS.md`: the time spent in the
//! `connect4` program per connect (next to the extra latency over direct),
//! batched vs per-op writes, the agent's incremental updates and its memory,
//! and the issue #7 checks on them. Pure (rendering from a [`Table`]).

use std::fmt::Write as _;

use crate::results::Table;

fn v(t: &Table, n: usize, m: &str, scale: f64, d: usize) -> String {
    t.get(n, "ebpf", m, "-")
        .map_or("—".to_string(), |a| format!("{:.*}", d, a.median * scale))
}

/// Time in the `connect4` program per connect, next to the eBPF datapath's
/// extra p50 connect latency over `direct` (same N, same target).
pub fn program_time_section(t: &Table, out: &mut String) {
    let ns: Vec<usize> = t
        .ns()
        .into_iter()
        .filter(|n| t.get(*n, "ebpf", "connect4_prog_ns", "last").is_some())
        .collect();
    if ns.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### eBPF: time in the `connect4` program per connect\n\n\
         After the measured runs of each N, one more latency run per target on the eBPF \
         datapath with the kernel's BPF run-time accounting on (`BPF_ENABLE_STATS`; off during \
         the measured runs, it adds two clock reads per program run): `run_time_ns / run_cnt` \
         of the `connect4` program over that run (one run; `connects` is the program's run \
         count, warm-up included). *extra p50* is the eBPF p50 minus the direct p50 of the \
         measured runs: the part of it that the program's own time does not explain is spent \
         outside the program.\n\n\
         | N | connect4 ns, first / random / last | connects (last) | extra p50 over direct, \
         first / random / last µs |\n|---:|---|---:|---|"
    );
    let extra = |n: usize, target: &str| match (
        t.get(n, "ebpf", "connect_p50_us", target),
        t.get(n, "direct", "connect_p50_us", target),
    ) {
        (Some(e), Some(d)) => format!("{:+.2}", e.median - d.median),
        _ => "—".into(),
    };
    for n in ns {
        let prog = |target: &str| {
            t.get(n, "ebpf", "connect4_prog_ns", target)
                .map_or("—".into(), |a| format!("{:.0}", a.median))
        };
        let runs = t
            .get(n, "ebpf", "connect4_prog_ns", "last")
            .map_or(0, |a| a.min_samples);
        let _ = writeln!(
            out,
            "| {n} | {} / {} / {} | {runs} | {} / {} / {} |",
            prog("first"),
            prog("random"),
            prog("last"),
            extra(n, "first"),
            extra(n, "random"),
            extra(n, "last"),
        );
    }
    out.push('\n');
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Row;

    fn row(dp: &str, metric: &str, target: &str, run: u32, value: f64) -> Row {
        Row {
            n: 40_000,
            datapath: dp.into(),
            metric: metric.into(),
            target: target.into(),
            run,
            samples: 20_000 + u64::from(run),
            value,
        }
    }

    #[test]
    fn program_time_sits_next_to_the_extra_latency_over_direct() {
        let mut rows = vec![
            row("ebpf", "connect4_prog_ns", "first", 0, 810.0),
            row("ebpf", "connect4_prog_ns", "last", 0, 1240.0),
        ];
        for (r, (e, d)) in [(26.0, 24.0), (27.5, 24.5), (26.5, 23.0)]
            .into_iter()
            .enumerate()
        {
            rows.push(row("ebpf", "connect_p50_us", "last", r as u32, e));
            rows.push(row("direct", "connect_p50_us", "last", r as u32, d));
        }
        let mut out = String::new();
        program_time_section(&Table::new(&rows), &mut out);
        // Medians: eBPF 26.5, direct 24.0; no random-target row measured.
        assert!(
            out.contains("| 40000 | 810 / — / 1240 | 20000 | — / — / +2.50 |"),
            "{out}"
        );
    }

    #[test]
    fn no_program_time_no_section() {
        let rows = vec![row("ebpf", "connect_p50_us", "last", 0, 26.0)];
        let mut out = String::new();
        program_time_section(&Table::new(&rows), &mut out);
        assert!(out.is_empty(), "{out}");
    }
}

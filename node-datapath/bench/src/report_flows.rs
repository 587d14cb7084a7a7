//! The flow events section of `BENCHMARKS.md`: events on vs off, loss at
//! the highest connection rate, the agent's flow ring memory, and the
//! targets checked against them (see [`crate::flow_events`]). Pure
//! (rendering from the rows and the part's facts).

use std::fmt::Write as _;

use crate::{
    results::{Row, Table},
    run_facts::NsFacts,
};

/// The most events on may cost: latency ×1.05, connection rate ×0.95.
pub const RATIO_LIMIT: f64 = 0.05;
/// The loader's default event ring, bytes.
pub const DEFAULT_RING: u64 = switchyard_node_datapath::abi::capacity::EVENTS_RING as u64;
/// Bytes of one ring record: the kernel's 8-byte header and the 48-byte
/// event, rounded up to 8.
pub const RECORD_BYTES: u64 = 56;

/// Records a ring of `ring_bytes` holds when nobody reads it.
pub fn records_held(ring_bytes: u64) -> u64 {
    ring_bytes / RECORD_BYTES
}

/// The ring bytes and whether the consumer drained, from a loss target
/// (`262144-drained`).
pub fn parse_loss_target(target: &str) -> Option<(u64, bool)> {
    let (bytes, mode) = target.split_once('-')?;
    let drained = match mode {
        "drained" => true,
        "undrained" => false,
        _ => return None,
    };
    Some((bytes.parse().ok()?, drained))
}

/// Per run, the value in `state` over the value with events off (measured
/// back to back), in run order.
pub fn pair_ratios(rows: &[Row], n: usize, metric: &str, state: &str) -> Vec<f64> {
    let value = |run: u32, st: &str| {
        rows.iter()
            .find(|r| r.n == n && r.metric == metric && r.target == st && r.run == run)
            .map(|r| r.value)
    };
    let mut runs: Vec<u32> = rows
        .iter()
        .filter(|r| r.n == n && r.metric == metric)
        .map(|r| r.run)
        .collect();
    runs.sort_unstable();
    runs.dedup();
    runs.into_iter()
        .filter_map(|run| match (value(run, state), value(run, "off")) {
            (Some(v), Some(off)) if off != 0.0 => Some(v / off),
            _ => None,
        })
        .collect()
}

/// Sum over runs of one (N, metric, state).
fn total(rows: &[Row], n: usize, metric: &str, state: &str) -> u64 {
    rows.iter()
        .filter(|r| r.n == n && r.metric == metric && r.target == state)
        .map(|r| r.value as u64)
        .sum()
}

/// The states of the comparison, in table order (CSV targets).
const STATES: [&str; 3] = ["off", "on", "batched"];

/// Median in `state` over median with events off.
pub fn ratio_to_off(t: &Table, n: usize, metric: &str, state: &str) -> Option<f64> {
    let v = t.get(n, "ebpf", metric, state)?.median;
    let off = t.get(n, "ebpf", metric, "off")?.median;
    (off != 0.0).then(|| v / off)
}

/// How the report names a state.
fn state_label(t: &Table, n: usize, state: &str) -> String {
    match state {
        "on" => "on, read as the agent reads".into(),
        "batched" => {
            let ms = t
                .get(n, "ebpf", "fe_drain_ms", state)
                .map_or(0.0, |a| a.median);
            format!("on, drained every {ms:.0} ms")
        }
        other => other.into(),
    }
}

fn ns_with(t: &Table, metric: &str, target: &str) -> Vec<usize> {
    t.ns()
        .into_iter()
        .filter(|n| t.get(*n, "ebpf", metric, target).is_some())
        .collect()
}

fn intro(f: Option<&NsFacts>, out: &mut String) {
    let _ = writeln!(
        out,
        "\n## Flow events: cost and loss\n\n\
         The eBPF socket load balancer reports every connect it translates or refuses as a \
         48-byte record in a BPF ring buffer (`sy_events`, 256 KiB by default); the agent \
         reads it. Measured on the eBPF datapath in the east-west topology above, N Services \
         × 10 endpoints, against the **last** Service's ClusterIP. The consumer does the agent's \
         work on its own thread, waiting as the agent waits: a 20 ms timer (the agent's \
         `READ_EVERY`) and the pinned ring's descriptor (poll(2); the agent uses epoll through \
         tokio), which the programs signal only once a quarter of the ring waits \
         (`BPF_RB_NO_WAKEUP` below that). It copies out every waiting record and hands the batch to the \
         agent's `FlowHub::ingest` (decode with `FlowEvent::from_bytes`, name the Service and \
         the client's cgroup, keep the flow). It runs unpinned, so it competes for the 2 CPUs \
         with the client (CPU 0) and the servers (CPU 1), as an agent does.\n\n\
         Reproduce: `node-datapath/bench/run.sh --only flow-events --services 10000` (a full \
         run measures it after north-south, at 10 000 Services).\n"
    );
    if let Some(f) = f {
        let _ = writeln!(
            out,
            "- Command: `{}`\n- Started: {} UTC, took {:.0} s; N: {:?}; {} runs of each state\n\
             - Load average (1/5/15 min) at start: {}; at end: {}\n",
            f.command,
            f.started_utc,
            f.duration_s,
            f.services,
            f.runs,
            f.loadavg_start,
            f.loadavg_end,
        );
    }
}

fn on_off_table(t: &Table, rows: &[Row], out: &mut String) {
    let _ = writeln!(
        out,
        "### Events on vs off\n\n\
         Each run measures three states back to back, their order changing from run to run \
         (over six runs each goes before each other one three times; on and off swap places \
         every run): events off (`set_flow_events`); on, read as the agent reads (its timer, \
         and the ring's descriptor, signalled once a quarter of the ring waits); and on, read \
         by a consumer that drains on a timer only and never waits on the ring. Latency as in \
         \"TCP connect latency\" (client on CPU 0), conn/s as in \"Connection rate\". Medians \
         of the runs; `(×r)` is the ratio to events off. *read / translated*: events the \
         consumer read and connects the datapath translated (`connect_translated`), summed \
         over the runs.\n\n\
         | N | events | connect p50 µs | p99 µs | conn/s, 1 thread | conn/s, 2 threads | read / translated | lost |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for n in ns_with(t, "fe_connect_p50_us", "off") {
        for state in STATES {
            if t.get(n, "ebpf", "fe_connect_p50_us", state).is_none() {
                continue;
            }
            let cell = |m: &str, d: usize| {
                let Some(a) = t.get(n, "ebpf", m, state) else {
                    return "—".to_string();
                };
                let mut s = format!("{:.*}", d, a.median);
                if let (Some(r), false) = (ratio_to_off(t, n, m, state), state == "off") {
                    let _ = write!(s, " (×{r:.3})");
                }
                s
            };
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {} | {} / {} | {} |",
                state_label(t, n, state),
                cell("fe_connect_p50_us", 1),
                cell("fe_connect_p99_us", 1),
                cell("fe_conn_per_s_1t", 0),
                cell("fe_conn_per_s_2t", 0),
                total(rows, n, "fe_run_read", state),
                total(rows, n, "fe_run_translated", state),
                total(rows, n, "fe_run_lost", state),
            );
        }
        out.push('\n');
        per_run_ratios(t, rows, n, out);
    }
}

/// One line per state: each run's value over the same run's events off.
fn per_run_ratios(t: &Table, rows: &[Row], n: usize, out: &mut String) {
    for state in &STATES[1..] {
        let mut parts = Vec::new();
        for (m, label) in [
            ("fe_connect_p50_us", "p50"),
            ("fe_connect_p99_us", "p99"),
            ("fe_conn_per_s_1t", "conn/s 1 thread"),
            ("fe_conn_per_s_2t", "conn/s 2 threads"),
        ] {
            let v = pair_ratios(rows, n, m, state);
            if !v.is_empty() {
                let list: Vec<String> = v.iter().map(|r| format!("×{r:.3}")).collect();
                parts.push(format!("{label} {}", list.join(" ")));
            }
        }
        if !parts.is_empty() {
            let label = state_label(t, n, state);
            let _ = writeln!(
                out,
                "- {label}, per run over that run's off (N={n}): {}.",
                parts.join("; ")
            );
        }
    }
    out.push('\n');
}

fn loss_table(t: &Table, rows: &[Row], out: &mut String) {
    let _ = writeln!(
        out,
        "### Loss at the highest connection rate\n\n\
         One rate run per line (connect + RST close to the last Service, the client's \
         threads spread over both CPUs), events on. *drained*: the consumer reads during the \
         run; *undrained*: it starts after the client has exited, so the ring keeps what \
         fits (ring bytes / {RECORD_BYTES} records). *lost*: `sy_events_lost`, summed over \
         CPUs. Every connect translated or refused emits one event, so *read + lost − \
         translated − refused* must be 0.\n\n\
         | N | ring bytes (records) | consumer | threads | conn/s | connects ok / failed | translated | refused | read | lost | read + lost − translated − refused |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (n, tg, bytes, drained) in loss_runs(rows) {
        let v = |m: &str| t.get(n, "ebpf", m, &tg).map_or(0.0, |a| a.median);
        let balance = balance(t, n, &tg).unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "| {n} | {bytes} ({}) | {} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {balance:.0} |",
            records_held(bytes),
            if drained { "drained" } else { "undrained" },
            v("fe_loss_threads"),
            v("fe_loss_conn_per_s"),
            v("fe_loss_client_ok"),
            v("fe_loss_client_errors"),
            v("fe_loss_translated"),
            v("fe_loss_refused"),
            v("fe_loss_read"),
            v("fe_loss_lost"),
        );
    }
    out.push('\n');
}

fn memory_table(t: &Table, out: &mut String) {
    let ns = ns_with(t, "fe_mem_rss_full_mib", "-");
    if ns.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Agent memory for the flow ring\n\n\
         `switchyard-bench flows` (a fresh process): the agent's `FlowHub` of `--flows-max` \
         flows, filled through `FlowHub::ingest` with records shaped as the kernel writes \
         them (connects to the N Services, one in 20 refused, from 110 pods whose cgroups the \
         hub resolves to pod names), then filled once more (every flow replaced: the steady \
         state). *base*: the same process before the first flow (the Service index of N \
         Services, the pod names, an empty hub). Heap: bytes malloc has handed out \
         (`mallinfo2`), RSS after returning free pages (`malloc_trim`).\n\n\
         | N | flows kept | RSS base / full / steady MiB | RSS growth MiB (full / base) | heap growth MiB, full / steady | heap per flow |\n\
         |---:|---:|---|---|---|---:|"
    );
    for n in ns {
        let v = |m: &str| t.get(n, "ebpf", m, "-").map_or(0.0, |a| a.median);
        let kept = v("fe_mem_kept");
        let (base, full) = (v("fe_mem_rss_base_mib"), v("fe_mem_rss_full_mib"));
        let heap_base = v("fe_mem_heap_base_mib");
        let heap_full = v("fe_mem_heap_full_mib") - heap_base;
        let heap_steady = v("fe_mem_heap_steady_mib") - heap_base;
        let per_flow = if kept > 0.0 {
            heap_full * 1024.0 * 1024.0 / kept
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "| {n} | {kept:.0} | {base:.1} / {full:.1} / {:.1} | {:+.1} (×{:.2}) | {heap_full:+.2} / {heap_steady:+.2} | {per_flow:.0} B |",
            v("fe_mem_rss_steady_mib"),
            full - base,
            if base > 0.0 { full / base } else { 0.0 },
        );
    }
    out.push('\n');
}

/// The loss runs measured: (N, target, ring bytes, drained), largest ring
/// first, drained first.
pub fn loss_runs(rows: &[Row]) -> Vec<(usize, String, u64, bool)> {
    let mut runs: Vec<(usize, String, u64, bool)> = rows
        .iter()
        .filter(|r| r.metric == "fe_loss_read")
        .filter_map(|r| {
            let (bytes, drained) = parse_loss_target(&r.target)?;
            Some((r.n, r.target.clone(), bytes, drained))
        })
        .collect();
    runs.sort_by_key(|(n, _, bytes, drained)| (*n, std::cmp::Reverse(*bytes), !*drained));
    runs.dedup();
    runs
}

/// read + lost − translated − refused of one loss run: 0 when every
/// event is accounted for.
fn balance(t: &Table, n: usize, target: &str) -> Option<f64> {
    let v = |m: &str| t.get(n, "ebpf", m, target).map(|a| a.median);
    Some(v("fe_loss_read")? + v("fe_loss_lost")? - v("fe_loss_translated")? - v("fe_loss_refused")?)
}

fn verdict(met: bool, miss: String) -> String {
    if met { "met".into() } else { miss }
}

/// Events on / off within [`RATIO_LIMIT`] at every N, for each state
/// with events on: connect p50 and connections per second, the targets
/// (p99 is in the table, not a target).
fn cost_checks(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for n in ns_with(t, "fe_connect_p50_us", "off") {
        for state in &STATES[1..] {
            for (m, label, higher_is_worse) in [
                ("fe_connect_p50_us", "connect p50", true),
                ("fe_conn_per_s_1t", "conn/s 1 thread", false),
                ("fe_conn_per_s_2t", "conn/s 2 threads", false),
            ] {
                let Some(r) = ratio_to_off(t, n, m, state) else {
                    continue;
                };
                let (limit, sign) = if higher_is_worse {
                    (1.0 + RATIO_LIMIT, "≤")
                } else {
                    (1.0 - RATIO_LIMIT, "≥")
                };
                let met = if higher_is_worse {
                    r <= limit
                } else {
                    r >= limit
                };
                let miss = format!("MISSED by {:.1} points", (r - limit).abs() * 100.0);
                out.push(format!(
                    "N={n}, {label}, events {} / off = {r:.3} (target {sign} {limit:.2}): {}",
                    state_label(t, n, state),
                    verdict(met, miss)
                ));
            }
        }
    }
    out
}

/// The targets, one line per check, met or missed and by how much:
/// the cost of events, no loss with the default ring and a draining
/// consumer, and every loss run's events accounted for.
pub fn checks(t: &Table, rows: &[Row]) -> Vec<String> {
    let mut out = cost_checks(t);
    let runs = loss_runs(rows);
    for (n, tg, bytes, drained) in &runs {
        if *bytes != DEFAULT_RING || !*drained {
            continue;
        }
        let v = |m: &str| t.get(*n, "ebpf", m, tg).map_or(0.0, |a| a.median);
        let lost = v("fe_loss_lost");
        out.push(format!(
            "N={n}, default ring, consumer draining, {:.0} threads at {:.0} conn/s: {lost:.0} events lost (target 0): {}",
            v("fe_loss_threads"),
            v("fe_loss_conn_per_s"),
            verdict(lost == 0.0, "MISSED".into())
        ));
    }
    for n in t.ns() {
        let mine: Vec<&String> = runs.iter().filter(|r| r.0 == n).map(|r| &r.1).collect();
        if mine.is_empty() {
            continue;
        }
        let off: Vec<String> = mine
            .iter()
            .filter_map(|tg| match balance(t, n, tg) {
                Some(0.0) => None,
                Some(b) => Some(format!("{tg}: {b:+.0}")),
                None => Some(format!("{tg}: incomplete")),
            })
            .collect();
        out.push(format!(
            "N={n}, loss counted exactly (read + lost = translated + refused) in {} of {} loss runs: {}",
            mine.len() - off.len(),
            mine.len(),
            verdict(off.is_empty(), format!("MISSED ({})", off.join(", ")))
        ));
    }
    out
}

/// The whole section; nothing when no flow events rows were measured.
pub fn section(rows: &[Row], facts: Option<&NsFacts>, out: &mut String) {
    let rows: Vec<Row> = rows
        .iter()
        .filter(|r| r.metric.starts_with(crate::flow_events::METRIC_PREFIX))
        .cloned()
        .collect();
    if rows.is_empty() {
        return;
    }
    let t = Table::new(&rows);
    intro(facts, out);
    on_off_table(&t, &rows, out);
    loss_table(&t, &rows, out);
    memory_table(&t, out);
    let _ = writeln!(out, "### Targets (flow events)\n");
    for line in checks(&t, &rows) {
        let _ = writeln!(out, "- {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, target: &str, run: u32, value: f64) -> Row {
        Row {
            n: 10_000,
            datapath: "ebpf".into(),
            metric: metric.into(),
            target: target.into(),
            run,
            samples: 20_000,
            value,
        }
    }

    fn loss(target: &str, read: f64, lost: f64, translated: f64) -> Vec<Row> {
        [
            ("fe_loss_threads", 4.0),
            ("fe_loss_conn_per_s", 40_000.0),
            ("fe_loss_client_ok", translated),
            ("fe_loss_client_errors", 0.0),
            ("fe_loss_translated", translated),
            ("fe_loss_refused", 0.0),
            ("fe_loss_read", read),
            ("fe_loss_lost", lost),
        ]
        .into_iter()
        .map(|(m, v)| row(m, target, 0, v))
        .collect()
    }

    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for r in 0..2 {
            rows.push(row("fe_connect_p50_us", "off", r, 24.0));
            rows.push(row("fe_connect_p50_us", "on", r, 24.0 + f64::from(r)));
            rows.push(row("fe_conn_per_s_1t", "off", r, 1000.0));
            rows.push(row("fe_conn_per_s_1t", "on", r, 900.0));
            rows.push(row("fe_run_read", "on", r, 100.0));
            rows.push(row("fe_run_translated", "on", r, 100.0));
            rows.push(row("fe_run_read", "off", r, 0.0));
            rows.push(row("fe_run_translated", "off", r, 90.0));
            rows.push(row("fe_connect_p50_us", "batched", r, 24.5));
            rows.push(row("fe_conn_per_s_1t", "batched", r, 990.0));
            rows.push(row("fe_drain_ms", "batched", r, 10.0));
        }
        rows.extend(loss("262144-drained", 40_000.0, 0.0, 40_000.0));
        rows.extend(loss("4096-undrained", 73.0, 39_927.0, 40_000.0));
        rows.extend(loss("4096-drained", 39_000.0, 999.0, 40_000.0));
        rows.push(row("fe_mem_kept", "-", 0, 16_384.0));
        rows.push(row("fe_mem_rss_base_mib", "-", 0, 20.0));
        rows.push(row("fe_mem_rss_full_mib", "-", 0, 23.0));
        rows.push(row("fe_mem_rss_steady_mib", "-", 0, 23.0));
        rows.push(row("fe_mem_heap_base_mib", "-", 0, 10.0));
        rows.push(row("fe_mem_heap_full_mib", "-", 0, 12.0));
        rows.push(row("fe_mem_heap_steady_mib", "-", 0, 12.0));
        rows
    }

    #[test]
    fn a_ring_holds_its_bytes_over_56_records() {
        assert_eq!(records_held(262_144), 4681);
        assert_eq!(records_held(4096), 73);
        assert_eq!(parse_loss_target("262144-drained"), Some((262_144, true)));
        assert_eq!(parse_loss_target("4096-undrained"), Some((4096, false)));
        assert_eq!(parse_loss_target("4096-sometimes"), None);
        assert_eq!(parse_loss_target("-"), None);
    }

    #[test]
    fn pair_ratios_divide_each_runs_on_by_its_off() {
        let r = pair_ratios(&rows(), 10_000, "fe_connect_p50_us", "on");
        assert_eq!(r, vec![1.0, 25.0 / 24.0]);
        let b = pair_ratios(&rows(), 10_000, "fe_conn_per_s_1t", "batched");
        assert_eq!(b, vec![0.99, 0.99]);
        assert!(pair_ratios(&rows(), 1, "fe_connect_p50_us", "on").is_empty());
    }

    #[test]
    fn checks_say_met_or_missed_for_cost_loss_and_accounting() {
        let rows = rows();
        let c = checks(&Table::new(&rows), &rows);
        let has = |s: &str| c.iter().any(|l| l.contains(s));
        assert!(
            has(
                "N=10000, connect p50, events on, read as the agent reads / off = 1.021 (target ≤ 1.05): met"
            ),
            "{c:?}"
        );
        assert!(
            has(
                "N=10000, conn/s 1 thread, events on, read as the agent reads / off = 0.900 (target ≥ 0.95): MISSED by 5.0 points"
            ),
            "{c:?}"
        );
        assert!(
            has(
                "N=10000, conn/s 1 thread, events on, drained every 10 ms / off = 0.990 (target ≥ 0.95): met"
            ),
            "{c:?}"
        );
        assert!(
            has("4 threads at 40000 conn/s: 0 events lost (target 0): met"),
            "{c:?}"
        );
        assert!(
            has("in 2 of 3 loss runs: MISSED (4096-drained: -1)"),
            "{c:?}"
        );
    }

    #[test]
    fn section_has_every_table_with_ratios_and_totals() {
        let mut out = String::new();
        section(&rows(), None, &mut out);
        for s in [
            "## Flow events: cost and loss",
            "| 10000 | on, read as the agent reads | 24.5 (×1.021) |",
            "| 10000 | on, drained every 10 ms | 24.5 (×1.021) | — | 990 (×0.990) |",
            "| 200 / 200 | 0 |",
            "| 10000 | off | 24.0 | — | 1000 | — | 0 / 180 | 0 |",
            "on, read as the agent reads, per run over that run's off (N=10000): p50 ×1.000 ×1.042; conn/s 1 thread ×0.900 ×0.900.",
            "| 10000 | 262144 (4681) | drained | 4 | 40000 |",
            "| 10000 | 4096 (73) | undrained | 4 | 40000 | 40000 / 0 | 40000 | 0 | 73 | 39927 | 0 |",
            "| 10000 | 16384 | 20.0 / 23.0 / 23.0 | +3.0 (×1.15) | +2.00 / +2.00 | 128 B |",
            "### Targets (flow events)",
        ] {
            assert!(out.contains(s), "missing {s}:\n{out}");
        }
        let drained = out.find("| 4096 (73) | drained").unwrap();
        let undrained = out.find("| 4096 (73) | undrained").unwrap();
        assert!(out.find("262144 (4681)").unwrap() < drained && drained < undrained);
        let mut empty = String::new();
        section(&[], None, &mut empty);
        assert!(empty.is_empty());
    }
}

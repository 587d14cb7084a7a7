//! The north-south section of `BENCHMARKS.md`: an external client to a
//! NodePort, per placement of the endpoints, the ingress program's run time
//! per packet, and the issue #12 targets checked against the measurements.
//! Pure (rendering from a [`Table`] and the run's facts).

use std::fmt::Write as _;

use crate::{ns_topo::Placement, results::Table, run_facts::NsFacts};

/// The issue #12 limit on eBPF NodePort p50 / direct p50.
pub const P50_RATIO_LIMIT: f64 = 1.10;
/// The aim for the ingress program's run time per packet, ns.
pub const TC_NS_AIM: f64 = 1000.0;

fn ns_values(t: &Table) -> Vec<usize> {
    let has = |n: usize| {
        Placement::ALL
            .iter()
            .any(|pl| t.get(n, "direct", "ns_connect_p50_us", pl.name()).is_some())
    };
    t.ns().into_iter().filter(|n| has(*n)).collect()
}

fn intro(f: Option<&NsFacts>, out: &mut String) {
    let _ = writeln!(
        out,
        "\n## North-south: external client → NodePort\n\n\
         A client in a namespace outside the node connects to `nodeIP:nodePort` of the **last** \
         Service in kube-proxy's order (every one of the N Services is `type: NodePort`, \
         `externalTrafficPolicy: Cluster`, 10 endpoints, node ports 20000 + i). kube-proxy \
         iptables (both backends): `PREROUTING` → `KUBE-SERVICES` (N ClusterIP rules that do not \
         match) → `KUBE-NODEPORTS` (N rules, the last matches) → `KUBE-EXT-*` (masquerade mark) \
         → `KUBE-SVC-*` → `KUBE-SEP-*` DNAT, `MASQUERADE` in `KUBE-POSTROUTING`; nftables mode: \
         `@nodeport-ips` + the `service-nodeports` verdict map → `external-*` → `service-*`; \
         eBPF: the tc ingress program on the node's external interface creates the conntrack \
         NAT entry (DNAT + SNAT to the node's address), with the agent's conntrack keepalive \
         table in the node; `direct`: the client connects to the 10 endpoints round-robin \
         (forwarded by the node, no NAT, no conntrack: the floor). *local*: the endpoints are \
         pods on the node (veth); *remote*: behind a second node (one more forwarding hop over \
         a veth underlay); both masquerade (eTP=Cluster). Latency as above (client on CPU 0, \
         all servers on CPU 1); conn/s: 1 thread; UDP: one unconnected socket to the NodePort, \
         the reply must come from it. Medians of the runs; `(×r)` is the ratio to `direct` \
         with the same placement, same N, same run.\n"
    );
    if let Some(f) = f {
        let _ = writeln!(
            out,
            "- Command: `{}`\n- Started: {} UTC, took {:.0} s; N: {:?}; {} runs; datapaths: {}\n\
             - Load average (1/5/15 min) at start: {}; at end: {} — the machine (2 CPUs) was \
             shared with other work during the run.\n",
            f.command,
            f.started_utc,
            f.duration_s,
            f.services,
            f.runs,
            f.datapaths.join(", "),
            f.loadavg_start,
            f.loadavg_end,
        );
    }
}

fn errors(t: &Table, n: usize, dp: &str, pl: &str) -> f64 {
    [
        "ns_connect_errors",
        "ns_conn_per_s_errors",
        "ns_udp_rr_per_s_errors",
    ]
    .iter()
    .filter_map(|m| t.get(n, dp, m, pl).map(|a| a.median))
    .sum()
}

fn placement_table(t: &Table, pl: Placement, out: &mut String) {
    let target = pl.name();
    let _ = writeln!(
        out,
        "### Endpoints {}\n\n\
         | N | datapath | connect p50 µs | p99 µs | connects/run | conn/s | UDP req/resp per s | errors |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|",
        match pl {
            Placement::Local => "on the node (local)",
            Placement::Remote => "behind another node (remote)",
        }
    );
    for n in ns_values(t) {
        for dp in t.datapaths() {
            let Some(a) = t.get(n, dp, "ns_connect_p50_us", target) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {n} | {dp} | {} | {} | {} | {} | {} | {:.0} |",
                t.cell(n, dp, "ns_connect_p50_us", target, 1),
                t.cell(n, dp, "ns_connect_p99_us", target, 1),
                a.min_samples,
                t.cell(n, dp, "ns_conn_per_s", target, 0),
                t.cell(n, dp, "ns_udp_rr_per_s", target, 0),
                errors(t, n, dp, target),
            );
        }
    }
    out.push('\n');
}

fn tc_table(t: &Table, out: &mut String) {
    let ns: Vec<usize> = ns_values(t)
        .into_iter()
        .filter(|n| t.get(*n, "ebpf", "ns_tc_tcp_ns_per_pkt", "local").is_some())
        .collect();
    if ns.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### eBPF: time in the ingress program per packet\n\n\
         After the measured runs of each N, per placement one more latency run and one more UDP \
         run on the eBPF datapath with the kernel's BPF run-time accounting on: `run_time_ns / \
         run_cnt` of the tc program (read through its pinned tcx link `links/ingress-ext0`) \
         over that run. TCP: every connect passes SYN (new flow: lookup, backend, FIB lookup, \
         conntrack entry allocated and inserted), ACK and RST (tracked: one conntrack lookup); \
         UDP: every request after the socket's first is tracked. *extra p50* is the eBPF \
         NodePort p50 minus direct's (measured runs).\n\n\
         | N | TCP ns/packet, local / remote | UDP ns/packet, local / remote | packets (TCP, local) | extra p50 over direct, local / remote µs |\n\
         |---:|---|---|---:|---|"
    );
    let v = |n, m: &str, pl: &str| {
        t.get(n, "ebpf", m, pl)
            .map_or("—".into(), |a| format!("{:.0}", a.median))
    };
    let extra = |n, pl: &str| match (
        t.get(n, "ebpf", "ns_connect_p50_us", pl),
        t.get(n, "direct", "ns_connect_p50_us", pl),
    ) {
        (Some(e), Some(d)) => format!("{:+.2}", e.median - d.median),
        _ => "—".into(),
    };
    for n in ns {
        let pkts = t
            .get(n, "ebpf", "ns_tc_tcp_ns_per_pkt", "local")
            .map_or(0, |a| a.min_samples);
        let _ = writeln!(
            out,
            "| {n} | {} / {} | {} / {} | {pkts} | {} / {} |",
            v(n, "ns_tc_tcp_ns_per_pkt", "local"),
            v(n, "ns_tc_tcp_ns_per_pkt", "remote"),
            v(n, "ns_tc_udp_ns_per_pkt", "local"),
            v(n, "ns_tc_udp_ns_per_pkt", "remote"),
            extra(n, "local"),
            extra(n, "remote"),
        );
    }
    out.push('\n');
}

/// The issue #12 targets, one line per check, met or missed and by how much.
pub fn checks(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for n in ns_values(t) {
        for pl in Placement::ALL.map(Placement::name) {
            let m = "ns_connect_p50_us";
            if let Some(r) = t.ratio(n, "ebpf", m, pl) {
                let verdict = if r <= P50_RATIO_LIMIT {
                    "met".to_string()
                } else {
                    format!("MISSED by {:.1} points", (r - P50_RATIO_LIMIT) * 100.0)
                };
                out.push(format!(
                    "N={n}, {pl}: eBPF NodePort connect p50 / direct = {r:.3} (target ≤ {P50_RATIO_LIMIT:.2}): {verdict}"
                ));
            }
            if let (Some(e), Some(nf)) = (t.get(n, "ebpf", m, pl), t.get(n, "nftables", m, pl)) {
                let verdict = if e.median < nf.median {
                    "met"
                } else {
                    "MISSED"
                };
                out.push(format!(
                    "N={n}, {pl}: eBPF NodePort connect p50 {:.1} µs vs nftables {:.1} µs (target: below): {verdict}",
                    e.median, nf.median
                ));
            }
            for (metric, what) in [
                ("ns_tc_tcp_ns_per_pkt", "TCP"),
                ("ns_tc_udp_ns_per_pkt", "UDP"),
            ] {
                if let Some(a) = t.get(n, "ebpf", metric, pl) {
                    let verdict = if a.median < TC_NS_AIM {
                        "met"
                    } else {
                        "MISSED"
                    };
                    out.push(format!(
                        "N={n}, {pl}: ingress program per packet ({what}) {:.0} ns (aim < {TC_NS_AIM:.0} ns): {verdict}",
                        a.median
                    ));
                }
            }
        }
    }
    out
}

/// The whole section; nothing when no north-south rows were measured.
pub fn section(t: &Table, facts: Option<&NsFacts>, out: &mut String) {
    if ns_values(t).is_empty() {
        return;
    }
    intro(facts, out);
    for pl in Placement::ALL {
        placement_table(t, pl, out);
    }
    tc_table(t, out);
    let _ = writeln!(out, "### Targets (issue #12)\n");
    for line in checks(t) {
        let _ = writeln!(out, "- {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Row;

    fn row(dp: &str, metric: &str, pl: &str, run: u32, value: f64) -> Row {
        Row {
            n: 1000,
            datapath: dp.into(),
            metric: metric.into(),
            target: pl.into(),
            run,
            samples: 20_000,
            value,
        }
    }

    fn table() -> Table {
        let mut rows = Vec::new();
        for r in 0..3 {
            rows.push(row("direct", "ns_connect_p50_us", "local", r, 40.0));
            rows.push(row("ebpf", "ns_connect_p50_us", "local", r, 43.0));
            rows.push(row("nftables", "ns_connect_p50_us", "local", r, 50.0));
            rows.push(row("direct", "ns_connect_p50_us", "remote", r, 50.0));
            rows.push(row("ebpf", "ns_connect_p50_us", "remote", r, 60.0));
            rows.push(row("nftables", "ns_connect_p50_us", "remote", r, 58.0));
        }
        rows.push(row("ebpf", "ns_tc_tcp_ns_per_pkt", "local", 0, 850.0));
        rows.push(row("ebpf", "ns_tc_udp_ns_per_pkt", "local", 0, 1200.0));
        Table::new(&rows)
    }

    #[test]
    fn checks_say_met_or_missed_with_the_margin() {
        let c = checks(&table());
        let has = |s: &str| c.iter().any(|l| l.contains(s));
        assert!(
            has("N=1000, local: eBPF NodePort connect p50 / direct = 1.075 (target ≤ 1.10): met"),
            "{c:?}"
        );
        assert!(
            has(
                "N=1000, remote: eBPF NodePort connect p50 / direct = 1.200 (target ≤ 1.10): MISSED by 10.0 points"
            ),
            "{c:?}"
        );
        assert!(has(
            "local: eBPF NodePort connect p50 43.0 µs vs nftables 50.0 µs (target: below): met"
        ));
        assert!(has(
            "remote: eBPF NodePort connect p50 60.0 µs vs nftables 58.0 µs (target: below): MISSED"
        ));
        assert!(has("per packet (TCP) 850 ns (aim < 1000 ns): met"));
        assert!(has("per packet (UDP) 1200 ns (aim < 1000 ns): MISSED"));
    }

    #[test]
    fn section_has_both_placements_ratios_and_the_program_time() {
        let mut out = String::new();
        section(&table(), None, &mut out);
        for s in [
            "## North-south: external client → NodePort",
            "### Endpoints on the node (local)",
            "### Endpoints behind another node (remote)",
            "| 1000 | ebpf | 43.0 (×1.07) |",
            "| 1000 | 850 / — | 1200 / — | 20000 | +3.00 / +10.00 |",
            "### Targets (issue #12)",
        ] {
            assert!(out.contains(s), "missing {s}:\n{out}");
        }
        let mut empty = String::new();
        section(&Table::new(&[]), None, &mut empty);
        assert!(empty.is_empty());
    }
}

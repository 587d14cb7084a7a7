//! Rendering the scale benchmark's runs: medians per node count, JSON for
//! machines and a markdown fragment for `BENCHMARKS.md`. Pure, except
//! [`write_results`], which every scale benchmark uses to store its pair.

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_e2e::binaries::K8S_VERSION;
use switchyard_testkit::report::fill;

use crate::RunResult;

/// The operator RSS target from issue #7 (MiB, 1 000 nodes).
pub const RSS_TARGET_MIB: f64 = 48.0;

/// etcd's default `--max-request-bytes`: no object, the plan with its
/// status included, can be written larger.
pub const ETCD_REQUEST_LIMIT_BYTES: f64 = 1.5 * 1024.0 * 1024.0;

/// The plan status's JSON bytes per node of a summary.
fn status_bytes_per_node(s: &Summary) -> f64 {
    s.plan_status_kib * 1024.0 / s.nodes.max(1) as f64
}

/// Medians over the runs of one node count.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub nodes: usize,
    pub runs: usize,
    pub total_secs: f64,
    pub wave_secs: f64,
    pub operator_cpu_ms_per_node: f64,
    pub wall_ms_per_node: f64,
    pub requests_per_node: f64,
    pub operator_peak_rss_mib: f64,
    pub operator_idle_rss_mib: f64,
    /// Largest sampled anonymous (heap) and file-backed (binary) RSS, MiB.
    pub operator_peak_anon_mib: f64,
    pub operator_peak_file_mib: f64,
    pub apiserver_cpu_secs: f64,
    /// Final MigrationPlan status size, KiB.
    pub plan_status_kib: f64,
    /// Simulated agents' Lease renewals per second of the whole run.
    pub heartbeats_per_sec: f64,
    /// Requests per verb and resource of the median-time run, per node.
    pub requests_per_node_by_kind: BTreeMap<String, f64>,
    /// etcd's database in use before the plan and after the migration, MiB.
    pub etcd_db_mib_before: f64,
    pub etcd_db_mib_after: f64,
    /// At rest after `Succeeded`: switchyard's requests per second, and of
    /// them the operator's and the agents' Lease renewals and status writes.
    pub at_rest_requests_per_sec: f64,
    pub at_rest_operator_requests_per_min: f64,
    pub at_rest_lease_renewals_per_sec: f64,
    pub at_rest_status_writes_per_min: f64,
    /// kube-apiserver's CPU at rest, percent of one core.
    pub at_rest_apiserver_cpu_percent: f64,
}

/// `count` over a run's window at rest, per second.
fn at_rest_rate(r: &RunResult, count: u64) -> f64 {
    count as f64 / r.at_rest.secs.max(f64::EPSILON)
}

/// The median of `v` (`switchyard_testkit::stats::median`); 0 when empty.
pub fn median0(v: &[f64]) -> f64 {
    switchyard_testkit::stats::median(v).unwrap_or(0.0)
}

/// One summary per node count, in node order.
pub fn summarize(runs: &[RunResult]) -> Vec<Summary> {
    let mut by_n: BTreeMap<usize, Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        by_n.entry(r.nodes).or_default().push(r);
    }
    by_n.into_iter()
        .map(|(nodes, rs)| {
            let m =
                |f: fn(&RunResult) -> f64| median0(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let total = m(|r| r.total_secs);
            let typical = rs
                .iter()
                .min_by(|a, b| {
                    (a.total_secs - total)
                        .abs()
                        .total_cmp(&(b.total_secs - total).abs())
                })
                .copied();
            Summary {
                nodes,
                runs: rs.len(),
                total_secs: total,
                wave_secs: median0(
                    &rs.iter()
                        .flat_map(|r| r.wave_secs.iter().copied())
                        .collect::<Vec<_>>(),
                ),
                operator_cpu_ms_per_node: m(|r| r.operator_cpu_ms_per_node),
                wall_ms_per_node: m(|r| r.wall_ms_per_node),
                requests_per_node: m(|r| r.requests_per_node),
                operator_peak_rss_mib: m(|r| r.operator_peak_rss_mib),
                operator_idle_rss_mib: m(|r| r.operator_idle_rss_mib),
                operator_peak_anon_mib: m(|r| r.operator_peak_anon_mib),
                operator_peak_file_mib: m(|r| r.operator_peak_file_mib),
                apiserver_cpu_secs: m(|r| r.apiserver_cpu_secs),
                plan_status_kib: m(|r| r.plan_status_kib),
                heartbeats_per_sec: m(|r| {
                    r.responder_heartbeats as f64 / (r.setup_secs + r.total_secs).max(1.0)
                }),
                etcd_db_mib_before: m(|r| r.etcd_db_mib_before),
                etcd_db_mib_after: m(|r| r.etcd_db_mib_after),
                at_rest_requests_per_sec: m(|r| r.at_rest.requests_per_sec()),
                at_rest_operator_requests_per_min: m(|r| {
                    at_rest_rate(r, r.at_rest.operator_requests) * 60.0
                }),
                at_rest_lease_renewals_per_sec: m(|r| at_rest_rate(r, r.at_rest.lease_renewals)),
                at_rest_status_writes_per_min: m(|r| {
                    at_rest_rate(r, r.at_rest.status_writes) * 60.0
                }),
                at_rest_apiserver_cpu_percent: m(|r| {
                    r.at_rest.apiserver_cpu_secs * 100.0 / r.at_rest.secs.max(f64::EPSILON)
                }),
                requests_per_node_by_kind: typical
                    .map(|r| {
                        r.requests
                            .by_kind
                            .iter()
                            .map(|(k, v)| (k.clone(), *v as f64 / nodes as f64))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// How the operator benchmark measures, with the table of the runs.
const TEMPLATE: &str = include_str!("../templates/operator-scale.md");
/// The request mix, memory and wall time of the largest run.
const LARGEST: &str = include_str!("../templates/operator-scale-largest.md");

/// The markdown fragment: how it was measured, the table, the request mix
/// of the largest run, the RSS target verdict.
pub fn markdown(
    summaries: &[Summary],
    wave_percent: u32,
    (heartbeat_secs, at_rest_secs): (u64, u64),
    cmd: &str,
) -> String {
    let rows: String = summaries.iter().map(table_row).collect();
    let mut s = fill(
        TEMPLATE,
        &[
            ("cmd", cmd.to_string()),
            ("k8s", K8S_VERSION.trim_start_matches('v').to_string()),
            ("heartbeat_secs", heartbeat_secs.to_string()),
            ("at_rest_secs", at_rest_secs.to_string()),
            ("wave_percent", wave_percent.to_string()),
            ("rows", rows),
        ],
    );
    if let Some(big) = summaries.last() {
        s.push('\n');
        s.push_str(&largest(big, heartbeat_secs));
    }
    s
}

/// One node count's row of the table.
fn table_row(x: &Summary) -> String {
    format!(
        "| {} | {} | {:.1} s | {:.1} s | {:.2} ms | {:.0} ms | {:.1} | {:.1} MiB | {:.1} MiB | {:.1} s | {:.1} MiB | {:.1} |\n",
        x.nodes,
        x.runs,
        x.total_secs,
        x.wave_secs,
        x.operator_cpu_ms_per_node,
        x.wall_ms_per_node,
        x.requests_per_node,
        x.operator_peak_rss_mib,
        x.operator_idle_rss_mib,
        x.apiserver_cpu_secs,
        x.etcd_db_mib_after,
        x.at_rest_requests_per_sec,
    )
}

/// The RSS target verdict of the largest run.
fn rss_verdict(big: &Summary) -> String {
    if big.operator_peak_rss_mib <= RSS_TARGET_MIB {
        format!(
            "met: {:.1} MiB ≤ {RSS_TARGET_MIB:.0} MiB",
            big.operator_peak_rss_mib
        )
    } else {
        format!(
            "missed by {:.1} MiB ({:.1} MiB > {RSS_TARGET_MIB:.0} MiB)",
            big.operator_peak_rss_mib - RSS_TARGET_MIB,
            big.operator_peak_rss_mib
        )
    }
}

/// Requests of the kinds that act on the node itself (its NodeDatapath
/// applied, its Node patched, its Event), per node.
fn own_requests_per_node(big: &Summary) -> f64 {
    ["patch nodedatapaths", "patch nodes", "create events"]
        .iter()
        .filter_map(|k| big.requests_per_node_by_kind.get(*k))
        .sum()
}

/// The largest run's request mix, memory and wall time.
fn largest(big: &Summary, heartbeat_secs: u64) -> String {
    let mut kinds: Vec<_> = big.requests_per_node_by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.total_cmp(a.1));
    let kinds: String = kinds
        .into_iter()
        .map(|(k, v)| format!("| `{k}` | {v:.2} |\n"))
        .collect();
    let f1 = |v: f64| format!("{v:.1}");
    let f0 = |v: f64| format!("{v:.0}");
    fill(
        LARGEST,
        &[
            ("nodes", big.nodes.to_string()),
            ("kinds", kinds),
            ("target", f0(RSS_TARGET_MIB)),
            ("verdict", rss_verdict(big)),
            ("file_mib", f1(big.operator_peak_file_mib)),
            ("anon_mib", f1(big.operator_peak_anon_mib)),
            ("idle_mib", f1(big.operator_idle_rss_mib)),
            ("status_kib", f0(big.plan_status_kib)),
            ("status_bytes_per_node", f0(status_bytes_per_node(big))),
            (
                "etcd_limit_nodes",
                f0(ETCD_REQUEST_LIMIT_BYTES / status_bytes_per_node(big).max(1.0)),
            ),
            ("apiserver_cpu", f0(big.apiserver_cpu_secs)),
            ("total", f0(big.total_secs)),
            (
                "operator_cpu",
                f0(big.operator_cpu_ms_per_node * big.nodes as f64 / 1000.0),
            ),
            ("heartbeat_secs", heartbeat_secs.to_string()),
            ("heartbeats_per_sec", f0(big.heartbeats_per_sec)),
            ("requests_per_node", f1(big.requests_per_node)),
            ("own", f1(own_requests_per_node(big))),
            ("etcd_before", f1(big.etcd_db_mib_before)),
            ("etcd_after", f1(big.etcd_db_mib_after)),
            ("rest_rps", f1(big.at_rest_requests_per_sec)),
            ("rest_hour", f0(big.at_rest_requests_per_sec * 3600.0)),
            ("rest_renewals", f1(big.at_rest_lease_renewals_per_sec)),
            ("rest_operator", f1(big.at_rest_operator_requests_per_min)),
            ("rest_status", f1(big.at_rest_status_writes_per_min)),
            ("rest_cpu", f1(big.at_rest_apiserver_cpu_percent)),
        ],
    )
}

/// Writes `<out>/<stem>.json` (pretty) and `<out>/<stem>.md`, creating
/// `out`; errors name the file.
pub fn write_results(
    out: &std::path::Path,
    stem: &str,
    json: &serde_json::Value,
    md: &str,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let text = serde_json::to_string_pretty(json).map_err(|e| e.to_string())?;
    for (ext, body) in [("json", text.as_str()), ("md", md)] {
        let p = out.join(format!("{stem}.{ext}"));
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::RequestCounts;

    fn run(nodes: usize, total: f64, rss: f64) -> RunResult {
        RunResult {
            nodes,
            wave_percent: 10,
            waves: 10,
            setup_secs: 1.0,
            total_secs: total,
            wave_secs: vec![total / 10.0; 10],
            operator_cpu_secs: 1.0,
            operator_cpu_total_secs: 2.0,
            operator_cpu_ms_per_node: 1000.0 / nodes as f64,
            wall_ms_per_node: total * 1000.0 / nodes as f64,
            operator_peak_rss_mib: rss,
            operator_idle_rss_mib: rss / 2.0,
            operator_peak_anon_mib: rss * 0.75,
            operator_peak_file_mib: rss * 0.25,
            apiserver_cpu_secs: 3.0,
            requests: RequestCounts {
                total: nodes as u64 * 10,
                by_kind: [("patch nodes".to_string(), nodes as u64 * 2)].into(),
            },
            requests_per_node: 10.0,
            startup_requests: 5,
            plan_status_kib: 800.0,
            responder_answers: 0,
            responder_heartbeats: 0,
            responder_pod_writes: 0,
            responder_errors: 0,
            etcd_db_mib_before: 4.0,
            etcd_db_mib_after: 9.0,
            at_rest: crate::at_rest::AtRest {
                secs: 60.0,
                operator_requests: 6,
                operator_by_kind: BTreeMap::new(),
                lease_renewals: nodes as u64 * 6,
                status_writes: 0,
                pod_writes: 0,
                apiserver_cpu_secs: 6.0,
            },
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median0(&[]), 0.0);
        assert_eq!(median0(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median0(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn summaries_per_node_count_and_the_rss_verdict() {
        let runs = [
            run(1000, 30.0, 50.0),
            run(100, 5.0, 20.0),
            run(1000, 40.0, 52.0),
        ];
        let s = summarize(&runs);
        assert_eq!(
            s.iter().map(|x| x.nodes).collect::<Vec<_>>(),
            vec![100, 1000]
        );
        assert_eq!(s[1].runs, 2);
        assert_eq!(s[1].total_secs, 35.0);
        assert_eq!(s[1].requests_per_node_by_kind["patch nodes"], 2.0);
        let md = markdown(&s, 10, (10, 60), "make bench-operator");
        assert!(md.contains("| 1000 | 2 | 35.0 s |"));
        // 6 000 renewals and 6 operator requests in 60 s.
        assert!(md.contains("| 9.0 MiB | 100.1 |\n"), "{md}");
        assert!(
            md.contains("100.1 requests a second (360360 an hour)"),
            "{md}"
        );
        assert!(
            md.contains("0.0 NodeDatapath status writes a minute"),
            "{md}"
        );
        assert!(md.contains("missed by 3.0 MiB"), "{md}");
        // 800 KiB over 1 000 nodes: 819 bytes a node, 1 920 nodes to 1.5 MiB.
        assert!(
            md.contains("800 KiB of JSON at 1000 nodes, 819 bytes a node"),
            "{md}"
        );
        assert!(md.contains("at about 1920 nodes"), "{md}");
    }
}

//! Rendering the scale benchmark's runs: medians per node count, JSON for
//! machines and a markdown fragment for `BENCHMARKS.md`. Pure, except
//! [`write_results`], which every scale benchmark uses to store its pair.

use std::collections::BTreeMap;

use serde::Serialize;

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
    /// Simulated agents' heartbeat writes per second of the whole run.
    pub heartbeats_per_sec: f64,
    /// Requests per verb and resource of the median-time run, per node.
    pub requests_per_node_by_kind: BTreeMap<String, f64>,
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

/// The markdown fragment: how it was measured, the table, the request mix
/// of the largest run, the RSS target verdict.
pub fn markdown(
    summaries: &[Summary],
    wave_percent: u32,
    heartbeat_secs: u64,
    cmd: &str,
) -> String {
    let mut s = String::new();
    s.push_str("## Operator at scale (simulated nodes)\n\n");
    s.push_str(&format!(
        "Measured by `{cmd}`: a real kube-apiserver, etcd, kube-controller-manager and kube-scheduler \
         (v{k8s}), N Node objects, kube-proxy's DaemonSet (iptables mode) whose pods the real DaemonSet \
         controller and scheduler place on them; a fake responder plays every node's agent (answers each \
         NodeDatapath spec change at once with a healthy status, heartbeats every {heartbeat_secs} s like the \
         agent) and kubelet (kube-proxy pods Ready, graceful deletions finished). The real release \
         `switchyard-operator` runs out of cluster with its own ServiceAccount token and `config/rbac` \
         permissions; one MigrationPlan, no canary, waves of {wave_percent}%, applied → `Succeeded`. \
         Operator CPU (utime+stime) and RSS from `/proc/<pid>`; API requests counted by audit ID from the \
         API server's audit log (Metadata level, the operator's user only) between apply and `Succeeded`. \
         Shared 2-core VM: the API server, etcd, controllers and responder run on the same cores.\n\n",
        k8s = switchyard_e2e::binaries::K8S_VERSION.trim_start_matches('v'),
    ));
    s.push_str("| nodes | runs | total | per wave | operator CPU / node | wall / node | API requests / node | operator peak RSS | operator RSS before apply | kube-apiserver CPU |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for x in summaries {
        s.push_str(&format!(
            "| {} | {} | {:.1} s | {:.1} s | {:.2} ms | {:.0} ms | {:.1} | {:.1} MiB | {:.1} MiB | {:.1} s |\n",
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
        ));
    }
    s.push_str("\nMedians over the runs; \"per wave\" is the median over all waves of all runs (first node leaves Pending → last node Done, as a watch on the plan sees it).\n");
    if let Some(big) = summaries.last() {
        s.push_str(&format!(
            "\nThe operator's requests per node at {} nodes, by verb and resource:\n\n| request | per node |\n|---|---:|\n",
            big.nodes
        ));
        let mut kinds: Vec<_> = big.requests_per_node_by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.total_cmp(a.1));
        for (k, v) in kinds {
            s.push_str(&format!("| `{k}` | {v:.2} |\n"));
        }
        let verdict = if big.operator_peak_rss_mib <= RSS_TARGET_MIB {
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
        };
        s.push_str(&format!(
            "\nTarget operator RSS ≤ {RSS_TARGET_MIB:.0} MiB with 1 000 nodes: at {} nodes {verdict}. \
             Where it is, sampled from `/proc/<pid>/status` every 250 ms during the migration: at most \
             {:.1} MiB of file pages (the binary's code and read-only data, `RssFile`) and {:.1} MiB of \
             anonymous memory (malloc's heap, `RssAnon`); before the plan is applied the operator holds \
             {:.1} MiB (its caches of {n} Nodes and NodeDatapaths, without status, annotations or managed \
             fields). The plan's status (every node with its wave, step, start and finish; a step history \
             only while a node is in flight or failed) is {:.0} KiB of JSON at {n} nodes, {:.0} bytes a \
             node: etcd's default 1.5 MiB request limit would be reached at about {:.0} nodes. Profiled once at 300 nodes with a counting global allocator (a scratch build): the \
             live heap never exceeded 12 MiB and a reconcile briefly took it to 21 MiB (8 MiB of that was \
             one page of 250 kube-proxy Pods decoded whole), yet glibc's malloc held 52 MiB (62 MiB RSS): \
             what a reconcile frees stays in the arena of the worker thread that allocated it. The operator \
             now returns freed pages after every reconcile and once its caches are filled (`malloc_trim`), \
             decodes kube-proxy's pods straight into the fields it reads, keeps no managed fields in its \
             plan cache either, discards the status apply's answer (the whole plan again) unread, and runs \
             with `MALLOC_ARENA_MAX=2` (its Deployment sets it; so does this benchmark).\n",
            big.nodes,
            big.operator_peak_file_mib,
            big.operator_peak_anon_mib,
            big.operator_idle_rss_mib,
            big.plan_status_kib,
            status_bytes_per_node(big),
            ETCD_REQUEST_LIMIT_BYTES / status_bytes_per_node(big).max(1.0),
            n = big.nodes,
        ));
        let per_node_kinds = [
            "get nodedatapaths",
            "patch nodedatapaths",
            "patch nodes",
            "create events",
        ];
        let own: f64 = per_node_kinds
            .iter()
            .filter_map(|k| big.requests_per_node_by_kind.get(*k))
            .sum();
        s.push_str(&format!(
            "\nWall time at {n} nodes is bound by the API server on the shared cores, not by the operator: \
             kube-apiserver used {:.0} s of CPU during the {:.0} s migration against the operator's {:.0} s; \
             the simulated agents' {heartbeat_secs}-second heartbeats alone are {:.0} NodeDatapath status writes per second. \
             Of the operator's {:.1} requests per node, {own:.1} act on that node (NodeDatapath read + apply, \
             Node patches, Events); the rest is the snapshot each reconcile reads, shared by the whole wave.\n",
            big.apiserver_cpu_secs,
            big.total_secs,
            big.operator_cpu_ms_per_node * big.nodes as f64 / 1000.0,
            big.heartbeats_per_sec,
            big.requests_per_node,
            n = big.nodes,
        ));
    }
    s
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
        let md = markdown(&s, 10, 10, "make bench-operator");
        assert!(md.contains("| 1000 | 2 | 35.0 s |"));
        assert!(md.contains("missed by 3.0 MiB"), "{md}");
        // 800 KiB over 1 000 nodes: 819 bytes a node, 1 920 nodes to 1.5 MiB.
        assert!(
            md.contains("800 KiB of JSON at 1000 nodes, 819 bytes a node"),
            "{md}"
        );
        assert!(md.contains("at about 1920 nodes"), "{md}");
    }
}

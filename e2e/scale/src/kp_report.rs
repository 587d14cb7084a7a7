//! Rendering the kube-proxy programming benchmark: the markdown section for
//! `BENCHMARKS.md`, compared with the eBPF agent's figures read from the
//! datapath benchmark's rows (same machine). Pure.

use std::collections::BTreeMap;

use crate::kp_parse::Histogram;
use crate::kube_proxy::{CONCURRENCY, ENDPOINTS, KpResult};
use crate::report::median0;
use switchyard_bench::report::Row;
use switchyard_e2e::binaries::K8S_VERSION;
use switchyard_testkit::report::fill;

/// The all-syncs histogram kube-proxy 1.34 exports.
pub const SYNC: &str = "kubeproxy_sync_proxy_rules_duration_seconds";

/// eBPF agent figures per N from the datapath benchmark's rows (its
/// `raw.csv`, read with its own parser): `metric → value` for the `ebpf`
/// rows.
pub fn agent_figures(rows: &[Row]) -> BTreeMap<usize, BTreeMap<String, f64>> {
    let mut out: BTreeMap<usize, BTreeMap<String, f64>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.datapath == "ebpf") {
        out.entry(r.n)
            .or_default()
            .insert(r.metric.clone(), r.value);
    }
    out
}

fn hist(h: &BTreeMap<String, Histogram>) -> String {
    let mut parts = Vec::new();
    for (name, x) in h {
        let short = name
            .trim_start_matches("kubeproxy_sync_")
            .trim_end_matches("_duration_seconds");
        parts.push(format!(
            "`{short}` {:.0} × {:.3} s (Σ {:.2} s)",
            x.count,
            x.mean(),
            x.sum
        ));
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join("; ")
    }
}

/// `earlier` runs (from a previous results file) with `new` ones replacing
/// those of the same mode and N; ordered by N, then mode.
pub fn merge(earlier: Vec<KpResult>, new: &[KpResult]) -> Vec<KpResult> {
    let mut all: Vec<KpResult> = earlier
        .into_iter()
        .filter(|e| {
            !new.iter()
                .any(|n| n.mode == e.mode && n.services == e.services)
        })
        .chain(new.iter().cloned())
        .collect();
    all.sort_by(|a, b| (a.services, &a.mode).cmp(&(b.services, &b.mode)));
    all
}

/// The full resync cell: its time, or how long it had not finished.
fn resync(r: &KpResult) -> String {
    if r.resync_unfinished {
        format!("> {:.0} s (unfinished)", r.resync_secs)
    } else {
        format!("{:.2} s", r.resync_secs)
    }
}

/// How the kube-proxy benchmark measures, with its three tables.
const TEMPLATE: &str = include_str!("../templates/kube-proxy-sync.md");

/// The markdown section.
pub fn markdown(
    results: &[KpResult],
    agent: &BTreeMap<usize, BTreeMap<String, f64>>,
    cmd: &str,
) -> String {
    fill(
        TEMPLATE,
        &[
            ("cmd", cmd.to_string()),
            ("k8s", K8S_VERSION.trim_start_matches('v').to_string()),
            ("endpoints", ENDPOINTS.to_string()),
            ("concurrency", CONCURRENCY.to_string()),
            ("sync", SYNC.to_string()),
            ("results", results.iter().map(result_row).collect()),
            ("syncs", results.iter().map(sync_row).collect()),
            (
                "agent",
                results.iter().map(|r| agent_row(r, agent)).collect(),
            ),
        ],
    )
}

/// A run's row of the main table.
fn result_row(r: &KpResult) -> String {
    format!(
        "| {} | {} | {:.1} s | {:.1} s | {:.1} s | {} | {:.1} s | {:.3} s ({}) | {:.1} / {:.1} MiB | {:.2} s ({}) |\n",
        r.mode,
        r.services,
        r.create_secs,
        r.programmed_secs,
        r.create_cpu_secs,
        resync(r),
        r.resync_cpu_secs,
        median0(&r.incremental_secs),
        r.incremental_secs.len(),
        r.peak_rss_mib,
        r.resync_peak_rss_mib,
        r.rules_read_secs,
        r.rules_lines,
    )
}

/// A run's row of kube-proxy's sync metrics.
fn sync_row(r: &KpResult) -> String {
    format!(
        "| {} | {} | {} | {} | {} |\n",
        r.mode,
        r.services,
        hist(&r.create_syncs),
        hist(&r.resync_syncs),
        hist(&r.incremental_syncs)
    )
}

/// A run's row against the eBPF agent's figures at the same N.
fn agent_row(r: &KpResult, agent: &BTreeMap<usize, BTreeMap<String, f64>>) -> String {
    let a = agent.get(&r.services);
    let fig = |k: &str| a.and_then(|a| a.get(k)).copied();
    format!(
        "| {} | {} | {} | {:.3} s | {} | {:.3} s | {} |\n",
        r.mode,
        r.services,
        resync(r),
        r.create_syncs.get(SYNC).copied().unwrap_or_default().mean(),
        fig("agent_full_sync_s").map_or("—".into(), |v| format!("{v:.3} s")),
        median0(&r.incremental_secs),
        fig("change_event_p50_us").map_or("—".into(), |v| format!("{v:.0} µs")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_bench::report::parse_csv;

    #[test]
    fn agent_rows_by_n() {
        let csv = "n,datapath,metric,target,run,samples,value\n1000,ebpf,agent_full_sync_s,-,0,1,0.028\n1000,iptables-nft,program_s,-,0,1,0.6\n1000,ebpf,change_event_p50_us,-,0,300,30.5\nbad\n";
        let a = agent_figures(&parse_csv(csv));
        assert_eq!(a[&1000]["agent_full_sync_s"], 0.028);
        assert_eq!(a[&1000]["change_event_p50_us"], 30.5);
        assert_eq!(a[&1000].len(), 2);
    }

    #[test]
    fn merge_replaces_same_mode_and_n() {
        let mk = |mode: &str, n: usize, t: f64| KpResult {
            programmed_secs: t,
            ..result(mode, n)
        };
        let m = merge(
            vec![mk("nftables", 1000, 1.0), mk("iptables", 1000, 2.0)],
            &[mk("nftables", 10000, 3.0), mk("nftables", 1000, 4.0)],
        );
        let got: Vec<_> = m
            .iter()
            .map(|r| (r.mode.as_str(), r.services, r.programmed_secs))
            .collect();
        assert_eq!(
            got,
            vec![
                ("iptables", 1000, 2.0),
                ("nftables", 1000, 4.0),
                ("nftables", 10000, 3.0)
            ]
        );
    }

    fn result(mode: &str, services: usize) -> KpResult {
        let syncs: BTreeMap<String, Histogram> = [(
            SYNC.to_string(),
            Histogram {
                count: 4.0,
                sum: 2.0,
            },
        )]
        .into();
        KpResult {
            mode: mode.into(),
            services,
            create_secs: 10.0,
            programmed_secs: 12.0,
            create_syncs: syncs.clone(),
            create_cpu_secs: 3.0,
            resync_secs: 1.5,
            resync_unfinished: false,
            resync_syncs: syncs.clone(),
            resync_cpu_secs: 0.9,
            peak_rss_mib: 50.0,
            resync_peak_rss_mib: 40.0,
            incremental_secs: vec![1.2, 0.8, 1.0],
            incremental_syncs: BTreeMap::new(),
            rules_read_secs: 0.1,
            rules_lines: 5000,
        }
    }

    #[test]
    fn markdown_tables() {
        let r = result("nftables", 1000);
        let a = agent_figures(&parse_csv("h\n1000,ebpf,agent_full_sync_s,-,0,1,0.028\n"));
        let md = markdown(&[r], &a, "make bench-kube-proxy");
        assert!(md.starts_with("## kube-proxy's own programming time\n"));
        assert!(
            md.contains(
                "| nftables | 1000 | 10.0 s | 12.0 s | 3.0 s | 1.50 s | 0.9 s | 1.000 s (3) |"
            ),
            "{md}"
        );
        assert!(md.contains("`proxy_rules` 4 × 0.500 s (Σ 2.00 s)"), "{md}");
        assert!(md.contains("| 0.028 s | 1.000 s | — |"), "{md}");
    }

    #[test]
    fn an_unfinished_resync_shows_as_a_lower_bound() {
        let r = KpResult {
            resync_unfinished: true,
            resync_secs: 900.4,
            ..result("iptables", 10000)
        };
        let md = markdown(&[r], &BTreeMap::new(), "make bench-kube-proxy");
        assert!(
            md.contains("| iptables | 10000 | 10.0 s | 12.0 s | 3.0 s | > 900 s (unfinished) |"),
            "{md}"
        );
        assert!(
            md.contains("| iptables | 10000 | > 900 s (unfinished) | 0.500 s |"),
            "{md}"
        );
        // Results written before the field existed read as finished.
        let old = serde_json::to_value(result("nftables", 1000)).map(|mut v| {
            v.as_object_mut().map(|o| o.remove("resync_unfinished"));
            v
        });
        let back: KpResult = serde_json::from_value(old.expect("json")).expect("old result");
        assert!(!back.resync_unfinished);
    }
}

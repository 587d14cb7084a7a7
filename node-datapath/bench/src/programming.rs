//! The eBPF programming measurements: the full sync phase by phase
//! (`switchyard-bench sync`, batched and per-op writes) and the agent's own
//! path (`switchyard-bench agent`: reflector stores, incremental
//! single-endpoint changes, resident memory), each in a fresh child
//! process on the topology's pinned maps. `run --only programming` runs
//! just these and replaces their rows in an existing raw.csv.

use serde::de::DeserializeOwned;
use switchyard_lb::{IdAllocator, LbMaps, Options, desired_state, diff};
use switchyard_node_datapath::{Datapath, DatapathConfig, PinnedLbMaps};
use tracing::info;

use crate::{
    BenchError,
    agent_path::AgentResult,
    ebpf::SyncResult,
    model::Scenario,
    results::{Row, parse_csv, replace_rows},
    runner::{RunArgs, self_exe},
    sink::{Sink, write_csv},
    topo::{self, Topo},
};

/// The rows [`program_ebpf`] writes (all with target `-`); `--only
/// programming` replaces exactly these in raw.csv.
pub const METRICS: [&str; 19] = [
    "ebpf_start_s",
    "program_s",
    "ebpf_snapshot_s",
    "ebpf_desired_s",
    "ebpf_plan_s",
    "ebpf_apply_s",
    "ebpf_apply_per_op_s",
    "agent_rss_peak_mib",
    "agent_rss_mib",
    "agent_rss_base_mib",
    "agent_rss_stores_mib",
    "agent_full_sync_s",
    "change_sync_p50_us",
    "change_sync_p99_us",
    "change_event_p50_us",
    "change_event_p99_us",
    "change_ops",
    "noop_sync_us",
    "agent_sync_rss_peak_mib",
];

fn child<T: DeserializeOwned>(what: &str, args: &[&str]) -> Result<T, BenchError> {
    let out = topo::run(&self_exe()?.to_string_lossy(), args)?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| BenchError::BadOutput {
        what: what.into(),
        detail: format!("{e}: {line:?}"),
    })
}

/// Starts the datapath in `topo`, programs `sc` (the `sync` child), then
/// runs the agent path (the `agent` child, which empties the maps first
/// and leaves them programmed); pushes every value. Returns the datapath
/// handle to keep alive.
pub fn program_ebpf(
    topo: &Topo,
    sc: &Scenario,
    changes: usize,
    push: &mut dyn FnMut(Row) -> Result<(), BenchError>,
) -> Result<Datapath, BenchError> {
    let n = sc.services;
    let row = |metric: &str, samples: u64, value: f64| Row {
        n,
        datapath: "ebpf".into(),
        metric: metric.into(),
        target: "-".into(),
        run: 0,
        samples,
        value,
    };
    let config = DatapathConfig {
        bpffs_dir: topo.bpffs_dir.clone(),
        cgroup: topo.cgroup.clone(),
        ..DatapathConfig::new(&topo.cgroup)
    };
    let dp = Datapath::start(&config)?;
    push(row("ebpf_start_s", 0, dp.report().elapsed.as_secs_f64()))?;
    let bpffs = topo.bpffs_dir.to_string_lossy().to_string();
    let n_arg = n.to_string();
    let r: SyncResult = child("sync", &["sync", "--bpffs-dir", &bpffs, "-n", &n_arg])?;
    let ops = r.ops as u64;
    push(row("program_s", ops, r.total_s))?;
    push(row("ebpf_snapshot_s", ops, r.snapshot_s))?;
    push(row("ebpf_desired_s", ops, r.desired_s))?;
    push(row("ebpf_plan_s", ops, r.plan_s))?;
    push(row("ebpf_apply_s", ops, r.apply_s))?;
    push(row("ebpf_apply_per_op_s", ops, r.apply_per_op_s))?;
    push(row(
        "agent_sync_rss_peak_mib",
        ops,
        r.rss_peak_kib as f64 / 1024.0,
    ))?;
    let changes_arg = changes.to_string();
    let a: AgentResult = child(
        "agent",
        &[
            "agent",
            "--bpffs-dir",
            &bpffs,
            "-n",
            &n_arg,
            "--changes",
            &changes_arg,
        ],
    )?;
    let c = a.changes as u64;
    push(row("agent_full_sync_s", ops, a.full_sync_s))?;
    push(row("change_sync_p50_us", c, a.change_sync_p50_us))?;
    push(row("change_sync_p99_us", c, a.change_sync_p99_us))?;
    push(row("change_event_p50_us", c, a.change_event_p50_us))?;
    push(row("change_event_p99_us", c, a.change_event_p99_us))?;
    push(row("change_ops", c, a.change_ops))?;
    push(row("noop_sync_us", 50, a.noop_sync_p50_us))?;
    push(row("agent_rss_base_mib", 0, a.rss_base_kib as f64 / 1024.0))?;
    push(row(
        "agent_rss_stores_mib",
        0,
        a.rss_stores_kib as f64 / 1024.0,
    ))?;
    push(row("agent_rss_mib", 0, a.rss_kib as f64 / 1024.0))?;
    push(row("agent_rss_peak_mib", 0, a.rss_peak_kib as f64 / 1024.0))?;
    verify_maps(&topo.bpffs_dir, sc)?;
    Ok(dp)
}

/// The maps hold exactly the scenario's desired state (what the traffic
/// measurements expect), or the run stops here with what differs.
pub(crate) fn verify_maps(bpffs_dir: &std::path::Path, sc: &Scenario) -> Result<(), BenchError> {
    let snapshot = PinnedLbMaps::open(bpffs_dir)?.snapshot()?;
    let (services, slices) = crate::ebpf::objects(sc);
    let node = crate::ebpf::node_context_for(sc);
    let want = desired_state(&services, &slices, &node, &Options::default());
    let mut ids = IdAllocator::from_snapshot(&snapshot);
    let ops = diff(&snapshot, &want.state, &mut ids)?;
    if ops.is_empty() {
        return Ok(());
    }
    Err(BenchError::BadOutput {
        what: format!("the eBPF maps after programming N={}", sc.services),
        detail: format!(
            "{} operations away from the scenario's state, first: {:?}",
            ops.len(),
            ops.first()
        ),
    })
}

/// `run --only programming`: [`program_ebpf`] for every N in a fresh
/// topology, rows to `programming.csv`, then merged into `raw.csv`
/// (replacing that N's programming rows of the eBPF datapath).
pub fn run(args: &RunArgs, scenarios: &[Scenario]) -> Result<(), BenchError> {
    let mut sink = Sink::create(&args.out, "programming.csv")?;
    let mut rows = Vec::new();
    for sc in scenarios {
        let topo = Topo::new()?;
        let dp = program_ebpf(&topo, sc, args.changes, &mut |r| {
            rows.push(r.clone());
            sink.push(r)
        })?;
        drop(dp);
        drop(topo);
        info!(n = sc.services, "programming measured");
    }
    let raw = args.out.join("raw.csv");
    let old = std::fs::read_to_string(&raw).unwrap_or_default();
    let merged = merge(&parse_csv(&old), &rows);
    write_csv(&raw, &merged)?;
    info!(csv = %raw.display(), "programming rows merged");
    Ok(())
}

/// `old` without the eBPF programming rows of the N values in `new`, then
/// `new`.
pub fn merge(old: &[Row], new: &[Row]) -> Vec<Row> {
    replace_rows(old, new, |r| {
        r.datapath == "ebpf" && r.target == "-" && METRICS.contains(&r.metric.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, dp: &str, metric: &str, target: &str, value: f64) -> Row {
        Row {
            n,
            datapath: dp.into(),
            metric: metric.into(),
            target: target.into(),
            run: 0,
            samples: 1,
            value,
        }
    }

    #[test]
    fn merge_replaces_only_the_programming_rows_of_measured_n() {
        let old = vec![
            row(1, "ebpf", "program_s", "-", 1.0),
            row(1, "ebpf", "connect_p50_us", "last", 30.0),
            row(1, "nftables", "program_s", "-", 2.0),
            row(2, "ebpf", "program_s", "-", 3.0),
        ];
        let new = vec![row(1, "ebpf", "program_s", "-", 0.5)];
        let got = merge(&old, &new);
        assert_eq!(
            got,
            vec![
                row(1, "ebpf", "connect_p50_us", "last", 30.0),
                row(1, "nftables", "program_s", "-", 2.0),
                row(2, "ebpf", "program_s", "-", 3.0),
                row(1, "ebpf", "program_s", "-", 0.5),
            ]
        );
    }
}

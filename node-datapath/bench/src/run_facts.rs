//! The facts of one benchmark run (command, machine, tool versions,
//! options, load average) that `BENCHMARKS.md` states next to the figures,
//! collected at the start and written as `facts.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{BenchError, runner::RunArgs, topo};

/// Facts about the machine and the run, written next to the CSV.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Facts {
    /// The command line.
    pub command: String,
    /// Start time (UTC).
    pub started_utc: String,
    /// Wall time of the whole run.
    pub duration_s: f64,
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// `iptables-nft --version`.
    pub iptables_nft: String,
    /// `iptables-legacy --version`.
    pub iptables_legacy: String,
    /// `nft --version`.
    pub nft: String,
    /// The N list.
    pub services: Vec<usize>,
    /// The datapaths measured.
    pub datapaths: Vec<String>,
    /// Runs per point.
    pub runs: u32,
    /// Requested connects per latency run.
    pub connects: usize,
    /// Minimum connects per latency run.
    pub min_connects: usize,
    /// Latency time budget per run (ms).
    pub latency_budget_ms: u64,
    /// Warm-up connects.
    pub warmup: usize,
    /// Rate run duration (ms).
    pub rate_ms: u64,
    /// Largest N with kube-proxy's exact `--noflush` restore timed.
    pub noflush_max: usize,
    /// Services per `nft -f` transaction for the measured node.
    pub nft_chunk: usize,
    /// Largest N with kube-proxy's single-transaction `nft -f` timed.
    pub nft_single_max: usize,
    /// `/proc/loadavg` (1, 5, 15 min) at the start and at the end of the
    /// run: other work on the machine shows here.
    #[serde(default)]
    pub loadavg_start: String,
    /// See [`Facts::loadavg_start`].
    #[serde(default)]
    pub loadavg_end: String,
    /// The north-south part's own facts, when it ran (in this run or
    /// alone, `run --only north-south`).
    #[serde(default)]
    pub north_south: Option<NsFacts>,
    /// The flow events part's facts, when it ran (`runs` is its
    /// `--flow-runs`).
    #[serde(default)]
    pub flow_events: Option<NsFacts>,
}

/// Facts of a part that also runs alone (north-south, flow events).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NsFacts {
    /// The command line.
    pub command: String,
    /// Start time (UTC).
    pub started_utc: String,
    /// Wall time of the part.
    pub duration_s: f64,
    /// The N list.
    pub services: Vec<usize>,
    /// The datapaths measured.
    pub datapaths: Vec<String>,
    /// Runs per point.
    pub runs: u32,
    /// Requested connects per latency run.
    pub connects: usize,
    /// Rate run duration (ms).
    pub rate_ms: u64,
    /// `/proc/loadavg` at the start of the part.
    pub loadavg_start: String,
    /// `/proc/loadavg` at its end.
    pub loadavg_end: String,
}

fn version(cmd: &str, args: &[&str]) -> String {
    topo::run(cmd, args)
        .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_else(|e| format!("unavailable ({e})"))
}

/// The facts known at the start of a run (`duration_s` and `loadavg_end`
/// are filled in at its end).
pub(crate) fn collect(args: &RunArgs, ns: &[usize], datapaths: &[String]) -> Facts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    Facts {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc: version("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        duration_s: 0.0,
        kernel: version("uname", &["-r"]),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
        iptables_nft: version("iptables-nft", &["--version"]),
        iptables_legacy: version("iptables-legacy", &["--version"]),
        nft: version("nft", &["--version"]),
        services: ns.to_vec(),
        datapaths: datapaths.to_vec(),
        runs: args.runs,
        connects: args.connects,
        min_connects: args.min_connects,
        latency_budget_ms: args.latency_budget_ms,
        warmup: args.warmup,
        rate_ms: args.rate_ms,
        noflush_max: args.noflush_max,
        nft_chunk: args.nft_chunk,
        nft_single_max: args.nft_single_max,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        north_south: None,
        flow_events: None,
    }
}

/// The north-south part's facts known at its start.
pub(crate) fn collect_ns(args: &RunArgs, ns: &[usize], datapaths: &[String]) -> NsFacts {
    NsFacts {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_utc: version("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        duration_s: 0.0,
        services: ns.to_vec(),
        datapaths: datapaths.to_vec(),
        runs: args.runs,
        connects: args.connects,
        rate_ms: args.rate_ms,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    }
}

/// Sets the north-south facts in the facts file at `path` (created with
/// only those if missing).
pub(crate) fn set_north_south(path: &Path, ns: NsFacts) -> Result<(), BenchError> {
    update(path, |f| f.north_south = Some(ns))
}

/// Changes the facts file at `path` with `change` (created with only
/// that change if missing).
pub(crate) fn update(path: &Path, change: impl FnOnce(&mut Facts)) -> Result<(), BenchError> {
    let mut f: Facts = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    change(&mut f);
    write(path, &f)
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Writes `f` as pretty JSON to `path`.
pub(crate) fn write(path: &Path, f: &Facts) -> Result<(), BenchError> {
    let s = serde_json::to_string_pretty(f).map_err(|e| BenchError::BadOutput {
        what: "facts".into(),
        detail: e.to_string(),
    })?;
    std::fs::write(path, s).map_err(|e| BenchError::io(format!("write {}", path.display()), e))
}

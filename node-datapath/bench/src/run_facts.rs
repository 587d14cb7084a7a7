//! The facts of one benchmark run (command, machine, tool versions,
//! options, load average) that `BENCHMARKS.md` states next to the figures,
//! collected at the start and written as `facts.json`.

use std::path::Path;

use crate::{BenchError, report::Facts, runner::RunArgs, topo};

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
    }
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

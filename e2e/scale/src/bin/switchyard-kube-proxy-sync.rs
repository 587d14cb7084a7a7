//! `make bench-kube-proxy`: the real kube-proxy programming N Services in
//! each mode (see `switchyard_scale_bench::kube_proxy`); writes
//! `kube-proxy-sync.json` and `kube-proxy-sync.md` into `--out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard_e2e::ProxyMode;
use switchyard_scale_bench::{kp_report, kube_proxy};

#[derive(Debug, Parser)]
struct Args {
    /// Service counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    /// kube-proxy modes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "iptables,nftables")]
    modes: Vec<ProxyMode>,
    /// Single-EndpointSlice updates per mode and N.
    #[arg(long, default_value_t = 5)]
    updates: usize,
    /// Where the results go (and where the eBPF agent's figures are read from `raw.csv`).
    #[arg(long, default_value = "node-datapath/bench/results")]
    out: PathBuf,
    /// Longest wait for one step (rules programmed, the old process gone,
    /// the resync done), in seconds; default 300 + N/10.
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Only rewrite `kube-proxy-sync.md` from `kube-proxy-sync.json`.
    #[arg(long)]
    report_only: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    switchyard_e2e::init_stderr_logging("info,kube=warn");
    match switchyard_e2e::until_interrupted(run(Args::parse())).await {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("switchyard-kube-proxy-sync: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("switchyard-kube-proxy-sync: interrupted; the lab cluster was torn down");
            ExitCode::from(130)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    // Runs of other modes and N in an earlier results file are kept.
    let json_path = args.out.join("kube-proxy-sync.json");
    let earlier: Vec<kube_proxy::KpResult> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| serde_json::from_value(v["runs"].clone()).ok())
        .unwrap_or_default();
    if args.report_only {
        return write_results(&args, earlier);
    }
    let mut results = Vec::new();
    for &n in &args.services {
        for &mode in &args.modes {
            eprintln!("== {} mode, {n} Services", mode.as_str());
            let timeout = args
                .timeout_s
                .map_or_else(|| kube_proxy::default_timeout(n), Duration::from_secs);
            let r = kube_proxy::run_once(mode, n, args.updates, timeout)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "   programmed {:.1} s, full resync {:.2} s, slice updates {:?}",
                r.programmed_secs, r.resync_secs, r.incremental_secs
            );
            results.push(r);
            // Written after every run: a later failure keeps what was measured.
            write_results(&args, kp_report::merge(earlier.clone(), &results))?;
        }
    }
    Ok(())
}

fn write_results(args: &Args, runs: Vec<kube_proxy::KpResult>) -> Result<(), String> {
    let csv = std::fs::read_to_string(args.out.join("raw.csv")).unwrap_or_default();
    let agent = kp_report::agent_figures(&switchyard_bench::report::parse_csv(&csv));
    // The (mode, N) pairs measured, as invocations of this command.
    let pairs: Vec<String> = runs
        .iter()
        .map(|r| format!("--modes {} --services {}", r.mode, r.services))
        .collect();
    let cmd = format!(
        "make bench-kube-proxy (switchyard-kube-proxy-sync --updates {} with {})",
        args.updates,
        pairs.join("; ")
    );
    let md = kp_report::markdown(&runs, &agent, &cmd);
    let json = serde_json::json!({"command": cmd, "runs": runs});
    switchyard_scale_bench::report::write_results(&args.out, "kube-proxy-sync", &json, &md)?;
    println!("{md}");
    Ok(())
}

//! `make bench-operator`: the operator migrating N simulated nodes (see
//! `switchyard_scale_bench`), each node count `--runs` times; writes
//! `operator-scale.json` and `operator-scale.md` into `--out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchyard_scale_bench::{self as scale, ScaleConfig, report};

#[derive(Debug, Parser)]
struct Args {
    /// Node counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    nodes: Vec<usize>,
    /// Wave size in percent of the nodes (`10` or `10%`).
    #[arg(long, default_value = "10%")]
    wave: String,
    /// Runs per node count.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seconds between each simulated agent's Lease renewals.
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// The operator binary (default: the release build next to this one's target dir).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Where the results go.
    #[arg(long, default_value = "node-datapath/bench/results")]
    out: PathBuf,
    /// Longest one migration may take, seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// The window measured at rest after each migration, seconds.
    #[arg(long, default_value_t = 60)]
    at_rest_seconds: u64,
}

fn default_operator() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_default();
    target.join("release/switchyard-operator")
}

#[tokio::main]
async fn main() -> ExitCode {
    switchyard_e2e::init_stderr_logging("info,kube=warn");
    let args = Args::parse();
    match switchyard_e2e::until_interrupted(run(args)).await {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("switchyard-operator-scale: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("switchyard-operator-scale: interrupted; the lab cluster was torn down");
            ExitCode::from(130)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let wave_percent: u32 = args
        .wave
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| format!("--wave {:?}: a percentage from 1 to 100", args.wave))?;
    let operator = args.operator.clone().unwrap_or_else(default_operator);
    if !operator.is_file() {
        return Err(format!(
            "operator binary {} missing (cargo build --release -p switchyard-operator)",
            operator.display()
        ));
    }
    let mut results = Vec::new();
    for &nodes in &args.nodes {
        for run in 1..=args.runs {
            let cfg = ScaleConfig {
                nodes,
                wave_percent,
                heartbeat: Duration::from_secs(args.heartbeat_seconds),
                operator: operator.clone(),
                timeout: Duration::from_secs(args.timeout_seconds),
                at_rest: Duration::from_secs(args.at_rest_seconds),
            };
            eprintln!("== {nodes} nodes, run {run}/{}", args.runs);
            let r = scale::run_once(&cfg).await.map_err(|e| e.to_string())?;
            eprintln!(
                "   total {:.1} s, operator CPU {:.2} ms/node, {:.1} requests/node, peak RSS {:.1} MiB",
                r.total_secs,
                r.operator_cpu_ms_per_node,
                r.requests_per_node,
                r.operator_peak_rss_mib
            );
            results.push(r);
        }
    }
    let summaries = report::summarize(&results);
    let nodes: Vec<String> = args.nodes.iter().map(usize::to_string).collect();
    let cmd = format!(
        "make bench-operator (switchyard-operator-scale --nodes {} --wave {wave_percent}% --runs {})",
        nodes.join(","),
        args.runs
    );
    let secs = (args.heartbeat_seconds, args.at_rest_seconds);
    let md = report::markdown(&summaries, wave_percent, secs, &cmd);
    let json = serde_json::json!({
        "command": cmd,
        "wave_percent": wave_percent,
        "heartbeat_seconds": args.heartbeat_seconds,
        "at_rest_seconds": args.at_rest_seconds,
        "summaries": summaries,
        "runs": results,
    });
    report::write_results(&args.out, "operator-scale", &json, &md)?;
    println!("{md}");
    Ok(())
}

//! `switchyard-bench`: see the crate documentation (`lib.rs`) and
//! `node-datapath/bench/run.sh`. Run as root.

use std::{net::SocketAddrV4, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use switchyard_bench::{
    BenchError, agent_path, ebpf, flow_memory, load, model, report, rules, runner,
};

#[derive(Parser, Debug)]
#[command(name = "switchyard-bench", about = "Service datapath benchmark (root)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuleKind {
    Iptables,
    IptablesJumps,
    Nft,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs the benchmark and writes the raw CSV.
    Run(runner::RunArgs),
    /// Regenerates BENCHMARKS.md from a raw CSV.
    Report {
        /// The raw CSV written by `run`.
        #[arg(long)]
        csv: PathBuf,
        /// The markdown file to write.
        #[arg(long)]
        out: PathBuf,
        /// Machine/run facts (JSON written by `run`).
        #[arg(long)]
        facts: PathBuf,
        /// Hand-written analysis appended to the generated tables.
        #[arg(long)]
        analysis: Option<PathBuf>,
        /// Markdown sections written by other benchmarks (the operator
        /// scale run), inserted before the targets; missing files are
        /// skipped with a note.
        #[arg(long)]
        include: Vec<PathBuf>,
    },
    /// Prints the kube-proxy-shaped rules for N Services (for inspection).
    Rules {
        #[arg(long, value_enum)]
        kind: RuleKind,
        #[arg(long, short)]
        n: usize,
        /// Every Service a NodePort (the north-south scenario).
        #[arg(long)]
        north_south: bool,
    },
    /// Internal: a backend server (TCP accept+close, UDP echo).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        cpu: usize,
    },
    /// Internal: a measuring client; prints one JSON line.
    #[command(hide = true)]
    Client {
        #[arg(long)]
        netns: PathBuf,
        /// The cgroup to run in (none: stay in the caller's).
        #[arg(long)]
        cgroup: Option<PathBuf>,
        #[arg(long)]
        cpu: usize,
        #[arg(long)]
        mode: String,
        #[arg(long, value_delimiter = ',')]
        targets: Vec<SocketAddrV4>,
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        #[arg(long, default_value_t = 0)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        min_count: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Duration (rate/udp) or latency budget, in milliseconds.
        #[arg(long)]
        millis: u64,
    },
    /// Internal: the eBPF full sync of N Services, timed; prints one JSON line.
    #[command(hide = true)]
    Sync {
        #[arg(long)]
        bpffs_dir: PathBuf,
        #[arg(long, short)]
        n: usize,
        /// Every Service a NodePort (the north-south scenario).
        #[arg(long)]
        north_south: bool,
    },
    /// Internal: the agent's sync path (reflector stores, full sync,
    /// single-endpoint changes, memory) for N Services; prints one JSON line.
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        bpffs_dir: PathBuf,
        #[arg(long, short)]
        n: usize,
        /// Single-endpoint changes to time.
        #[arg(long, default_value_t = 300)]
        changes: usize,
    },
    /// Internal: the agent's flow ring filled with flows of N Services,
    /// memory before and after; prints one JSON line.
    #[command(hide = true)]
    Flows {
        #[arg(long, short)]
        n: usize,
        /// Flows the ring keeps.
        #[arg(long, default_value_t = 16_384)]
        flows_max: usize,
    },
}

fn json_line<T: serde::Serialize>(v: &T) -> Result<(), BenchError> {
    let s = serde_json::to_string(v).map_err(|e| BenchError::BadOutput {
        what: "serialize".into(),
        detail: e.to_string(),
    })?;
    println!("{s}");
    Ok(())
}

fn scenario(n: usize) -> Result<model::Scenario, BenchError> {
    model::Scenario::new(n)
        .ok_or_else(|| BenchError::Arg(format!("N must be in 1..={}", model::MAX_SERVICES)))
}

fn scenario_of(n: usize, north_south: bool) -> Result<model::Scenario, BenchError> {
    if !north_south {
        return scenario(n);
    }
    let max = model::MAX_NODE_PORT_SERVICES;
    model::Scenario::north_south(n)
        .ok_or_else(|| BenchError::Arg(format!("N must be in 1..={max}")))
}

fn real_main(cli: Cli) -> Result<(), BenchError> {
    match cli.cmd {
        Cmd::Run(args) => runner::run(&args),
        Cmd::Report {
            csv,
            out,
            facts,
            analysis,
            include,
        } => report::write_markdown(&csv, &facts, analysis.as_deref(), &include, &out),
        Cmd::Rules {
            kind,
            n,
            north_south,
        } => {
            let sc = scenario_of(n, north_south)?;
            let text = match kind {
                RuleKind::Iptables => rules::iptables_restore(&sc),
                RuleKind::IptablesJumps => rules::iptables_jumps(),
                RuleKind::Nft => rules::nft_script(&sc),
            };
            print!("{text}");
            Ok(())
        }
        Cmd::Serve { netns, cpu } => {
            load::enter_netns(&netns)?;
            load::pin_cpu(cpu)?;
            load::serve(model::TCP_TARGET_PORT, model::UDP_TARGET_PORT)
        }
        Cmd::Client {
            netns,
            cgroup,
            cpu,
            mode,
            targets,
            warmup,
            count,
            min_count,
            threads,
            millis,
        } => {
            if let Some(cgroup) = &cgroup {
                load::enter_cgroup(cgroup)?;
            }
            load::enter_netns(&netns)?;
            load::pin_cpu(cpu)?;
            let d = Duration::from_millis(millis);
            match mode.as_str() {
                "latency" => json_line(&load::client_latency(
                    &targets, warmup, count, min_count, d,
                )?),
                "rate" => {
                    let cpus: Vec<usize> = (0..threads).map(|t| (cpu + t) % 2).collect();
                    json_line(&load::client_rate(&targets, threads, &cpus, d)?)
                }
                "udp" => json_line(&load::client_udp(&targets, d)?),
                other => Err(BenchError::Arg(format!("unknown client mode {other}"))),
            }
        }
        Cmd::Sync {
            bpffs_dir,
            n,
            north_south,
        } => json_line(&ebpf::full_sync(&bpffs_dir, &scenario_of(n, north_south)?)?),
        Cmd::Agent {
            bpffs_dir,
            n,
            changes,
        } => json_line(&agent_path::agent_path(&bpffs_dir, &scenario(n)?, changes)?),
        Cmd::Flows { n, flows_max } => json_line(&flow_memory::measure(&scenario(n)?, flows_max)?),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

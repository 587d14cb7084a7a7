//! The benchmark run: for each N, for each datapath, a fresh topology,
//! programming (timed), servers, then the client measurements; every value
//! is appended to the raw CSV as soon as it is measured.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddrV4,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use switchyard_node_datapath::{Datapath, Hook, RunTimeStats};
use tracing::info;

use crate::{
    BenchError,
    load::{LatencyResult, RateResult},
    model::{
        DATAPATHS, ENDPOINTS, Scenario, TCP_PORT, TCP_TARGET_PORT, Target, UDP_PORT,
        UDP_TARGET_PORT, endpoint, vip,
    },
    programming,
    results::Row,
    rules, run_facts,
    sink::Sink,
    topo::{self, Topo},
};

/// The default N list.
pub const FULL_N: [usize; 6] = [1, 1000, 5000, 10_000, 20_000, 40_000];
/// `--quick`'s N list.
pub const QUICK_N: [usize; 3] = [1, 1000, 10_000];

/// CPU of the client (single-thread measurements).
const CLIENT_CPU: usize = 0;
/// CPU of the servers.
const SERVER_CPU: usize = 1;

/// Options of `switchyard-bench run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Service counts (comma-separated); default 1,1000,5000,10000,20000,40000.
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<usize>,
    /// Development run: N ∈ {1, 1000, 10000} unless --services is given.
    #[arg(long)]
    pub quick: bool,
    /// Datapaths to measure (comma-separated); default all.
    #[arg(long, value_delimiter = ',')]
    pub datapaths: Vec<String>,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Measured connects per latency point and run.
    #[arg(long, default_value_t = 20_000)]
    pub connects: usize,
    /// Lower bound on measured connects when the time budget cuts the count.
    #[arg(long, default_value_t = 2_000)]
    pub min_connects: usize,
    /// Time budget per latency point and run, in ms: slow datapaths measure
    /// fewer connects (never fewer than --min-connects).
    #[arg(long, default_value_t = 2_500)]
    pub latency_budget_ms: u64,
    /// Warm-up connects (at most 0.5 s) before each latency point.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: usize,
    /// Duration of each conn/s and UDP rate run, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub rate_ms: u64,
    /// Largest N for which kube-proxy's exact `iptables-restore --noflush`
    /// call is also timed (in a scratch namespace).
    #[arg(long, default_value_t = 1_000)]
    pub noflush_max: usize,
    /// Services per `nft -f` transaction when loading the measured node.
    #[arg(long, default_value_t = 1_000)]
    pub nft_chunk: usize,
    /// Largest N for which kube-proxy's single-transaction `nft -f` is also
    /// timed (in a scratch namespace).
    #[arg(long, default_value_t = 5_000)]
    pub nft_single_max: usize,
    /// Single-endpoint changes timed per N on the agent's sync path.
    #[arg(long, default_value_t = 300)]
    pub changes: usize,
    /// Options of the flow events part.
    #[command(flatten)]
    pub flow: crate::flow_events::FlowArgs,
    /// Run only one part: `programming` measures the eBPF full sync
    /// (batched and per-op), incremental updates and agent memory;
    /// `north-south` an external client to NodePorts on every datapath;
    /// `flow-events` the cost and loss of the eBPF datapath's flow events
    /// (at 10 000 Services unless --services is given). Each replaces its
    /// rows in an existing raw.csv.
    #[arg(long, value_enum)]
    pub only: Option<Part>,
    /// Output directory (raw.csv, facts.json).
    #[arg(long, default_value = "node-datapath/bench/results")]
    pub out: PathBuf,
}

/// A part of the benchmark that `--only` runs alone.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// eBPF programming time, incremental updates, agent memory.
    Programming,
    /// External client → NodePort (`ns_runner`), every datapath.
    NorthSouth,
    /// Flow events on vs off, their loss, the agent's flow ring memory
    /// (`flow_events`), eBPF only.
    FlowEvents,
}

/// Backend servers of one topology; killed on drop.
pub(crate) struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn self_exe() -> Result<PathBuf, BenchError> {
    std::env::current_exe().map_err(|e| BenchError::io("current_exe", e))
}

fn start_servers(topo: &Topo) -> Result<Servers, BenchError> {
    start_servers_in(&topo.backend_ns)
}

/// One backend server in each of the namespaces `backend_ns`.
pub(crate) fn start_servers_in(backend_ns: &[String]) -> Result<Servers, BenchError> {
    let exe = self_exe()?;
    let mut servers = Servers(Vec::new());
    for ns in backend_ns {
        let child = Command::new(&exe)
            .arg("serve")
            .arg("--netns")
            .arg(Topo::ns_path(ns))
            .args(["--cpu", &SERVER_CPU.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::io("spawn server", e))?;
        servers.0.push(child);
        let Some(child) = servers.0.last_mut() else {
            continue;
        };
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| BenchError::io("read server", e))?;
        }
        if line.trim() != "ready" {
            return Err(BenchError::BadOutput {
                what: format!("server in {ns}"),
                detail: format!("expected `ready`, got {line:?}"),
            });
        }
    }
    Ok(servers)
}

/// Runs a client child in the topology's pod and parses its JSON line.
fn client<T: DeserializeOwned>(topo: &Topo, args: &[String]) -> Result<T, BenchError> {
    client_in(&Topo::ns_path(&topo.pod_ns), Some(&topo.cgroup), args)
}

/// Runs a client child in `netns` (and `cgroup`, if any) and parses its
/// JSON line.
pub(crate) fn client_in<T: DeserializeOwned>(
    netns: &std::path::Path,
    cgroup: Option<&std::path::Path>,
    args: &[String],
) -> Result<T, BenchError> {
    let mut cmd = Command::new(self_exe()?);
    cmd.arg("client").arg("--netns").arg(netns);
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    let out = cmd
        .args(["--cpu", &CLIENT_CPU.to_string()])
        .args(args)
        .output()
        .map_err(|e| BenchError::io("spawn client", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::Command {
            cmd: format!("client {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| BenchError::BadOutput {
        what: "client".into(),
        detail: format!("{e}: {line:?}"),
    })
}

pub(crate) fn join(addrs: &[SocketAddrV4]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// TCP targets of Service `i` on a datapath: the VIP, or for `direct` its
/// ten endpoints round-robin (the same backends the VIP spreads over).
fn tcp_targets(datapath: &str, i: usize) -> Vec<SocketAddrV4> {
    if datapath == "direct" {
        (0..ENDPOINTS)
            .map(|k| SocketAddrV4::new(endpoint(i, k), TCP_TARGET_PORT))
            .collect()
    } else {
        vec![SocketAddrV4::new(vip(i), TCP_PORT)]
    }
}

/// UDP targets of Service `i`: the VIP, or for `direct` its ten endpoints
/// round-robin.
fn udp_targets(datapath: &str, i: usize) -> Vec<SocketAddrV4> {
    if datapath == "direct" {
        (0..ENDPOINTS)
            .map(|k| SocketAddrV4::new(endpoint(i, k), UDP_TARGET_PORT))
            .collect()
    } else {
        vec![SocketAddrV4::new(vip(i), UDP_PORT)]
    }
}

/// Removes a datapath's rules from namespace `ns` synchronously, so the
/// kernel does not tear a large ruleset down in the background of the next
/// measurement (untimed).
pub(crate) fn clear_rules(ns: &str, datapath: &str) -> Result<(), BenchError> {
    match datapath {
        "iptables-nft" | "iptables-legacy" => {
            // A whole-table restore of empty tables flushes and deletes
            // every chain.
            topo::run_timed_stdin(
                "ip",
                &["netns", "exec", ns, &format!("{datapath}-restore"), "-w"],
                "*filter\nCOMMIT\n*nat\nCOMMIT\n",
            )?;
        }
        "nftables" => {
            topo::run("ip", &["netns", "exec", ns, "nft", "flush", "ruleset"])?;
        }
        _ => {}
    }
    Ok(())
}

/// Programs `datapath` in `topo`; returns the eBPF handle to keep alive.
fn program(
    args: &RunArgs,
    topo: &Topo,
    datapath: &str,
    sc: &Scenario,
    sink: &mut Sink,
) -> Result<Option<Datapath>, BenchError> {
    let n = sc.services;
    let row = |metric: &str, samples: u64, value: f64| Row {
        n,
        datapath: datapath.into(),
        metric: metric.into(),
        target: "-".into(),
        run: 0,
        samples,
        value,
    };
    match datapath {
        "iptables-nft" | "iptables-legacy" => {
            let cmd = format!("{datapath}-restore");
            // The measured node: the whole ruleset (jumps included) in one
            // whole-table restore; the namespace is fresh, so this yields
            // exactly what kube-proxy's calls yield.
            let input = rules::iptables_restore_whole_tables(sc);
            let lines = input.lines().filter(|l| l.starts_with("-A ")).count() as u64;
            let d = topo.node_exec_timed(&cmd, &["-w", "--counters"], &input)?;
            sink.push(row("program_s", lines, d.as_secs_f64()))?;
            // kube-proxy's own call (`--noflush --counters`, jumps installed
            // first), timed in a scratch namespace; skipped above
            // --noflush-max Services (its cost grows faster than linearly).
            if n <= args.noflush_max {
                let scratch = topo::ScratchNs::new()?;
                scratch.exec_timed(&cmd, &["-w", "--noflush"], &rules::iptables_jumps())?;
                let input = rules::iptables_restore(sc);
                let lines = input.lines().filter(|l| l.starts_with("-A ")).count() as u64;
                let d = scratch.exec_timed(&cmd, &["-w", "--noflush", "--counters"], &input)?;
                sink.push(row("program_noflush_s", lines, d.as_secs_f64()))?;
                clear_rules(&scratch.name, datapath)?;
            }
            Ok(None)
        }
        "nftables" => {
            // The measured node: the ruleset in transactions of
            // --nft-chunk Services (one transaction grows quadratically in
            // kernel time on this kernel).
            let mut total = Duration::ZERO;
            let mut lines = 0u64;
            for chunk in rules::nft_script_chunks(sc, args.nft_chunk) {
                lines += chunk.lines().count() as u64;
                total += topo.node_exec_timed("nft", &["-f", "-"], &chunk)?;
            }
            sink.push(row("program_s", lines, total.as_secs_f64()))?;
            // kube-proxy's first sync: one transaction, up to --nft-single-max.
            if n <= args.nft_single_max {
                let scratch = topo::ScratchNs::new()?;
                let d = scratch.exec_timed("nft", &["-f", "-"], &rules::nft_script(sc))?;
                sink.push(row("program_single_s", lines, d.as_secs_f64()))?;
                clear_rules(&scratch.name, datapath)?;
            }
            Ok(None)
        }
        "ebpf" => {
            let dp = programming::program_ebpf(topo, sc, args.changes, &mut |r| sink.push(r))?;
            Ok(Some(dp))
        }
        _ => Ok(None),
    }
}

/// One datapath, programmed in its own fresh topology, servers running.
/// Fields drop in declaration order: servers, then the eBPF handle, then the
/// topology (which also detaches the programs).
struct Prepared {
    datapath: String,
    _servers: Servers,
    ebpf: Option<Datapath>,
    topo: Topo,
}

fn prepare(
    args: &RunArgs,
    datapath: &str,
    sc: &Scenario,
    sink: &mut Sink,
) -> Result<Prepared, BenchError> {
    let topo = Topo::new()?;
    let t0 = Instant::now();
    let ebpf = program(args, &topo, datapath, sc, sink)?;
    let servers = start_servers(&topo)?;
    info!(
        n = sc.services,
        datapath,
        secs = t0.elapsed().as_secs_f64(),
        "programmed"
    );
    Ok(Prepared {
        datapath: datapath.into(),
        _servers: servers,
        ebpf,
        topo,
    })
}

/// One latency client run against Service `i` of a prepared datapath.
fn latency(args: &RunArgs, p: &Prepared, i: usize) -> Result<LatencyResult, BenchError> {
    client(
        &p.topo,
        &[
            "--mode".into(),
            "latency".into(),
            "--targets".into(),
            join(&tcp_targets(&p.datapath, i)),
            "--warmup".into(),
            args.warmup.to_string(),
            "--count".into(),
            args.connects.to_string(),
            "--min-count".into(),
            args.min_connects.to_string(),
            "--millis".into(),
            args.latency_budget_ms.to_string(),
        ],
    )
}

/// Where the eBPF datapath's extra connect latency goes: one more latency
/// run per target with the kernel's BPF run-time accounting on (kept off
/// during the measured runs, since it adds two clock reads per program
/// run), recording the mean time spent in `connect4` per connect.
fn profile_ebpf(
    args: &RunArgs,
    p: &Prepared,
    dp: &Datapath,
    sc: &Scenario,
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let _accounting = RunTimeStats::enable()?;
    for t in Target::ALL {
        let before = dp.run_time(Hook::Connect4)?;
        latency(args, p, sc.target_index(t))?;
        let after = dp.run_time(Hook::Connect4)?;
        if let Some(mean) = after.mean_since(&before) {
            sink.push(Row {
                n: sc.services,
                datapath: p.datapath.clone(),
                metric: "connect4_prog_ns".into(),
                target: t.name().into(),
                run: 0,
                samples: after.runs - before.runs,
                value: mean.as_nanos() as f64,
            })?;
        }
    }
    Ok(())
}

/// Run `r` of every measurement of one prepared datapath.
fn measure_run(
    args: &RunArgs,
    p: &Prepared,
    sc: &Scenario,
    r: u32,
    sink: &mut Sink,
) -> Result<(), BenchError> {
    measure_latency(args, p, sc, r, sink)?;
    measure_rates(args, p, sc, r, sink)
}

/// Connect latency percentiles and errors to the first, a random and the last
/// Service.
fn measure_latency(
    args: &RunArgs,
    p: &Prepared,
    sc: &Scenario,
    r: u32,
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let (n, datapath) = (sc.services, p.datapath.as_str());
    for t in Target::ALL {
        let res = latency(args, p, sc.target_index(t))?;
        let s = res.summary;
        for (metric, value) in [
            ("connect_p50_us", s.p50_us),
            ("connect_p99_us", s.p99_us),
            ("connect_p999_us", s.p999_us),
            ("connect_errors", res.errors as f64),
        ] {
            sink.push(Row {
                n,
                datapath: datapath.into(),
                metric: metric.into(),
                target: t.name().into(),
                run: r,
                samples: s.samples as u64,
                value,
            })?;
        }
    }
    Ok(())
}

/// TCP connection rates (one and two threads) and the UDP request/response rate to
/// the last Service.
fn measure_rates(
    args: &RunArgs,
    p: &Prepared,
    sc: &Scenario,
    r: u32,
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let (n, datapath, topo) = (sc.services, p.datapath.as_str(), &p.topo);
    let last = sc.target_index(Target::Last);
    for (metric, mode, threads, target) in [
        (
            "conn_per_s_1t",
            "rate",
            1,
            join(&tcp_targets(datapath, last)),
        ),
        (
            "conn_per_s_2t",
            "rate",
            2,
            join(&tcp_targets(datapath, last)),
        ),
        ("udp_rr_per_s", "udp", 1, join(&udp_targets(datapath, last))),
    ] {
        let res: RateResult = client(
            topo,
            &[
                "--mode".into(),
                mode.into(),
                "--threads".into(),
                threads.to_string(),
                "--targets".into(),
                target,
                "--millis".into(),
                args.rate_ms.to_string(),
            ],
        )?;
        for (m, v) in [
            (metric.to_string(), res.per_s),
            (format!("{metric}_errors"), res.errors as f64),
        ] {
            sink.push(Row {
                n,
                datapath: datapath.into(),
                metric: m,
                target: Target::Last.name().into(),
                run: r,
                samples: res.ops,
                value: v,
            })?;
        }
    }
    Ok(())
}

/// Runs the benchmark (see the module doc).
pub fn run(args: &RunArgs) -> Result<(), BenchError> {
    let ns: Vec<usize> = match (args.services.is_empty(), args.quick, args.only) {
        (false, _, _) => args.services.clone(),
        (true, _, Some(Part::FlowEvents)) => vec![crate::flow_events::DEFAULT_N],
        (true, true, _) => QUICK_N.to_vec(),
        (true, false, _) => FULL_N.to_vec(),
    };
    let datapaths: Vec<String> = if args.datapaths.is_empty() {
        DATAPATHS.iter().map(|s| s.to_string()).collect()
    } else {
        args.datapaths.clone()
    };
    if let Some(bad) = datapaths.iter().find(|d| !DATAPATHS.contains(&d.as_str())) {
        return Err(BenchError::Arg(format!(
            "unknown datapath {bad} (known: {})",
            DATAPATHS.join(", ")
        )));
    }
    let scenarios = ns
        .iter()
        .map(|n| Scenario::new(*n).ok_or_else(|| BenchError::Arg(format!("bad service count {n}"))))
        .collect::<Result<Vec<_>, _>>()?;
    topo::sweep_stale();
    match args.only {
        Some(Part::Programming) => return programming::run(args, &scenarios),
        Some(Part::NorthSouth) => return crate::ns_runner::run_only(args, &ns, &datapaths),
        Some(Part::FlowEvents) => return crate::flow_events::run_only(args, &ns),
        None => {}
    }
    let mut sink = Sink::create(&args.out, "raw.csv")?;
    let csv = sink.path.clone();
    let mut f = run_facts::collect(args, &ns, &datapaths);
    let facts_path = args.out.join("facts.json");
    run_facts::write(&facts_path, &f)?;
    let t0 = Instant::now();
    for sc in &scenarios {
        // Every datapath of this N side by side (separate namespaces and
        // cgroups), measured interleaved run by run so that drifts of the
        // machine hit all of them alike.
        let t = Instant::now();
        let mut prepared = Vec::new();
        for dp in &datapaths {
            prepared.push(prepare(args, dp, sc, &mut sink)?);
        }
        for r in 0..args.runs {
            for p in &prepared {
                measure_run(args, p, sc, r, &mut sink)?;
            }
        }
        for p in &prepared {
            if let Some(dp) = &p.ebpf {
                profile_ebpf(args, p, dp, sc, &mut sink)?;
            }
        }
        for p in &prepared {
            clear_rules(&p.topo.node_ns, &p.datapath)?;
        }
        drop(prepared);
        info!(n = sc.services, secs = t.elapsed().as_secs_f64(), "N done");
    }
    f.north_south = Some(crate::ns_runner::measure(args, &ns, &datapaths, &mut sink)?);
    if datapaths.iter().any(|d| d == "ebpf")
        && let Some(n) = crate::flow_events::full_run_n(&ns)
    {
        f.flow_events = Some(crate::flow_events::measure(args, &[n], &mut sink)?);
    }
    f.duration_s = t0.elapsed().as_secs_f64();
    f.loadavg_end = run_facts::loadavg();
    run_facts::write(&facts_path, &f)?;
    info!(csv = %csv.display(), secs = f.duration_s, "benchmark done");
    Ok(())
}

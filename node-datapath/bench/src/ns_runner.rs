//! The north-south part of the run: an external client (outside the node)
//! to `NODE_IP:nodePort` of the last Service in kube-proxy's order, for N
//! NodePort Services × 10 endpoints (`externalTrafficPolicy: Cluster`), on
//! every datapath in its own [`NsTopo`]; `direct` connects to the
//! endpoints themselves (the floor). Per run and placement (endpoints on
//! the node, or behind a second node): connect latency, connections per
//! second and a UDP request rate; afterwards the ingress program's run time
//! per packet (kernel accounting, eBPF only). Rows carry metric names
//! starting with [`METRIC_PREFIX`] and the placement as target.
//! `run --only north-south` runs just this part and replaces its rows in an
//! existing raw.csv.

use std::{net::SocketAddrV4, time::Instant};

use switchyard_node_datapath::{Datapath, DatapathConfig, RunTimeStats};
use tracing::info;

use crate::{
    BenchError,
    load::{LatencyResult, RateResult},
    model::{ENDPOINTS, NODE_IP, Scenario, TCP_TARGET_PORT, Target, UDP_TARGET_PORT, endpoint},
    ns_topo::{EXTERNAL_IF, NsTopo, Placement},
    results::{Row, parse_csv, replace_rows},
    rules, rules_nft,
    run_facts::{self, NsFacts},
    runner::{RunArgs, Servers, clear_rules, client_in, join, start_servers_in},
    sink::{Sink, write_csv},
    topo,
};

/// Every north-south metric name starts with this.
pub const METRIC_PREFIX: &str = "ns_";

/// Scenarios of the N list, as north-south ones (every Service a NodePort).
pub fn scenarios(ns: &[usize]) -> Result<Vec<Scenario>, BenchError> {
    ns.iter()
        .map(|n| {
            Scenario::north_south(*n).ok_or_else(|| {
                BenchError::Arg(format!(
                    "north-south: N must be in 1..={}",
                    crate::model::MAX_NODE_PORT_SERVICES
                ))
            })
        })
        .collect()
}

/// What the external client connects to on `datapath` for Service `i`:
/// the endpoints round-robin for `direct`, else the node port.
pub fn targets(datapath: &str, sc: &Scenario, i: usize, udp: bool) -> Vec<SocketAddrV4> {
    let port = if udp {
        UDP_TARGET_PORT
    } else {
        TCP_TARGET_PORT
    };
    match sc.node_port(i) {
        Some(np) if datapath != "direct" => vec![SocketAddrV4::new(NODE_IP, np)],
        _ => (0..ENDPOINTS)
            .map(|k| SocketAddrV4::new(endpoint(i, k), port))
            .collect(),
    }
}

/// One datapath in its own north-south topology, servers running. Fields
/// drop in order: servers, the eBPF handle, the topology.
struct NsPrepared {
    datapath: String,
    _servers: Servers,
    ebpf: Option<Datapath>,
    topo: NsTopo,
}

/// The eBPF datapath with the ingress program on the external interface,
/// started inside the node's namespace (interface names resolve there)
/// after the agent's conntrack keepalive table; then the maps programmed
/// with the scenario (a `sync` child) and checked.
fn start_ebpf(t: &NsTopo, sc: &Scenario) -> Result<Datapath, BenchError> {
    let config = DatapathConfig {
        bpffs_dir: t.topo.bpffs_dir.clone(),
        cgroup: t.topo.cgroup.clone(),
        ingress_interfaces: vec![EXTERNAL_IF.to_string()],
        ..DatapathConfig::new(&t.topo.cgroup)
    };
    let ns = topo::Topo::ns_path(&t.topo.node_ns);
    let dp = std::thread::scope(|s| {
        s.spawn(|| -> Result<Datapath, BenchError> {
            crate::load::enter_netns(&ns)?;
            switchyard_agent::ingress::ensure_conntrack_hooks()
                .map_err(|e| BenchError::Arg(format!("conntrack keepalive: {e}")))?;
            Ok(Datapath::start(&config)?)
        })
        .join()
        .unwrap_or_else(|_| Err(BenchError::Arg("datapath start thread panicked".into())))
    })?;
    let bpffs = t.topo.bpffs_dir.to_string_lossy().to_string();
    let n = sc.services.to_string();
    let exe = crate::runner::self_exe()?;
    let args = ["sync", "--bpffs-dir", &bpffs, "-n", &n, "--north-south"];
    topo::run(&exe.to_string_lossy(), &args)?;
    crate::programming::verify_maps(&t.topo.bpffs_dir, sc)?;
    Ok(dp)
}

/// Loads `datapath`'s rules into the node (rule load time recorded).
fn program(
    t: &NsTopo,
    datapath: &str,
    sc: &Scenario,
    args: &RunArgs,
) -> Result<(Option<Datapath>, f64), BenchError> {
    let t0 = Instant::now();
    let ebpf = match datapath {
        "iptables-nft" | "iptables-legacy" => {
            let input = rules::iptables_restore_whole_tables(sc);
            let cmd = format!("{datapath}-restore");
            t.topo
                .node_exec_timed(&cmd, &["-w", "--counters"], &input)?;
            None
        }
        "nftables" => {
            for chunk in rules_nft::nft_script_chunks(sc, args.nft_chunk) {
                t.topo.node_exec_timed("nft", &["-f", "-"], &chunk)?;
            }
            None
        }
        "ebpf" => Some(start_ebpf(t, sc)?),
        _ => None,
    };
    Ok((ebpf, t0.elapsed().as_secs_f64()))
}

fn prepare(
    args: &RunArgs,
    datapath: &str,
    sc: &Scenario,
    sink: &mut Sink,
) -> Result<NsPrepared, BenchError> {
    let topo = NsTopo::new()?;
    let (ebpf, secs) = program(&topo, datapath, sc, args)?;
    sink.push(row(sc, datapath, "ns_program_s", "-", (0, 0), secs))?;
    let servers = start_servers_in(&topo.backend_namespaces())?;
    info!(n = sc.services, datapath, secs, "north-south programmed");
    Ok(NsPrepared {
        datapath: datapath.into(),
        _servers: servers,
        ebpf,
        topo,
    })
}

fn row(sc: &Scenario, dp: &str, metric: &str, target: &str, run: (u32, u64), v: f64) -> Row {
    Row {
        n: sc.services,
        datapath: dp.into(),
        metric: metric.into(),
        target: target.into(),
        run: run.0,
        samples: run.1,
        value: v,
    }
}

fn latency(args: &RunArgs, p: &NsPrepared, sc: &Scenario) -> Result<LatencyResult, BenchError> {
    let last = sc.target_index(Target::Last);
    let a = [
        ("--mode", "latency".to_string()),
        ("--targets", join(&targets(&p.datapath, sc, last, false))),
        ("--warmup", args.warmup.to_string()),
        ("--count", args.connects.to_string()),
        ("--min-count", args.min_connects.to_string()),
        ("--millis", args.latency_budget_ms.to_string()),
    ];
    let a: Vec<String> = a.into_iter().flat_map(|(k, v)| [k.into(), v]).collect();
    client_in(&p.topo.outside_path(), None, &a)
}

fn rate(
    args: &RunArgs,
    p: &NsPrepared,
    sc: &Scenario,
    udp: bool,
) -> Result<RateResult, BenchError> {
    let last = sc.target_index(Target::Last);
    let a = [
        ("--mode", if udp { "udp" } else { "rate" }.to_string()),
        ("--threads", "1".to_string()),
        ("--targets", join(&targets(&p.datapath, sc, last, udp))),
        ("--millis", args.rate_ms.to_string()),
    ];
    let a: Vec<String> = a.into_iter().flat_map(|(k, v)| [k.into(), v]).collect();
    client_in(&p.topo.outside_path(), None, &a)
}

/// Run `r` of one prepared datapath, endpoints placed at `pl`.
fn measure_run(
    args: &RunArgs,
    p: &NsPrepared,
    sc: &Scenario,
    (pl, r): (Placement, u32),
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let (dp, target) = (p.datapath.as_str(), pl.name());
    let res = latency(args, p, sc)?;
    let s = res.summary;
    for (metric, value) in [
        ("ns_connect_p50_us", s.p50_us),
        ("ns_connect_p99_us", s.p99_us),
        ("ns_connect_p999_us", s.p999_us),
        ("ns_connect_errors", res.errors as f64),
    ] {
        sink.push(row(sc, dp, metric, target, (r, s.samples as u64), value))?;
    }
    for (metric, udp) in [("ns_conn_per_s", false), ("ns_udp_rr_per_s", true)] {
        let res = rate(args, p, sc, udp)?;
        sink.push(row(sc, dp, metric, target, (r, res.ops), res.per_s))?;
        let errors = format!("{metric}_errors");
        sink.push(row(
            sc,
            dp,
            &errors,
            target,
            (r, res.ops),
            res.errors as f64,
        ))?;
    }
    Ok(())
}

/// The ingress program's mean run time per packet over one latency run
/// (SYN, ACK and RST of every connect pass it) and one UDP run, with the
/// kernel's run-time accounting on only for these runs.
fn profile(
    args: &RunArgs,
    p: &NsPrepared,
    dp: &Datapath,
    sc: &Scenario,
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let _accounting = RunTimeStats::enable()?;
    for pl in Placement::ALL {
        p.topo.place(pl)?;
        for (metric, udp) in [
            ("ns_tc_tcp_ns_per_pkt", false),
            ("ns_tc_udp_ns_per_pkt", true),
        ] {
            let before = dp.ingress_run_time(EXTERNAL_IF)?;
            if udp {
                rate(args, p, sc, true)?;
            } else {
                latency(args, p, sc)?;
            }
            let after = dp.ingress_run_time(EXTERNAL_IF)?;
            if let Some(mean) = after.mean_since(&before) {
                let runs = (0, after.runs - before.runs);
                let v = mean.as_nanos() as f64;
                sink.push(row(sc, &p.datapath, metric, pl.name(), runs, v))?;
            }
        }
    }
    Ok(())
}

/// Every north-south measurement of one N.
fn measure_n(
    args: &RunArgs,
    sc: &Scenario,
    datapaths: &[String],
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let t = Instant::now();
    let mut prepared = Vec::new();
    for dp in datapaths {
        prepared.push(prepare(args, dp, sc, sink)?);
    }
    // Interleaved run by run and placement by placement, so that drifts
    // of the machine hit every datapath alike.
    for r in 0..args.runs {
        for pl in Placement::ALL {
            for p in &prepared {
                p.topo.place(pl)?;
                measure_run(args, p, sc, (pl, r), sink)?;
            }
        }
    }
    for p in &prepared {
        if let Some(dp) = &p.ebpf {
            profile(args, p, dp, sc, sink)?;
        }
    }
    for p in &prepared {
        clear_rules(&p.topo.topo.node_ns, &p.datapath)?;
    }
    drop(prepared);
    info!(
        n = sc.services,
        secs = t.elapsed().as_secs_f64(),
        "north-south N done"
    );
    Ok(())
}

/// The north-south part for every N, rows to `sink`; returns its facts.
pub(crate) fn measure(
    args: &RunArgs,
    ns: &[usize],
    datapaths: &[String],
    sink: &mut Sink,
) -> Result<NsFacts, BenchError> {
    let scenarios = scenarios(ns)?;
    let mut f = run_facts::collect_ns(args, ns, datapaths);
    let t0 = Instant::now();
    for sc in &scenarios {
        measure_n(args, sc, datapaths, sink)?;
    }
    f.duration_s = t0.elapsed().as_secs_f64();
    f.loadavg_end = run_facts::loadavg();
    Ok(f)
}

/// `run --only north-south`: [`measure`] with rows to `north-south.csv`,
/// then merged into `raw.csv` (replacing the north-south rows of the N
/// measured) and the facts into `facts.json`.
pub fn run_only(args: &RunArgs, ns: &[usize], datapaths: &[String]) -> Result<(), BenchError> {
    let mut sink = Sink::create(&args.out, "north-south.csv")?;
    let path = sink.path.clone();
    let f = measure(args, ns, datapaths, &mut sink)?;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let raw = args.out.join("raw.csv");
    let merged = merge(&parse_csv(&read(&raw)), &parse_csv(&read(&path)));
    write_csv(&raw, &merged)?;
    let facts_path = args.out.join("facts.json");
    run_facts::set_north_south(&facts_path, f)?;
    info!(csv = %raw.display(), "north-south rows merged");
    Ok(())
}

/// `old` without the north-south rows of the N values in `new`, then `new`.
pub fn merge(old: &[Row], new: &[Row]) -> Vec<Row> {
    replace_rows(old, new, |r| r.metric.starts_with(METRIC_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: usize, dp: &str, metric: &str, value: f64) -> Row {
        Row {
            n,
            datapath: dp.into(),
            metric: metric.into(),
            target: "local".into(),
            run: 0,
            samples: 1,
            value,
        }
    }

    #[test]
    fn merge_replaces_only_north_south_rows_of_the_measured_n() {
        let old = vec![
            r(1, "ebpf", "connect_p50_us", 24.0),
            r(1, "ebpf", "ns_connect_p50_us", 40.0),
            r(2, "ebpf", "ns_connect_p50_us", 41.0),
        ];
        let new = vec![r(1, "ebpf", "ns_connect_p50_us", 39.0)];
        assert_eq!(
            merge(&old, &new),
            vec![
                r(1, "ebpf", "connect_p50_us", 24.0),
                r(2, "ebpf", "ns_connect_p50_us", 41.0),
                r(1, "ebpf", "ns_connect_p50_us", 39.0),
            ]
        );
    }

    #[test]
    fn direct_goes_to_the_endpoints_the_others_to_the_node_port() {
        let sc = Scenario::north_south(5).unwrap();
        let np = targets("nftables", &sc, 4, false);
        assert_eq!(np, vec![SocketAddrV4::new(NODE_IP, 20_004)]);
        assert_eq!(targets("ebpf", &sc, 4, true), np);
        let d = targets("direct", &sc, 4, true);
        assert_eq!(d.len(), ENDPOINTS);
        assert_eq!(d[2], SocketAddrV4::new(endpoint(4, 2), UDP_TARGET_PORT));
        assert!(scenarios(&[1, 40_000]).is_ok());
        assert!(scenarios(&[60_000]).is_err());
    }
}

//! The flow events' cost and loss, on the eBPF socket load balancer in the
//! east-west topology ([`Topo`]), for N Services:
//!
//! 1. **On vs off**: connect latency to the last Service's ClusterIP and
//!    connections per second (1 and 2 threads) in three [`State`]s, back to
//!    back in each run, their order changing from run to run so that
//!    drifts of the machine hit all of them alike: events off
//!    (`set_flow_events`); on, with a consumer reading the pinned ring as
//!    the agent does ([`Consumer`]: on its timer, and woken by the ring
//!    once a quarter of it waits); and on, with a consumer draining on a
//!    timer only, for comparison. Each run also counts the events read
//!    against the connects translated.
//! 2. **Loss**: the connection rate of `--flow-threads` client threads for
//!    one rate run, with the default ring and with a deliberately small one
//!    (`--flow-small-ring`, the loader's `events_ring`), each once with the
//!    consumer draining during the run and once with no consumer until the
//!    client has exited: events read, events the kernel counted as lost
//!    (`sy_events_lost`, summed over CPUs), and connects translated and
//!    refused (the datapath's exact per-reason counters).
//! 3. **Agent memory** of a flow ring of `--flows-max` flows
//!    ([`crate::flow_memory`], a fresh child process).
//!
//! Rows carry metric names starting with [`METRIC_PREFIX`]; `run --only
//! flow-events` runs just this part and replaces its rows in raw.csv.

use std::{
    net::SocketAddrV4,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;
use switchyard_agent::flows::reader::{FlowHub, READ_EVERY};
use switchyard_agent::flows::{DEFAULT_EVENTS_PER_CPU, DEFAULT_MAX_FLOWS, ServiceIndex};
use switchyard_lb::{Options, desired_state};
use switchyard_node_datapath::abi::{Counter, capacity};
use switchyard_node_datapath::{
    Capacities, Datapath, DatapathConfig, set_flow_event_rate, set_flow_events,
};
use tracing::info;

use crate::{
    BenchError,
    flow_consumer::{Consumer, Received, Wake},
    flow_memory::FlowMemory,
    load::{LatencyResult, RateResult},
    model::{Scenario, TCP_PORT, Target, vip},
    programming::verify_maps,
    results::{Row, parse_csv, replace_rows},
    run_facts::{self, NsFacts},
    runner::{RunArgs, Servers, client_in, self_exe, start_servers_in},
    sink::{Sink, write_csv},
    topo::{self, Topo},
};

/// Options of the flow events part (`switchyard-bench run`).
#[derive(clap::Args, Debug, Clone)]
pub struct FlowArgs {
    /// Runs of the flow events comparison; each run measures events on
    /// and off back to back, alternating which goes first.
    #[arg(long, default_value_t = 6)]
    pub flow_runs: u32,
    /// Client threads of the flow event loss runs (the highest connection
    /// rate this machine generates).
    #[arg(long, default_value_t = 4)]
    pub flow_threads: usize,
    /// Bytes of the deliberately small flow event ring of the loss runs (a
    /// power of 2, at least a page).
    #[arg(long, default_value_t = 4096)]
    pub flow_small_ring: u32,
    /// Flows the agent's flow ring keeps in its memory measurement.
    #[arg(long, default_value_t = 16_384)]
    pub flows_max: usize,
    /// Interval of the timer-driven consumer of the comparison, ms.
    #[arg(long, default_value_t = 10)]
    pub flow_drain_ms: u64,
}

/// Every flow events metric name starts with this.
pub const METRIC_PREFIX: &str = "fe_";
/// N when `--only flow-events` is given no `--services`.
pub const DEFAULT_N: usize = 10_000;

/// The N a full run measures flow events at: [`DEFAULT_N`] when its list
/// has it, else its largest.
pub fn full_run_n(ns: &[usize]) -> Option<usize> {
    if ns.contains(&DEFAULT_N) {
        Some(DEFAULT_N)
    } else {
        ns.iter().copied().max()
    }
}

/// The datapath's events and their consumer in the on/off comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Events off; the agent's reader idle.
    Off,
    /// Events on, read as the agent reads them (every `READ_EVERY`, and
    /// woken by the ring once a quarter of it waits).
    On,
    /// Events on, read by a consumer draining every `--flow-drain-ms`.
    Batched,
}

impl State {
    /// The CSV target.
    pub fn name(self) -> &'static str {
        match self {
            State::Off => "off",
            State::On => "on",
            State::Batched => "batched",
        }
    }
}

/// The order of the states in run `run`: the six permutations in turn,
/// so that over six runs each state goes before each other one as often
/// as after it, and on and off swap places from one run to the next.
pub fn order(run: u32) -> [State; 3] {
    use State::{Batched as B, Off, On};
    const ORDERS: [[State; 3]; 6] = [
        [On, Off, B],
        [Off, On, B],
        [B, On, Off],
        [Off, B, On],
        [On, B, Off],
        [B, Off, On],
    ];
    ORDERS[run as usize % ORDERS.len()]
}

/// The CSV target of a loss run: ring bytes and whether the consumer
/// drained during the run (`262144-drained`, `4096-undrained`).
pub fn loss_target(ring_bytes: u32, drained: bool) -> String {
    let mode = if drained { "drained" } else { "undrained" };
    format!("{ring_bytes}-{mode}")
}

/// One datapath in its own topology with the scenario programmed and the
/// servers running. Fields drop in order: servers, the eBPF handle, the
/// topology.
struct Lab {
    _servers: Servers,
    dp: Datapath,
    topo: Topo,
    index: ServiceIndex,
}

/// The datapath with an event ring of `ring_bytes`, the scenario
/// programmed by a `sync` child and checked.
fn lab(sc: &Scenario, ring_bytes: u32, index: &ServiceIndex) -> Result<Lab, BenchError> {
    let topo = Topo::new()?;
    let config = DatapathConfig {
        bpffs_dir: topo.bpffs_dir.clone(),
        cgroup: topo.cgroup.clone(),
        capacities: Capacities {
            events_ring: ring_bytes,
            ..Capacities::default()
        },
        ..DatapathConfig::new(&topo.cgroup)
    };
    let dp = Datapath::start(&config)?;
    let bpffs = topo.bpffs_dir.to_string_lossy().to_string();
    let n = sc.services.to_string();
    topo::run(
        &self_exe()?.to_string_lossy(),
        &["sync", "--bpffs-dir", &bpffs, "-n", &n],
    )?;
    verify_maps(&topo.bpffs_dir, sc)?;
    let servers = start_servers_in(&topo.backend_ns)?;
    Ok(Lab {
        _servers: servers,
        dp,
        topo,
        index: index.clone(),
    })
}

/// The agent's hub as a synced agent has it: the Services named, the
/// client's cgroup under its cgroup root.
fn hub(lab: &Lab) -> Arc<FlowHub> {
    let hub = FlowHub::new(DEFAULT_MAX_FLOWS, true);
    hub.set_services(lab.index.clone());
    hub.pods(|p| p.set_root(lab.topo.cgroup.clone()));
    Arc::new(hub)
}

/// The datapath's own counts that events must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Kernel {
    /// connect() calls translated (`connect_translated`).
    translated: u64,
    /// connect() calls refused: each of these emits an event too.
    refused: u64,
    /// Events that did not fit in the ring.
    lost: u64,
}

/// The socket programs' refusals (each reported by an event).
const REFUSALS: [Counter; 4] = [
    Counter::DropUnknownPort,
    Counter::DropNoBackend,
    Counter::DropSlotMissing,
    Counter::DropBackendMissing,
];

impl Kernel {
    fn read(dp: &Datapath) -> Result<Self, BenchError> {
        let s = dp.stats()?;
        Ok(Self {
            translated: s.get(Counter::ConnectTranslated),
            refused: REFUSALS.iter().map(|c| s.get(*c)).sum(),
            lost: s.events_lost,
        })
    }

    fn since(&self, earlier: &Kernel) -> Kernel {
        Kernel {
            translated: self.translated.saturating_sub(earlier.translated),
            refused: self.refused.saturating_sub(earlier.refused),
            lost: self.lost.saturating_sub(earlier.lost),
        }
    }
}

fn row(sc: &Scenario, metric: &str, target: &str, run: (u32, u64), value: f64) -> Row {
    Row {
        n: sc.services,
        datapath: "ebpf".into(),
        metric: metric.into(),
        target: target.into(),
        run: run.0,
        samples: run.1,
        value,
    }
}

/// A client child in the lab's pod and cgroup.
fn client<T: DeserializeOwned>(lab: &Lab, args: &[(&str, String)]) -> Result<T, BenchError> {
    let a: Vec<String> = args
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.clone()])
        .collect();
    client_in(&Topo::ns_path(&lab.topo.pod_ns), Some(&lab.topo.cgroup), &a)
}

/// The last Service's ClusterIP.
fn target(sc: &Scenario) -> String {
    SocketAddrV4::new(vip(sc.target_index(Target::Last)), TCP_PORT).to_string()
}

fn latency(args: &RunArgs, lab: &Lab, sc: &Scenario) -> Result<LatencyResult, BenchError> {
    client(
        lab,
        &[
            ("--mode", "latency".into()),
            ("--targets", target(sc)),
            ("--warmup", args.warmup.to_string()),
            ("--count", args.connects.to_string()),
            ("--min-count", args.min_connects.to_string()),
            ("--millis", args.latency_budget_ms.to_string()),
        ],
    )
}

fn rate(
    args: &RunArgs,
    lab: &Lab,
    sc: &Scenario,
    threads: usize,
) -> Result<RateResult, BenchError> {
    client(
        lab,
        &[
            ("--mode", "rate".into()),
            ("--threads", threads.to_string()),
            ("--targets", target(sc)),
            ("--millis", args.rate_ms.to_string()),
        ],
    )
}

/// Run `r` in `state`: latency, then the connection rates, then what a
/// consumer started for this state read of the connects made.
fn measure_state(
    args: &RunArgs,
    lab: &Lab,
    sc: &Scenario,
    (state, r): (State, u32),
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let dir = &lab.topo.bpffs_dir;
    set_flow_events(dir, state != State::Off)?;
    set_flow_event_rate(dir, DEFAULT_EVENTS_PER_CPU)?;
    let drain = Duration::from_millis(args.flow.flow_drain_ms);
    let wake = match state {
        State::Batched => Wake::Every(drain),
        State::Off | State::On => Wake::Agent(READ_EVERY),
    };
    let consumer = Consumer::start(dir, hub(lab), wake)?;
    let (k0, c0) = (Kernel::read(&lab.dp)?, consumer.sync()?);
    let name = state.name();
    let res = latency(args, lab, sc)?;
    let s = res.summary;
    let samples = (r, s.samples as u64);
    sink.push(row(sc, "fe_connect_p50_us", name, samples, s.p50_us))?;
    sink.push(row(sc, "fe_connect_p99_us", name, samples, s.p99_us))?;
    let errors = res.errors as f64;
    sink.push(row(sc, "fe_connect_errors", name, samples, errors))?;
    for (metric, threads) in [("fe_conn_per_s_1t", 1), ("fe_conn_per_s_2t", 2)] {
        let res = rate(args, lab, sc, threads)?;
        sink.push(row(sc, metric, name, (r, res.ops), res.per_s))?;
        let errors = format!("{metric}_errors");
        sink.push(row(sc, &errors, name, (r, res.ops), res.errors as f64))?;
    }
    let k = Kernel::read(&lab.dp)?.since(&k0);
    let c = consumer.stop()?.since(&c0);
    for (metric, v) in [
        ("fe_run_translated", k.translated),
        ("fe_run_refused", k.refused),
        ("fe_run_read", c.records),
        ("fe_run_lost", k.lost),
    ] {
        sink.push(row(sc, metric, name, (r, 1), v as f64))?;
    }
    if state == State::Batched {
        let ms = args.flow.flow_drain_ms as f64;
        sink.push(row(sc, "fe_drain_ms", name, (r, 1), ms))?;
    }
    Ok(())
}

/// Part 1: `--flow-runs` runs of every [`State`], see the module doc.
fn on_off(args: &RunArgs, lab: &Lab, sc: &Scenario, sink: &mut Sink) -> Result<(), BenchError> {
    // Unrecorded: the servers' and the client's first connects are slower.
    set_flow_events(&lab.topo.bpffs_dir, true)?;
    let consumer = Consumer::start(&lab.topo.bpffs_dir, hub(lab), Wake::Agent(READ_EVERY))?;
    latency(args, lab, sc)?;
    consumer.stop()?;
    for r in 0..args.flow.flow_runs {
        for state in order(r) {
            measure_state(args, lab, sc, (state, r), sink)?;
        }
    }
    Ok(())
}

/// Part 2: one loss run at the highest connection rate, the consumer
/// draining during it or only after the client exited.
fn loss(
    args: &RunArgs,
    (lab, ring_bytes): (&Lab, u32),
    sc: &Scenario,
    drained: bool,
    sink: &mut Sink,
) -> Result<(), BenchError> {
    let dir = &lab.topo.bpffs_dir;
    set_flow_events(dir, true)?;
    set_flow_event_rate(dir, DEFAULT_EVENTS_PER_CPU)?;
    // Whatever an earlier run left in the ring is read here, uncounted.
    let first = Consumer::start(dir, hub(lab), Wake::Agent(READ_EVERY))?;
    let base = first.sync()?;
    let during = if drained {
        Some(first)
    } else {
        first.stop()?;
        None
    };
    let k0 = Kernel::read(&lab.dp)?;
    let res = rate(args, lab, sc, args.flow.flow_threads)?;
    let k = Kernel::read(&lab.dp)?.since(&k0);
    let got: Received = match during {
        Some(c) => c.stop()?.since(&base),
        None => Consumer::start(dir, hub(lab), Wake::Agent(READ_EVERY))?.stop()?,
    };
    let target = loss_target(ring_bytes, drained);
    let one = |metric: &str, v: f64| row(sc, metric, &target, (0, res.ops), v);
    for r in [
        one("fe_loss_threads", args.flow.flow_threads as f64),
        one("fe_loss_conn_per_s", res.per_s),
        one("fe_loss_client_ok", res.ops as f64),
        one("fe_loss_client_errors", res.errors as f64),
        one("fe_loss_translated", k.translated as f64),
        one("fe_loss_refused", k.refused as f64),
        one("fe_loss_read", got.records as f64),
        one("fe_loss_undecoded", got.undecoded as f64),
        one("fe_loss_lost", k.lost as f64),
    ] {
        sink.push(r)?;
    }
    info!(
        n = sc.services,
        target,
        read = got.records,
        lost = k.lost,
        translated = k.translated,
        "flow event loss"
    );
    Ok(())
}

/// Part 3: the `flows` child, its memory figures as rows.
fn memory(args: &RunArgs, sc: &Scenario, sink: &mut Sink) -> Result<(), BenchError> {
    let exe = self_exe()?;
    let (n, max) = (sc.services.to_string(), args.flow.flows_max.to_string());
    let out = topo::run(
        &exe.to_string_lossy(),
        &["flows", "-n", &n, "--flows-max", &max],
    )?;
    let line = out.lines().last().unwrap_or_default();
    let m: FlowMemory = serde_json::from_str(line).map_err(|e| BenchError::BadOutput {
        what: "flows".into(),
        detail: format!("{e}: {line:?}"),
    })?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let heap = |b: u64| b as f64 / (1024.0 * 1024.0);
    let flows = (0, m.flows_max as u64);
    for (metric, v) in [
        ("fe_mem_kept", m.kept as f64),
        ("fe_mem_evicted", m.evicted as f64),
        ("fe_mem_rss_base_mib", mib(m.rss_base_kib)),
        ("fe_mem_rss_full_mib", mib(m.rss_full_kib)),
        ("fe_mem_rss_steady_mib", mib(m.rss_steady_kib)),
        ("fe_mem_heap_base_mib", heap(m.heap_base_bytes)),
        ("fe_mem_heap_full_mib", heap(m.heap_full_bytes)),
        ("fe_mem_heap_steady_mib", heap(m.heap_steady_bytes)),
    ] {
        sink.push(row(sc, metric, "-", flows, v))?;
    }
    Ok(())
}

/// Every flow events measurement of one N.
fn measure_n(args: &RunArgs, sc: &Scenario, sink: &mut Sink) -> Result<(), BenchError> {
    let t = Instant::now();
    let index = {
        let (services, slices) = crate::ebpf::objects(sc);
        let node = crate::ebpf::node_context();
        ServiceIndex::of(&desired_state(&services, &slices, &node, &Options::default()).state)
    };
    for ring in [capacity::EVENTS_RING, args.flow.flow_small_ring] {
        let lab = lab(sc, ring, &index)?;
        if ring == capacity::EVENTS_RING {
            on_off(args, &lab, sc, sink)?;
        }
        for drained in [true, false] {
            loss(args, (&lab, ring), sc, drained, sink)?;
        }
    }
    memory(args, sc, sink)?;
    let secs = t.elapsed().as_secs_f64();
    info!(n = sc.services, secs, "flow events N done");
    Ok(())
}

/// The flow events part for every N, rows to `sink`; returns its facts.
pub(crate) fn measure(
    args: &RunArgs,
    ns: &[usize],
    sink: &mut Sink,
) -> Result<NsFacts, BenchError> {
    let scenarios = ns
        .iter()
        .map(|n| Scenario::new(*n).ok_or_else(|| BenchError::Arg(format!("bad service count {n}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut f = run_facts::collect_ns(args, ns, &["ebpf".to_string()]);
    f.runs = args.flow.flow_runs;
    let t0 = Instant::now();
    for sc in &scenarios {
        measure_n(args, sc, sink)?;
    }
    f.duration_s = t0.elapsed().as_secs_f64();
    f.loadavg_end = run_facts::loadavg();
    Ok(f)
}

/// `run --only flow-events`: `measure` with rows to `flow-events.csv`,
/// then merged into `raw.csv` (replacing the flow events rows of the N
/// measured) and the facts into `facts.json`.
pub fn run_only(args: &RunArgs, ns: &[usize]) -> Result<(), BenchError> {
    let mut sink = Sink::create(&args.out, "flow-events.csv")?;
    let path = sink.path.clone();
    let f = measure(args, ns, &mut sink)?;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let raw = args.out.join("raw.csv");
    let merged = merge(&parse_csv(&read(&raw)), &parse_csv(&read(&path)));
    write_csv(&raw, &merged)?;
    run_facts::update(&args.out.join("facts.json"), |facts| {
        facts.flow_events = Some(f);
    })?;
    info!(csv = %raw.display(), "flow events rows merged");
    Ok(())
}

/// `old` without the flow events rows of the N values in `new`, then `new`.
pub fn merge(old: &[Row], new: &[Row]) -> Vec<Row> {
    replace_rows(old, new, |r| r.metric.starts_with(METRIC_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: usize, metric: &str, value: f64) -> Row {
        Row {
            n,
            datapath: "ebpf".into(),
            metric: metric.into(),
            target: "on".into(),
            run: 0,
            samples: 1,
            value,
        }
    }

    #[test]
    fn merge_replaces_only_flow_event_rows_of_the_measured_n() {
        let old = vec![
            r(10_000, "connect_p50_us", 24.0),
            r(10_000, "fe_connect_p50_us", 25.0),
            r(1000, "fe_connect_p50_us", 26.0),
        ];
        let new = vec![r(10_000, "fe_connect_p50_us", 24.5)];
        assert_eq!(
            merge(&old, &new),
            vec![
                r(10_000, "connect_p50_us", 24.0),
                r(1000, "fe_connect_p50_us", 26.0),
                r(10_000, "fe_connect_p50_us", 24.5),
            ]
        );
    }

    #[test]
    fn every_state_goes_before_every_other_as_often_as_after() {
        let runs: Vec<[State; 3]> = (0..6).map(order).collect();
        let pos = |o: &[State; 3], s: State| o.iter().position(|x| *x == s);
        for a in [State::Off, State::On, State::Batched] {
            for b in [State::Off, State::On, State::Batched] {
                if a == b {
                    continue;
                }
                let before = runs.iter().filter(|o| pos(o, a) < pos(o, b)).count();
                assert_eq!(before, 3, "{a:?} before {b:?}");
            }
        }
        for r in 0..12 {
            let on_first = pos(&order(r), State::On) < pos(&order(r), State::Off);
            assert_eq!(on_first, r % 2 == 0, "run {r}");
        }
        assert_eq!(order(6), order(0));
    }

    #[test]
    fn a_full_run_measures_at_ten_thousand_or_its_largest_n() {
        assert_eq!(full_run_n(&[1, 1000, 10_000, 40_000]), Some(10_000));
        assert_eq!(full_run_n(&[1, 1000]), Some(1000));
        assert_eq!(full_run_n(&[]), None);
    }

    #[test]
    fn loss_targets_name_the_ring_and_the_consumer() {
        assert_eq!(loss_target(262_144, true), "262144-drained");
        assert_eq!(loss_target(4096, false), "4096-undrained");
    }

    #[test]
    fn kernel_deltas_never_wrap() {
        let a = Kernel {
            translated: 10,
            refused: 1,
            lost: 2,
        };
        let b = Kernel {
            translated: 25,
            refused: 1,
            lost: 7,
        };
        assert_eq!(
            b.since(&a),
            Kernel {
                translated: 15,
                refused: 0,
                lost: 5
            }
        );
        assert_eq!(a.since(&b), Kernel::default());
    }
}

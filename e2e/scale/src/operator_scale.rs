//! One run of the operator scale benchmark: the cluster without lab
//! nodes, the simulated nodes and their kube-proxy pods, the operator, the
//! plan applied and watched to `Succeeded`, and what it cost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use switchyard_api::{MigrationPlan, Phase};
use switchyard_e2e::addons::{self, ProxyMode};
use switchyard_e2e::cluster::{Cluster, ClusterConfig, wait_for};
use switchyard_e2e::error::{Error, Result};
use switchyard_e2e::scenario::{config_dir, kubectl, relative};

use crate::at_rest::{self, AtRest};
use crate::measure::{self, ProcSample, RequestCounts};
use crate::operator::{self, OPERATOR_USER};
use crate::responder::{Counters, Responder};
use crate::simulated::{PLAN, WaveClock, node_name, node_object, plan_object};

/// One benchmark run's settings.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// Wave size, percent of the nodes.
    pub wave_percent: u32,
    /// Seconds between each simulated agent's Lease renewals (the
    /// agent's default is 10).
    pub heartbeat: Duration,
    /// The operator binary.
    pub operator: PathBuf,
    /// Longest the migration may take.
    pub timeout: Duration,
    /// The window measured at rest after the migration.
    pub at_rest: Duration,
}

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub nodes: usize,
    pub wave_percent: u32,
    pub waves: usize,
    /// Seconds to create the cluster, nodes, kube-proxy pods and agents.
    pub setup_secs: f64,
    /// MigrationPlan applied → `Succeeded`, seconds.
    pub total_secs: f64,
    /// Per wave: first node leaves Pending → last node Done (seconds, as the plan's watch shows it).
    pub wave_secs: Vec<f64>,
    /// Operator CPU (user+system) during the migration, seconds.
    pub operator_cpu_secs: f64,
    /// Operator CPU from start (cache fill included) to the end, seconds.
    pub operator_cpu_total_secs: f64,
    /// Operator CPU during the migration per node, milliseconds.
    pub operator_cpu_ms_per_node: f64,
    /// Operator wall time per node (total / nodes), milliseconds.
    pub wall_ms_per_node: f64,
    /// Operator peak RSS (`VmHWM`) at the end, MiB.
    pub operator_peak_rss_mib: f64,
    /// Operator RSS before the plan was applied (caches filled), MiB.
    pub operator_idle_rss_mib: f64,
    /// Largest anonymous resident memory (heap) sampled during the migration, MiB.
    pub operator_peak_anon_mib: f64,
    /// Largest resident file memory (the binary) sampled during the migration, MiB.
    pub operator_peak_file_mib: f64,
    /// kube-apiserver CPU during the migration, seconds.
    pub apiserver_cpu_secs: f64,
    /// The operator's API requests during the migration (audit log).
    pub requests: RequestCounts,
    /// `requests.total / nodes`.
    pub requests_per_node: f64,
    /// The operator's API requests from its start to the plan's apply.
    pub startup_requests: u64,
    /// Size of the final MigrationPlan status as JSON, KiB.
    pub plan_status_kib: f64,
    /// Writes of the simulated agents and kubelets during the whole run.
    pub responder_answers: u64,
    pub responder_heartbeats: u64,
    pub responder_pod_writes: u64,
    pub responder_errors: u64,
    /// etcd's database in use before the plan and after the window at
    /// rest, MiB.
    pub etcd_db_mib_before: f64,
    pub etcd_db_mib_after: f64,
    /// The window at rest after `Succeeded`.
    pub at_rest: AtRest,
}

/// Runs one benchmark: cluster up, migrate, measure, tear down.
pub async fn run_once(cfg: &ScaleConfig) -> Result<RunResult> {
    let work = PathBuf::from(format!(
        "/dev/shm/switchyard-scale-{}-{}",
        std::process::id(),
        cfg.nodes
    ));
    std::fs::create_dir_all(&work).map_err(Error::io("creating", &work))?;
    let policy = work.join("audit-policy.yaml");
    std::fs::write(&policy, measure::audit_policy(OPERATOR_USER))
        .map_err(Error::io("writing", &policy))?;
    let audit_log = work.join("audit.log");
    let setup = Instant::now();
    let cluster = Cluster::start(ClusterConfig {
        nodes: 0,
        kube_proxy: false,
        apiserver_extra_args: vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-maxsize=0".into(),
        ],
        rbac_audit: false,
        ..ClusterConfig::default()
    })
    .await?;
    let result = migrate(&cluster, cfg, &work, &audit_log, setup).await;
    cluster.teardown();
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        tracing::warn!(dir = %work.display(), "run failed; operator log and audit log kept");
    }
    result
}

/// Installs the CRDs, the namespace and the operator's RBAC from `config/`
/// (through kustomize, as `make demo` does: plain `kubectl apply -f` reads
/// the CRDs' `default: Off` as a YAML 1.1 boolean).
async fn install(c: &Cluster, work: &Path, nodes: usize) -> Result<()> {
    let config = config_dir()
        .canonicalize()
        .map_err(Error::io("resolving", config_dir()))?;
    let root = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.clone());
    let overlay = work.join("install");
    std::fs::create_dir_all(&overlay).map_err(Error::io("creating", &overlay))?;
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {ns}\n  - {crds}\n  - {rbac}\n",
        ns = "namespace.yaml",
        crds = relative(&overlay, &root.join("crds")).display(),
        rbac = relative(&overlay, &config.join("rbac")).display(),
    );
    let ns = config.join("namespace.yaml");
    std::fs::copy(&ns, overlay.join("namespace.yaml")).map_err(Error::io("copying", &ns))?;
    let file = overlay.join("kustomization.yaml");
    std::fs::write(&file, kustomization).map_err(Error::io("writing", &file))?;
    let dir = overlay.display().to_string();
    kubectl(c, &["apply", "--server-side", "-k", &dir]).await?;
    kubectl(
        c,
        &[
            "wait",
            "--for=condition=Established",
            "crd/migrationplans.switchyard.dev",
            "crd/nodedatapaths.switchyard.dev",
            "--timeout=60s",
        ],
    )
    .await?;
    for obj in addons::kube_proxy_objects(c.plan(), ProxyMode::Iptables) {
        addons::apply(&c.client(), &obj).await?;
    }
    let api: Api<Node> = Api::all(c.client());
    futures::stream::iter((0..nodes).map(|i| {
        let api = api.clone();
        async move {
            match api.create(&PostParams::default(), &node_object(i)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(Error::from(e)),
            }
        }
    }))
    .buffer_unordered(32)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

async fn wait_kube_proxy(c: &Cluster, nodes: usize) -> Result<()> {
    let api: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    let want = nodes as i32;
    wait_for(
        &format!("kube-proxy Ready on {want} simulated nodes"),
        Duration::from_secs(120 + nodes as u64 / 2),
        || {
            let api = api.clone();
            async move {
                let s = api.get_opt("kube-proxy").await.ok().flatten()?.status?;
                (s.number_ready == want && s.desired_number_scheduled == want).then_some(())
            }
        },
    )
    .await
}

/// Counts the ports of every Service (the simulated agents report them as
/// synced).
async fn service_ports(c: &Cluster) -> Result<u32> {
    Ok(Api::<Service>::all(c.client())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .map_or(0, Vec::len) as u32
        })
        .sum())
}

/// Setup: switchyard installed, the simulated nodes with their agents and
/// kubelets, kube-proxy Ready on every node.
async fn simulate_nodes(c: &Cluster, cfg: &ScaleConfig, work: &Path) -> Result<Responder> {
    install(c, work, cfg.nodes).await?;
    let services = service_ports(c).await?;
    let names: Vec<String> = (0..cfg.nodes).map(node_name).collect();
    let responder = Responder::start(c.client(), &names, services, cfg.heartbeat).await?;
    wait_kube_proxy(c, cfg.nodes).await?;
    Ok(responder)
}

/// What the watch of the plan saw until `Succeeded`.
#[derive(Debug)]
struct Watched {
    plan: MigrationPlan,
    clock: WaveClock,
    /// The operator's last sample and its largest anonymous and file RSS.
    last: ProcSample,
    peak_anon_kib: u64,
    peak_file_kib: u64,
}

/// Watches the applied plan to `Succeeded`, sampling the operator every
/// 250 ms; an end other than `Succeeded`, the operator's exit or
/// `cfg.timeout` is an error.
async fn watch_plan(
    c: &Cluster,
    cfg: &ScaleConfig,
    op: &mut operator::Running,
    op0: ProcSample,
    started: Instant,
) -> Result<Watched> {
    // Watched, not polled: the status of a large plan is most of a MiB,
    // and re-reading it every tick would load the API server the operator
    // is measured against.
    let plans: Api<MigrationPlan> = Api::all(c.client());
    let wc = watcher::Config::default().fields(&format!("metadata.name={PLAN}"));
    let mut events = std::pin::pin!(watcher(plans, wc).default_backoff().applied_objects());
    let mut clock = WaveClock::default();
    let mut last = op0;
    let (mut peak_anon_kib, mut peak_file_kib) = (op0.anon_kib, op0.file_kib);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let plan = loop {
        let elapsed = started.elapsed();
        tokio::select! {
            ev = events.next() => {
                let Some(Ok(p)) = ev else { continue };
                clock.observe(&p, started.elapsed().as_secs_f64());
                if plan_done(&p)? {
                    break p;
                }
            }
            _ = tick.tick() => {
                let Some(s) = measure::sample(op.pid) else {
                    return Err(op.exited());
                };
                peak_anon_kib = peak_anon_kib.max(s.anon_kib);
                peak_file_kib = peak_file_kib.max(s.file_kib);
                last = s;
                if elapsed > cfg.timeout {
                    return Err(Error::Timeout {
                        what: format!("MigrationPlan {PLAN} to succeed on {} nodes", cfg.nodes),
                        seconds: cfg.timeout.as_secs(),
                    });
                }
            }
        }
    };
    Ok(Watched {
        plan,
        clock,
        last,
        peak_anon_kib,
        peak_file_kib,
    })
}

/// Whether the plan `Succeeded`; an error when it ended otherwise.
fn plan_done(p: &MigrationPlan) -> Result<bool> {
    let phase = p.status.as_ref().map_or(Phase::Pending, |s| s.phase);
    match phase {
        Phase::Succeeded => Ok(true),
        Phase::Failed | Phase::Paused | Phase::RolledBack | Phase::Planned => {
            Err(Error::Config(format!(
                "plan ended {phase:?}: {}",
                p.status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_default()
            )))
        }
        _ => Ok(false),
    }
}

/// Everything one run measured, before it becomes a [`RunResult`].
#[derive(Debug)]
struct Measured {
    setup_secs: f64,
    total_secs: f64,
    watched: Watched,
    /// The operator's and the API server's samples at apply and at the end.
    op0: ProcSample,
    op1: ProcSample,
    api0: ProcSample,
    api1: ProcSample,
    /// The operator's requests during the migration and before it.
    requests: RequestCounts,
    startup: RequestCounts,
    etcd_before: u64,
    etcd_after: u64,
    at_rest: AtRest,
}

async fn migrate(
    c: &Cluster,
    cfg: &ScaleConfig,
    work: &Path,
    audit_log: &Path,
    setup: Instant,
) -> Result<RunResult> {
    let responder = simulate_nodes(c, cfg, work).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    tracing::info!(
        nodes = cfg.nodes,
        secs = setup_secs,
        "simulated cluster ready"
    );

    let etcd_before = at_rest::etcd_db_in_use(c).await?;
    let mut op = operator::Running::start(c, &cfg.operator, work).await?;
    let api_pid = c.control_plane_pid("kube-apiserver");
    let op0 = measure::sample(op.pid).unwrap_or_default();
    let api0 = api_pid.and_then(measure::sample).unwrap_or_default();

    let t0 = Utc::now();
    let started = Instant::now();
    addons::apply(&c.client(), &plan_object(cfg.wave_percent)).await?;
    let watched = watch_plan(c, cfg, &mut op, op0, started).await?;
    let total_secs = started.elapsed().as_secs_f64();
    let t1 = Utc::now();
    let op1 = measure::sample(op.pid).unwrap_or(watched.last);
    let api1 = api_pid.and_then(measure::sample).unwrap_or(api0);
    let op_started = op.started;
    let rest = at_rest::measure_window(c, cfg.at_rest, &responder.counters, audit_log).await?;
    let etcd_after = at_rest::etcd_db_in_use(c).await?;
    op.stop().await;

    let audit = std::fs::read_to_string(audit_log).map_err(Error::io("reading", audit_log))?;
    let m = Measured {
        setup_secs,
        total_secs,
        watched,
        op0,
        op1,
        api0,
        api1,
        requests: measure::count_requests(audit.lines(), OPERATOR_USER, t0, t1),
        startup: measure::count_requests(audit.lines(), OPERATOR_USER, op_started, t0),
        etcd_before,
        etcd_after,
        at_rest: rest,
    };
    Ok(run_result(cfg, m, &responder.counters))
}

/// The figures of a run from what it measured.
fn run_result(cfg: &ScaleConfig, m: Measured, counters: &Counters) -> RunResult {
    let n = cfg.nodes;
    let (op0, op1, w) = (m.op0, m.op1, &m.watched);
    let status = w.plan.status.as_ref();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    RunResult {
        nodes: n,
        wave_percent: cfg.wave_percent,
        waves: status.map_or(0, |s| s.waves.len()),
        setup_secs: m.setup_secs,
        total_secs: m.total_secs,
        wave_secs: w.clock.durations(),
        operator_cpu_secs: op1.cpu_secs - op0.cpu_secs,
        operator_cpu_total_secs: op1.cpu_secs,
        operator_cpu_ms_per_node: (op1.cpu_secs - op0.cpu_secs) * 1000.0 / n as f64,
        wall_ms_per_node: m.total_secs * 1000.0 / n as f64,
        operator_peak_rss_mib: mib(op1.hwm_kib.max(w.last.hwm_kib)),
        operator_idle_rss_mib: mib(op0.rss_kib),
        operator_peak_anon_mib: mib(w.peak_anon_kib),
        operator_peak_file_mib: mib(w.peak_file_kib),
        apiserver_cpu_secs: m.api1.cpu_secs - m.api0.cpu_secs,
        requests_per_node: m.requests.total as f64 / n as f64,
        startup_requests: m.startup.total,
        requests: m.requests,
        plan_status_kib: serde_json::to_vec(&w.plan.status)
            .map_or(0.0, |v| v.len() as f64 / 1024.0),
        responder_answers: load(&counters.answers),
        responder_heartbeats: load(&counters.heartbeats),
        responder_pod_writes: load(&counters.pod_writes),
        responder_errors: load(&counters.errors),
        etcd_db_mib_before: mib(m.etcd_before / 1024),
        etcd_db_mib_after: mib(m.etcd_after / 1024),
        at_rest: m.at_rest,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

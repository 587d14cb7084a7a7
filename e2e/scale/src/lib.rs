//! The operator scale benchmark: a real control plane (etcd,
//! kube-apiserver with an audit log of the operator's requests,
//! kube-controller-manager, kube-scheduler) without lab nodes; N simulated
//! Node objects, kube-proxy's real DaemonSet and ConfigMap (iptables mode)
//! whose pods the real DaemonSet controller and scheduler place on them; a
//! fake [`responder`] playing every node's agent and kubelet; the real
//! `switchyard-operator` binary as a child process with its own
//! ServiceAccount token and `config/rbac` permissions; one `MigrationPlan`
//! in waves, measured from apply to `Succeeded`.

pub mod kp_parse;
pub mod kp_report;
pub mod kube_proxy;
pub mod measure;
pub mod operator;
pub mod report;
pub mod responder;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde_json::json;
use switchyard_api::{MigrationPlan, NodeStep, Phase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use measure::RequestCounts;
use responder::Responder;
use switchyard_e2e::addons::{self, ProxyMode};
use switchyard_e2e::cluster::{Cluster, ClusterConfig, wait_for};
use switchyard_e2e::error::{Error, Result};
use switchyard_e2e::scenario::{config_dir, kubectl, relative};

/// The operator's API identity (its ServiceAccount).
pub const OPERATOR_USER: &str = "system:serviceaccount:switchyard-system:switchyard-operator";
/// Name of the benchmark's MigrationPlan.
pub const PLAN: &str = "scale";

/// One benchmark run's settings.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// Wave size, percent of the nodes.
    pub wave_percent: u32,
    /// Seconds between each simulated agent's status heartbeats (the
    /// agent's default is 10).
    pub heartbeat: Duration,
    /// The operator binary.
    pub operator: PathBuf,
    /// Longest the migration may take.
    pub timeout: Duration,
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
}

/// The address a simulated node reports (object data only: nothing is
/// ever sent to it).
pub fn node_ip(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, i % 250 + 1)
}

/// Name of simulated node `i` (0-based).
pub fn node_name(i: usize) -> String {
    format!("sim-{:05}", i + 1)
}

/// A Node as a kubelet registers it, Ready, with room for pods.
pub fn node_object(i: usize) -> Node {
    let name = node_name(i);
    let cap = json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let v = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                     "kubernetes.io/arch": "amd64", "switchyard.dev/simulated-node": "true"}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": node_ip(i)}, {"type": "Hostname", "address": name}],
            "capacity": cap, "allocatable": cap,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                         "osImage": "simulated", "containerRuntimeVersion": "simulated://0",
                         "kubeletVersion": switchyard_e2e::binaries::K8S_VERSION, "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": "amd64"}
        }
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// The benchmark's MigrationPlan: every node, no canary, waves of
/// `wave_percent`, the built-in API server probe.
pub fn plan_object(wave_percent: u32) -> serde_json::Value {
    json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationPlan",
        "metadata": {"name": PLAN},
        "spec": {
            "strategy": {"canaryNodes": 0, "waveSize": format!("{wave_percent}%"),
                         "pauseBetweenWavesSeconds": 0, "stepTimeoutSeconds": 900},
            "verification": {"apiServerProbe": true, "dnsProbe": false,
                             "consecutiveSuccesses": 3, "timeoutSeconds": 5},
            "failurePolicy": {"maxFailedNodes": 0, "action": "Pause"}
        }
    })
}

/// First-start and all-done instants of each wave, from polled statuses.
#[derive(Debug, Default)]
pub struct WaveClock {
    started: BTreeMap<u32, f64>,
    done: BTreeMap<u32, f64>,
}

impl WaveClock {
    /// Records what the status shows at `t` seconds.
    pub fn observe(&mut self, plan: &MigrationPlan, t: f64) {
        let Some(s) = &plan.status else { return };
        let mut all_done: BTreeMap<u32, bool> = BTreeMap::new();
        for n in &s.nodes {
            if n.step != NodeStep::Pending {
                self.started.entry(n.wave).or_insert(t);
            }
            let d = all_done.entry(n.wave).or_insert(true);
            *d &= n.step == NodeStep::Done;
        }
        for (w, d) in all_done {
            if d {
                self.done.entry(w).or_insert(t);
            }
        }
    }

    /// Seconds each wave took (waves seen both starting and done).
    pub fn durations(&self) -> Vec<f64> {
        self.done
            .iter()
            .filter_map(|(w, d)| Some(d - self.started.get(w)?))
            .collect()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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

/// A kubeconfig for the operator's ServiceAccount (a bound token from the
/// TokenRequest API) next to the cluster's admin kubeconfig.
async fn operator_kubeconfig(c: &Cluster, dir: &Path) -> Result<PathBuf> {
    let token = kubectl(
        c,
        &[
            "create",
            "token",
            "switchyard-operator",
            "-n",
            "switchyard-system",
            "--duration=12h",
        ],
    )
    .await?;
    let admin =
        std::fs::read_to_string(c.kubeconfig()).map_err(Error::io("reading", c.kubeconfig()))?;
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&admin).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let cluster = admin["clusters"][0]["cluster"].clone();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token.trim()}}],
        "contexts": [{"name": "operator", "context": {"cluster": "lab", "user": "operator"}}],
        "current-context": "operator",
    });
    let path = dir.join("operator.kubeconfig");
    let text = serde_yaml::to_string(&kc).map_err(|e| Error::Serde(e.to_string()))?;
    std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
    Ok(path)
}

/// `GET /readyz` on the operator's endpoint answers 200.
async fn ready(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    switchyard_e2e::request::parse_response(&buf).is_some_and(|r| r.status == 200)
}

fn free_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding", "127.0.0.1:0"))?;
    Ok(l.local_addr()
        .map_err(Error::io("reading", "local address"))?
        .port())
}

async fn migrate(
    c: &Cluster,
    cfg: &ScaleConfig,
    work: &Path,
    audit_log: &Path,
    setup: Instant,
) -> Result<RunResult> {
    let n = cfg.nodes;
    install(c, work, n).await?;
    let services: u32 = Api::<Service>::all(c.client())
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
        .sum();
    let names: Vec<String> = (0..n).map(node_name).collect();
    let responder = Responder::start(c.client(), &names, services, cfg.heartbeat).await?;
    wait_kube_proxy(c, n).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    tracing::info!(nodes = n, secs = setup_secs, "simulated cluster ready");

    let kc = operator_kubeconfig(c, work).await?;
    let port = free_port()?;
    let log_path = work.join("operator.log");
    let op_started = Utc::now();
    let mut operator = operator::spawn(&cfg.operator, &kc, port, &log_path)?;
    let pid = operator.id().map_or(0, |p| p as i32);
    wait_for(
        "the operator's /readyz (lease held, caches filled)",
        Duration::from_secs(120),
        || async move { ready(port).await.then_some(()) },
    )
    .await?;
    let api_pid = c.control_plane_pid("kube-apiserver");
    let op0 = measure::sample(pid).unwrap_or_default();
    let api0 = api_pid.and_then(measure::sample).unwrap_or_default();

    let t0 = Utc::now();
    let started = Instant::now();
    addons::apply(&c.client(), &plan_object(cfg.wave_percent)).await?;
    // Watched, not polled: the status of a large plan is most of a MiB,
    // and re-reading it every tick would load the API server the operator
    // is measured against.
    let plans: Api<MigrationPlan> = Api::all(c.client());
    let wc = watcher::Config::default().fields(&format!("metadata.name={PLAN}"));
    let mut events = std::pin::pin!(watcher(plans, wc).default_backoff().applied_objects());
    let mut clock = WaveClock::default();
    let mut last = op0;
    let (mut peak_anon, mut peak_file) = (op0.anon_kib, op0.file_kib);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let final_plan = loop {
        let elapsed = started.elapsed();
        tokio::select! {
            ev = events.next() => {
                let Some(Ok(p)) = ev else { continue };
                clock.observe(&p, started.elapsed().as_secs_f64());
                let phase = p.status.as_ref().map_or(Phase::Pending, |s| s.phase);
                match phase {
                    Phase::Succeeded => break p,
                    Phase::Failed | Phase::Paused | Phase::RolledBack | Phase::Planned => {
                        return Err(Error::Config(format!(
                            "plan ended {phase:?}: {}",
                            p.status.and_then(|s| s.message).unwrap_or_default()
                        )));
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                match measure::sample(pid) {
                    Some(s) => {
                        peak_anon = peak_anon.max(s.anon_kib);
                        peak_file = peak_file.max(s.file_kib);
                        last = s;
                    }
                    None => {
                        return Err(Error::Exited {
                            program: "switchyard-operator".into(),
                            status: format!("{:?}", operator.try_wait().ok().flatten()),
                            log: log_path,
                        });
                    }
                }
                if elapsed > cfg.timeout {
                    return Err(Error::Timeout {
                        what: format!("MigrationPlan {PLAN} to succeed on {n} nodes"),
                        seconds: cfg.timeout.as_secs(),
                    });
                }
            }
        }
    };
    let total_secs = started.elapsed().as_secs_f64();
    let t1 = Utc::now();
    let op1 = measure::sample(pid).unwrap_or(last);
    let api1 = api_pid.and_then(measure::sample).unwrap_or(api0);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), operator.wait()).await;
    let _ = operator.kill().await;

    let audit = std::fs::read_to_string(audit_log).map_err(Error::io("reading", audit_log))?;
    let requests = measure::count_requests(audit.lines(), OPERATOR_USER, t0, t1);
    let startup = measure::count_requests(audit.lines(), OPERATOR_USER, op_started, t0);
    let waves = final_plan.status.as_ref().map_or(0, |s| s.waves.len());
    let plan_status_kib =
        serde_json::to_vec(&final_plan.status).map_or(0.0, |v| v.len() as f64 / 1024.0);
    let counters = &responder.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(RunResult {
        nodes: n,
        wave_percent: cfg.wave_percent,
        waves,
        setup_secs,
        total_secs,
        wave_secs: clock.durations(),
        operator_cpu_secs: op1.cpu_secs - op0.cpu_secs,
        operator_cpu_total_secs: op1.cpu_secs,
        operator_cpu_ms_per_node: (op1.cpu_secs - op0.cpu_secs) * 1000.0 / n as f64,
        wall_ms_per_node: total_secs * 1000.0 / n as f64,
        operator_peak_rss_mib: mib(op1.hwm_kib.max(last.hwm_kib)),
        operator_idle_rss_mib: mib(op0.rss_kib),
        operator_peak_anon_mib: mib(peak_anon),
        operator_peak_file_mib: mib(peak_file),
        apiserver_cpu_secs: api1.cpu_secs - api0.cpu_secs,
        requests_per_node: requests.total as f64 / n as f64,
        requests,
        startup_requests: startup.total,
        plan_status_kib,
        responder_answers: load(&counters.answers),
        responder_heartbeats: load(&counters.heartbeats),
        responder_pod_writes: load(&counters.pod_writes),
        responder_errors: load(&counters.errors),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::{MigrationPlanSpec, MigrationPlanStatus, NodeProgress};

    #[test]
    fn simulated_nodes_are_ready_linux_nodes_with_distinct_addresses() {
        let a = node_object(0);
        let b = node_object(999);
        assert_eq!(a.metadata.name.as_deref(), Some("sim-00001"));
        assert_ne!(node_ip(0), node_ip(999));
        assert_ne!(node_ip(249), node_ip(250));
        let labels = b.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let conds = b.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }

    #[test]
    fn the_plan_uses_percentage_waves_without_canary() {
        let p: MigrationPlan = serde_json::from_value(plan_object(10))
            .unwrap_or_else(|_| MigrationPlan::new("invalid", MigrationPlanSpec::default()));
        assert_eq!(p.metadata.name.as_deref(), Some(PLAN));
        assert_eq!(p.spec.strategy.canary_nodes, 0);
        assert_eq!(
            p.spec.strategy.wave_size,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("10%".into())
        );
    }

    #[test]
    fn wave_clock_times_each_wave_from_first_start_to_last_done() {
        let mk = |steps: &[(u32, NodeStep)]| {
            let mut p = MigrationPlan::new(PLAN, MigrationPlanSpec::default());
            p.status = Some(MigrationPlanStatus {
                nodes: steps
                    .iter()
                    .map(|(w, s)| NodeProgress {
                        wave: *w,
                        step: *s,
                        ..NodeProgress::default()
                    })
                    .collect(),
                ..MigrationPlanStatus::default()
            });
            p
        };
        let mut c = WaveClock::default();
        c.observe(
            &mk(&[
                (0, NodeStep::Pending),
                (0, NodeStep::Pending),
                (1, NodeStep::Pending),
            ]),
            0.0,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Cordon),
                (0, NodeStep::Pending),
                (1, NodeStep::Pending),
            ]),
            1.0,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Done),
                (0, NodeStep::Verify),
                (1, NodeStep::Pending),
            ]),
            2.0,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Done),
                (0, NodeStep::Done),
                (1, NodeStep::Cordon),
            ]),
            3.5,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Done),
                (0, NodeStep::Done),
                (1, NodeStep::Done),
            ]),
            5.0,
        );
        assert_eq!(c.durations(), vec![2.5, 1.5]);
    }
}

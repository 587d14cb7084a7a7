//! The agent's reconcile loop for its node's `NodeDatapath`: mode, cleanup
//! and probe requests in, status (with a heartbeat) out; Service sync on
//! every Service/EndpointSlice change, debounced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use switchyard_api::conditions::{self, DEGRADED, WAITING_FOR_KUBE_PROXY};
use switchyard_api::{
    DatapathMode, NodeDatapath, NodeDatapathSpec, NodeDatapathStatus, ProbeRequest, ProbeResult,
};
use switchyard_node_datapath::{Datapath, DatapathConfig, capabilities, off, read_stats};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::health::{Health, HealthState};
use crate::kube_proxy;
use crate::probe::{self, Target};
use crate::server::Shared;
use crate::status;
use crate::store::{self as cache, Applied, Services, Slices, Store};
use crate::sync::{Pending, Syncer, Touched, node_context};

/// The configured ingress interfaces, or those holding `node`'s addresses.
fn ingress_interfaces(cfg: &AgentConfig, node: &Node) -> Vec<String> {
    if let Some(names) = &cfg.ingress_interfaces {
        return names.clone();
    }
    match crate::ingress::local_addresses() {
        Ok(local) => crate::ingress::interfaces_of(&node_context(node).addresses, &local),
        Err(e) => {
            warn!(error = %e, "cannot list the node's addresses; no ingress program");
            Vec::new()
        }
    }
}

/// Field manager of the agent's status writes.
pub const FIELD_MANAGER: &str = "switchyard-agent";

/// Where the agent runs and what it manages.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: String,
    pub bpffs_dir: PathBuf,
    pub cgroup: PathBuf,
    pub heartbeat: Duration,
    /// Wait after a Service/EndpointSlice change for the rest of a burst.
    pub debounce: Duration,
    /// Interfaces that run the ingress program; `None`: those holding the
    /// Node's addresses ([`crate::ingress`]).
    pub ingress_interfaces: Option<Vec<String>>,
}

struct State {
    cfg: AgentConfig,
    api: Api<NodeDatapath>,
    services: Services,
    slices: Slices,
    pending: Pending,
    syncer: Syncer,
    datapath: Option<Datapath>,
    /// The external interfaces the ingress program runs on.
    ingress: Vec<String>,
    /// Why the ingress program is not attached although the datapath is
    /// (conntrack's hooks could not be kept), as `status.ingress` says.
    ingress_blocked: Option<String>,
    /// kube-proxy's health ports, answered while the datapath serves.
    health: Arc<Health>,
    /// The last Service sync succeeded.
    sync_ok: bool,
    /// `spec.mode` is Off but the datapath stays until kube-proxy serves.
    off_pending: bool,
    status: NodeDatapathStatus,
    shared: Arc<Shared>,
}

/// Runs the agent until `shutdown` fires. The datapath stays pinned and
/// serving when the agent exits; only `spec.mode: Off` removes it.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let api: Api<NodeDatapath> = Api::all(client.clone());
    let node = match Api::<Node>::all(client.clone()).get_opt(&cfg.node).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err(Error::NodeMissing(cfg.node.clone())),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(Error::NodeMissing(cfg.node.clone()));
        }
        Err(e) if !matches!(e, kube::Error::Api(_)) => {
            return Err(Error::ApiUnreachable(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let existing = ensure_object(&api, &cfg.node).await?;

    let cgroup = cfg.cgroup.clone();
    let probed = tokio::task::spawn_blocking(move || capabilities::probe_at(Some(&cgroup))).await?;
    let nftables = which("nft");
    let mut status = existing.status.clone().unwrap_or_default();
    status.agent_version = Some(env!("CARGO_PKG_VERSION").to_string());
    status.capabilities = Some(status::capabilities(&probed, nftables));

    // Watches of what the datapath serves, projected into compact stores
    // on arrival; every change is recorded in `pending` and wakes the sync.
    let wake = Arc::new(Notify::new());
    let pending = Pending::default();
    let (services, slices) = (Services::default(), Slices::default());
    let services_ready = spawn_watch(
        Api::<Service>::all(client.clone()),
        Project {
            store: services.clone(),
            wake: wake.clone(),
            pending: pending.clone(),
            project: cache::service_entry,
            touched: Touched::of_service,
        },
    );
    let slices_ready = spawn_watch(
        Api::<EndpointSlice>::all(client.clone()),
        Project {
            store: slices.clone(),
            wake: wake.clone(),
            pending: pending.clone(),
            project: cache::slice_entry,
            touched: Touched::of_slice,
        },
    );

    // Our own NodeDatapath's spec.
    let (spec_tx, mut spec_rx) = mpsc::channel::<NodeDatapathSpec>(8);
    let own = watcher::Config::default()
        .timeout(45)
        .fields(&format!("metadata.name={}", cfg.node));
    let spec_stream = watcher(api.clone(), own)
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(spec_stream);
        while let Some(ev) = spec_stream.next().await {
            match ev {
                Ok(ndp) => {
                    if spec_tx.send(ndp.spec).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "watching own NodeDatapath"),
            }
        }
    });

    let ingress = ingress_interfaces(&cfg, &node);
    info!(interfaces = ?ingress, "north-south: ingress interfaces");
    let health = Arc::new(Health::new(cfg.bpffs_dir.clone()));
    let health_task = tokio::spawn(health.clone().run());
    let mut st = State {
        ingress,
        ingress_blocked: None,
        health,
        sync_ok: true,
        syncer: Syncer::new(node_context(&node)),
        cfg: cfg.clone(),
        api,
        services,
        slices,
        pending,
        datapath: None,
        off_pending: false,
        status,
        shared,
    };
    for mut ready in [services_ready, slices_ready] {
        ready
            .wait_for(|r| *r)
            .await
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    st.apply_spec(existing.spec.clone()).await;
    st.scan_leftovers().await;
    st.report().await;
    st.shared
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    info!(node = %cfg.node, "agent ready");

    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeResult>(4);
    let mut probing: Option<i64> = None;
    let (peer_tx, mut peer_rx) = mpsc::channel::<ProbeResult>(4);
    let mut peer_probing: Option<i64> = None;
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    let mut off_retry = tokio::time::interval(Duration::from_millis(250));
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            Some(spec) = spec_rx.recv() => {
                st.apply_spec(spec.clone()).await;
                if let Some(req) = spec.probe.filter(|r| Some(r.generation) != probing && st.probe_pending(r.generation)) {
                    probing = Some(req.generation);
                    st.start_probes(req, probe_tx.clone());
                }
                if let Some(req) = spec.peer_probe.filter(|r| Some(r.generation) != peer_probing && st.peer_probe_pending(r.generation)) {
                    peer_probing = Some(req.generation);
                    let tx = peer_tx.clone();
                    tokio::spawn(async move { tx.send(probe::run_peer(req).await).await });
                }
                st.report().await;
            }
            Some(result) = peer_rx.recv() => {
                info!(generation = result.observed_generation, passed = result.passed, "peer probes done");
                st.status.peer_probe = Some(result);
                peer_probing = None;
                st.report().await;
            }
            () = wake.notified() => {
                tokio::time::sleep(cfg.debounce).await;
                st.sync();
                st.report().await;
            }
            Some(result) = probe_rx.recv() => {
                info!(generation = result.observed_generation, passed = result.passed, "probes done");
                st.status.probe = Some(result);
                probing = None;
                st.report().await;
            }
            _ = off_retry.tick(), if st.off_pending => {
                if st.try_off().await {
                    st.report().await;
                }
            }
            _ = heartbeat.tick() => {
                beats += 1;
                if beats.is_multiple_of(6) {
                    st.scan_leftovers().await;
                }
                st.report().await;
            }
            _ = shutdown.changed() => break,
        }
    }
    health_task.abort();
    info!("agent stopping; the datapath stays pinned and serving");
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// How a watch projects objects into its store and reports what it
/// touched.
struct Project<K, T> {
    store: Store<T>,
    wake: Arc<Notify>,
    pending: Pending,
    project: fn(&K) -> (cache::Key, T),
    touched: fn(&Applied<T>) -> Option<Touched>,
}

/// Watches `api`, keeping `p.store` equal to its objects (projected; the
/// object itself is dropped after its event). The receiver turns true at
/// the first complete list.
fn spawn_watch<K, T>(api: Api<K>, p: Project<K, T>) -> watch::Receiver<bool>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    T: Send + Sync + 'static,
{
    let (ready_tx, ready_rx) = watch::channel(false);
    let stream = watcher(api, watcher::Config::default().timeout(45)).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(watcher::Event::Apply(o)) => {
                    let (k, v) = (p.project)(&o);
                    cache::Event::Apply(k, v)
                }
                Ok(watcher::Event::Delete(o)) => cache::Event::Delete(cache::key(o.meta())),
                Ok(watcher::Event::Init) => cache::Event::Init,
                Ok(watcher::Event::InitApply(o)) => {
                    let (k, v) = (p.project)(&o);
                    cache::Event::InitApply(k, v)
                }
                Ok(watcher::Event::InitDone) => cache::Event::InitDone,
                Err(e) => {
                    warn!(error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let applied = p.store.apply(ev);
            if matches!(applied, Applied::Relisted) {
                ready_tx.send_replace(true);
            }
            let Some(t) = (p.touched)(&applied) else {
                continue;
            };
            p.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(t);
            p.wake.notify_one();
        }
    });
    ready_rx
}

/// Creates our NodeDatapath if it does not exist (mode Off), returns it.
async fn ensure_object(api: &Api<NodeDatapath>, node: &str) -> Result<NodeDatapath> {
    if let Some(n) = api.get_opt(node).await? {
        return Ok(n);
    }
    let obj = NodeDatapath::new(node, NodeDatapathSpec::default());
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            },
            &obj,
        )
        .await
    {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(node).await?),
        // Creating into a resource type the API server does not know.
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::CrdMissing),
        Err(e) => Err(e.into()),
    }
}

impl State {
    fn probe_pending(&self, generation: i64) -> bool {
        self.status
            .probe
            .as_ref()
            .is_none_or(|p| p.observed_generation < generation)
    }

    fn peer_probe_pending(&self, generation: i64) -> bool {
        self.status
            .peer_probe
            .as_ref()
            .is_none_or(|p| p.observed_generation < generation)
    }

    async fn apply_spec(&mut self, spec: NodeDatapathSpec) {
        match spec.mode {
            DatapathMode::Active => {
                self.off_pending = false;
                if self.datapath.is_none() {
                    self.activate().await;
                }
            }
            // Off goes through the kube-proxy check (retried until it holds),
            // never straight to `deactivate`: the operator may see kube-proxy's
            // pod ready before that pod has written its rules.
            DatapathMode::Off if self.attached() => {
                self.off_pending = true;
                self.try_off().await;
            }
            DatapathMode::Off => {}
        }
        if let Some(req) = spec.cleanup.filter(|c| {
            self.status
                .cleanup
                .as_ref()
                .is_none_or(|r| r.observed_generation < c.generation)
        }) {
            self.cleanup(req.generation, req.dry_run).await;
        }
    }

    async fn activate(&mut self) {
        let mut ingress = self.ingress.clone();
        self.ingress_blocked = None;
        let caps = self.status.capabilities.as_ref();
        if !ingress.is_empty()
            && let Some(missing) = caps.filter(|c| !c.ingress_loads())
        {
            // The socket datapath runs without it; preflight names the node.
            let why = format!(
                "the ingress program does not load: {}",
                missing.ingress_missing.join(", ")
            );
            self.degraded("IngressUnavailable", &why);
            self.ingress_blocked = Some(why);
            ingress.clear();
        } else if !ingress.is_empty()
            && let Err(e) = crate::ingress::ensure_conntrack_hooks()
        {
            // Without conntrack's hooks the ingress program's NAT entries
            // would translate nothing: serve local clients only, say so.
            self.degraded("IngressUnavailable", &e.to_string());
            self.ingress_blocked = Some(e.to_string());
            ingress.clear();
        }
        let config = DatapathConfig {
            bpffs_dir: self.cfg.bpffs_dir.clone(),
            cgroup: self.cfg.cgroup.clone(),
            ingress_interfaces: ingress,
            ..DatapathConfig::new(&self.cfg.cgroup)
        };
        let started = tokio::task::spawn_blocking(move || Datapath::start(&config)).await;
        match started {
            Ok(Ok(dp)) => {
                info!(report = ?dp.report(), "datapath active");
                if let Err(e) = self.syncer.adopt(&self.cfg.bpffs_dir) {
                    self.degraded("AdoptFailed", &e.to_string());
                    return;
                }
                self.datapath = Some(dp);
                self.status.active_mode = Some(DatapathMode::Active);
                self.sync();
            }
            Ok(Err(e)) => {
                // The condition carries the log's last lines; all of it
                // goes to the agent's own log.
                if let Some(log) = e.verifier_log() {
                    warn!(%log, "the verifier's whole log");
                }
                self.degraded("StartFailed", &e.to_string());
            }
            Err(e) => self.degraded("StartFailed", &e.to_string()),
        }
    }

    /// Turns the datapath off once kube-proxy serves every ClusterIP on
    /// this node (its rules are in place), never before: a pod that is
    /// merely running has not necessarily programmed anything yet. Returns
    /// whether the datapath went off.
    async fn try_off(&mut self) -> bool {
        // The ClusterIPs of the current desired state (also right after a
        // restart, when nothing was synced yet and the pins still serve).
        self.sync();
        let vips = self.syncer.vips.clone();
        let check = tokio::task::spawn_blocking(move || kube_proxy::serves(&vips)).await;
        match check {
            Ok(Ok(())) => {
                self.deactivate().await;
                self.off_pending = self.attached();
                !self.off_pending
            }
            Ok(Err(missing)) => {
                let msg = format!(
                    "mode Off requested; the datapath stays on until kube-proxy serves {missing} on this node"
                );
                if !conditions::is_true(&self.status.conditions, WAITING_FOR_KUBE_PROXY) {
                    info!("{msg}");
                }
                conditions::set(
                    &mut self.status.conditions,
                    WAITING_FOR_KUBE_PROXY,
                    true,
                    "RulesMissing",
                    msg,
                    None,
                    Time(Timestamp::now()),
                );
                false
            }
            Err(e) => {
                self.degraded("OffFailed", &e.to_string());
                false
            }
        }
    }

    /// Whether the datapath is attached here: by this process, or pinned by
    /// an earlier one and not yet adopted.
    fn attached(&self) -> bool {
        self.datapath.is_some() || self.cfg.bpffs_dir.join("maps").exists()
    }

    async fn deactivate(&mut self) {
        let dir = self.cfg.bpffs_dir.clone();
        match tokio::task::spawn_blocking(move || off(&dir)).await {
            Ok(Ok(report)) => {
                info!(?report, "datapath off");
                self.datapath = None;
                self.syncer.detach();
                self.status.active_mode = Some(DatapathMode::Off);
                self.status.drops.clear();
                conditions::set(
                    &mut self.status.conditions,
                    WAITING_FOR_KUBE_PROXY,
                    false,
                    "Off",
                    "the datapath is off",
                    None,
                    Time(Timestamp::now()),
                );
            }
            Ok(Err(e)) => self.degraded("OffFailed", &e.to_string()),
            Err(e) => self.degraded("OffFailed", &e.to_string()),
        }
    }

    fn sync(&mut self) {
        let touched = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.sync_ok = true;
        if let Err(e) = self.syncer.sync(&self.services, &self.slices, touched) {
            self.sync_ok = false;
            self.degraded("SyncFailed", &e.to_string());
        }
    }

    /// What kube-proxy's health ports answer now ([`crate::health`]): they
    /// are served while the datapath serves north-south and is not being
    /// switched off (then kube-proxy takes them back).
    fn publish_health(&self) {
        self.health.set(HealthState {
            serving: self.datapath.is_some() && !self.off_pending && !self.ingress.is_empty(),
            healthy: self.sync_ok,
            last_updated: Some(std::time::SystemTime::now()),
            services: crate::health::service_ports(&self.services, self.syncer.state()),
        });
    }

    fn degraded(&mut self, reason: &str, message: &str) {
        warn!(%reason, %message, "datapath degraded");
        conditions::set(
            &mut self.status.conditions,
            DEGRADED,
            true,
            reason,
            message,
            None,
            Time(Timestamp::now()),
        );
    }

    async fn cleanup(&mut self, generation: i64, dry_run: bool) {
        let opts = switchyard_cleanup::Options::default();
        let report = tokio::task::spawn_blocking(move || {
            if dry_run {
                switchyard_cleanup::scan(&opts)
            } else {
                switchyard_cleanup::clean(&opts)
            }
        })
        .await;
        match report {
            Ok(r) => {
                let mut result = status::cleanup_result(generation, &r);
                result.completed_at = Some(Time(Timestamp::now()));
                info!(
                    generation,
                    removed = result.removed,
                    succeeded = result.succeeded,
                    "kube-proxy cleanup"
                );
                self.status.leftovers = status::leftovers(&r);
                self.status.cleanup = Some(result);
            }
            Err(e) => self.degraded("CleanupFailed", &e.to_string()),
        }
    }

    async fn scan_leftovers(&mut self) {
        let opts = switchyard_cleanup::Options::default();
        if let Ok(r) = tokio::task::spawn_blocking(move || switchyard_cleanup::scan(&opts)).await {
            let mut found = status::leftovers(&r);
            // Keep the removed counts of the last cleanup.
            for f in &mut found {
                if let Some(prev) = self
                    .status
                    .leftovers
                    .iter()
                    .find(|p| p.backend == f.backend)
                {
                    f.removed = prev.removed;
                }
            }
            self.status.leftovers = found;
        }
    }

    fn start_probes(&self, req: ProbeRequest, tx: mpsc::Sender<ProbeResult>) {
        let targets: Vec<Result<Target, (String, String)>> = req
            .probes
            .iter()
            .map(|p| {
                match Syncer::cluster_ip(&self.services, &p.service.namespace, &p.service.name) {
                    Some(ip) => Ok(Target {
                        name: p.name.clone(),
                        addr: std::net::SocketAddrV4::new(ip, p.port as u16),
                        protocol: p.protocol,
                        http_path: p.http_path.clone(),
                    }),
                    None => Err((
                        p.name.clone(),
                        format!(
                            "Service {}/{} not found or has no ClusterIP",
                            p.service.namespace, p.service.name
                        ),
                    )),
                }
            })
            .collect();
        let timeout = Duration::from_secs(u64::from(req.timeout_seconds));
        let needed = req.consecutive_successes;
        tokio::spawn(async move {
            let runs = targets.into_iter().map(|t| async move {
                match t {
                    Ok(t) => probe::run(&t, needed, timeout).await,
                    Err((name, why)) => switchyard_api::ProbeOutcome {
                        name,
                        failures: 1,
                        last_error: Some(why),
                        ..Default::default()
                    },
                }
            });
            let results = futures::future::join_all(runs).await;
            let passed = results.iter().all(|r| r.passed);
            let _ = tx
                .send(ProbeResult {
                    observed_generation: req.generation,
                    passed,
                    results,
                    completed_at: Some(Time(Timestamp::now())),
                })
                .await;
        });
    }

    /// Writes the status (server-side apply, status subresource).
    async fn report(&mut self) {
        self.publish_health();
        let attached =
            self.datapath.is_some() && self.ingress_blocked.is_none() && !self.ingress.is_empty();
        if let Some(caps) = &self.status.capabilities {
            let blocked = self.ingress_blocked.as_deref();
            self.status.ingress = Some(status::ingress(&self.ingress, attached, blocked, caps));
        }
        self.status.sync = self.syncer.status.clone();
        if self.datapath.is_some() {
            match read_stats(&self.cfg.bpffs_dir) {
                Ok(stats) => {
                    self.status.drops = status::drops(&stats);
                    self.shared
                        .set_datapath_metrics(switchyard_node_datapath::metrics::render(&stats));
                }
                Err(e) => warn!(error = %e, "reading datapath counters"),
            }
        } else {
            self.shared.set_datapath_metrics(String::new());
        }
        self.shared.set_sync(&self.status.sync);
        let mode = self.status.active_mode.unwrap_or_default();
        let synced = mode == DatapathMode::Off
            || self.status.sync.services_programmed >= self.status.sync.services_seen;
        let now = Time(Timestamp::now());
        conditions::set(
            &mut self.status.conditions,
            conditions::READY,
            synced,
            if synced { "Synced" } else { "Syncing" },
            format!(
                "mode {mode:?}, {} services programmed",
                self.status.sync.progress
            ),
            None,
            now.clone(),
        );
        if conditions::is_true(&self.status.conditions, DEGRADED)
            && (synced && self.datapath.is_some() == (mode == DatapathMode::Active))
        {
            conditions::set(
                &mut self.status.conditions,
                DEGRADED,
                false,
                "Recovered",
                "the datapath is in its requested mode",
                None,
                now.clone(),
            );
        }
        self.status.heartbeat = Some(now);
        let body = serde_json::json!({
            "apiVersion": switchyard_api::API_VERSION,
            "kind": "NodeDatapath",
            "status": self.status,
        });
        if let Err(e) = self
            .api
            .patch_status(
                &self.cfg.node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            warn!(error = %e, "writing NodeDatapath status");
        }
    }
}

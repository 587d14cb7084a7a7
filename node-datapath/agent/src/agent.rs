//! The agent's reconcile loop for its node's `NodeDatapath`: mode, cleanup
//! and probe requests in, status out (written only when it changed); the
//! node's Lease renewed every heartbeat; Service sync on every
//! Service/EndpointSlice change, debounced.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use switchyard_api::conditions::{self, DEGRADED, WAITING_FOR_KUBE_PROXY};
use switchyard_api::{
    DatapathMode, NodeDatapath, NodeDatapathSpec, NodeDatapathStatus, NodePortAddresses,
    ProbeResult,
};
use switchyard_node_datapath::{Datapath, DatapathConfig, capabilities, off, read_stats};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::flows::{ServiceIndex, reader::FlowHub};
use crate::health::{Health, HealthState};
use crate::kube_proxy;
use crate::lease::NodeLease;
use crate::server::Shared;
use crate::status;
use crate::store::{Services, Slices};
use crate::sync::{Pending, Syncer, node_context};

mod cleanup;
mod node_ports;
mod probing;
use probing::Probing;

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
    /// Node's or a NodePort address ([`crate::ingress`]).
    pub ingress_interfaces: Option<Vec<String>>,
    /// Where the datapath's flow events go, if the agent keeps flows.
    pub flows: Option<Arc<FlowHub>>,
    /// Where the API client learns the API server's endpoints (from the
    /// EndpointSlice store), if it follows them.
    pub api_endpoints: Option<crate::api_server::Learned>,
    /// The Observer API's port when it listens beyond the node's loopback
    /// (reported for the operator's Peer API).
    pub observer_port: Option<u16>,
}

struct State {
    cfg: AgentConfig,
    api: Api<NodeDatapath>,
    services: Services,
    slices: Slices,
    pending: Pending,
    syncer: Syncer,
    datapath: Option<Datapath>,
    /// The Node's IPv4 addresses, primary first.
    node_ips: Vec<Ipv4Addr>,
    /// kube-proxy's NodePort addresses as the last spec gave them.
    node_ports: Option<NodePortAddresses>,
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
    /// The status as last written (`None`: not yet by this process).
    written: Option<NodeDatapathStatus>,
    /// The node's Lease, renewed every heartbeat.
    lease: NodeLease,
    shared: Arc<Shared>,
}

/// Runs the agent until `shutdown` fires. The datapath stays pinned and
/// serving when the agent exits; only `spec.mode: Off` removes it.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (mut st, inputs) = start(client, cfg, shared).await?;
    let health_task = tokio::spawn(st.health.clone().run());
    st.renew_lease().await;
    st.report().await;
    st.shared
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    info!(node = %st.cfg.node, "agent ready");
    event_loop(&mut st, inputs, shutdown).await;
    health_task.abort();
    info!("agent stopping; the datapath stays pinned and serving");
    Ok(())
}

/// What wakes the event loop besides timers.
struct Inputs {
    /// Our own NodeDatapath's spec, on every change.
    specs: mpsc::Receiver<NodeDatapathSpec>,
    /// A Service or EndpointSlice changed.
    wake: Arc<Notify>,
}

/// Reads the Node, makes sure our NodeDatapath exists, probes what this
/// node can run, starts the watches and waits for their first lists, and
/// applies the current spec.
async fn start(client: Client, cfg: AgentConfig, shared: Arc<Shared>) -> Result<(State, Inputs)> {
    let api: Api<NodeDatapath> = Api::all(client.clone());
    let cfg_node = cfg.node.clone();
    let node = crate::watch::get_node(&client, &cfg.node).await?;
    let existing = crate::watch::ensure_object(&api, &cfg.node).await?;
    let cgroup = cfg.cgroup.clone();
    let probed = tokio::task::spawn_blocking(move || capabilities::probe_at(Some(&cgroup))).await?;
    let mut status = existing.status.clone().unwrap_or_default();
    status.agent_version = Some(env!("CARGO_PKG_VERSION").to_string());
    status.capabilities = Some(status::capabilities(&probed, which("nft")));
    status.observer_port = cfg.observer_port;
    let (watches, ready) = crate::watch::services_and_slices(&client);
    if let Some(learned) = &cfg.api_endpoints {
        learned.follow(watches.slices.clone());
    }
    let specs = crate::watch::own_spec(api.clone(), &cfg.node);
    let mut st = State {
        node_ips: crate::node_ports::node_ips(&node),
        node_ports: None,
        ingress: Vec::new(),
        ingress_blocked: None,
        health: Arc::new(Health::new(
            cfg.bpffs_dir.clone(),
            shared.health_checks.clone(),
        )),
        sync_ok: true,
        syncer: Syncer::new(node_context(&node)),
        cfg,
        api,
        services: watches.services,
        slices: watches.slices,
        pending: watches.pending,
        datapath: None,
        off_pending: false,
        status,
        written: None,
        lease: NodeLease::new(client.clone(), &cfg_node),
        shared,
    };
    for mut ready in ready {
        ready
            .wait_for(|r| *r)
            .await
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    st.refresh_node_ports().await;
    st.apply_spec(existing.spec.clone()).await;
    st.scan_leftovers().await;
    let wake = watches.wake;
    Ok((st, Inputs { specs, wake }))
}

/// Reacts to spec changes, Service changes, probe results and timers until
/// `shutdown` fires.
async fn event_loop(st: &mut State, mut inputs: Inputs, mut shutdown: watch::Receiver<bool>) {
    let (own_tx, mut own_rx) = mpsc::channel::<ProbeResult>(4);
    let (peer_tx, mut peer_rx) = mpsc::channel::<ProbeResult>(4);
    let mut probing = Probing {
        own: None,
        own_tx,
        peer: None,
        peer_tx,
    };
    let mut heartbeat = tokio::time::interval(st.cfg.heartbeat);
    // A renewal that came late is not followed by the missed ones at once
    // (the kubelet's node lease does not catch up either): thousands of
    // agents catching up would load an API server just as it recovers.
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut off_retry = tokio::time::interval(Duration::from_millis(250));
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            Some(spec) = inputs.specs.recv() => st.on_spec(spec, &mut probing).await,
            Some(result) = peer_rx.recv() => {
                info!(generation = result.observed_generation, passed = result.passed, "peer probes done");
                st.status.peer_probe = Some(result);
                probing.peer = None;
                st.report().await;
            }
            () = inputs.wake.notified() => {
                tokio::time::sleep(st.cfg.debounce).await;
                st.sync();
                st.report().await;
            }
            Some(result) = own_rx.recv() => {
                info!(generation = result.observed_generation, passed = result.passed, "probes done");
                st.status.probe = Some(result);
                probing.own = None;
                st.report().await;
            }
            _ = off_retry.tick(), if st.off_pending => {
                if st.try_off().await {
                    st.report().await;
                }
            }
            _ = heartbeat.tick() => {
                st.renew_lease().await;
                beats += 1;
                if beats.is_multiple_of(6) {
                    st.scan_leftovers().await;
                }
                st.refresh_node_ports().await;
                st.report().await;
            }
            _ = shutdown.changed() => break,
        }
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

impl State {
    async fn apply_spec(&mut self, spec: NodeDatapathSpec) {
        if spec.node_port_addresses != self.node_ports {
            self.node_ports = spec.node_port_addresses;
            self.refresh_node_ports().await;
        }
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
        self.handle_cleanup(spec.cleanup).await;
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
                if let Some(Err(e)) = self
                    .cfg
                    .flows
                    .as_ref()
                    .map(|f| f.attach(&self.cfg.bpffs_dir))
                {
                    // Serving does not depend on flows: say so, keep going.
                    warn!(error = %e, "flow events cannot be read");
                }
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
    /// this node (its rules are in place) and listens on every health port
    /// the agent answers, never before: a pod that is merely running has not
    /// necessarily programmed or opened anything yet. Returns whether the
    /// datapath went off.
    async fn try_off(&mut self) -> bool {
        // The ClusterIPs of the current desired state (also right after a
        // restart, when nothing was synced yet and the pins still serve).
        self.sync();
        let vips = self.syncer.vips.clone();
        let ports = self.health.steered();
        let check = tokio::task::spawn_blocking(move || {
            kube_proxy::serves(&vips).and_then(|()| kube_proxy::listens(&ports))
        })
        .await;
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
                self.cfg.flows.iter().for_each(|f| f.detach());
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
        if let Some(flows) = &self.cfg.flows {
            flows.set_services(ServiceIndex::of(self.syncer.state()));
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

    /// Renews the node's Lease (the agent's liveness, read by the operator).
    async fn renew_lease(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.lease.renew().await {
            Ok(()) => {
                self.shared.lease_renewals.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.shared.lease_renewal_errors.fetch_add(1, Relaxed);
                warn!(error = %e, "renewing the node's Lease");
            }
        }
    }

    /// Brings the status up to date and writes it if it changed (server-side
    /// apply, status subresource).
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
        self.set_conditions();
        self.write_status().await;
    }

    /// Ready (every Service programmed in the active mode) and, once the
    /// datapath is in its requested mode again, Degraded cleared.
    fn set_conditions(&mut self) {
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
                now,
            );
        }
    }

    /// Writes the whole status (server-side apply) when it differs from the
    /// status last written, stamped with the time of the write; a failed
    /// write is retried by the next report (at the latest the next
    /// heartbeat).
    async fn write_status(&mut self) {
        if !status::changed(self.written.as_ref(), &self.status) {
            return;
        }
        self.status.heartbeat = Some(Time(Timestamp::now()));
        let body = serde_json::json!({
            "apiVersion": switchyard_api::API_VERSION,
            "kind": "NodeDatapath",
            "status": self.status,
        });
        match self
            .api
            .patch_status(
                &self.cfg.node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            Ok(_) => {
                self.written = Some(self.status.clone());
                self.shared
                    .status_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => warn!(error = %e, "writing NodeDatapath status"),
        }
    }
}

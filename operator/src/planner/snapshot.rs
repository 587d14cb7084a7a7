//! The observed cluster, as plain data. The controller builds a [`Snapshot`]
//! from its caches; the planner reads nothing else.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use switchyard_api::{DatapathMode, Phase, ProbeProtocol};

/// Everything the planner needs to know about the cluster right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every Node, by name.
    pub nodes: BTreeMap<String, NodeObs>,
    /// kube-proxy's DaemonSet, ConfigMap and pods.
    pub kube_proxy: KubeProxyObs,
    /// NodeDatapath objects, by node name.
    pub datapaths: BTreeMap<String, DatapathObs>,
    /// Whether this plan's kube-proxy backup ConfigMap exists.
    pub backup_exists: bool,
    /// Other MigrationPlans.
    pub other_plans: Vec<OtherPlan>,
    /// Addresses (`ip:port`) of the `default/kubernetes` EndpointSlice.
    pub api_server_endpoints: Vec<String>,
    /// Services the datapath cannot serve (`namespace/name: why`), from the
    /// agents' reports.
    pub unsupported_services: Vec<String>,
    /// Whether `kube-system/kube-dns` exists (the built-in DNS probe).
    pub cluster_dns: bool,
    /// Services with frontends reached from outside the node (NodePort and
    /// LoadBalancer types, externalIPs), by `namespace/name`.
    pub external_services: Vec<ExternalService>,
}

/// A Service with frontends that traffic from outside a node reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalService {
    /// `namespace/name`.
    pub name: String,
    /// What makes it external: `NodePort`, `LoadBalancer`, `externalIPs`.
    pub kinds: Vec<&'static str>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Its NodePorts.
    pub node_ports: Vec<NodePortObs>,
}

/// One NodePort of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortObs {
    /// The Service port it serves.
    pub port: i32,
    pub node_port: i32,
    pub protocol: ProbeProtocol,
}

/// One Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeObs {
    pub labels: BTreeMap<String, String>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Carries [`switchyard_api::KUBE_PROXY_EXCLUDED_LABEL`].
    pub kube_proxy_excluded: bool,
    /// Its first `InternalIP` (IPv4), where a peer probes its ingress.
    pub internal_ip: Option<String>,
    /// Carries the [`switchyard_api::STARTUP_TAINT`].
    pub startup_taint: bool,
    /// `metadata.creationTimestamp`: a Node created after the plan started
    /// on its name is another machine.
    pub created: Option<Timestamp>,
}

/// kube-proxy as installed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeProxyObs {
    pub daemon_set: Option<DaemonSetObs>,
    pub config_map: Option<ConfigMapObs>,
    /// kube-proxy pods by node name.
    pub pods: BTreeMap<String, PodObs>,
}

/// The kube-proxy DaemonSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DaemonSetObs {
    /// Its pod template carries the nodeAffinity excluding nodes labelled
    /// [`switchyard_api::KUBE_PROXY_EXCLUDED_LABEL`].
    pub excludes_label: bool,
    /// Its rollout is held: `updateStrategy` is `OnDelete` and the user's
    /// own strategy is remembered in an annotation, so a template edit
    /// restarts no pod.
    pub rollout_held: bool,
    /// Every kube-proxy pod runs the current pod template (`None`: the
    /// DaemonSet controller has not reported on the current generation).
    pub pods_current: Option<bool>,
    /// Tools that manage it and would revert changes (Argo CD, Helm, addon
    /// manager, kubeadm), as human-readable names.
    pub managed_by: Vec<String>,
}

/// The kube-proxy ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMapObs {
    /// `mode` from `config.conf` (`""` means iptables).
    pub mode: Option<String>,
    /// `nodePortAddresses` from `config.conf`, as written.
    pub node_port_addresses: Vec<String>,
    /// `iptables.localhostNodePorts` from `config.conf` (unset: true).
    pub localhost_node_ports: Option<bool>,
}

/// A kube-proxy pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodObs {
    pub ready: bool,
}

/// A NodeDatapath as the agent reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatapathObs {
    /// `spec.mode` as written.
    pub spec_mode: DatapathMode,
    /// `status.activeMode`.
    pub active_mode: Option<DatapathMode>,
    /// The agent's liveness Lease (`None`: there is none, or it was never
    /// renewed).
    pub lease: Option<AgentLease>,
    /// `None` until the agent reported capabilities; else what is missing.
    pub missing_capabilities: Option<Vec<String>>,
    pub services_seen: u32,
    pub services_programmed: u32,
    pub cleanup: Option<RequestOutcome>,
    pub probe: Option<RequestOutcome>,
    /// Sum of the drop counters.
    pub drops: u64,
    /// Whether the node can serve traffic from outside it.
    pub ingress: IngressObs,
    /// `spec.peerProbe.generation` as written (0: none).
    pub peer_probe_requested: i64,
    /// The agent's answer to the last peer probe request.
    pub peer_probe: Option<PeerProbeObs>,
}

/// An agent's liveness Lease (`coordination.k8s.io/v1`, named after its
/// node in [`switchyard_api::AGENT_LEASE_NAMESPACE`]), as the kubelet's node
/// lease: renewed every few seconds, expired when not renewed for its
/// duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentLease {
    /// `spec.renewTime`.
    pub renewed: Timestamp,
    /// `spec.leaseDurationSeconds`.
    pub duration_secs: i64,
}

impl AgentLease {
    /// Renewed within its duration of `now`.
    pub fn fresh(&self, now: Timestamp) -> bool {
        now.as_second() <= self.renewed.as_second() + self.duration_secs
    }
}

/// Whether a node can serve traffic from outside it (the ingress program).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IngressObs {
    /// The agent has not said (not reported yet, or an older agent).
    #[default]
    Unknown,
    /// The ingress program loads and has interfaces to run on.
    Ready,
    /// It cannot, for this reason.
    Unavailable(String),
}

/// A peer's answer to a peer probe request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerProbeObs {
    pub observed_generation: i64,
    /// Per probed node: `None` when every probe of it passed, else what failed.
    pub nodes: BTreeMap<String, Option<String>>,
}

/// The agent's answer to a generation-stamped request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOutcome {
    pub observed_generation: i64,
    pub succeeded: bool,
    /// What failed, naming the probe or the object.
    pub message: Option<String>,
}

/// Another MigrationPlan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherPlan {
    pub name: String,
    pub phase: Phase,
    /// Created before this plan (ties broken by name).
    pub older: bool,
    /// Some node of it is not back on kube-proxy (migrated, or in a step).
    pub holds_nodes: bool,
}

impl DatapathObs {
    /// Whether the agent is alive at `now`: its Lease exists and was renewed
    /// within the Lease's duration.
    pub fn fresh(&self, now: Timestamp) -> bool {
        self.lease.is_some_and(|l| l.fresh(now))
    }

    /// Active and every seen Service programmed.
    pub fn serving(&self) -> bool {
        self.spec_mode == DatapathMode::Active
            && self.active_mode == Some(DatapathMode::Active)
            && self.services_programmed >= self.services_seen
    }

    /// Off in spec and in effect (or never activated).
    pub fn off(&self) -> bool {
        self.spec_mode == DatapathMode::Off && self.active_mode != Some(DatapathMode::Active)
    }
}

impl KubeProxyObs {
    /// A ready kube-proxy pod runs on `node`.
    pub fn ready_on(&self, node: &str) -> bool {
        self.pods.get(node).is_some_and(|p| p.ready)
    }
}

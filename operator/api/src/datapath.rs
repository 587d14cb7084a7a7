//! `NodeDatapath`: the operator's instructions to one node's agent (spec)
//! and the agent's report (status). Named after the node.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Probe, ProbeProtocol};

/// The eBPF service datapath of one node, named after the node.
///
/// The operator writes the spec (server-side apply); the node's
/// `switchyard-agent` reconciles it and reports in the status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "NodeDatapath",
    plural = "nodedatapaths",
    singular = "nodedatapath",
    shortname = "ndp",
    category = "switchyard",
    doc = "The eBPF service datapath of one node (named after the node): spec from the operator, status from the node agent.",
    status = "NodeDatapathStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeMode"}"#,
    printcolumn = r#"{"name":"Services","type":"string","jsonPath":".status.sync.progress","description":"programmed/seen"}"#,
    printcolumn = r#"{"name":"Reported","type":"date","jsonPath":".status.heartbeat"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeDatapathSpec {
    /// `Active`: serve Services through the eBPF datapath (beside
    /// kube-proxy if it still runs). `Off`: detach and unpin everything.
    #[serde(default)]
    pub mode: DatapathMode,

    /// API server address (`host:port`) the agent must dial directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,

    /// Remove kube-proxy's leftovers on the node. Acted on once per
    /// generation; the result is reported in `status.cleanup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupRequest>,

    /// Run connectivity probes through the node's datapath. Acted on once
    /// per generation; the result is reported in `status.probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeRequest>,

    /// Probe other nodes from this one, for their Verify step: their
    /// NodePorts and kube-proxy's health port, as a client outside them
    /// sees them. Independent of this node's own migration (the other
    /// fields stay as its own progress says). Acted on once per
    /// generation; the result is reported in `status.peerProbe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_probe: Option<PeerProbeRequest>,

    /// Which of the node's addresses serve NodePorts, as kube-proxy's
    /// configuration says (the operator reads it from kube-proxy's
    /// ConfigMap). Absent: the Node's InternalIP and ExternalIP addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port_addresses: Option<NodePortAddresses>,
}

/// kube-proxy's `nodePortAddresses` and localhost NodePorts, resolved for
/// its mode: the NodePort addresses the datapath must serve to be an exact
/// replacement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodePortAddresses {
    /// CIDRs whose local addresses serve NodePorts (IPv6 ones are ignored;
    /// no IPv4 CIDR means every local IPv4 address), or the single value
    /// `primary`: the Node's primary IPv4 address only (kube-proxy's
    /// nftables-mode default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub cidrs: Vec<String>,
    /// Also serve `127.0.0.1:<nodePort>` to clients on the node, as
    /// kube-proxy's iptables mode does (`iptables.localhostNodePorts`).
    #[serde(default)]
    pub localhost: bool,
}

/// Datapath mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum DatapathMode {
    #[default]
    Off,
    Active,
}

/// A request to remove kube-proxy's leftovers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRequest {
    /// Bumped by the operator for each new request.
    #[schemars(range(min = 1))]
    pub generation: i64,
    /// Only list what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// A request to probe Services from the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRequest {
    /// Bumped by the operator for each new request.
    #[schemars(range(min = 1))]
    pub generation: i64,
    /// The probes to run.
    pub probes: Vec<Probe>,
    /// Seconds each attempt may take.
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
    /// Consecutive successes each probe needs.
    #[schemars(range(min = 1, max = 100))]
    pub consecutive_successes: u32,
}

/// A request to probe other nodes' addresses from this node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeerProbeRequest {
    /// Bumped by the operator for each new request.
    #[schemars(range(min = 1))]
    pub generation: i64,
    /// The addresses to probe (of one or more other nodes).
    #[schemars(length(max = 256))]
    pub targets: Vec<AddressProbe>,
    /// Seconds each attempt may take.
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
    /// Consecutive successes each probe needs.
    #[schemars(range(min = 1, max = 100))]
    pub consecutive_successes: u32,
}

/// A probe of one address of another node, dialled directly.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!has(self.httpPath) || self.protocol == 'TCP'").message("httpPath needs protocol TCP"))]
#[serde(rename_all = "camelCase")]
pub struct AddressProbe {
    /// Name reported in the result (`nodeport:<namespace>/<name>`, `healthz`).
    pub name: String,
    /// The node the address belongs to.
    pub node: String,
    /// The IPv4 address dialled (the node's InternalIP).
    pub address: String,
    /// The port dialled (a NodePort, kube-proxy's health port).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (connect, or HTTP GET with `httpPath`) or `UDP` (request/reply).
    #[serde(default)]
    pub protocol: ProbeProtocol,
    /// For TCP: send `GET <httpPath>` and require a 2xx/3xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
}

/// Traffic from outside the node (NodePort, ExternalIP, LoadBalancer):
/// where the agent runs the ingress program, or why it cannot.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressStatus {
    /// The interfaces the ingress program runs on while the datapath is
    /// active: configured, or those holding the Node's addresses.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Whether it is attached to them now.
    #[serde(default)]
    pub attached: bool,
    /// Why this node cannot serve traffic from outside it, when it cannot
    /// (no interface holds the Node's addresses, the ingress program does
    /// not load, conntrack's hooks could not be kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// What the agent reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeDatapathStatus {
    /// Version of the agent binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// What the node's kernel and host support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The mode in effect (may lag `spec.mode` while switching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_mode: Option<DatapathMode>,
    /// Service sync progress.
    #[serde(default)]
    pub sync: SyncStatus,
    /// kube-proxy leftovers found on the node, per backend (last scan).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<LeftoverSummary>,
    /// Result of the last cleanup request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupResult>,
    /// Result of the last probe request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeResult>,
    /// Result of the last peer probe request (`spec.peerProbe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_probe: Option<ProbeResult>,
    /// Traffic from outside the node: the ingress program's interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressStatus>,
    /// The port of the node's Hubble Observer API on the node's addresses,
    /// which the operator's Peer API gives hubble-relay. Absent while the
    /// agent serves it on the node's loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer_port: Option<u16>,
    /// Datapath drop counters by reason since the datapath was activated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, u64>,
    /// Last time the agent wrote this status. It writes only when something
    /// in it changed: the agent's liveness is its Lease (named after the
    /// node, in namespace `switchyard-node-lease`), renewed every 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Time>,
    /// `Ready` (datapath in the requested mode and synced), `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The entry of [`Capabilities::attach_types`] saying the ingress program loads.
pub const INGRESS_ATTACH_TYPE: &str = "tc/ingress";

/// Kernel and host capabilities the datapath needs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel: String,
    /// Kernel BTF available (`/sys/kernel/btf/vmlinux`).
    pub btf: bool,
    /// cgroup v2 mounted (and where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup2: Option<String>,
    /// bpffs mounted (and where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpffs: Option<String>,
    /// Attach types verified loadable and attachable (`cgroup/<hook>`),
    /// and `tc/ingress` when the ingress program loads on this kernel (its
    /// conntrack kfuncs resolved; loaded, not attached).
    #[serde(default)]
    pub attach_types: Vec<String>,
    /// What is missing for the datapath to run; empty when capable.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Why the ingress program (traffic from outside the node) does not
    /// load, when it does not. Not part of `missing`: the socket datapath
    /// runs without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_missing: Vec<String>,
    /// iptables backends present (`nft`, `legacy`), nftables, ipvs.
    #[serde(default)]
    pub iptables_backends: Vec<String>,
    #[serde(default)]
    pub nftables: bool,
    #[serde(default)]
    pub ipvs: bool,
}

impl Capabilities {
    /// Whether the datapath can run on this node.
    pub fn capable(&self) -> bool {
        self.missing.is_empty()
    }

    /// Whether the ingress program loads on this node.
    pub fn ingress_loads(&self) -> bool {
        self.attach_types.iter().any(|t| t == INGRESS_ATTACH_TYPE)
    }
}

/// Service sync progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Service ports the agent saw that it should serve.
    pub services_seen: u32,
    /// Of those, programmed into the maps.
    pub services_programmed: u32,
    /// Backends in the maps.
    pub backends_programmed: u32,
    /// Frontends (VIP/NodePort/ExternalIP:port) in the maps.
    pub frontends_programmed: u32,
    /// Services the datapath cannot serve (`namespace/name: why`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
    /// When the maps last matched the API server's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Duration of the last full sync, milliseconds.
    #[serde(default)]
    pub last_sync_millis: u64,
    /// `programmed/seen`, for the printer column.
    #[serde(default)]
    pub progress: String,
}

/// kube-proxy leftovers of one backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeftoverSummary {
    /// `iptables-nft`, `iptables-legacy`, `nftables`, `ipvs`.
    pub backend: String,
    /// Objects (chains, jump rules, tables, virtual servers, sets) found.
    pub found: u32,
    /// Objects removed by the last cleanup.
    pub removed: u32,
    /// Names of what was found (truncated to 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

/// Outcome of a cleanup request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CleanupResult {
    /// The request generation this answers.
    pub observed_generation: i64,
    /// Whether every leftover was removed (or none existed).
    pub succeeded: bool,
    /// Objects removed, all backends together.
    pub removed: u32,
    /// Error or summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Outcome of a probe request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// The request generation this answers.
    pub observed_generation: i64,
    /// Whether every probe reached its consecutive successes.
    pub passed: bool,
    /// Per probe.
    #[serde(default)]
    pub results: Vec<ProbeOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Outcome of one probe.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOutcome {
    /// The probe's name.
    pub name: String,
    /// The address dialled (`ip:port/proto`).
    pub target: String,
    /// The node probed (peer probes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub passed: bool,
    pub successes: u32,
    pub failures: u32,
    /// Latency of successful attempts, microseconds.
    #[serde(default)]
    pub latency_p50_micros: u64,
    #[serde(default)]
    pub latency_max_micros: u64,
    /// The last error, when an attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

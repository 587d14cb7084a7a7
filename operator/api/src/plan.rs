//! `MigrationPlan` spec: what the user asks for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::MigrationPlanStatus;

/// A staged, verified, reversible migration of a cluster's nodes from
/// kube-proxy to the switchyard eBPF service datapath.
///
/// Nodes move in waves (canary first). For each node: cordon, activate the
/// datapath beside kube-proxy, remove kube-proxy from that node, flush
/// kube-proxy's leftover rules, verify service connectivity, uncordon.
/// Every step is recorded in the status before the next one starts.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "MigrationPlan",
    plural = "migrationplans",
    singular = "migrationplan",
    shortname = "mp",
    category = "switchyard",
    doc = "A staged, verified, reversible migration of the cluster off kube-proxy onto the switchyard eBPF service datapath.",
    status = "MigrationPlanStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Migrated","type":"string","jsonPath":".status.summary.progress","description":"migrated/total nodes"}"#,
    printcolumn = r#"{"name":"Wave","type":"integer","jsonPath":".status.currentWave"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!(self.dryRun && self.rollback)").message("dryRun and rollback cannot both be set: a dry run changes nothing, so there is nothing to roll back"))]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlanSpec {
    /// Which nodes to migrate. Empty selects every node in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// How nodes are grouped and paced.
    #[serde(default)]
    pub strategy: Strategy,

    /// Stop starting new nodes. Nodes already in flight finish their steps.
    #[serde(default)]
    pub paused: bool,

    /// Run preflight and compute the waves, report them in the status and
    /// change nothing in the cluster.
    #[serde(default)]
    pub dry_run: bool,

    /// Roll the whole plan back: every touched node returns to kube-proxy
    /// (kube-proxy restored from the backup if it was deleted), in reverse
    /// order, kube-proxy ready before the datapath goes off.
    #[serde(default)]
    pub rollback: bool,

    /// The kube-proxy installation to migrate away from.
    #[serde(default)]
    pub kube_proxy: KubeProxyRef,

    /// How each node is verified before the plan advances.
    #[serde(default)]
    pub verification: Verification,

    /// What to do when a node fails.
    #[serde(default)]
    pub failure_policy: FailurePolicy,

    /// Address (`host:port`) of the API server that node agents dial
    /// directly, never through the `kubernetes` ClusterIP (the datapath must
    /// not depend on itself): published first in the ConfigMap
    /// `switchyard-api-endpoints` the agents mount, before the
    /// `default/kubernetes` endpoints. Empty: those endpoints only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^:/ ]+:[0-9]{1,5}$')").message("apiServer must be host:port, e.g. 172.18.0.2:6443"))]
    pub api_server: Option<String>,

    /// Proceed even when preflight finds Services the datapath cannot serve
    /// (they are listed in the status). Off by default.
    #[serde(default)]
    pub allow_unsupported: bool,

    /// What deleting the plan before it succeeded does (a GitOps prune, a
    /// `kubectl delete`): `Rollback` (default) rolls every node it touched
    /// back to kube-proxy first (the plan's finalizer holds the object
    /// until then); `Abandon` leaves the nodes as they are, each still
    /// served (cordons stay). Deleting a succeeded plan changes no node.
    #[serde(default)]
    pub on_deletion: DeletionPolicy,
}

/// See [`MigrationPlanSpec::on_deletion`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    #[default]
    Rollback,
    Abandon,
}

/// Wave layout and pacing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("type(self.waveSize) == int ? self.waveSize >= 1 : self.waveSize.matches('^([1-9][0-9]?|100)%$')").message("waveSize must be a node count >= 1 or a percentage from 1% to 100%"))]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Nodes migrated alone, one wave before all others.
    #[serde(default = "default_canary_nodes")]
    #[schemars(range(max = 1000))]
    pub canary_nodes: u32,

    /// Nodes per wave after the canaries: a count (`3`) or a percentage of
    /// the selected nodes (`"25%"`, rounded up, at least one node).
    #[serde(default = "default_wave_size")]
    pub wave_size: IntOrString,

    /// Seconds to wait after a wave completes before starting the next.
    #[serde(default)]
    #[schemars(range(max = 86400))]
    pub pause_between_waves_seconds: u32,

    /// Node names migrated first, in this order; the remaining selected
    /// nodes follow sorted by name. Names that are not selected are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_order: Vec<String>,

    /// Seconds one per-node step may take before the node is marked failed
    /// (a rollback step keeps trying; the plan then reports `Stalled`).
    #[serde(default = "default_step_timeout")]
    #[schemars(range(min = 10, max = 3600))]
    pub step_timeout_seconds: u32,
}

fn default_canary_nodes() -> u32 {
    1
}
fn default_wave_size() -> IntOrString {
    IntOrString::String("25%".into())
}
fn default_step_timeout() -> u32 {
    300
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            canary_nodes: default_canary_nodes(),
            wave_size: default_wave_size(),
            pause_between_waves_seconds: 0,
            node_order: Vec::new(),
            step_timeout_seconds: default_step_timeout(),
        }
    }
}

/// The kube-proxy objects (kubeadm's defaults) and their fate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyRef {
    /// Namespace of the kube-proxy DaemonSet and ConfigMap.
    #[serde(default = "default_kube_system")]
    pub namespace: String,
    /// Name of the kube-proxy DaemonSet.
    #[serde(default = "default_kube_proxy")]
    pub daemon_set: String,
    /// Name of the kube-proxy ConfigMap (holds `config.conf`).
    #[serde(default = "default_kube_proxy")]
    pub config_map: String,
    /// After every node is migrated: `Delete` (after a backup ConfigMap is
    /// written in the operator's namespace) or `Keep` (the DaemonSet stays,
    /// excluded from every migrated node).
    #[serde(default)]
    pub on_success: KubeProxyDisposition,
}

fn default_kube_system() -> String {
    "kube-system".into()
}
fn default_kube_proxy() -> String {
    "kube-proxy".into()
}

impl Default for KubeProxyRef {
    fn default() -> Self {
        Self {
            namespace: default_kube_system(),
            daemon_set: default_kube_proxy(),
            config_map: default_kube_proxy(),
            on_success: KubeProxyDisposition::default(),
        }
    }
}

/// What happens to kube-proxy's DaemonSet and ConfigMap at the end.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KubeProxyDisposition {
    /// Back them up, then delete them (kubeadm then stops re-creating
    /// them) — only when the plan migrated every node of the cluster: while
    /// nodes outside its `nodeSelector` still run kube-proxy they are kept,
    /// excluded from the migrated nodes, and the status names those nodes.
    #[default]
    Delete,
    /// Leave them in place, excluded from every migrated node.
    Keep,
}

/// Per-node verification before the plan advances.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Extra Services to probe from each node through its new datapath.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub probes: Vec<Probe>,
    /// Probe the API server through the `kubernetes` ClusterIP.
    #[serde(default = "yes")]
    pub api_server_probe: bool,
    /// Probe cluster DNS (`kube-system/kube-dns`, UDP 53) when it exists.
    #[serde(default = "yes")]
    pub dns_probe: bool,
    /// Seconds each probe attempt may take.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
    /// Consecutive successful attempts each probe needs.
    #[serde(default = "default_successes")]
    #[schemars(range(min = 1, max = 100))]
    pub consecutive_successes: u32,
    /// Datapath drops (no backend, map full, …) tolerated on a node during
    /// its switch. Zero by default: any drop fails the node.
    #[serde(default)]
    pub max_datapath_drops: u64,
}

fn yes() -> bool {
    true
}
fn default_probe_timeout() -> u32 {
    5
}
fn default_successes() -> u32 {
    3
}

impl Default for Verification {
    fn default() -> Self {
        Self {
            probes: Vec::new(),
            api_server_probe: true,
            dns_probe: true,
            timeout_seconds: default_probe_timeout(),
            consecutive_successes: default_successes(),
            max_datapath_drops: 0,
        }
    }
}

/// A connectivity probe to one Service port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!has(self.httpPath) || self.protocol == 'TCP'").message("httpPath needs protocol TCP"))]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Name reported in results and conditions.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service to reach (by its ClusterIP).
    pub service: ServiceRef,
    /// The Service port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (connect, or HTTP GET with `httpPath`) or `UDP` (request/reply).
    #[serde(default)]
    pub protocol: ProbeProtocol,
    /// For TCP: send `GET <httpPath>` and require a 2xx/3xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("httpPath must start with /"))]
    pub http_path: Option<String>,
}

/// A namespaced Service name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    /// Namespace of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// Transport of a probe.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProbeProtocol {
    #[default]
    TCP,
    UDP,
}

/// What a failed node does to the plan.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Failed nodes tolerated before the plan stops starting new nodes.
    #[serde(default)]
    pub max_failed_nodes: u32,
    /// Retry the failed nodes: raising this number (once the cause is
    /// fixed) sends every node that failed back into the step it failed at
    /// (`Pause`: it stayed there, still serving) or, rolled back to
    /// kube-proxy (`Rollback`), through its migration again; the plan
    /// resumes. A number in the spec, so GitOps can do it: each new value
    /// retries once.
    #[serde(default)]
    pub retry: u32,
    /// `Pause`: a failed node stays as it is (still serving) and the plan
    /// pauses for a human. `Rollback`: a failed node returns to kube-proxy.
    #[serde(default)]
    pub action: FailureAction,
}

/// See [`FailurePolicy::action`].
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailureAction {
    #[default]
    Pause,
    Rollback,
}

//! `MigrationPlan` status: what the operator observed and did.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod compact;

/// Lifecycle of a plan.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Phase {
    /// Not looked at yet.
    #[default]
    Pending,
    /// Checking the cluster before any change; blocked while findings say so.
    Preflight,
    /// Dry run finished: waves and findings are in the status, nothing changed.
    Planned,
    /// Nodes are moving, wave by wave.
    Migrating,
    /// Holding: `spec.paused`, or a node failed with failure action `Pause`.
    Paused,
    /// Every node migrated; backing up and removing kube-proxy.
    Finalizing,
    /// Done: every selected node serves Services through the eBPF datapath.
    Succeeded,
    /// Stopped: more nodes failed than the failure policy tolerates.
    Failed,
    /// Returning every touched node to kube-proxy.
    RollingBack,
    /// Every touched node is back on kube-proxy.
    RolledBack,
}

impl Phase {
    /// Whether a plan in this phase holds the cluster (blocks other plans).
    /// A plan in `Preflight` has changed nothing yet: among those, the older
    /// one wins (see the planner's preflight).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Phase::Migrating
                | Phase::Paused
                | Phase::Finalizing
                | Phase::RollingBack
                | Phase::Failed
        )
    }
}

/// Where a node is in its migration. Forward steps run in declaration order
/// from `Cordon` to `Done`; rollback steps from `RestoreKubeProxy` to
/// `RolledBack`.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    Hash,
    PartialOrd,
    Ord,
)]
pub enum NodeStep {
    /// Not started.
    #[default]
    Pending,
    /// Cordoning (recording first whether it was already cordoned).
    Cordon,
    /// eBPF datapath switched on beside kube-proxy; waiting until every
    /// Service is programmed.
    ActivateDatapath,
    /// kube-proxy excluded from this node; waiting for its pod to go.
    RemoveKubeProxy,
    /// Removing kube-proxy's leftover rules on the node.
    FlushRules,
    /// Probing Services through the new datapath.
    Verify,
    /// Uncordoning (only if the plan cordoned it).
    Uncordon,
    /// Migrated and verified.
    Done,
    /// A step failed; see the node's message. The node still serves
    /// Services (kube-proxy or the datapath, whichever the step left).
    Failed,
    /// Rollback: kube-proxy back on the node and ready.
    RestoreKubeProxy,
    /// Rollback: datapath off (only once kube-proxy is ready).
    DeactivateDatapath,
    /// Rollback: uncordoning if the plan cordoned it.
    RollbackUncordon,
    /// Back on kube-proxy.
    RolledBack,
    /// The Node object disappeared while the plan ran.
    Gone,
}

impl NodeStep {
    /// Whether the node is finished (no further step in its sequence).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NodeStep::Done | NodeStep::Failed | NodeStep::RolledBack | NodeStep::Gone
        )
    }

    /// Whether the node is between `Pending` and a terminal step.
    pub fn in_flight(self) -> bool {
        self != NodeStep::Pending && !self.is_terminal()
    }

    /// Whether this step belongs to the rollback sequence.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            NodeStep::RestoreKubeProxy | NodeStep::DeactivateDatapath | NodeStep::RollbackUncordon
        )
    }
}

/// Status of a `MigrationPlan`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationPlanStatus {
    /// Lifecycle phase.
    #[serde(default)]
    pub phase: Phase,
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`, plus
    /// `PreflightPassed` and `KubeProxyReappeared`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `spec.failurePolicy.retry` last acted on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed_retry: u32,
    /// The computed waves: node names, canary wave first. Fixed once
    /// migration starts; nodes that join later are appended as a last wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Vec<String>>,
    /// Index into `waves` of the wave in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<u32>,
    /// When the last completed wave finished (paces `pauseBetweenWavesSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_completed_at: Option<Time>,
    /// Per wave (same order as `waves`), what the wave's nodes without an
    /// entry in `nodes` share: how many they are, their step (`Pending`,
    /// `Done` or `RolledBack`) and when they started and finished. Empty
    /// when every node has an entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wave_progress: Vec<WaveProgress>,
    /// Per node progress of the nodes their wave's `waveProgress` does not
    /// give: nodes in flight, failed, gone, or otherwise unlike the rest
    /// of their wave. Each node's own timings are in its NodeDatapath
    /// status and its `NodeMigrated` event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<NodeProgress>,
    /// Counts over `nodes`.
    #[serde(default)]
    pub summary: Summary,
    /// What preflight found (errors block, warnings do not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<Finding>,
    /// kube-proxy's mode read from its ConfigMap (`iptables`, `nftables`, `ipvs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_mode: Option<String>,
    /// The NodePort addresses kube-proxy's configuration gives (kept after
    /// its ConfigMap is deleted, for the NodeDatapath specs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_node_ports: Option<crate::NodePortAddresses>,
    /// The direct API server address given to the agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// Name of the ConfigMap (operator namespace) holding the kube-proxy
    /// DaemonSet and ConfigMap backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_backup: Option<String>,
    /// Whether the kube-proxy DaemonSet and ConfigMap were deleted by this plan.
    #[serde(default)]
    pub kube_proxy_deleted: bool,
    /// When migration started and ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One node's progress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeProgress {
    /// Node name.
    pub name: String,
    /// Index of the node's wave.
    pub wave: u32,
    /// Current step.
    #[serde(default)]
    pub step: NodeStep,
    /// The plan holds the node's cordon: it found the node schedulable and
    /// cordons it (recorded before the cordon), and it uncordons the node
    /// when the node finishes. Kubernetes records no owner for a cordon, so
    /// this is the plan's own: a node someone else cordoned before its turn
    /// is never held, and one someone uncordons while the plan holds it is
    /// let go (whatever they do with it next is theirs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holds_cordon: bool,
    /// When the plan started on the node (it left `Pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current step started (for `Done` and `RolledBack`: when
    /// the node finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Completed steps with their completion time, oldest first. Emptied
    /// when the node reaches `Done` or `RolledBack`: the `NodeMigrated` /
    /// `NodeRolledBack` event then lists each step's duration, and the
    /// status of a plan over thousands of nodes stays far below the API
    /// server's object size limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepRecord>,
    /// The furthest forward step the node reached (what a rollback undoes).
    #[serde(default, skip_serializing_if = "is_pending")]
    pub reached: NodeStep,
    /// The step that failed, when `step` is `Failed` or rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<NodeStep>,
    /// Why the node failed (kept through its rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Generation of the cleanup request sent to the node's agent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cleanup_generation: i64,
    /// Generation of the probe request sent to the node's agent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub probe_generation: i64,
    /// The other node whose agent probes this node's NodePort and health
    /// port in its Verify step (traffic from outside the node). Chosen on
    /// entering Verify; absent when no node could (then the node's
    /// message and a `PeerProbeSkipped` event say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_peer: Option<String>,
    /// Generation of the peer probe request that covers this node in the
    /// peer's NodeDatapath.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peer_probe_generation: i64,
    /// kube-proxy ran on the node after it was migrated (re-created by
    /// kubeadm or an addon manager): its rules are cleaned again once its
    /// pod is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kube_proxy_returned: bool,
    /// Last message (why it waits, why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_pending(step: &NodeStep) -> bool {
    *step == NodeStep::Pending
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

/// What the nodes of one wave that have no entry of their own in the
/// status share.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WaveProgress {
    /// How many of the wave's nodes have no entry in `nodes`.
    #[serde(default)]
    pub nodes: u32,
    /// Their step.
    #[serde(default)]
    pub step: NodeStep,
    /// When the plan started on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the last of them finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The furthest forward step they reached.
    #[serde(default, skip_serializing_if = "is_pending")]
    pub reached: NodeStep,
    /// Generation of the cleanup request their agents were sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cleanup_generation: i64,
    /// Generation of the probe request their agents were sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub probe_generation: i64,
}

/// A completed step.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub step: NodeStep,
    pub completed_at: Time,
}

/// Node counts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: u32,
    pub pending: u32,
    pub in_progress: u32,
    pub migrated: u32,
    pub failed: u32,
    pub rolled_back: u32,
    /// `migrated/total`, for the printer column.
    #[serde(default)]
    pub progress: String,
}

/// A preflight finding.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `Error` blocks the plan; `Warning` and `Info` do not.
    pub severity: Severity,
    /// Machine-readable reason (CamelCase), e.g. `AgentMissing`.
    pub reason: String,
    /// What is wrong and what to do.
    pub message: String,
    /// The object concerned (`Node/worker-1`, `Service/ns/name`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// Severity of a [`Finding`].
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Severity {
    Error,
    Warning,
    /// For the record (what the plan will have to handle).
    Info,
}

//! What the planner asks the controller to do. Every action is idempotent
//! ("ensure"), so repeating one after a crash is harmless.

use switchyard_api::{DatapathMode, ProbeRequest};

/// One change to make in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `spec.unschedulable = true`.
    Cordon { node: String },
    /// `spec.unschedulable = false`.
    Uncordon { node: String },
    /// Apply the NodeDatapath spec mode (and API server address).
    SetDatapath {
        node: String,
        mode: DatapathMode,
        api_server: Option<String>,
    },
    /// Label the node so the kube-proxy DaemonSet no longer runs there.
    ExcludeKubeProxy { node: String },
    /// Remove that label.
    IncludeKubeProxy { node: String },
    /// Give the kube-proxy DaemonSet the nodeAffinity excluding the label.
    EnsureKubeProxyAffinity,
    /// Ask the node's agent to remove kube-proxy's leftovers.
    RequestCleanup { node: String, generation: i64 },
    /// Ask the node's agent to probe Services.
    RequestProbe { node: String, request: ProbeRequest },
    /// Write the backup ConfigMap of the kube-proxy DaemonSet + ConfigMap.
    BackupKubeProxy { name: String },
    /// Delete the kube-proxy DaemonSet and ConfigMap (backup exists).
    DeleteKubeProxy,
    /// Re-create the kube-proxy DaemonSet and ConfigMap from the backup.
    RestoreKubeProxy { backup: String },
    /// Record an Event.
    Event(Event),
}

/// A Kubernetes Event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `None`: on the plan; `Some(node)`: on the Node.
    pub node: Option<String>,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Action {
    /// The node this action changes, if it is node-scoped.
    pub fn node(&self) -> Option<&str> {
        match self {
            Action::Cordon { node }
            | Action::Uncordon { node }
            | Action::SetDatapath { node, .. }
            | Action::ExcludeKubeProxy { node }
            | Action::IncludeKubeProxy { node }
            | Action::RequestCleanup { node, .. }
            | Action::RequestProbe { node, .. } => Some(node),
            _ => None,
        }
    }
}

//! What the planner asks the controller to do. Every action is idempotent
//! ("ensure"), so repeating one after a crash is harmless.

use switchyard_api::NodeDatapathSpec;

/// One change to make in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `spec.unschedulable = true`.
    Cordon { node: String },
    /// `spec.unschedulable = false`.
    Uncordon { node: String },
    /// Remove the [`switchyard_api::STARTUP_TAINT`]: pods may come.
    RemoveStartupTaint { node: String },
    /// Write the node's whole NodeDatapath spec (server-side apply: a
    /// request the spec no longer carries is withdrawn).
    ApplyDatapath {
        node: String,
        spec: NodeDatapathSpec,
    },
    /// Label the node so the kube-proxy DaemonSet no longer runs there.
    ExcludeKubeProxy { node: String },
    /// Remove that label.
    IncludeKubeProxy { node: String },
    /// Give the kube-proxy DaemonSet the nodeAffinity excluding the label.
    /// Emitted only after [`Action::HoldKubeProxyRollout`]: the template
    /// edit then restarts no kube-proxy pod.
    EnsureKubeProxyAffinity,
    /// Remember the kube-proxy DaemonSet's `updateStrategy` (in an
    /// annotation on it) and set `OnDelete`. The first hold's memory wins.
    HoldKubeProxyRollout,
    /// Give the kube-proxy DaemonSet its remembered `updateStrategy` back;
    /// `restore_template`: remove the exclusion from its pod template in
    /// the same write (no node may carry the label then).
    ReleaseKubeProxyRollout { restore_template: bool },
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
            | Action::RemoveStartupTaint { node }
            | Action::ApplyDatapath { node, .. }
            | Action::ExcludeKubeProxy { node }
            | Action::IncludeKubeProxy { node } => Some(node),
            _ => None,
        }
    }
}

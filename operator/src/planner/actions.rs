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

/// The actions with each cluster-wide change to kube-proxy (its template,
/// rollout, backup) kept once, where it first appears: every node that
/// leaves kube-proxy in one decision asks for the same template edit, and
/// the controller applies cluster-wide actions one at a time, between the
/// nodes' (a wave of hundreds of nodes would otherwise take a template
/// read per node, in series).
pub fn once_each(actions: Vec<Action>) -> Vec<Action> {
    let mut seen: Vec<Action> = Vec::new();
    actions
        .into_iter()
        .filter(|a| {
            if a.node().is_some() || matches!(a, Action::Event(_)) {
                return true;
            }
            if seen.contains(a) {
                return false;
            }
            seen.push(a.clone());
            true
        })
        .collect()
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

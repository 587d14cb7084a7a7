//! What deleting a plan means (`spec.onDeletion`), decided before the
//! plan's own phases: a plan that touched nodes and has not succeeded is
//! rolled back as a whole (`Rollback`, the default), and the finalizer
//! holding the object goes only once that is over; `Abandon`, a plan that
//! never touched a node and a succeeded one let it go at once.

use switchyard_api::{DeletionPolicy, MigrationPlanSpec, MigrationPlanStatus, NodeStep, Phase};

use super::Decision;

/// The plan's deletion, as the decision treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Deletion {
    /// Not being deleted.
    No,
    /// Roll every touched node back, then let the object go.
    RollBack,
    /// Let the object go now.
    Release,
}

pub(super) fn classify(
    spec: &MigrationPlanSpec,
    status: &MigrationPlanStatus,
    deleting: bool,
) -> Deletion {
    if !deleting {
        return Deletion::No;
    }
    let touched = status.kube_proxy_deleted
        || status
            .nodes
            .iter()
            .any(|n| !matches!(n.step, NodeStep::Pending | NodeStep::Gone));
    if spec.on_deletion == DeletionPolicy::Abandon
        || status.phase == Phase::Succeeded
        || (!touched && status.phase != Phase::RollingBack)
    {
        Deletion::Release
    } else {
        Deletion::RollBack
    }
}

/// Whether the finalizer may go after `decision`: released, or rolled
/// back with nothing left to do (kube-proxy's rollout given back too).
pub(super) fn releases(deletion: Deletion, decision: &Decision) -> bool {
    match deletion {
        Deletion::No => false,
        Deletion::Release => true,
        Deletion::RollBack => {
            decision.status.phase == Phase::RolledBack && decision.actions.is_empty()
        }
    }
}

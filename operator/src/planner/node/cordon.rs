//! Whose cordon it is. Kubernetes keeps one `spec.unschedulable` per node
//! and no owner, so the plan records in the node's progress whether it holds
//! the cordon ([`NodeProgress::holds_cordon`]) and undoes only a cordon it
//! holds. A node someone else cordoned before its turn is never held; a node
//! someone uncordons while the plan holds it is let go, so a cordon they
//! place afterwards (also on a migrated node that is later rolled back) is
//! theirs and stays.

use switchyard_api::{NodeProgress, NodeStep};

use super::super::{Ctx, NodeObs};
use super::{Moved, event};
use crate::planner::actions::Action;

/// Takes the cordon of a node the plan is about to cordon (its owner
/// uncordoned it between its start and its `Cordon` step), recorded before
/// the cordon goes out ("record, then act"): `Moved::Yes` when it did.
pub(super) fn take(p: &mut NodeProgress, node: &NodeObs) -> Moved {
    if p.step == NodeStep::Cordon && !node.unschedulable && !p.holds_cordon {
        p.holds_cordon = true;
        return Moved::Yes;
    }
    Moved::No
}

/// Lets go of the cordon of a node someone else uncordoned while the plan
/// held it, with an event; whether it did. No action of the node's step
/// depends on the cordon then, so this needs no decision of its own.
pub fn release_lifted(ctx: &Ctx<'_>, p: &mut NodeProgress, out: &mut Vec<Action>) -> bool {
    let Some(node) = ctx.snap.nodes.get(&p.name) else {
        return false;
    };
    if !p.holds_cordon || node.unschedulable || !lifted_by_others(p.step) {
        return false;
    }
    p.holds_cordon = false;
    out.push(event(
        Some(&p.name),
        false,
        "CordonReleased",
        format!(
            "node {} was uncordoned by someone else during its {:?} step; plan {} \
             leaves its cordon to them from now on",
            p.name, p.step, ctx.plan_name
        ),
    ));
    true
}

/// Steps in which the plan holds a node cordoned without touching the
/// cordon, so a schedulable node there was uncordoned by someone else.
/// (`Cordon` is still cordoning it; the uncordon steps lift it themselves.)
fn lifted_by_others(step: NodeStep) -> bool {
    matches!(
        step,
        NodeStep::ActivateDatapath
            | NodeStep::RemoveKubeProxy
            | NodeStep::FlushRules
            | NodeStep::Verify
            | NodeStep::Failed
            | NodeStep::RestoreKubeProxy
            | NodeStep::DeactivateDatapath
    )
}

/// The action that lifts the plan's own cordon, when it still holds one.
pub(super) fn uncordon(p: &NodeProgress, node: &NodeObs) -> Option<Action> {
    (p.holds_cordon && node.unschedulable).then(|| Action::Uncordon {
        node: p.name.clone(),
    })
}

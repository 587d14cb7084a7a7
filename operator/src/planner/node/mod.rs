//! One node's step machine. Each call advances a node by at most one step;
//! a node that moved gets no action in the same decision, so every action is
//! derived from a step already recorded in the plan's status ("record, then
//! act"). A node that did not move gets the idempotent actions of its step.

mod cordon;
mod peer;

pub use cordon::release_lifted as release_lifted_cordon;
mod spec;
mod steps;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::{DatapathMode, FailureAction, NodeProgress, NodeStep, StepRecord};

use super::actions::{Action, Event};
use super::{Ctx, DatapathObs};
pub(super) use steps::exclude_from_template;
use steps::{Next, Seen};

/// What happened to a node in this decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    Yes,
    No,
}

/// Starts a pending node: records whether the plan will hold its cordon
/// (it was schedulable), before anything touches it. Its start is told
/// once for all the nodes a decision starts ([`started`]).
pub fn start(ctx: &Ctx<'_>, p: &mut NodeProgress, events: &mut Vec<Action>) {
    match ctx.snap.nodes.get(&p.name) {
        None => gone(ctx, p, events),
        Some(node) => {
            p.holds_cordon = !node.unschedulable;
            enter(ctx, p, NodeStep::Cordon);
        }
    }
}

/// Names listed in a [`started`] Event before "and N more".
const STARTED_NAMED: usize = 10;

/// The one Event, on the plan, for the nodes a decision started (`what`:
/// "wave 3", "nodes that joined"). A node's own Event comes when it is
/// done (`NodeMigrated`, with when it started and each step's time) or
/// failed: an Event per node at its start too would cost every node one
/// more request and etcd object.
pub fn started(ctx: &Ctx<'_>, what: &str, names: &[&str]) -> Option<Action> {
    let (first, rest) = names.split_at(names.len().min(STARTED_NAMED));
    let more = match rest.len() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    (!names.is_empty()).then(|| {
        event(
            None,
            false,
            "NodesStarted",
            format!(
                "switchyard plan {} started migrating {what} to the eBPF datapath: {} node(s): {}{more}",
                ctx.plan_name,
                names.len(),
                first.join(", ")
            ),
        )
    })
}

/// Sends a failed node back into its migration (`spec.failurePolicy.retry`
/// raised): one that stayed failed re-enters the step it failed at, with
/// fresh requests; one rolled back to kube-proxy starts again. The failure
/// is kept in the event, not in the progress (the node counts as failed no
/// more). Others are left alone.
pub fn retry(ctx: &Ctx<'_>, p: &mut NodeProgress, out: &mut Vec<Action>) {
    let Some(failed) = p.failed_step else {
        return;
    };
    let why = p.failure.take().unwrap_or_default();
    match p.step {
        NodeStep::Failed => {
            p.failed_step = None;
            advance(ctx, p, ctx.snap.datapaths.get(&p.name), failed, out);
        }
        NodeStep::RolledBack => {
            *p = fresh(p, p.wave);
            start(ctx, p, out);
        }
        _ => {
            p.failure = Some(why);
            return;
        }
    }
    out.push(event(
        Some(&p.name),
        false,
        "NodeRetried",
        format!(
            "retrying node {} at step {:?} (spec.failurePolicy.retry); it had failed: {why}",
            p.name, p.step
        ),
    ));
}

/// `p` from the start, as if never migrated, in wave `wave`; request
/// generations keep counting up (the agent acts once per generation).
pub fn fresh(p: &NodeProgress, wave: u32) -> NodeProgress {
    NodeProgress {
        name: p.name.clone(),
        wave,
        cleanup_generation: p.cleanup_generation,
        probe_generation: p.probe_generation,
        peer_probe_generation: p.peer_probe_generation,
        ..NodeProgress::default()
    }
}

/// Puts a node into the rollback sequence (whole-plan rollback).
pub fn begin_rollback(ctx: &Ctx<'_>, p: &mut NodeProgress) {
    enter(ctx, p, NodeStep::RestoreKubeProxy);
}

/// A migrated node that left the cluster: `Gone` (if it comes back, it is
/// migrated again). Whether it did.
pub fn left(ctx: &Ctx<'_>, p: &mut NodeProgress, events: &mut Vec<Action>) -> bool {
    let left = p.step == NodeStep::Done && !ctx.snap.nodes.contains_key(&p.name);
    if left {
        gone(ctx, p, events);
    }
    left
}

fn gone(ctx: &Ctx<'_>, p: &mut NodeProgress, events: &mut Vec<Action>) {
    enter(ctx, p, NodeStep::Gone);
    p.message = Some("the Node object was deleted".into());
    events.push(event(
        None,
        true,
        "NodeGone",
        format!("node {} left the cluster: its Node was deleted", p.name),
    ));
}

fn enter(ctx: &Ctx<'_>, p: &mut NodeProgress, step: NodeStep) {
    if p.step == NodeStep::Pending {
        if step == NodeStep::Cordon {
            p.started_at = Some(Time(ctx.now));
        }
    } else {
        p.history.push(StepRecord {
            step: p.step,
            completed_at: Time(ctx.now),
        });
    }
    if step < NodeStep::Done && step > p.reached {
        p.reached = step;
    }
    p.step = step;
    p.step_started_at = Some(Time(ctx.now));
    p.message = None;
}

/// Empties a finished node's history (the status keeps when it started
/// and finished; thousands of nodes' step lists would approach the API
/// server's object size limit) and returns, for its event, how long each
/// step took: `" after 5.3s: Cordon 0.1s, ActivateDatapath 1.2s, …"`.
/// A history that begins with a terminal step (a migrated node rolled
/// back) times the steps after it.
fn close_history(p: &mut NodeProgress) -> String {
    let history = std::mem::take(&mut p.history);
    let mut start = match history.first() {
        Some(r) if r.step == NodeStep::Cordon => p.started_at.as_ref().map(|t| t.0),
        _ => None,
    };
    let mut parts = Vec::new();
    let mut total_ms = 0;
    for r in &history {
        if let Some(from) = start {
            let ms = r.completed_at.0.as_millisecond() - from.as_millisecond();
            total_ms += ms;
            parts.push(format!("{:?} {}", r.step, secs(ms)));
        }
        start = Some(r.completed_at.0);
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(" after {}: {}", secs(total_ms), parts.join(", "))
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn event(node: Option<&str>, warning: bool, reason: &str, message: String) -> Action {
    Action::Event(Event {
        node: node.map(str::to_string),
        warning,
        reason: reason.into(),
        message,
    })
}

fn fail(ctx: &Ctx<'_>, p: &mut NodeProgress, why: String, out: &mut Vec<Action>) {
    let failed = p.step;
    let message = format!("node {} failed at step {failed:?}: {why}", p.name);
    let next = match ctx.spec.failure_policy.action {
        FailureAction::Pause => NodeStep::Failed,
        FailureAction::Rollback => NodeStep::RestoreKubeProxy,
    };
    enter(ctx, p, next);
    p.failed_step = Some(failed);
    p.failure = Some(message.clone());
    p.message = Some(message.clone());
    out.push(event(Some(&p.name), true, "NodeMigrationFailed", message));
}

/// Seconds the node has spent in its current step.
pub(crate) fn in_step_secs(ctx: &Ctx<'_>, p: &NodeProgress) -> i64 {
    p.step_started_at
        .as_ref()
        .map_or(0, |t| ctx.now.as_second() - t.0.as_second())
}

/// The whole NodeDatapath spec of the migrated node `p`, written again
/// when one of its requests is renewed after the plan (a new cleanup).
pub fn migrated_spec(ctx: &Ctx<'_>, p: &NodeProgress) -> Option<Action> {
    let seen = Seen {
        ctx,
        p,
        node: ctx.snap.nodes.get(&p.name)?,
        dp: ctx.snap.datapaths.get(&p.name),
    };
    Some(Action::ApplyDatapath {
        node: p.name.clone(),
        spec: spec::datapath_spec(&seen, DatapathMode::Active),
    })
}

/// Advances `p` by at most one step, or emits the actions of its step.
pub fn step(ctx: &Ctx<'_>, p: &mut NodeProgress, out: &mut Vec<Action>) -> Moved {
    let Some(node) = ctx.snap.nodes.get(&p.name) else {
        gone(ctx, p, out);
        return Moved::Yes;
    };
    if cordon::take(p, node) == Moved::Yes {
        return Moved::Yes;
    }
    if p.step == NodeStep::Verify && !peer::kept(ctx, p) {
        p.verify_peer = None;
        if choose_peer(ctx, p) {
            // Recorded first: the request goes out with the next decision.
            return Moved::Yes;
        }
    }
    let dp = ctx.snap.datapaths.get(&p.name);
    let seen = Seen { ctx, p, node, dp };
    let next = match p.step {
        NodeStep::Cordon => steps::cordon(&seen),
        NodeStep::ActivateDatapath => steps::activate_datapath(&seen),
        NodeStep::RemoveKubeProxy => steps::remove_kube_proxy(&seen),
        NodeStep::FlushRules => steps::flush_rules(&seen),
        NodeStep::Verify => steps::verify(&seen),
        NodeStep::Uncordon => steps::uncordon(&seen, NodeStep::Done),
        NodeStep::RestoreKubeProxy => steps::restore_kube_proxy(&seen),
        NodeStep::DeactivateDatapath => steps::deactivate_datapath(&seen),
        NodeStep::RollbackUncordon => steps::uncordon(&seen, NodeStep::RolledBack),
        NodeStep::Pending
        | NodeStep::Done
        | NodeStep::Failed
        | NodeStep::RolledBack
        | NodeStep::Gone => return Moved::No,
    };
    match next {
        Next::Advance(to) => {
            advance(ctx, p, dp, to, out);
            Moved::Yes
        }
        Next::Wait { reason, actions } => wait(ctx, p, reason, actions, out),
        Next::Fail(why) => {
            fail(ctx, p, why, out);
            Moved::Yes
        }
    }
}

/// Moves `p` to `to`: a fresh request generation for the step that sends
/// one (above what the agent already answered), and the node's event when
/// it finishes.
fn advance(
    ctx: &Ctx<'_>,
    p: &mut NodeProgress,
    dp: Option<&DatapathObs>,
    to: NodeStep,
    out: &mut Vec<Action>,
) {
    if to == NodeStep::FlushRules {
        let seen = dp
            .and_then(|d| d.cleanup.as_ref())
            .map_or(0, |c| c.observed_generation);
        p.cleanup_generation = p.cleanup_generation.max(seen) + 1;
    }
    if to == NodeStep::Verify {
        let seen = dp
            .and_then(|d| d.probe.as_ref())
            .map_or(0, |r| r.observed_generation);
        p.probe_generation = p.probe_generation.max(seen) + 1;
        p.verify_peer = None;
        choose_peer(ctx, p);
    }
    if p.step == NodeStep::Verify && p.verify_peer.is_none() {
        out.extend(peer_skipped(ctx, p));
    }
    enter(ctx, p, to);
    if matches!(to, NodeStep::Done | NodeStep::RolledBack) {
        // Its uncordon step lifted the plan's cordon, if it held one.
        p.holds_cordon = false;
    }
    if to == NodeStep::Done {
        // Its peer answered the request covering it (the node passed
        // Verify on that answer), and the peer's agent keeps the answered
        // generation in its status, which a later request's generation
        // is numbered above: the record is no longer needed, and a
        // migrated node then shares its wave's summary in the status.
        p.verify_peer = None;
        p.peer_probe_generation = 0;
    }
    let (reason, outcome) = match to {
        NodeStep::Done => (
            "NodeMigrated",
            "now serves Services through the eBPF datapath",
        ),
        NodeStep::RolledBack => ("NodeRolledBack", "is back on kube-proxy"),
        _ => return,
    };
    let took = close_history(p);
    out.push(event(
        Some(&p.name),
        false,
        reason,
        format!("node {} {outcome} (plan {}){took}", p.name, ctx.plan_name),
    ));
}

/// Records the node that probes `p`'s ingress in its Verify step, if one
/// can now (else [`peer::check`] says why the node waits or goes without).
/// Returns whether it recorded one.
fn choose_peer(ctx: &Ctx<'_>, p: &mut NodeProgress) -> bool {
    let peer::Choice::Peer(node, generation) = peer::choose(ctx, &p.name) else {
        return false;
    };
    p.verify_peer = Some(node);
    p.peer_probe_generation = generation;
    true
}

/// The warning a node verified without a peer gets (none when no Service
/// is reached from outside the nodes: nothing was left unprobed).
fn peer_skipped(ctx: &Ctx<'_>, p: &NodeProgress) -> Option<Action> {
    let peer::Choice::Never(why) = peer::choose(ctx, &p.name) else {
        return None;
    };
    peer::needed(ctx).then(|| {
        event(
            Some(&p.name),
            true,
            "PeerProbeSkipped",
            format!("traffic from outside node {} is not probed: {why}", p.name),
        )
    })
}

/// Keeps `p` in its step: fails it once the step has taken longer than the
/// plan allows (rollback steps wait as long as it takes: the node must get
/// kube-proxy back; the plan reports them `Stalled`), else records what it
/// waits for and emits the step's actions.
fn wait(
    ctx: &Ctx<'_>,
    p: &mut NodeProgress,
    reason: String,
    actions: Vec<Action>,
    out: &mut Vec<Action>,
) -> Moved {
    let limit = i64::from(ctx.spec.strategy.step_timeout_seconds);
    let elapsed = in_step_secs(ctx, p);
    if !p.step.is_rollback() && elapsed > limit {
        fail(
            ctx,
            p,
            format!("timed out after {elapsed}s ({reason})"),
            out,
        );
        return Moved::Yes;
    }
    p.message = Some(reason);
    out.extend(actions);
    Moved::No
}

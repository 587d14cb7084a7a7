//! The `Migrating` (and `Paused`) phase: nodes step, waves start one after
//! another, failures stop the plan.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::{
    DatapathMode, FailureAction, MigrationPlanStatus, NodeProgress, NodeStep, Phase,
};

use super::super::node;
use super::{
    Ctx, Draft, PlanError, failed_count, failure_message, selected, set_phase, step_nodes,
};

pub(super) fn migrate(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    add_joined(ctx, s)?;
    step_nodes(ctx, s, NodeStep::in_flight);
    if too_many_failed(ctx, s) {
        return Ok(());
    }
    let Some(next) = next_wave(&s.st) else {
        return Ok(());
    };
    if next >= s.st.waves.len() {
        finish_waves(ctx, s);
        return Ok(());
    }
    if ctx.spec.paused {
        s.st.message = Some("paused by spec.paused".into());
        set_phase(ctx, s, Phase::Paused);
        return Ok(());
    }
    if s.st.phase == Phase::Paused {
        set_phase(ctx, s, Phase::Migrating);
    }
    if next > 0 && pausing_between_waves(ctx, s, next) {
        return Ok(());
    }
    start_wave(ctx, s, next);
    Ok(())
}

/// Nodes that joined the selection after planning go in a last wave, so
/// none is left on kube-proxy when kube-proxy is deleted (and, after
/// success, none is left without a serving datapath). So do nodes that
/// came back (see [`returned`]): they start over from `Pending`.
pub(super) fn add_joined(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    let selected = selected(ctx)?;
    let planned: BTreeSet<String> = s.st.nodes.iter().map(|n| n.name.clone()).collect();
    let mut joined: Vec<String> = selected
        .iter()
        .filter(|n| !planned.contains(*n))
        .cloned()
        .collect();
    let back: Vec<String> =
        s.st.nodes
            .iter()
            .filter(|p| selected.contains(&p.name) && returned(ctx, p))
            .map(|p| p.name.clone())
            .collect();
    if joined.is_empty() && back.is_empty() {
        return Ok(());
    }
    let wave = s.st.waves.len() as u32;
    for w in &mut s.st.waves {
        w.retain(|n| !back.contains(n));
    }
    // The entries stay in wave order (the order the recorded status
    // gives them back in): the nodes that came back move to the end.
    let (returning, staying) = std::mem::take(&mut s.st.nodes)
        .into_iter()
        .partition::<Vec<_>, _>(|p| back.contains(&p.name));
    s.st.nodes = staying;
    s.st.nodes.extend(joined.iter().map(|name| NodeProgress {
        name: name.clone(),
        wave,
        ..NodeProgress::default()
    }));
    s.st.nodes
        .extend(returning.iter().map(|p| node::fresh(p, wave)));
    joined.extend(back);
    s.st.waves.push(joined);
    s.moved = true;
    Ok(())
}

/// A node the plan started on that is now another machine under the same
/// name, to migrate from the start: `Gone` and in the cluster again; or
/// one whose Node was created after the plan started on it (replaced
/// between two looks, or while the operator was down; the failure of a
/// failed one was the old machine's); or `Done` with a
/// NodeDatapath that is not active (the plan turns a migrated node's
/// datapath off only by rolling it back, which leaves `Done`), e.g. a new
/// machine whose agent created it afresh.
fn returned(ctx: &Ctx<'_>, p: &NodeProgress) -> bool {
    let Some(node) = ctx.snap.nodes.get(&p.name) else {
        return false;
    };
    let recreated = node
        .created
        .zip(p.started_at.as_ref())
        .is_some_and(|(created, started)| created > started.0);
    match p.step {
        NodeStep::Gone => true,
        NodeStep::Done => {
            recreated
                || ctx
                    .snap
                    .datapaths
                    .get(&p.name)
                    .is_none_or(|d| d.spec_mode != DatapathMode::Active)
        }
        NodeStep::Failed | NodeStep::RolledBack => recreated,
        step => step.in_flight() && !step.is_rollback() && recreated,
    }
}

/// More nodes failed than the plan tolerates: stall, and once none is in
/// flight any more, pause or fail the plan. Returns whether that is so.
fn too_many_failed(ctx: &Ctx<'_>, s: &mut Draft) -> bool {
    let failed = failed_count(&s.st);
    if failed <= ctx.spec.failure_policy.max_failed_nodes as usize {
        return false;
    }
    s.stall = Some(("NodeFailed".into(), failure_message(&s.st)));
    if !s.st.nodes.iter().any(|n| n.step.in_flight()) {
        let phase = match ctx.spec.failure_policy.action {
            FailureAction::Pause => Phase::Paused,
            FailureAction::Rollback => Phase::Failed,
        };
        set_phase(ctx, s, phase);
    }
    true
}

/// The wave to start next, or `None` while the current one is unfinished
/// (or a node of an earlier one is being retried).
fn next_wave(st: &MigrationPlanStatus) -> Option<usize> {
    let wave_done = |w: usize| {
        st.nodes
            .iter()
            .filter(|n| n.wave as usize <= w)
            .all(|n| n.step.is_terminal())
    };
    match st.current_wave.map(|w| w as usize) {
        None => Some(0),
        Some(w) if wave_done(w) => Some(w + 1),
        Some(_) => None,
    }
}

/// Every wave ran: finalise if every node is done (or gone), else fail.
fn finish_waves(ctx: &Ctx<'_>, s: &mut Draft) {
    if s.st
        .nodes
        .iter()
        .all(|n| matches!(n.step, NodeStep::Done | NodeStep::Gone))
    {
        set_phase(ctx, s, Phase::Finalizing);
    } else {
        s.stall = Some(("NodesFailed".into(), failure_message(&s.st)));
        set_phase(ctx, s, Phase::Failed);
    }
}

/// Whether wave `next` must still wait for the pause after the previous
/// one (the pause starts when this is first asked).
fn pausing_between_waves(ctx: &Ctx<'_>, s: &mut Draft, next: usize) -> bool {
    let pause = i64::from(ctx.spec.strategy.pause_between_waves_seconds);
    match &s.st.wave_completed_at {
        None if pause > 0 => {
            s.st.wave_completed_at = Some(Time(ctx.now));
            s.moved = true;
            true
        }
        Some(t) if ctx.now.as_second() - t.0.as_second() < pause => {
            let left = pause - (ctx.now.as_second() - t.0.as_second());
            s.st.message = Some(format!("pausing {left}s before wave {next}"));
            s.requeue = left.max(1) as u64;
            true
        }
        _ => false,
    }
}

fn start_wave(ctx: &Ctx<'_>, s: &mut Draft, next: usize) {
    s.st.current_wave = Some(next as u32);
    s.st.wave_completed_at = None;
    let mut started = Vec::new();
    for p in
        s.st.nodes
            .iter_mut()
            .filter(|p| p.wave as usize == next && p.step == NodeStep::Pending)
    {
        node::start(ctx, p, &mut s.actions);
        if p.step == NodeStep::Cordon {
            started.push(p.name.as_str());
        }
    }
    let event = node::started(ctx, &format!("wave {next}"), &started);
    s.actions.extend(event);
    s.moved = true;
}

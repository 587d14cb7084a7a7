//! Plan-level phases: preflight, waves, finalisation, whole-plan rollback,
//! the guard after success, and the status summary and kstatus conditions.

mod finish;
mod migrate;
mod report;

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::{MigrationPlanStatus, NodeProgress, NodeStep, Phase};

use super::actions::{Action, Event};
use super::node::{self, Moved};
use super::{Ctx, Decision, PlanError, preflight, waves};
use finish::{finalize, guard, release_rollout, rollback};
use migrate::migrate;
use report::{set_conditions, summarize};

/// Requeue while waiting on the cluster (watches usually wake us sooner).
const POLL_SECS: u64 = 5;
/// Requeue of a finished plan (the kube-proxy guard).
const GUARD_SECS: u64 = 60;

/// The plan-level decision being drafted: the status to record, the
/// actions to apply and what the conditions and the requeue will say.
struct Draft {
    st: MigrationPlanStatus,
    actions: Vec<Action>,
    moved: bool,
    /// `(reason, message)` when the plan needs a human.
    stall: Option<(String, String)>,
    requeue: u64,
}

pub(super) fn decide(
    ctx: &Ctx<'_>,
    generation: Option<i64>,
    status: MigrationPlanStatus,
) -> Result<Decision, PlanError> {
    let mut s = Draft {
        st: status,
        actions: Vec::new(),
        moved: false,
        stall: None,
        requeue: POLL_SECS,
    };
    s.st.observed_generation = generation;
    s.st.message = None;
    s.st.api_server = ctx.api_server.clone();
    s.st.kube_proxy_mode = preflight::kube_proxy_mode(ctx.snap).or(s.st.kube_proxy_mode.take());
    s.st.kube_proxy_node_ports = ctx.node_ports.clone();

    let retried = follow_spec_and_nodes(ctx, &mut s);
    match s.st.phase {
        // Retried nodes are back in their steps: recorded before any of
        // those steps acts.
        _ if retried => {}
        Phase::Pending => set_phase(ctx, &mut s, Phase::Preflight),
        Phase::Preflight => preflight_phase(ctx, &mut s)?,
        Phase::Planned => {
            if !ctx.spec.dry_run {
                set_phase(ctx, &mut s, Phase::Preflight);
            } else {
                s.requeue = GUARD_SECS;
            }
        }
        Phase::Migrating | Phase::Paused => migrate(ctx, &mut s)?,
        Phase::Finalizing => finalize(ctx, &mut s)?,
        Phase::Succeeded => guard(ctx, &mut s)?,
        Phase::Failed => {
            s.stall = Some(("NodesFailed".into(), failure_message(&s.st)));
            s.requeue = GUARD_SECS;
        }
        Phase::RollingBack => rollback(ctx, &mut s),
        Phase::RolledBack => s.requeue = GUARD_SECS,
    }
    release_rollout(ctx, &mut s);

    summarize(&mut s.st);
    set_conditions(ctx, generation, &mut s);
    Ok(Decision {
        status: s.st,
        actions: super::actions::once_each(s.actions),
        requeue_after_secs: if s.moved { 0 } else { s.requeue },
        release: false,
    })
}

/// What changed since the last decision besides the steps' own progress:
/// a rollback or a retry asked for in the spec, cordons someone else
/// lifted, migrated nodes that left the cluster. Returns whether failed
/// nodes were retried.
fn follow_spec_and_nodes(ctx: &Ctx<'_>, s: &mut Draft) -> bool {
    if ctx.spec.rollback && !matches!(s.st.phase, Phase::RollingBack | Phase::RolledBack) {
        begin_rollback(ctx, s);
    }
    let retried = ctx.spec.failure_policy.retry != s.st.observed_retry;
    if retried {
        retry_failed(ctx, s);
    }
    for p in &mut s.st.nodes {
        s.moved |= node::release_lifted_cordon(ctx, p, &mut s.actions);
        s.moved |= node::left(ctx, p, &mut s.actions);
    }
    retried
}

/// `spec.rollback` set: the plan rolls back, or, having touched nothing,
/// is rolled back already.
fn begin_rollback(ctx: &Ctx<'_>, s: &mut Draft) {
    let touched = s.st.kube_proxy_deleted || s.st.nodes.iter().any(|n| n.step != NodeStep::Pending);
    set_phase(
        ctx,
        s,
        if touched {
            Phase::RollingBack
        } else {
            Phase::RolledBack
        },
    );
}

/// `spec.failurePolicy.retry` changed: every failed node goes back into
/// its migration and a plan stopped by failures resumes (not one rolled
/// back or rolling back as a whole: its nodes stay on kube-proxy).
fn retry_failed(ctx: &Ctx<'_>, s: &mut Draft) {
    s.st.observed_retry = ctx.spec.failure_policy.retry;
    s.moved = true;
    if matches!(s.st.phase, Phase::RollingBack | Phase::RolledBack) {
        return;
    }
    for p in &mut s.st.nodes {
        node::retry(ctx, p, &mut s.actions);
    }
    if matches!(s.st.phase, Phase::Paused | Phase::Failed) && !ctx.spec.paused {
        set_phase(ctx, s, Phase::Migrating);
    }
}

fn set_phase(ctx: &Ctx<'_>, s: &mut Draft, phase: Phase) {
    if s.st.phase == phase {
        return;
    }
    s.actions.push(Action::Event(Event {
        node: None,
        warning: matches!(phase, Phase::Failed | Phase::RollingBack),
        reason: format!("Phase{phase:?}"),
        message: format!(
            "plan {} moved from {:?} to {phase:?}",
            ctx.plan_name, s.st.phase
        ),
    }));
    if matches!(
        phase,
        Phase::Succeeded | Phase::Failed | Phase::RolledBack | Phase::Planned
    ) {
        s.st.completed_at = Some(Time(ctx.now));
    }
    s.st.phase = phase;
    s.moved = true;
}

/// The selected nodes, in a set.
fn selected(ctx: &Ctx<'_>) -> Result<BTreeSet<String>, PlanError> {
    let mut out = BTreeSet::new();
    for (name, node) in &ctx.snap.nodes {
        if waves::selects(ctx.spec.node_selector.as_ref(), &node.labels)? {
            out.insert(name.clone());
        }
    }
    Ok(out)
}

fn progress_for(waves: &[Vec<String>]) -> Vec<NodeProgress> {
    waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            w.iter().map(move |name| NodeProgress {
                name: name.clone(),
                wave: i as u32,
                ..NodeProgress::default()
            })
        })
        .collect()
}

fn preflight_phase(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    let sel = selected(ctx)?;
    s.st.waves = waves::compute(&ctx.spec.strategy, &sel)?;
    s.st.nodes = progress_for(&s.st.waves);
    let targets: Vec<String> = s.st.waves.concat();
    s.st.preflight = preflight::check(ctx.spec, ctx.snap, &targets, ctx.now);
    let blocked = preflight::blocking(&s.st.preflight);
    if ctx.spec.dry_run {
        set_phase(ctx, s, Phase::Planned);
        return Ok(());
    }
    if blocked {
        let errors: Vec<String> =
            s.st.preflight
                .iter()
                .filter(|f| f.severity == switchyard_api::Severity::Error)
                .map(|f| format!("{}: {}", f.reason, f.message))
                .collect();
        s.stall = Some(("PreflightFailed".into(), errors.join("; ")));
        s.requeue = POLL_SECS;
        return Ok(());
    }
    s.st.started_at = Some(Time(ctx.now));
    s.st.current_wave = None;
    set_phase(ctx, s, Phase::Migrating);
    Ok(())
}

fn failed_count(st: &MigrationPlanStatus) -> usize {
    st.nodes.iter().filter(|n| n.failed_step.is_some()).count()
}

fn failure_message(st: &MigrationPlanStatus) -> String {
    let msgs: Vec<String> = st
        .nodes
        .iter()
        .filter(|n| n.failed_step.is_some())
        .map(|n| {
            n.failure
                .clone()
                .unwrap_or_else(|| format!("node {} failed", n.name))
        })
        .collect();
    msgs.join("; ")
}

/// Steps every node whose step passes `which`. Nodes in Verify that
/// chose the same peer each emit its (same) spec: it is written once.
fn step_nodes(ctx: &Ctx<'_>, s: &mut Draft, which: fn(NodeStep) -> bool) {
    let mut actions = Vec::new();
    for p in s.st.nodes.iter_mut().filter(|p| which(p.step)) {
        if node::step(ctx, p, &mut actions) == Moved::Yes {
            s.moved = true;
        }
    }
    for a in actions {
        if !matches!(a, Action::ApplyDatapath { .. }) || !s.actions.contains(&a) {
            s.actions.push(a);
        }
    }
    report_stalled_rollback(ctx, s);
}

/// A rollback step never gives up (its node must get kube-proxy back), but
/// one that has waited longer than the plan's step timeout needs a human:
/// the plan says `Stalled`, naming the node and what it waits for.
fn report_stalled_rollback(ctx: &Ctx<'_>, s: &mut Draft) {
    let limit = i64::from(ctx.spec.strategy.step_timeout_seconds);
    let stuck =
        s.st.nodes
            .iter()
            .find(|p| p.step.is_rollback() && node::in_step_secs(ctx, p) > limit);
    if let Some(p) = stuck
        && s.stall.is_none()
    {
        let waits_for = p.message.as_deref().unwrap_or("its step to complete");
        s.stall = Some((
            "RollbackStalled".into(),
            format!(
                "node {} has been in {:?} for {}s, waiting for {waits_for}; still trying",
                p.name,
                p.step,
                node::in_step_secs(ctx, p)
            ),
        ));
    }
}

//! Plan-level phases: preflight, waves, finalisation, whole-plan rollback,
//! the guard after success, and the status summary and kstatus conditions.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::conditions::{
    self, KUBE_PROXY_REAPPEARED, PREFLIGHT_PASSED, READY, RECONCILING, STALLED,
};
use switchyard_api::{
    FailureAction, KubeProxyDisposition, MigrationPlanStatus, NodeProgress, NodeStep, Phase,
    Summary,
};

use super::actions::{Action, Event};
use super::node::{self, Moved};
use super::{Ctx, Decision, PlanError, preflight, waves};

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

    if ctx.spec.rollback && !matches!(s.st.phase, Phase::RollingBack | Phase::RolledBack) {
        let touched =
            s.st.kube_proxy_deleted || s.st.nodes.iter().any(|n| n.step != NodeStep::Pending);
        set_phase(
            ctx,
            &mut s,
            if touched {
                Phase::RollingBack
            } else {
                Phase::RolledBack
            },
        );
    }

    match s.st.phase {
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
        Phase::Finalizing => finalize(ctx, &mut s),
        Phase::Succeeded => guard(ctx, &mut s),
        Phase::Failed => {
            s.stall = Some(("NodesFailed".into(), failure_message(&s.st)));
            s.requeue = GUARD_SECS;
        }
        Phase::RollingBack => rollback(ctx, &mut s),
        Phase::RolledBack => s.requeue = GUARD_SECS,
    }

    summarize(&mut s.st);
    set_conditions(ctx, generation, &mut s);
    Ok(Decision {
        status: s.st,
        actions: s.actions,
        requeue_after_secs: if s.moved { 0 } else { s.requeue },
    })
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

fn migrate(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    // Nodes that joined the selection after planning go in a last wave,
    // so none is left on kube-proxy when kube-proxy is deleted.
    let planned: BTreeSet<String> = s.st.nodes.iter().map(|n| n.name.clone()).collect();
    let joined: Vec<String> = selected(ctx)?
        .into_iter()
        .filter(|n| !planned.contains(n))
        .collect();
    if !joined.is_empty() {
        let wave = s.st.waves.len() as u32;
        s.st.nodes.extend(joined.iter().map(|name| NodeProgress {
            name: name.clone(),
            wave,
            ..NodeProgress::default()
        }));
        s.st.waves.push(joined);
        s.moved = true;
    }

    for p in s.st.nodes.iter_mut().filter(|p| p.step.in_flight()) {
        if node::step(ctx, p, &mut s.actions) == Moved::Yes {
            s.moved = true;
        }
    }

    let in_flight = s.st.nodes.iter().any(|n| n.step.in_flight());
    let failed = failed_count(&s.st);
    if failed > ctx.spec.failure_policy.max_failed_nodes as usize {
        s.stall = Some(("NodeFailed".into(), failure_message(&s.st)));
        if !in_flight {
            let phase = match ctx.spec.failure_policy.action {
                FailureAction::Pause => Phase::Paused,
                FailureAction::Rollback => Phase::Failed,
            };
            set_phase(ctx, s, phase);
        }
        return Ok(());
    }

    let current = s.st.current_wave.map(|w| w as usize);
    let wave_done = |w: usize, st: &MigrationPlanStatus| {
        st.nodes
            .iter()
            .filter(|n| n.wave as usize == w)
            .all(|n| n.step.is_terminal())
    };
    let next = match current {
        None => 0,
        Some(w) if wave_done(w, &s.st) => w + 1,
        Some(_) => return Ok(()),
    };
    if next >= s.st.waves.len() {
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
    if next > 0 {
        let pause = i64::from(ctx.spec.strategy.pause_between_waves_seconds);
        match &s.st.wave_completed_at {
            None if pause > 0 => {
                s.st.wave_completed_at = Some(Time(ctx.now));
                s.moved = true;
                return Ok(());
            }
            Some(t) if ctx.now.as_second() - t.0.as_second() < pause => {
                let left = pause - (ctx.now.as_second() - t.0.as_second());
                s.st.message = Some(format!("pausing {left}s before wave {next}"));
                s.requeue = left.max(1) as u64;
                return Ok(());
            }
            _ => {}
        }
    }
    s.st.current_wave = Some(next as u32);
    s.st.wave_completed_at = None;
    for p in
        s.st.nodes
            .iter_mut()
            .filter(|p| p.wave as usize == next && p.step == NodeStep::Pending)
    {
        node::start(ctx, p, &mut s.actions);
    }
    s.moved = true;
    Ok(())
}

fn finalize(ctx: &Ctx<'_>, s: &mut Draft) {
    let kp = &ctx.snap.kube_proxy;
    let name = super::backup_name(ctx.plan_name);
    if !ctx.snap.backup_exists {
        if kp.daemon_set.is_none() && kp.config_map.is_none() {
            s.stall = Some((
                "BackupImpossible".into(),
                "kube-proxy's DaemonSet and ConfigMap vanished before they were backed up".into(),
            ));
            return;
        }
        s.actions.push(Action::BackupKubeProxy { name });
        s.st.message = Some("backing up kube-proxy's DaemonSet and ConfigMap".into());
        return;
    }
    s.st.kube_proxy_backup = Some(name);
    if ctx.spec.kube_proxy.on_success == KubeProxyDisposition::Delete {
        if kp.daemon_set.is_some() || kp.config_map.is_some() {
            s.actions.push(Action::DeleteKubeProxy);
            s.st.message =
                Some("deleting kube-proxy's DaemonSet and ConfigMap (backup written)".into());
            return;
        }
        s.st.kube_proxy_deleted = true;
    }
    s.st.message = Some("every node serves Services through the eBPF datapath".into());
    set_phase(ctx, s, Phase::Succeeded);
}

fn guard(ctx: &Ctx<'_>, s: &mut Draft) {
    s.requeue = GUARD_SECS;
    let kp = &ctx.snap.kube_proxy;
    let reappeared =
        s.st.kube_proxy_deleted && (kp.daemon_set.is_some() || kp.config_map.is_some());
    let was = conditions::is_true(&s.st.conditions, KUBE_PROXY_REAPPEARED);
    if reappeared && !was {
        s.actions.push(Action::Event(Event {
            node: None,
            warning: true,
            reason: "KubeProxyReappeared".into(),
            message: "kube-proxy was re-created after the migration (kubeadm upgrade or an addon manager?); re-excluding it from migrated nodes".into(),
        }));
    }
    conditions::set(
        &mut s.st.conditions,
        KUBE_PROXY_REAPPEARED,
        reappeared,
        if reappeared { "Recreated" } else { "Absent" },
        if reappeared {
            "kube-proxy's DaemonSet or ConfigMap exists again; it is kept off migrated nodes"
        } else {
            "kube-proxy has not come back"
        },
        s.st.observed_generation,
        Time(ctx.now),
    );
    if kp.daemon_set.as_ref().is_some_and(|ds| !ds.excludes_label) {
        s.actions.push(Action::EnsureKubeProxyAffinity);
    }

    for p in s.st.nodes.iter().filter(|p| p.step == NodeStep::Done) {
        if ctx
            .snap
            .nodes
            .get(&p.name)
            .is_some_and(|n| !n.kube_proxy_excluded)
        {
            s.actions.push(Action::ExcludeKubeProxy {
                node: p.name.clone(),
            });
        }
    }
}

fn rollback(ctx: &Ctx<'_>, s: &mut Draft) {
    let kp = &ctx.snap.kube_proxy;
    if kp.daemon_set.is_none() || kp.config_map.is_none() {
        if ctx.snap.backup_exists {
            s.actions.push(Action::RestoreKubeProxy {
                backup: super::backup_name(ctx.plan_name),
            });
            s.st.message = Some("re-creating kube-proxy from the backup".into());
        } else {
            s.stall = Some((
                "BackupMissing".into(),
                format!(
                    "kube-proxy is missing and backup ConfigMap {} does not exist; restore kube-proxy by hand",
                    super::backup_name(ctx.plan_name)
                ),
            ));
        }
        return;
    }
    s.st.kube_proxy_deleted = false;

    for p in s.st.nodes.iter_mut().filter(|p| p.step.is_rollback()) {
        if node::step(ctx, p, &mut s.actions) == Moved::Yes {
            s.moved = true;
        }
    }
    if s.st.nodes.iter().any(|p| p.step.is_rollback()) {
        return;
    }
    // Roll back the latest touched wave next (reverse order), all its nodes.
    let needs = |p: &NodeProgress| {
        !matches!(
            p.step,
            NodeStep::Pending | NodeStep::RolledBack | NodeStep::Gone
        )
    };
    match s.st.nodes.iter().filter(|p| needs(p)).map(|p| p.wave).max() {
        Some(wave) => {
            for p in s.st.nodes.iter_mut().filter(|p| p.wave == wave && needs(p)) {
                node::begin_rollback(ctx, p);
            }
            s.st.current_wave = Some(wave);
            s.moved = true;
        }
        None => {
            s.st.message = Some("every touched node is back on kube-proxy".into());
            set_phase(ctx, s, Phase::RolledBack);
        }
    }
}

fn summarize(st: &mut MigrationPlanStatus) {
    let mut sum = Summary {
        total: st.nodes.len() as u32,
        ..Summary::default()
    };
    for n in &st.nodes {
        match n.step {
            NodeStep::Pending => sum.pending += 1,
            NodeStep::Done => sum.migrated += 1,
            NodeStep::Failed => sum.failed += 1,
            NodeStep::RolledBack => sum.rolled_back += 1,
            NodeStep::Gone => {}
            _ => sum.in_progress += 1,
        }
    }
    sum.progress = format!("{}/{}", sum.migrated, sum.total);
    st.summary = sum;
}

fn set_conditions(ctx: &Ctx<'_>, generation: Option<i64>, s: &mut Draft) {
    let now = Time(ctx.now);
    let st = &mut s.st;
    let phase = st.phase;
    let blocked = preflight::blocking(&st.preflight);
    if phase != Phase::Pending {
        conditions::set(
            &mut st.conditions,
            PREFLIGHT_PASSED,
            !blocked,
            if blocked { "Blocked" } else { "Passed" },
            if blocked {
                "preflight found errors (status.preflight)"
            } else {
                "preflight found no blocking issue"
            },
            generation,
            now.clone(),
        );
    }
    let ready = match phase {
        Phase::Succeeded | Phase::RolledBack => true,
        Phase::Planned => !blocked,
        _ => false,
    };
    conditions::set(
        &mut st.conditions,
        READY,
        ready,
        &format!("{phase:?}"),
        st.message
            .clone()
            .unwrap_or_else(|| format!("plan is {phase:?}")),
        generation,
        now.clone(),
    );
    let (stalled, reason, message) = match &s.stall {
        Some((r, m)) => (true, r.clone(), m.clone()),
        None => (
            false,
            "Progressing".to_string(),
            "no human action needed".to_string(),
        ),
    };
    conditions::set(
        &mut st.conditions,
        STALLED,
        stalled,
        &reason,
        message,
        generation,
        now.clone(),
    );
    let reconciling = !stalled
        && matches!(
            phase,
            Phase::Pending
                | Phase::Preflight
                | Phase::Migrating
                | Phase::Finalizing
                | Phase::RollingBack
        );
    conditions::set(
        &mut st.conditions,
        RECONCILING,
        reconciling,
        &format!("{phase:?}"),
        format!(
            "{} of {} nodes migrated",
            st.summary.migrated, st.summary.total
        ),
        generation,
        now,
    );
    if st.message.is_none() {
        st.message = s.stall.as_ref().map(|(_, m)| m.clone());
    }
}

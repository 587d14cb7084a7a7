//! The end of a plan: finalisation after the last wave (backup, then
//! kube-proxy's deletion), the guard against kube-proxy's return after
//! success, the whole-plan rollback, and the release of kube-proxy's
//! rollout once the plan has ended.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::conditions::{self, KUBE_PROXY_REAPPEARED};
use switchyard_api::{KubeProxyDisposition, NodeProgress, NodeStep, Phase};

use super::super::actions::{Action, Event};
use super::super::waves;
use super::super::{backup_name, node};
use super::migrate::add_joined;
use super::{Ctx, Draft, GUARD_SECS, PlanError, set_phase, step_nodes};

pub(super) fn finalize(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    // A node that joined (or came back) since the last wave is migrated
    // before kube-proxy may go.
    add_joined(ctx, s)?;
    if s.st.nodes.iter().any(|p| p.step == NodeStep::Pending) {
        set_phase(ctx, s, Phase::Migrating);
        return Ok(());
    }
    finalize_kube_proxy(ctx, s);
    Ok(())
}

/// Backs kube-proxy up, then deletes it unless a node still needs it.
fn finalize_kube_proxy(ctx: &Ctx<'_>, s: &mut Draft) {
    let kp = &ctx.snap.kube_proxy;
    let name = backup_name(ctx.plan_name);
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
    let kept_for = still_on_kube_proxy(ctx, s);
    if ctx.spec.kube_proxy.on_success == KubeProxyDisposition::Delete && kept_for.is_empty() {
        if kp.daemon_set.is_some() || kp.config_map.is_some() {
            s.actions.push(Action::DeleteKubeProxy);
            s.st.message =
                Some("deleting kube-proxy's DaemonSet and ConfigMap (backup written)".into());
            return;
        }
        s.st.kube_proxy_deleted = true;
    }
    s.st.message = Some(success_message(&kept_for));
    set_phase(ctx, s, Phase::Succeeded);
}

/// The cluster's nodes this plan did not migrate (outside its selection):
/// they still run kube-proxy, so its DaemonSet and ConfigMap must stay.
fn still_on_kube_proxy(ctx: &Ctx<'_>, s: &Draft) -> Vec<String> {
    let migrated = |name: &str| {
        s.st.nodes
            .iter()
            .any(|p| p.name == name && p.step == NodeStep::Done)
    };
    ctx.snap
        .nodes
        .keys()
        .filter(|n| !migrated(n))
        .cloned()
        .collect()
}

/// What a succeeded plan's status says, naming the nodes kube-proxy is
/// kept for.
fn success_message(kept_for: &[String]) -> String {
    if kept_for.is_empty() {
        return "every node serves Services through the eBPF datapath".into();
    }
    let names = super::super::preflight::listed(kept_for);
    format!(
        "every selected node serves Services through the eBPF datapath; kube-proxy's DaemonSet \
         and ConfigMap are kept, excluding the migrated nodes, for the {} node(s) outside the \
         plan's selection: {names}",
        kept_for.len()
    )
}

pub(super) fn guard(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    s.requeue = GUARD_SECS;
    if !s.st.kube_proxy_deleted {
        s.st.message = Some(success_message(&still_on_kube_proxy(ctx, s)));
    }
    migrate_joined(ctx, s)?;
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
    if let Some(ds) = kp.daemon_set.as_ref() {
        s.actions.extend(node::exclude_from_template(ds));
    }

    for p in s.st.nodes.iter_mut().filter(|p| p.step == NodeStep::Done) {
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
        s.actions.extend(clean_after_return(ctx, p));
    }
    Ok(())
}

/// Nodes that joined the plan's selection after success (a new machine,
/// an autoscaled node) are migrated as the plan's nodes were, through the
/// same steps, as many at a time as a wave may hold; kube-proxy does not
/// run there once it is deleted, and the startup taint keeps pods away
/// until the node is done. The plan stays `Succeeded`, its message says
/// what the joined nodes wait for.
fn migrate_joined(ctx: &Ctx<'_>, s: &mut Draft) -> Result<(), PlanError> {
    add_joined(ctx, s)?;
    step_nodes(ctx, s, NodeStep::in_flight);
    let max = waves::max_in_flight(&ctx.spec.strategy, ctx.snap.nodes.len())?;
    let in_flight = s.st.nodes.iter().filter(|p| p.step.in_flight()).count();
    let room = max.saturating_sub(in_flight);
    let mut started = Vec::new();
    for p in
        s.st.nodes
            .iter_mut()
            .filter(|p| p.step == NodeStep::Pending)
            .take(room)
    {
        node::start(ctx, p, &mut s.actions);
        s.moved = true;
        if p.step == NodeStep::Cordon {
            started.push(p.name.as_str());
        }
    }
    let event = node::started(ctx, "nodes that joined", &started);
    s.actions.extend(event);
    let joining: Vec<String> =
        s.st.nodes
            .iter()
            .filter(|p| p.step.in_flight() || p.step == NodeStep::Pending)
            .map(|p| format!("{} ({:?})", p.name, p.step))
            .collect();
    if !joining.is_empty() {
        s.requeue = super::POLL_SECS;
        s.st.message = Some(format!(
            "{}; migrating node(s) that joined after success: {}",
            s.st.message
                .as_deref()
                .unwrap_or("every node serves Services through the eBPF datapath"),
            super::super::preflight::listed(&joining)
        ));
    }
    Ok(())
}

/// A kube-proxy pod that ran on the migrated node `p` left its rules there:
/// once the pod is gone, the node's agent is asked to clean them again.
fn clean_after_return(ctx: &Ctx<'_>, p: &mut NodeProgress) -> Vec<Action> {
    if ctx.snap.kube_proxy.pods.contains_key(&p.name) {
        p.kube_proxy_returned = true;
        return Vec::new();
    }
    if !p.kube_proxy_returned {
        return Vec::new();
    }
    p.kube_proxy_returned = false;
    p.cleanup_generation += 1;
    let mut out: Vec<Action> = node::migrated_spec(ctx, p).into_iter().collect();
    out.push(Action::Event(Event {
        node: Some(p.name.clone()),
        warning: true,
        reason: "KubeProxyRulesCleanedAgain".into(),
        message: format!(
            "kube-proxy ran on migrated node {} after the plan; its rules are removed again (cleanup request {})",
            p.name, p.cleanup_generation
        ),
    }));
    out
}

pub(super) fn rollback(ctx: &Ctx<'_>, s: &mut Draft) {
    let kp = &ctx.snap.kube_proxy;
    if kp.daemon_set.is_none() || kp.config_map.is_none() {
        if ctx.snap.backup_exists {
            s.actions.push(Action::RestoreKubeProxy {
                backup: backup_name(ctx.plan_name),
            });
            s.st.message = Some("re-creating kube-proxy from the backup".into());
        } else {
            s.stall = Some((
                "BackupMissing".into(),
                format!(
                    "kube-proxy is missing and backup ConfigMap {} does not exist; restore kube-proxy by hand",
                    backup_name(ctx.plan_name)
                ),
            ));
        }
        return;
    }
    s.st.kube_proxy_deleted = false;

    step_nodes(ctx, s, NodeStep::is_rollback);
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

/// Gives kube-proxy's DaemonSet its own `updateStrategy` back once the plan
/// no longer edits its template, choosing the pod template that restarts no
/// running kube-proxy pod.
///
/// Once the plan has ended (`Succeeded`, `Failed`, `RolledBack`):
/// - every pod runs the current template (kube-proxy re-created from the
///   backup, or no pod left): the strategy alone is restored; the
///   exclusion stays in the template, inert while no node carries the label;
/// - some pods run another template (those created before the plan, on
///   nodes it never migrated) and no node is excluded: the user's template
///   comes back with the strategy, in one write, so those pods match it
///   again and stay; only pods re-created from the excluding template are
///   replaced, as the user's strategy says;
/// - otherwise (nodes still excluded and pods from before the plan: a plan
///   that failed with migrated nodes) the hold stays: restoring the
///   strategy now would restart kube-proxy on the nodes still using it.
///
/// Earlier, while nodes are being rolled back: when pods from before the
/// plan run, every excluded node is in `RestoreKubeProxy` and no node needs
/// the exclusion, the user's template and strategy come back at once,
/// before those nodes lose the label: their kube-proxy pods are then
/// created from the template the other nodes' pods run, and nothing
/// replaces them later. (The release goes first among the decision's
/// actions for that reason; a later exclusion holds the rollout again.)
pub(super) fn release_rollout(ctx: &Ctx<'_>, s: &mut Draft) {
    let Some(ds) = ctx.snap.kube_proxy.daemon_set.as_ref() else {
        return;
    };
    if !ds.rollout_held {
        return;
    }
    let ended = matches!(
        s.st.phase,
        Phase::Succeeded | Phase::Failed | Phase::RolledBack
    );
    let excluded: Vec<&str> = ctx
        .snap
        .nodes
        .iter()
        .filter(|(_, n)| n.kube_proxy_excluded)
        .map(|(name, _)| name.as_str())
        .collect();
    let step = |name: &str| s.st.nodes.iter().find(|p| p.name == name).map(|p| p.step);
    let only_restoring = !excluded.is_empty()
        && excluded
            .iter()
            .all(|n| step(n) == Some(NodeStep::RestoreKubeProxy))
        && !s.st.nodes.iter().any(|p| needs_exclusion(p.step));
    let restore_template = match (ds.pods_current, ended) {
        (None, _) => return,
        (Some(true), true) => false,
        (Some(false), true) if excluded.is_empty() => true,
        (Some(false), true) => {
            if s.st.message.is_none() && s.stall.is_none() {
                s.st.message = Some(
                    "kube-proxy's DaemonSet stays at updateStrategy OnDelete while nodes are excluded from it: restoring its own strategy now would restart kube-proxy on the nodes that still use it".into(),
                );
            }
            return;
        }
        (Some(false), false) if only_restoring => true,
        (_, false) => return,
    };
    s.actions
        .insert(0, Action::ReleaseKubeProxyRollout { restore_template });
}

/// Whether a node in `step` needs kube-proxy kept off it (or is about to).
fn needs_exclusion(step: NodeStep) -> bool {
    matches!(
        step,
        NodeStep::RemoveKubeProxy
            | NodeStep::FlushRules
            | NodeStep::Verify
            | NodeStep::Uncordon
            | NodeStep::Done
    )
}

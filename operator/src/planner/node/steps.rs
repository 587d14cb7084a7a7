//! One function per in-flight [`NodeStep`]: each looks at the node and says
//! what happens next; the bookkeeping is the caller's (see the parent module).

use switchyard_api::{DatapathMode, NodeProgress, NodeStep};

use super::super::actions::Action;
use super::super::{Ctx, DaemonSetObs, DatapathObs, NodeObs};
use super::peer::{self, PeerCheck};
use super::spec::datapath_spec;

/// What a step decides for its node.
#[derive(Debug)]
pub(super) enum Next {
    /// The step's condition holds: the node moves to this step.
    Advance(NodeStep),
    /// Not yet: what the node waits for, and the step's idempotent actions.
    Wait {
        reason: String,
        actions: Vec<Action>,
    },
    /// The step failed, for this reason (the failure policy says what follows).
    Fail(String),
}

impl Next {
    fn wait(reason: impl Into<String>, actions: Vec<Action>) -> Self {
        Next::Wait {
            reason: reason.into(),
            actions,
        }
    }
}

/// What one step of one node looks at.
#[derive(Debug)]
pub(super) struct Seen<'a> {
    pub ctx: &'a Ctx<'a>,
    pub p: &'a NodeProgress,
    pub node: &'a NodeObs,
    /// The node's NodeDatapath, once its agent created it.
    pub dp: Option<&'a DatapathObs>,
}

impl Seen<'_> {
    fn name(&self) -> String {
        self.p.name.clone()
    }

    fn serving(&self) -> bool {
        self.dp.is_some_and(|d| d.serving())
    }

    /// The node's whole NodeDatapath spec in `mode`, as an action.
    fn datapath(&self, mode: DatapathMode) -> Action {
        Action::ApplyDatapath {
            node: self.name(),
            spec: datapath_spec(self, mode),
        }
    }
}

pub(super) fn cordon(s: &Seen<'_>) -> Next {
    if s.node.unschedulable {
        return Next::Advance(NodeStep::ActivateDatapath);
    }
    Next::wait(
        "waiting for the node to be cordoned",
        vec![Action::Cordon { node: s.name() }],
    )
}

pub(super) fn activate_datapath(s: &Seen<'_>) -> Next {
    let fresh = s.dp.is_some_and(|d| d.fresh(s.ctx.now));
    if s.serving() && fresh {
        return Next::Advance(NodeStep::RemoveKubeProxy);
    }
    let reason = match s.dp {
        None => "waiting for the node's agent to create its NodeDatapath".into(),
        Some(d) => format!(
            "waiting for the datapath to be active and programmed (active: {:?}, services {}/{}, agent {})",
            d.active_mode,
            d.services_programmed,
            d.services_seen,
            if fresh { "reporting" } else { "silent" }
        ),
    };
    Next::wait(reason, vec![s.datapath(DatapathMode::Active)])
}

pub(super) fn remove_kube_proxy(s: &Seen<'_>) -> Next {
    let kp = &s.ctx.snap.kube_proxy;
    let ds_excludes = kp.daemon_set.as_ref().is_none_or(|d| d.excludes_label);
    if !s.serving() {
        // Never take kube-proxy away from a node whose datapath is not serving.
        return Next::wait(
            "holding: the datapath stopped serving; kube-proxy stays until it serves again",
            vec![],
        );
    }
    if s.node.kube_proxy_excluded && ds_excludes && !kp.pods.contains_key(&s.p.name) {
        return Next::Advance(NodeStep::FlushRules);
    }
    let mut actions = Vec::new();
    if let Some(ds) = kp.daemon_set.as_ref() {
        actions.extend(exclude_from_template(ds));
    }
    if !s.node.kube_proxy_excluded {
        actions.push(Action::ExcludeKubeProxy { node: s.name() });
    }
    Next::wait("waiting for the node's kube-proxy pod to go", actions)
}

/// The actions that give kube-proxy's pod template the exclusion, if it
/// lacks it: the rollout is held first (`OnDelete`), so the edit restarts
/// kube-proxy on no node (the DaemonSet controller still deletes the pod
/// of a node the template excludes, whatever the strategy).
pub(in crate::planner) fn exclude_from_template(ds: &DaemonSetObs) -> Vec<Action> {
    if ds.excludes_label {
        return vec![];
    }
    let mut actions = Vec::new();
    if !ds.rollout_held {
        actions.push(Action::HoldKubeProxyRollout);
    }
    actions.push(Action::EnsureKubeProxyAffinity);
    actions
}

pub(super) fn flush_rules(s: &Seen<'_>) -> Next {
    let generation = s.p.cleanup_generation;
    let result =
        s.dp.and_then(|d| d.cleanup.as_ref())
            .filter(|c| c.observed_generation >= generation);
    match result {
        Some(r) if r.succeeded => Next::Advance(NodeStep::Verify),
        Some(r) => Next::Fail(format!(
            "removing kube-proxy's rules failed: {}",
            r.message.as_deref().unwrap_or("no detail")
        )),
        // Never flush kube-proxy's rules while the datapath is not serving.
        None if !s.serving() => Next::wait(
            "holding: the datapath is not serving; rules are not flushed",
            vec![],
        ),
        None => Next::wait(
            format!("waiting for the agent to remove kube-proxy's rules (request {generation})"),
            vec![s.datapath(DatapathMode::Active)],
        ),
    }
}

pub(super) fn verify(s: &Seen<'_>) -> Next {
    let generation = s.p.probe_generation;
    let result =
        s.dp.and_then(|d| d.probe.as_ref())
            .filter(|r| r.observed_generation >= generation);
    let drops = s.dp.map_or(0, |d| d.drops);
    let max_drops = s.ctx.spec.verification.max_datapath_drops;
    let peer = peer::check(s.ctx, s.p);
    match (result, peer) {
        (Some(_), _) if drops > max_drops => Next::Fail(format!(
            "{drops} datapath drops (at most {max_drops} tolerated)"
        )),
        (Some(r), _) if !r.succeeded => Next::Fail(format!(
            "verification failed: {}",
            r.message.as_deref().unwrap_or("a probe failed")
        )),
        (Some(_), PeerCheck::Failed(why)) => Next::Fail(format!("verification failed: {why}")),
        (Some(_), PeerCheck::Passed | PeerCheck::Skipped) => Next::Advance(NodeStep::Uncordon),
        (result, peer) => Next::wait(verify_reason(s, result.is_some(), peer), verify_actions(s)),
    }
}

/// What a node in Verify waits for: its own probes, its peer's.
fn verify_reason(s: &Seen<'_>, own_done: bool, peer: PeerCheck) -> String {
    let mut parts = Vec::new();
    if !own_done {
        parts.push(format!(
            "waiting for probe results (request {})",
            s.p.probe_generation
        ));
    }
    match peer {
        PeerCheck::Waiting(why) => parts.push(why),
        PeerCheck::Skipped => {
            if let peer::Choice::Never(why) = peer::choose(s.ctx, &s.p.name) {
                parts.push(format!(
                    "traffic from outside the node is not probed: {why}"
                ));
            }
        }
        // Decided once the node's own probes answered too: the outcome
        // does not depend on which answer came first.
        PeerCheck::Failed(why) => parts.push(why),
        PeerCheck::Passed => {}
    }
    parts.join("; ")
}

/// The node's own spec (its probe request) and its peer's (the peer
/// probe request), while they are not answered.
fn verify_actions(s: &Seen<'_>) -> Vec<Action> {
    let mut actions = vec![s.datapath(DatapathMode::Active)];
    actions.extend(
        s.p.verify_peer
            .as_deref()
            .and_then(|peer| peer::action(s.ctx, peer)),
    );
    actions
}

/// `Uncordon` and `RollbackUncordon`: lifts the plan's own cordon (see
/// [`super::cordon`]) and the startup taint of a node that registered with it
/// (it serves Services now, through either datapath), then moves to `then`.
pub(super) fn uncordon(s: &Seen<'_>, then: NodeStep) -> Next {
    let mut actions: Vec<Action> = super::cordon::uncordon(s.p, s.node).into_iter().collect();
    if s.node.startup_taint {
        // Only a node that serves Services loses it (one replaced by a
        // new machine under the same name may not yet).
        if !s.serving() && !s.ctx.snap.kube_proxy.ready_on(&s.p.name) {
            return Next::wait(
                "keeping the startup taint until the eBPF datapath or kube-proxy serves the node",
                actions,
            );
        }
        actions.push(Action::RemoveStartupTaint { node: s.name() });
    }
    if actions.is_empty() {
        return Next::Advance(then);
    }
    Next::wait(
        "waiting for the node to be uncordoned and without the startup taint",
        actions,
    )
}

pub(super) fn restore_kube_proxy(s: &Seen<'_>) -> Next {
    let kp = &s.ctx.snap.kube_proxy;
    if s.p.reached < NodeStep::RemoveKubeProxy
        || (!s.node.kube_proxy_excluded && kp.ready_on(&s.p.name))
    {
        return Next::Advance(NodeStep::DeactivateDatapath);
    }
    let mut actions = Vec::new();
    if s.node.kube_proxy_excluded {
        actions.push(Action::IncludeKubeProxy { node: s.name() });
    }
    Next::wait(
        "waiting for kube-proxy to run and be ready on the node",
        actions,
    )
}

pub(super) fn deactivate_datapath(s: &Seen<'_>) -> Next {
    let kp = &s.ctx.snap.kube_proxy;
    if s.p.reached < NodeStep::ActivateDatapath || s.dp.is_none_or(|d| d.off()) {
        return Next::Advance(NodeStep::RollbackUncordon);
    }
    if s.p.reached >= NodeStep::RemoveKubeProxy && !kp.ready_on(&s.p.name) {
        // Never turn the datapath off while kube-proxy is not serving the node.
        return Next::wait(
            "holding: kube-proxy is not ready on the node; the datapath stays on",
            vec![],
        );
    }
    Next::wait(
        "waiting for the datapath to turn off",
        vec![s.datapath(DatapathMode::Off)],
    )
}

//! How the simulated cluster answers each action, and the invariants an
//! action can break (recorded as violations).

use switchyard_api::NodeStep;

use super::Sim;
use crate::planner::Action;

impl Sim {
    /// Applies one action, checking the invariants that guard it.
    pub fn apply(&mut self, a: &Action) {
        let all_migrated = self
            .nodes
            .values()
            .all(|n| n.excluded && n.dp_active && !n.kp_pod);
        match a {
            Action::Cordon { node } => {
                let n = self.node(node);
                n.unschedulable = true;
                n.plan_cordon = true;
            }
            Action::Uncordon { node } => self.uncordon(node),
            Action::RemoveStartupTaint { node } => self.remove_startup_taint(node),
            Action::ApplyDatapath { node, spec } => self.write_datapath(node, spec),
            Action::ExcludeKubeProxy { node } => {
                let n = self.node(node);
                let serving = n.dp_active && n.programmed;
                n.excluded = true;
                if !serving {
                    self.violations.push(format!(
                        "kube-proxy removed from {node} before its datapath was serving"
                    ));
                }
            }
            Action::IncludeKubeProxy { node } => self.node(node).excluded = false,
            Action::EnsureKubeProxyAffinity => {
                if self.ds == Some(false) && !self.ds_held {
                    self.violations.push(
                        "kube-proxy's pod template edited while its rollout is not held".into(),
                    );
                }
                if let Some(e) = self.ds.as_mut() {
                    *e = true;
                }
            }
            Action::HoldKubeProxyRollout => self.ds_held = self.ds.is_some(),
            Action::ReleaseKubeProxyRollout { restore_template } => {
                self.release_rollout(*restore_template)
            }
            Action::BackupKubeProxy { .. } => self.backup = self.ds.is_some() || self.cm,
            Action::DeleteKubeProxy => {
                if !self.backup || !all_migrated {
                    self.violations
                        .push("kube-proxy deleted before every node was done and backed up".into());
                }
                self.ds = None;
                self.ds_held = false;
                self.cm = false;
            }
            Action::RestoreKubeProxy { .. } => {
                if self.backup {
                    self.ds = Some(true);
                    self.ds_held = true;
                    self.cm = true;
                }
            }
            Action::Event(e) => self.events.push(e.clone()),
        }
        self.check_serving("after an action");
    }

    /// Lifts `node`'s startup taint, checking it serves Services by then.
    fn remove_startup_taint(&mut self, node: &str) {
        let n = self.node(node);
        let serving = n.kp_rules || (n.dp_active && n.programmed);
        n.startup_taint = false;
        if !serving {
            self.violations.push(format!(
                "startup taint removed from {node}, which serves no Service"
            ));
        }
    }

    /// Uncordons `node`, checking it was verified (or is back on kube-proxy)
    /// and, when its ingress is dead, that a peer probed it.
    fn uncordon(&mut self, node: &str) {
        if self.cordoned_by_others.contains(node) {
            self.violations
                .push(format!("uncordoned {node}, which someone else cordoned"));
        }
        let skipped = self
            .events
            .iter()
            .any(|e| e.reason == "PeerProbeSkipped" && e.node.as_deref() == Some(node));
        let n = self.node(node);
        let back_on_kube_proxy = n.kp_ready && !n.dp_active;
        let (verified, ingress_dead) = (n.verified, n.ingress_dead);
        if !verified && !back_on_kube_proxy {
            self.violations.push(format!(
                "uncordoned {node} before it was verified or rolled back"
            ));
        }
        if ingress_dead && !back_on_kube_proxy && !skipped {
            self.violations.push(format!(
                "uncordoned {node} while traffic from outside dies there, and no peer probed it"
            ));
        }
        let n = self.node(node);
        n.unschedulable = false;
        n.plan_cordon = false;
    }

    /// Gives kube-proxy's rollout back, checking that a restored template
    /// leaves no node without kube-proxy that is not getting it back.
    fn release_rollout(&mut self, restore_template: bool) {
        if restore_template {
            // Only nodes getting kube-proxy back may still be excluded
            // (as the decision being applied says).
            let deciding = self.deciding.as_ref().unwrap_or(&self.status);
            let restoring = |name: &str| {
                deciding
                    .nodes
                    .iter()
                    .any(|p| p.name == name && p.step == NodeStep::RestoreKubeProxy)
            };
            let kept_off = self
                .nodes
                .iter()
                .find(|(name, n)| n.excluded && !restoring(name))
                .map(|(name, _)| name.clone());
            if let Some(name) = kept_off {
                self.violations.push(format!(
                    "the exclusion left kube-proxy's template while {name} is kept off"
                ));
            }
            if self.ds.is_some() {
                self.ds = Some(false);
            }
        }
        self.ds_held = false;
    }

    /// Someone else (`kubectl cordon`) cordons `node`. The API records no
    /// owner: a cordon on a node that is already cordoned changes nothing,
    /// and one on a node whose cordon is the plan's (it cordoned the node
    /// and has not seen it uncordoned since, or is in a step that cordons
    /// or uncordons it: its last write may not be recorded yet) looks like
    /// the plan's own. Neither is theirs to keep.
    pub fn cordon_by_others(&mut self, node: &str) {
        let cordon_steps = [
            NodeStep::Cordon,
            NodeStep::Uncordon,
            NodeStep::RollbackUncordon,
        ];
        let cordoning = self
            .status
            .nodes
            .iter()
            .any(|p| p.name == node && p.holds_cordon && cordon_steps.contains(&p.step));
        let n = self.node(node);
        if !n.unschedulable {
            n.unschedulable = true;
            if !n.plan_cordon && !cordoning {
                self.cordoned_by_others.insert(node.into());
            }
        }
    }

    /// Someone else (`kubectl uncordon`) uncordons `node`, also one the
    /// plan cordoned.
    pub fn uncordon_by_others(&mut self, node: &str) {
        self.node(node).unschedulable = false;
        self.cordoned_by_others.remove(node);
    }
}

//! Applies the planner's actions to the cluster. Each is idempotent; the
//! NodeDatapath spec comes whole from the planner and is written with
//! server-side apply under one field manager (which drops what a manager
//! stops sending, so nothing is read back to merge).
//!
//! Actions keep the planner's order, except that a run of consecutive
//! per-node actions is applied for up to [`NODE_CONCURRENCY`] nodes at once
//! (each node's own actions still in order): a wave of a hundred nodes
//! then costs a few round trips of wall time instead of hundreds.

use std::time::Instant;

use futures::StreamExt;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use switchyard_api::{
    FIELD_MANAGER, KUBE_PROXY_EXCLUDED_LABEL, MigrationPlan, NodeDatapath, NodeDatapathSpec,
    STARTUP_TAINT,
};
use tracing::info;

use super::cached::SlimNode;
use super::expectations::Expectations;
use super::kube_proxy;
use crate::error::{Error, Result};
use crate::planner::{Action, Event};

/// What applying needs besides the action.
pub struct Applier<'a> {
    pub client: Client,
    pub plan: &'a MigrationPlan,
    /// The operator's namespace (backups live there).
    pub namespace: &'a str,
    pub events: &'a super::events::Publisher,
    /// The caches the planner decided on, and the writes they have not
    /// shown yet.
    pub nodes: &'a Store<SlimNode>,
    pub datapaths: &'a Store<NodeDatapath>,
    pub expectations: &'a Expectations,
}

impl std::fmt::Debug for Applier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("plan", &self.plan.name_any())
            .finish()
    }
}

/// Nodes whose actions are applied at once.
pub const NODE_CONCURRENCY: usize = 16;

/// A stretch of the planner's actions: one cluster-wide action, or
/// consecutive per-node actions grouped by node (each group in order).
#[derive(Debug, PartialEq)]
pub enum Segment<'a> {
    Single(&'a Action),
    Nodes(Vec<(&'a str, Vec<&'a Action>)>),
}

/// The node an action touches alone, Events on a Node included (`None`:
/// cluster-wide, such as kube-proxy's DaemonSet, or an Event on the plan).
fn scope(a: &Action) -> Option<&str> {
    match a {
        Action::Event(e) => e.node.as_deref(),
        a => a.node(),
    }
}

/// Splits `actions` into [`Segment`]s, keeping the order of cluster-wide
/// actions relative to everything and of each node's actions.
pub fn segments(actions: &[Action]) -> Vec<Segment<'_>> {
    let mut out: Vec<Segment<'_>> = Vec::new();
    for a in actions {
        match (scope(a), out.last_mut()) {
            (None, _) => out.push(Segment::Single(a)),
            (Some(node), Some(Segment::Nodes(groups))) => {
                match groups.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, acts)) => acts.push(a),
                    None => groups.push((node, vec![a])),
                }
            }
            (Some(node), _) => out.push(Segment::Nodes(vec![(node, vec![a])])),
        }
    }
    out
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Applier<'_> {
    fn ssa() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    async fn apply_datapath(&self, node: &str, spec: &NodeDatapathSpec) -> Result<()> {
        let object = NodeDatapath::new(node, spec.clone());
        Api::<NodeDatapath>::all(self.client.clone())
            .patch(node, &Self::ssa(), &Patch::Apply(&object))
            .await?;
        Ok(())
    }

    async fn patch_node(&self, node: &str, patch: serde_json::Value) -> Result<()> {
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Removes the startup taint, keeping the node's other taints: a merge
    /// patch replaces the whole list, so it carries the resourceVersion
    /// read (a concurrent change makes it fail; the next reconcile retries).
    async fn remove_startup_taint(&self, node: &str) -> Result<()> {
        let nodes = Api::<Node>::all(self.client.clone());
        let n = nodes.get(node).await?;
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        let kept: Vec<_> = taints.iter().filter(|t| t.key != STARTUP_TAINT).collect();
        if kept.len() == taints.len() {
            return Ok(());
        }
        info!(
            node,
            "removing the startup taint: the node's datapath serves"
        );
        let patch = json!({
            "metadata": {"resourceVersion": n.metadata.resource_version},
            "spec": {"taints": kept},
        });
        self.patch_node(node, patch).await
    }

    /// Applies every action (see the module doc for the order).
    pub async fn apply_all(&self, actions: &[Action]) -> Result<()> {
        for segment in segments(actions) {
            match segment {
                Segment::Single(a) => self.apply(a).await?,
                Segment::Nodes(groups) => self.apply_nodes(groups).await?,
            }
        }
        Ok(())
    }

    async fn apply_nodes(&self, groups: Vec<(&str, Vec<&Action>)>) -> Result<()> {
        let runs: Vec<_> = groups
            .into_iter()
            .map(|(_, acts)| self.run_node(acts))
            .collect();
        let done: Vec<Result<()>> = futures::stream::iter(runs)
            .buffer_unordered(NODE_CONCURRENCY)
            .collect()
            .await;
        done.into_iter().collect()
    }

    /// One node's actions in order, stopping at the first error.
    async fn run_node(&self, acts: Vec<&Action>) -> Result<()> {
        for a in acts {
            tracing::debug!(action = ?a, "applying");
            self.apply_node_action(a).await?;
        }
        Ok(())
    }

    /// Applies one per-node action, unless it repeats a write the caches
    /// have not shown yet ([`Expectations`]).
    async fn apply_node_action(&self, action: &Action) -> Result<()> {
        let Some((node, version)) = self.cached_version(action) else {
            return self.write_node_action(action).await;
        };
        if self
            .expectations
            .pending(node, action, version.as_deref(), Instant::now())
        {
            tracing::debug!(?action, "skipped: the same write is not in the cache yet");
            return Ok(());
        }
        self.write_node_action(action).await?;
        self.expectations
            .wrote(node, action, version, Instant::now());
        Ok(())
    }

    /// The node and the cached resourceVersion of the object `action`
    /// writes: its Node or its NodeDatapath (`None` for actions that read
    /// before they write, and Events).
    fn cached_version<'b>(&self, action: &'b Action) -> Option<(&'b str, Option<String>)> {
        match action {
            Action::Cordon { node }
            | Action::Uncordon { node }
            | Action::ExcludeKubeProxy { node }
            | Action::IncludeKubeProxy { node } => {
                let n = self.nodes.get(&ObjectRef::new(node));
                Some((node, n.and_then(|n| n.metadata.resource_version.clone())))
            }
            Action::ApplyDatapath { node, .. } => {
                let d = self.datapaths.get(&ObjectRef::new(node));
                Some((node, d.and_then(|d| d.metadata.resource_version.clone())))
            }
            _ => None,
        }
    }

    /// Writes one per-node action.
    async fn write_node_action(&self, action: &Action) -> Result<()> {
        match action {
            Action::Cordon { node } => {
                self.patch_node(node, json!({"spec": {"unschedulable": true}}))
                    .await?
            }
            Action::Uncordon { node } => {
                self.patch_node(node, json!({"spec": {"unschedulable": null}}))
                    .await?
            }
            Action::RemoveStartupTaint { node } => self.remove_startup_taint(node).await?,
            Action::ExcludeKubeProxy { node } => {
                self.patch_node(
                    node,
                    json!({"metadata": {"labels": {KUBE_PROXY_EXCLUDED_LABEL: "true"}}}),
                )
                .await?
            }
            Action::IncludeKubeProxy { node } => {
                self.patch_node(
                    node,
                    json!({"metadata": {"labels": {KUBE_PROXY_EXCLUDED_LABEL: null}}}),
                )
                .await?
            }
            Action::ApplyDatapath { node, spec } => self.apply_datapath(node, spec).await?,
            Action::Event(e) => self.event(e).await,
            Action::EnsureKubeProxyAffinity
            | Action::HoldKubeProxyRollout
            | Action::ReleaseKubeProxyRollout { .. }
            | Action::BackupKubeProxy { .. }
            | Action::DeleteKubeProxy
            | Action::RestoreKubeProxy { .. } => {
                tracing::warn!(?action, "not a per-node action; skipped");
            }
        }
        Ok(())
    }

    /// Applies one action.
    pub async fn apply(&self, action: &Action) -> Result<()> {
        if scope(action).is_some() {
            return self.apply_node_action(action).await;
        }
        match action {
            Action::Cordon { .. }
            | Action::Uncordon { .. }
            | Action::RemoveStartupTaint { .. }
            | Action::ExcludeKubeProxy { .. }
            | Action::IncludeKubeProxy { .. }
            | Action::ApplyDatapath { .. } => {
                // Reached only without a node (never: these all name one).
                self.apply_node_action(action).await?
            }
            Action::EnsureKubeProxyAffinity => self.ensure_kube_proxy_affinity().await?,
            Action::HoldKubeProxyRollout => self.hold_kube_proxy_rollout().await?,
            Action::ReleaseKubeProxyRollout { restore_template } => {
                self.release_kube_proxy_rollout(*restore_template).await?
            }
            Action::BackupKubeProxy { name } => self.backup_kube_proxy(name).await?,
            Action::DeleteKubeProxy => self.delete_kube_proxy().await?,
            Action::RestoreKubeProxy { backup } => self.restore_kube_proxy(backup).await?,
            Action::Event(e) => self.event(e).await,
        }
        Ok(())
    }

    fn daemon_sets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), &self.plan.spec.kube_proxy.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.plan.spec.kube_proxy.namespace)
    }

    /// The operator's namespace's ConfigMaps, where backups live.
    fn backups(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Reads kube-proxy's DaemonSet, changes it with `change` and writes it
    /// back (a replace: a concurrent writer makes it fail and the next
    /// reconcile retries) if that changed anything.
    async fn update_kube_proxy_daemon_set(
        &self,
        what: &str,
        change: impl FnOnce(DaemonSet) -> Result<DaemonSet>,
    ) -> Result<()> {
        let kp = &self.plan.spec.kube_proxy;
        let daemon_sets = self.daemon_sets();
        let ds = daemon_sets.get(&kp.daemon_set).await?;
        let updated = change(ds.clone())?;
        if updated != ds {
            info!(daemonset = %kp.daemon_set, "{what}");
            daemon_sets
                .replace(&kp.daemon_set, &PostParams::default(), &updated)
                .await?;
        }
        Ok(())
    }

    async fn ensure_kube_proxy_affinity(&self) -> Result<()> {
        self.update_kube_proxy_daemon_set(
            "excluding switchyard-migrated nodes from kube-proxy",
            |ds| Ok(kube_proxy::with_exclusion(ds)),
        )
        .await
    }

    async fn hold_kube_proxy_rollout(&self) -> Result<()> {
        self.update_kube_proxy_daemon_set(
            "holding kube-proxy's rollout (updateStrategy OnDelete) while the plan runs",
            kube_proxy::with_rollout_held,
        )
        .await
    }

    async fn release_kube_proxy_rollout(&self, restore_template: bool) -> Result<()> {
        self.update_kube_proxy_daemon_set(
            if restore_template {
                "restoring kube-proxy's pod template and updateStrategy"
            } else {
                "restoring kube-proxy's updateStrategy"
            },
            |ds| kube_proxy::with_rollout_released(ds, restore_template),
        )
        .await
    }

    async fn backup_kube_proxy(&self, name: &str) -> Result<()> {
        let kp = &self.plan.spec.kube_proxy;
        let ds = self.daemon_sets().get(&kp.daemon_set).await?;
        let cm = self.config_maps().get(&kp.config_map).await?;
        let backup = kube_proxy::backup(name, self.namespace, &self.plan.name_any(), &ds, &cm)?;
        self.backups()
            .patch(name, &Self::ssa(), &Patch::Apply(&backup))
            .await?;
        Ok(())
    }

    async fn delete_kube_proxy(&self) -> Result<()> {
        let kp = &self.plan.spec.kube_proxy;
        for r in [
            self.daemon_sets()
                .delete(&kp.daemon_set, &DeleteParams::background())
                .await
                .map(|_| ()),
            self.config_maps()
                .delete(&kp.config_map, &DeleteParams::background())
                .await
                .map(|_| ()),
        ] {
            match r {
                Err(e) if !is_not_found(&e) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    async fn restore_kube_proxy(&self, backup: &str) -> Result<()> {
        let kp = &self.plan.spec.kube_proxy;
        let b = self
            .backups()
            .get_opt(backup)
            .await?
            .ok_or_else(|| Error::BackupMissing(backup.to_string()))?;
        let (ds, cm) = kube_proxy::restore(&b)?;
        self.config_maps()
            .patch(&kp.config_map, &Self::ssa(), &Patch::Apply(&cm))
            .await?;
        self.daemon_sets()
            .patch(&kp.daemon_set, &Self::ssa(), &Patch::Apply(&ds))
            .await?;
        Ok(())
    }

    /// Records an Event; a failure to record is logged, never fatal.
    async fn event(&self, e: &Event) {
        let reference: ObjectReference = match &e.node {
            None => self.plan.object_ref(&()),
            Some(node) => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.clone()),
                uid: Some(node.clone()),
                ..ObjectReference::default()
            },
        };
        let related = e.node.as_ref().map(|_| self.plan.object_ref(&()));
        if let Err(err) = self.events.publish(e, reference, related).await {
            tracing::warn!(reason = %e.reason, error = %err, "could not record event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Event;
    use switchyard_api::{DatapathMode, NodeDatapathSpec};

    fn cordon(n: &str) -> Action {
        Action::Cordon { node: n.into() }
    }
    fn ev(n: Option<&str>) -> Action {
        Action::Event(Event {
            node: n.map(str::to_string),
            warning: false,
            reason: "R".into(),
            message: "m".into(),
        })
    }

    #[test]
    fn node_actions_group_per_node_between_cluster_wide_barriers() {
        let set = Action::ApplyDatapath {
            node: "a".into(),
            spec: NodeDatapathSpec {
                mode: DatapathMode::Active,
                ..NodeDatapathSpec::default()
            },
        };
        let actions = vec![
            cordon("a"),
            cordon("b"),
            set.clone(),
            ev(Some("b")),
            Action::EnsureKubeProxyAffinity,
            cordon("c"),
            ev(None),
            cordon("a"),
        ];
        let s = segments(&actions);
        assert_eq!(
            s,
            vec![
                Segment::Nodes(vec![
                    ("a", vec![&actions[0], &actions[2]]),
                    ("b", vec![&actions[1], &actions[3]]),
                ]),
                Segment::Single(&actions[4]),
                Segment::Nodes(vec![("c", vec![&actions[5]])]),
                Segment::Single(&actions[6]),
                Segment::Nodes(vec![("a", vec![&actions[7]])]),
            ]
        );
        assert!(segments(&[]).is_empty());
    }

    #[test]
    fn a_datapath_spec_is_applied_as_the_whole_object_without_status() {
        let spec = NodeDatapathSpec {
            mode: DatapathMode::Active,
            api_server: Some("10.0.0.1:6443".into()),
            ..NodeDatapathSpec::default()
        };
        let body = serde_json::to_value(NodeDatapath::new("n1", spec)).unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "switchyard.dev/v1alpha1",
                "kind": "NodeDatapath",
                "metadata": {"name": "n1"},
                "spec": {"mode": "Active", "apiServer": "10.0.0.1:6443"},
            })
        );
    }
}

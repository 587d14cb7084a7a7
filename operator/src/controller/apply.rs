//! Applies the planner's actions to the cluster. Each is idempotent; the
//! NodeDatapath spec is written with server-side apply under one field
//! manager, always whole (SSA drops fields a manager stops sending).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use switchyard_api::{
    CleanupRequest, FIELD_MANAGER, KUBE_PROXY_EXCLUDED_LABEL, MigrationPlan, NodeDatapath,
    NodeDatapathSpec,
};
use tracing::info;

use super::kube_proxy;
use crate::error::{Error, Result};
use crate::planner::{Action, Event};

/// What applying needs besides the action.
pub struct Applier<'a> {
    pub client: Client,
    pub plan: &'a MigrationPlan,
    /// The operator's namespace (backups live there).
    pub namespace: &'a str,
    pub recorder: &'a Recorder,
    /// NodeDatapath specs read live in this decision, updated as actions
    /// are applied (start empty).
    pub specs: BTreeMap<String, NodeDatapathSpec>,
}

impl std::fmt::Debug for Applier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("plan", &self.plan.name_any())
            .finish()
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Applier<'_> {
    fn ssa() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    async fn apply_datapath(
        &mut self,
        node: &str,
        change: impl FnOnce(&mut NodeDatapathSpec),
    ) -> Result<()> {
        let api = Api::<NodeDatapath>::all(self.client.clone());
        if !self.specs.contains_key(node) {
            // The whole spec is applied (SSA drops fields a manager stops
            // sending), so start from the live object, never a lagging cache.
            let live = api.get_opt(node).await?.map(|d| d.spec).unwrap_or_default();
            self.specs.insert(node.to_string(), live);
        }
        let spec = self.specs.entry(node.to_string()).or_default();
        change(spec);
        let body = json!({
            "apiVersion": "switchyard.dev/v1alpha1",
            "kind": "NodeDatapath",
            "metadata": { "name": node },
            "spec": spec,
        });
        api.patch(node, &Self::ssa(), &Patch::Apply(body)).await?;
        Ok(())
    }

    async fn patch_node(&self, node: &str, patch: serde_json::Value) -> Result<()> {
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Applies one action.
    pub async fn apply(&mut self, action: &Action) -> Result<()> {
        let kp = &self.plan.spec.kube_proxy;
        let daemon_sets: Api<DaemonSet> = Api::namespaced(self.client.clone(), &kp.namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &kp.namespace);
        let backups: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.namespace);
        match action {
            Action::Cordon { node } => {
                self.patch_node(node, json!({"spec": {"unschedulable": true}}))
                    .await?
            }
            Action::Uncordon { node } => {
                self.patch_node(node, json!({"spec": {"unschedulable": null}}))
                    .await?
            }
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
            Action::SetDatapath {
                node,
                mode,
                api_server,
            } => {
                let (mode, api_server) = (*mode, api_server.clone());
                self.apply_datapath(node, |s| {
                    s.mode = mode;
                    s.api_server = api_server;
                })
                .await?
            }
            Action::RequestCleanup { node, generation } => {
                let generation = *generation;
                self.apply_datapath(node, |s| {
                    s.cleanup = Some(CleanupRequest {
                        generation,
                        dry_run: false,
                    })
                })
                .await?
            }
            Action::RequestProbe { node, request } => {
                let request = request.clone();
                self.apply_datapath(node, |s| s.probe = Some(request))
                    .await?
            }
            Action::EnsureKubeProxyAffinity => {
                let ds = daemon_sets.get(&kp.daemon_set).await?;
                let updated = kube_proxy::with_exclusion(ds.clone());
                if updated != ds {
                    info!(daemonset = %kp.daemon_set, "excluding switchyard-migrated nodes from kube-proxy");
                    daemon_sets
                        .replace(&kp.daemon_set, &PostParams::default(), &updated)
                        .await?;
                }
            }
            Action::BackupKubeProxy { name } => {
                let ds = daemon_sets.get(&kp.daemon_set).await?;
                let cm = config_maps.get(&kp.config_map).await?;
                let backup =
                    kube_proxy::backup(name, self.namespace, &self.plan.name_any(), &ds, &cm)?;
                backups
                    .patch(name, &Self::ssa(), &Patch::Apply(&backup))
                    .await?;
            }
            Action::DeleteKubeProxy => {
                for r in [
                    daemon_sets
                        .delete(&kp.daemon_set, &DeleteParams::background())
                        .await
                        .map(|_| ()),
                    config_maps
                        .delete(&kp.config_map, &DeleteParams::background())
                        .await
                        .map(|_| ()),
                ] {
                    match r {
                        Err(e) if !is_not_found(&e) => return Err(e.into()),
                        _ => {}
                    }
                }
            }
            Action::RestoreKubeProxy { backup } => {
                let b = backups
                    .get_opt(backup)
                    .await?
                    .ok_or_else(|| Error::BackupMissing(backup.clone()))?;
                let (ds, cm) = kube_proxy::restore(&b)?;
                config_maps
                    .patch(&kp.config_map, &Self::ssa(), &Patch::Apply(&cm))
                    .await?;
                daemon_sets
                    .patch(&kp.daemon_set, &Self::ssa(), &Patch::Apply(&ds))
                    .await?;
            }
            Action::Event(e) => self.event(e).await,
        }
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
        let ev = KubeEvent {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(e.message.chars().take(1000).collect()),
            action: "Migrate".into(),
            secondary: e.node.as_ref().map(|_| self.plan.object_ref(&())),
        };
        if let Err(err) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(reason = %e.reason, error = %err, "could not record event");
        }
    }
}

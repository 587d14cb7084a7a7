//! The pods of kube-proxy's namespace as the operator caches them: decoded
//! straight into the few fields the snapshot reads.
//!
//! At 5 000 nodes kube-proxy has 5 000 pods. A cache of whole Pods
//! (containers, volumes, tolerations, every condition's message) would be
//! one of the operator's largest; [`SlimPod`] is what serde keeps while
//! parsing, and [`slim`] drops the metadata nothing reads. The
//! measurements are in `BENCHMARKS.md`, "Operator at scale (simulated
//! nodes)".

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Deserialize;

use crate::error::Result;

/// Pods per page when listing them without the cache.
const POD_PAGE: u32 = 250;

/// A Pod reduced to what the snapshot reads: owners, deletion, node name
/// and readiness.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimPod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SlimSpec>,
    #[serde(default)]
    pub status: Option<SlimStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlimSpec {
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimStatus {
    #[serde(default)]
    pub conditions: Vec<SlimCondition>,
}

/// A pod condition's type and status (not its times, reason or message).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl SlimPod {
    /// The node it runs on.
    pub fn node_name(&self) -> Option<&str> {
        self.spec.as_ref()?.node_name.as_deref()
    }

    /// Ready, and not being deleted.
    pub fn ready(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && self.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
    }
}

super::cached::cached_resource!(SlimPod, "Pod", "pods", NamespaceResourceScope);

/// Keeps of the metadata what the snapshot and the cache read: name,
/// namespace, uid, owners and deletion.
pub fn slim(p: &mut SlimPod) {
    let m = std::mem::take(&mut p.metadata);
    p.metadata = ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        owner_references: m.owner_references,
        deletion_timestamp: m.deletion_timestamp,
        ..ObjectMeta::default()
    };
}

/// The pods in `namespace` matching `selector`, read fresh a page at a
/// time and slimmed as they are decoded.
pub async fn list(client: &Client, namespace: &str, selector: &str) -> Result<Vec<SlimPod>> {
    let api = Api::<SlimPod>::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(POD_PAGE);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items.into_iter().map(|mut p| {
            slim(&mut p);
            p
        }));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        ManagedFieldsEntry, OwnerReference, Time,
    };

    fn full_pod(ready: &str, deleted: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("kube-proxy-abc".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u1".into()),
                labels: Some([("k8s-app".to_string(), "kube-proxy".to_string())].into()),
                owner_references: Some(vec![OwnerReference {
                    kind: "DaemonSet".into(),
                    name: "kube-proxy".into(),
                    uid: "ds-uid".into(),
                    api_version: "apps/v1".into(),
                    ..OwnerReference::default()
                }]),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                deletion_timestamp: deleted
                    .then(|| Time("2026-01-02T03:04:05Z".parse().expect("a time"))),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-0007".into()),
                containers: vec![Container {
                    name: "kube-proxy".into(),
                    image: Some("registry.k8s.io/kube-proxy:v1.34.4".into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "True".into(),
                        ..PodCondition::default()
                    },
                    PodCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        message: Some("containers with unready status".into()),
                        ..PodCondition::default()
                    },
                ]),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    fn decoded(p: &Pod) -> SlimPod {
        let json = serde_json::to_string(p).expect("a pod serializes");
        let mut slim_pod: SlimPod = serde_json::from_str(&json).expect("a pod decodes");
        slim(&mut slim_pod);
        slim_pod
    }

    #[test]
    fn keeps_owners_node_and_readiness_and_nothing_else() {
        let p = decoded(&full_pod("True", false));
        assert_eq!(p.node_name(), Some("node-0007"));
        assert!(p.ready());
        assert_eq!(p.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        assert_eq!(p.metadata.uid.as_deref(), Some("u1"));
        assert!(p.metadata.labels.is_none() && p.metadata.managed_fields.is_none());

        assert!(!decoded(&full_pod("False", false)).ready());
        assert!(
            !decoded(&full_pod("True", true)).ready(),
            "a pod being deleted is not ready"
        );
    }

    #[test]
    fn a_pod_without_spec_or_status_decodes_unready() {
        let bare: SlimPod =
            serde_json::from_str(r#"{"metadata":{"name":"p"}}"#).expect("a bare pod decodes");
        assert!(bare.node_name().is_none() && !bare.ready());
        let no_conditions: SlimPod =
            serde_json::from_str(r#"{"metadata":{"name":"p"},"status":{"phase":"Pending"}}"#)
                .expect("a pod without conditions decodes");
        assert!(!no_conditions.ready());
    }
}

//! kube-proxy's pods, listed a page at a time and decoded straight into the
//! few fields the snapshot reads.
//!
//! A page of full Pods decoded whole (containers, volumes, tolerations,
//! managed fields) would be the largest allocation of a reconcile, for a
//! moment, and it would stay in malloc's arenas; decoding into [`PodWire`]
//! skips every other field while parsing. The measurements are in
//! `BENCHMARKS.md`, "Operator at scale (simulated nodes)".

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Client;
use kube::api::ListParams;
use kube::core::{ObjectList, Request};
use serde::Deserialize;

use crate::error::Result;

/// Pods per page when listing kube-proxy's pods.
const POD_PAGE: u32 = 250;

/// The fields of a Pod the snapshot reads (see
/// [`observe::slim_pod`](super::observe::slim_pod)); serde skips the rest.
#[derive(Clone, Debug, Deserialize)]
pub struct PodWire {
    metadata: MetaWire,
    #[serde(default)]
    spec: Option<SpecWire>,
    #[serde(default)]
    status: Option<StatusWire>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    deletion_timestamp: Option<Time>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecWire {
    node_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct StatusWire {
    conditions: Option<Vec<PodCondition>>,
}

impl From<PodWire> for Pod {
    fn from(p: PodWire) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: p.metadata.name,
                namespace: p.metadata.namespace,
                uid: p.metadata.uid,
                owner_references: p.metadata.owner_references,
                deletion_timestamp: p.metadata.deletion_timestamp,
                ..ObjectMeta::default()
            },
            spec: p.spec.map(|s| PodSpec {
                node_name: s.node_name,
                ..PodSpec::default()
            }),
            status: p.status.map(|s| PodStatus {
                conditions: s.conditions,
                ..PodStatus::default()
            }),
        }
    }
}

/// The pods in `namespace` matching `selector`, slimmed as they are decoded.
pub async fn list(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
    let request = Request::new(format!("/api/v1/namespaces/{namespace}/pods"));
    let mut out = Vec::new();
    let mut lp = ListParams::default().labels(selector).limit(POD_PAGE);
    loop {
        let mut req = request.list(&lp).map_err(kube::Error::BuildRequest)?;
        req.extensions_mut().insert("list");
        let page: ObjectList<PodWire> = client.request(req).await?;
        out.extend(page.items.into_iter().map(Pod::from));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::observe::slim_pod;
    use k8s_openapi::api::core::v1::Container;

    #[test]
    fn decodes_what_slim_pod_keeps_and_nothing_else() {
        let full = Pod {
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
                deletion_timestamp: Some(Time("2026-01-02T03:04:05Z".parse().expect("a time"))),
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
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..PodCondition::default()
                }]),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        };
        let json = serde_json::to_string(&full).expect("a pod serializes");
        let wire: PodWire = serde_json::from_str(&json).expect("a pod decodes");
        assert_eq!(Pod::from(wire), slim_pod(full));

        let bare: PodWire = serde_json::from_str(r#"{"metadata":{"name":"p"}}"#)
            .expect("a pod without spec and status decodes");
        let bare = Pod::from(bare);
        assert!(bare.spec.is_none() && bare.status.is_none());
    }
}

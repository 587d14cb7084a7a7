//! The simulated nodes' kubelet in the operator scale benchmark: reports
//! the kube-proxy pods bound to simulated nodes Running and Ready, and
//! finishes their graceful deletion. The next move is decided by the pure
//! [`pod_action`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::responder::{CONCURRENCY, Counters};

/// What the kubelet does next with a pod bound to a simulated node.
#[derive(Debug, PartialEq, Eq)]
pub enum PodAction {
    /// Nothing (ready, or not ours).
    None,
    /// Report it Running and Ready.
    Ready,
    /// Its graceful deletion started: the containers are gone, remove it.
    Finish,
}

/// Pure: the kubelet's next move for `pod` (bound to one of `nodes`).
pub fn pod_action(pod: &Pod, nodes: &BTreeMap<String, String>) -> PodAction {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) else {
        return PodAction::None;
    };
    if !nodes.contains_key(node) {
        return PodAction::None;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PodAction::Finish;
    }
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        PodAction::None
    } else {
        PodAction::Ready
    }
}

fn running_status(pod: &Pod, ip: &str, now: &str) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running", "hostIP": ip, "hostIPs": [{"ip": ip}], "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                       cond("ContainersReady"), cond("PodScheduled")],
        "containerStatuses": containers,
    }})
}

/// Plays the kubelet of the simulated `nodes` (name → address) for the
/// kube-proxy pods bound to them, until aborted.
pub async fn run(client: Client, nodes: Arc<BTreeMap<String, String>>, counters: Arc<Counters>) {
    let pods: Api<Pod> = Api::namespaced(client, "kube-system");
    watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .for_each_concurrent(CONCURRENCY, |ev| {
            let (pods, nodes, counters) = (pods.clone(), nodes.clone(), counters.clone());
            async move {
                let Ok(pod) = ev else { return };
                let name = pod.name_any();
                let result = match pod_action(&pod, &nodes) {
                    PodAction::None => return,
                    PodAction::Ready => {
                        let node = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.clone())
                            .unwrap_or_default();
                        let ip = nodes.get(&node).cloned().unwrap_or_default();
                        let now =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        pods.patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(running_status(&pod, &ip, &now)),
                        )
                        .await
                        .map(|_| ())
                    }
                    PodAction::Finish => {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            preconditions: Some(Preconditions {
                                uid: pod.uid(),
                                resource_version: None,
                            }),
                            ..DeleteParams::default()
                        };
                        match pods.delete(&name, &dp).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                };
                match result {
                    Ok(()) => counters.pod_writes.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, "simulated kubelet");
                        counters.errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn pod(node: Option<&str>, deleting: bool, ready: bool) -> Pod {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some("kube-proxy-x".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..PodSpec::default()
            }),
            status: None,
        };
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(t(1)));
        }
        if ready {
            let now = "2026-01-01T00:00:00Z";
            p.status =
                serde_json::from_value(running_status(&p, "10.0.0.1", now)["status"].clone()).ok();
        }
        p
    }

    #[test]
    fn the_kubelet_readies_its_pods_and_finishes_their_deletion() {
        let nodes: BTreeMap<String, String> =
            [("sim-0001".to_string(), "10.0.0.1".to_string())].into();
        assert_eq!(
            pod_action(&pod(None, false, false), &nodes),
            PodAction::None
        );
        assert_eq!(
            pod_action(&pod(Some("real"), false, false), &nodes),
            PodAction::None
        );
        assert_eq!(
            pod_action(&pod(Some("sim-0001"), false, false), &nodes),
            PodAction::Ready
        );
        assert_eq!(
            pod_action(&pod(Some("sim-0001"), false, true), &nodes),
            PodAction::None
        );
        assert_eq!(
            pod_action(&pod(Some("sim-0001"), true, true), &nodes),
            PodAction::Finish
        );
    }
}

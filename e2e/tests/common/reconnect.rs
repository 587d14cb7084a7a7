//! The agents find the API server by themselves: one restarted after
//! kube-proxy is gone reconnects without the `kubernetes` ClusterIP (it
//! dials the endpoints the operator publishes in the ConfigMap
//! `switchyard-api-endpoints`, which its pod mounts), and one whose
//! endpoint dies moves to the next.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use switchyard_api::AGENT_LEASE_NAMESPACE;
use switchyard_e2e::forward::Forwarder;
use switchyard_e2e::topology::{API_PORT, CONTROL_PLANE_IP};
use switchyard_e2e::{Cluster, wait_for};

const NS: &str = "switchyard-system";

/// The published endpoints name the control plane's direct address; the
/// agent of the first node is deleted, and its replacement becomes ready
/// and renews the node's Lease after it started.
pub async fn an_agent_restarted_after_kube_proxy_is_gone_reconnects(c: &Cluster) {
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), NS);
    let cm = cms.get("switchyard-api-endpoints").await.unwrap();
    let listed = cm.data.unwrap_or_default().remove("endpoints");
    let direct = format!("{CONTROL_PLANE_IP}:{API_PORT}");
    assert!(
        listed
            .as_deref()
            .is_some_and(|l| l.lines().any(|e| e == direct)),
        "switchyard-api-endpoints lists {direct}: {listed:?}"
    );

    let node = c.plan().nodes[0].name.clone();
    restart_agent(c, &node).await;
}

/// One of several API server endpoints dies: `alias` (a second address of
/// the API server, published first because the plan names it in
/// `spec.apiServer`) is what the restarted agent on `node` dials; once it
/// is dropped, with every connection through it, the agent moves to the
/// next endpoint and keeps renewing its Lease.
pub async fn an_agent_whose_endpoint_dies_moves_to_the_next(
    c: &Cluster,
    alias: Forwarder,
    node: &str,
) {
    restart_agent(c, node).await;
    assert!(
        alias.accepted() > 0,
        "the restarted agent dialed the published endpoint {}",
        alias.local
    );
    drop(alias);
    let died = Timestamp::now();
    let leases: Api<Lease> = Api::namespaced(c.client(), AGENT_LEASE_NAMESPACE);
    wait_for(
        "the agent to renew its node's Lease through another endpoint",
        Duration::from_secs(120),
        || async {
            let renewed = leases.get(node).await.ok()?.spec?.renew_time?;
            (renewed.0 > died).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Deletes the agent pod on `node` and waits until its replacement is
/// ready and has renewed the node's Lease since it started.
async fn restart_agent(c: &Cluster, node: &str) {
    let pods: Api<Pod> = Api::namespaced(c.client(), NS);
    let lp = ListParams::default()
        .labels("app.kubernetes.io/name=switchyard-agent")
        .fields(&format!("spec.nodeName={node}"));
    let old: Vec<String> = pods
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(!old.is_empty(), "an agent pod on {node}");
    for name in &old {
        pods.delete(name, &Default::default()).await.unwrap();
    }
    let leases: Api<Lease> = Api::namespaced(c.client(), AGENT_LEASE_NAMESPACE);
    wait_for(
        "the restarted agent to be ready and renew its node's Lease",
        Duration::from_secs(120),
        || async {
            let started = pods
                .list(&lp)
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|p| p.metadata.name.as_ref().is_some_and(|n| !old.contains(n)))
                .find(ready)?
                .status?
                .start_time?;
            let renewed = leases.get(node).await.ok()?.spec?.renew_time?;
            (renewed.0 > started.0).then_some(())
        },
    )
    .await
    .unwrap();
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

//! Day two on the local real cluster (root): what a plan leaves behind for
//! the nodes it did not migrate, and what deleting one midway undoes.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use switchyard_api::{
    DatapathMode, KUBE_PROXY_EXCLUDED_LABEL, MigrationPlan, NodeDatapath, NodeStep, PLAN_FINALIZER,
    Phase,
};
use switchyard_e2e::{ProxyMode, scenario, skip_unless_root, wait_for};

mod common;
use common::{assert_no_failures, kube_proxy_pods, plan, progress, run_plan, setup};

/// The label the plan selects node1 by.
const POOL: &str = "switchyard.dev/test-pool";
/// The port of the API server's second address.
const ALIAS_PORT: u16 = 16443;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_selecting_one_node_of_three_leaves_the_others_served_by_kube_proxy_and_an_agent_outlives_its_api_endpoint()
 {
    if skip_unless_root() {
        return;
    }
    let (c, _targets, load) = setup(ProxyMode::Iptables).await;
    let label = json!({"metadata": {"labels": {POOL: "ebpf"}}});
    let nodes: Api<Node> = Api::all(c.client());
    nodes
        .patch("node1", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    // The plan names a second API server address, which the agents are
    // given first; it dies once the plan is done (below).
    let alias = c.api_server_alias(ALIAS_PORT).await.unwrap();
    let spec = json!({
        "nodeSelector": {"matchLabels": {POOL: "ebpf"}},
        "apiServer": alias.local.to_string(),
    });
    let p = run_plan(&c, plan("first-pool", spec), Duration::from_secs(300)).await;
    let s = p.status.unwrap().expanded();
    assert_eq!(s.phase, Phase::Succeeded, "{:?}", s.message);
    assert_eq!(s.nodes.len(), 1, "only node1 is in the plan");
    let message = s.message.clone().unwrap_or_default();
    assert!(message.contains("node2, node3"), "{message}");
    assert!(!s.kube_proxy_deleted);

    // kube-proxy's DaemonSet and ConfigMap stay for node2 and node3, whose
    // pods and rules are kube-proxy's; node1 has neither.
    let ds: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    assert!(ds.get_opt("kube-proxy").await.unwrap().is_some());
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), "kube-system");
    assert!(cms.get_opt("kube-proxy").await.unwrap().is_some());
    let pods = kube_proxy_pods(&c).await;
    assert_eq!(pods.keys().collect::<Vec<_>>(), ["node2", "node3"]);
    for node in ["node2", "node3"] {
        let rules = scenario::kube_proxy_rules(&c, node).await.unwrap();
        let present = rules.values().any(|lines| !lines.is_empty());
        assert!(present, "kube-proxy's rules are gone from {node}");
    }
    let left = scenario::kube_proxy_rules(&c, "node1").await.unwrap();
    let none = left.values().all(Vec::is_empty);
    assert!(none, "kube-proxy's rules on node1: {left:?}");

    common::reconnect::an_agent_whose_endpoint_dies_moves_to_the_next(&c, alias, "node3").await;

    // Traffic from every node keeps flowing well after the plan ended
    // (25 requests/s: 750 more each is 30 s).
    load.wait_for_more(750).await.unwrap();
    let totals = load.stop(&c).await.unwrap();
    assert_no_failures(&totals, 750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_plan_mid_migration_rolls_its_nodes_back_before_it_goes() {
    if skip_unless_root() {
        return;
    }
    let (c, _targets, load) = setup(ProxyMode::Iptables).await;
    let body = plan(
        "deleted",
        json!({"strategy": {"canaryNodes": 1, "waveSize": 1}}),
    );
    scenario::apply_plan(&c, body).await.unwrap();
    // One node done, the next on its way: deleted (a GitOps prune).
    let midway = |p: &MigrationPlan| {
        p.status.as_ref().map(|s| s.expanded()).is_some_and(|s| {
            s.nodes.iter().any(|n| n.step == NodeStep::Done)
                && s.nodes.iter().any(|n| n.step.in_flight())
        })
    };
    scenario::follow_plan(&c, "deleted", Duration::from_secs(240), progress, midway)
        .await
        .unwrap();
    let plans: Api<MigrationPlan> = Api::all(c.client());
    plans
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    let held = plans.get("deleted").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.finalizers().iter().any(|f| f == PLAN_FINALIZER));
    wait_for(
        "the deleted plan gone",
        Duration::from_secs(240),
        || async { plans.get_opt("deleted").await.ok()?.is_none().then_some(()) },
    )
    .await
    .unwrap();

    // Every node is back on kube-proxy, uncordoned, unlabelled, and the
    // agents' datapaths are off.
    assert_eq!(kube_proxy_pods(&c).await.len(), 3);
    let nodes: Api<Node> = Api::all(c.client());
    for n in nodes.list(&Default::default()).await.unwrap() {
        let name = n.name_any();
        assert!(
            !n.labels().contains_key(KUBE_PROXY_EXCLUDED_LABEL),
            "{name}"
        );
        assert_ne!(n.spec.and_then(|s| s.unschedulable), Some(true), "{name}");
        let rules = scenario::kube_proxy_rules(&c, &name).await.unwrap();
        assert!(
            rules.values().any(|l| !l.is_empty()),
            "{name}: no kube-proxy rules"
        );
    }
    let datapaths: Api<NodeDatapath> = Api::all(c.client());
    for d in datapaths.list(&Default::default()).await.unwrap() {
        assert_eq!(d.spec.mode, DatapathMode::Off, "{}", d.name_any());
    }
    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(&c).await.unwrap();
    assert_no_failures(&totals, 100);
}

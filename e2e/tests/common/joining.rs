//! A node that joins a cluster already off kube-proxy: registered with the
//! startup taint, migrated by the plan that succeeded, and serving Services
//! from the first request of the first pod the scheduler puts there. Then
//! its machine is replaced by another under the same name: the plan marks
//! the node `Gone`, then migrates the new machine as it did the first.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::Api;
use switchyard_api::{MigrationPlan, NodeStep, Phase, STARTUP_TAINT};
use switchyard_e2e::scenario::Target;
use switchyard_e2e::{Cluster, load, wait_for};

use super::assert_no_failures;

/// Removes node `name` from `c` as its machine leaves, waits for plan
/// `plan` to mark it `Gone`, then adds a machine that registers under the
/// same name and checks it is migrated and serves from its first pod.
pub async fn a_node_replaced_under_its_name_is_migrated_again(
    c: &mut Cluster,
    plan: &str,
    targets: &[Target],
    name: &str,
) {
    c.remove_node(name).await.unwrap();
    let plans: Api<MigrationPlan> = Api::all(c.client());
    wait_for("the removed node Gone", Duration::from_secs(30), || async {
        let s = plans.get(plan).await.ok()?.status?.expanded();
        let p = s.nodes.iter().find(|p| p.name == name)?;
        (p.step == NodeStep::Gone && s.phase == Phase::Succeeded).then_some(())
    })
    .await
    .unwrap();
    let again = a_node_joins_and_serves_from_its_first_pod(c, plan, targets).await;
    assert_eq!(again, name, "the new machine registers under the old name");
}

/// Adds a node to `c` (whose plan `plan` succeeded and deleted kube-proxy)
/// and checks a pod scheduled there right away never fails a request;
/// returns its name.
pub async fn a_node_joins_and_serves_from_its_first_pod(
    c: &mut Cluster,
    plan: &str,
    targets: &[Target],
) -> String {
    let started = Instant::now();
    let taint = Taint {
        key: STARTUP_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    let node = c.add_node(&[taint]).await.unwrap();
    // Created at once: Pending until the node may take pods, then counted
    // from its first request.
    let timeout = Duration::from_secs(240);
    let load = load::start_load_scheduled(c, targets, 25, &node.name, timeout)
        .await
        .unwrap();
    let serving_after = started.elapsed().as_secs_f64();

    let plans: Api<MigrationPlan> = Api::all(c.client());
    let done = wait_for("the joined node done", Duration::from_secs(30), || async {
        let s = plans.get(plan).await.ok()?.status?.expanded();
        let p = s.nodes.iter().find(|p| p.name == node.name)?;
        (p.step == NodeStep::Done).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(done.phase, Phase::Succeeded, "{:?}", done.message);
    let n = Api::<Node>::all(c.client()).get(&node.name).await.unwrap();
    let spec = n.spec.unwrap_or_default();
    let taints = spec.taints.unwrap_or_default();
    assert!(taints.iter().all(|t| t.key != STARTUP_TAINT), "{taints:?}");
    assert_ne!(spec.unschedulable, Some(true), "the plan uncordoned it");

    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(c).await.unwrap();
    assert_no_failures(&totals, 100);
    eprintln!(
        "  {} joined: its first pod served {serving_after:.1}s after the node registered",
        node.name
    );
    node.name
}

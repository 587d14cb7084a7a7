//! After a failure: what still blocks a new plan and what does not, and a
//! rollback that cannot finish.

use switchyard_api::conditions::{self, STALLED};
use switchyard_api::{FailureAction, NodeStep, Phase};

use super::sim::Sim;
use super::unit::{run, spec};
use crate::planner::OtherPlan;
use crate::planner::preflight::check;

fn blocked_by_another_plan(holds_nodes: bool) -> bool {
    let sim = Sim::new(1, &[], spec(1, 1));
    let mut snap = sim.snapshot();
    snap.other_plans = vec![OtherPlan {
        name: "failed".into(),
        phase: Phase::Failed,
        older: true,
        holds_nodes,
    }];
    check(&sim.spec, &snap, &["node-00".to_string()], sim.ts())
        .iter()
        .any(|f| f.reason == "AnotherPlanActive")
}

#[test]
fn a_failed_plan_blocks_a_new_one_only_while_it_holds_nodes() {
    // Every node back on kube-proxy (rolled back, or never touched).
    assert!(!blocked_by_another_plan(false));
    // A node migrated (or mid-step) under it: still its plan's.
    assert!(blocked_by_another_plan(true));
}

#[test]
fn a_rollback_step_waiting_past_the_step_timeout_is_reported_stalled_and_still_tried() {
    let mut spec = spec(1, 1);
    spec.strategy.step_timeout_seconds = 30;
    let mut sim = Sim::new(1, &[], spec);
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    // The agent dies as the plan is rolled back: its node cannot leave the
    // datapath, so its rollback waits.
    sim.spec.rollback = true;
    sim.nodes.get_mut("node-00").unwrap().agent_alive = false;
    for _ in 0..40 {
        sim.reconcile(None);
        sim.tick(3, &|_| false);
    }
    assert_eq!(sim.phase(), Phase::RollingBack);
    assert!(conditions::is_true(&sim.status.conditions, STALLED));
    let message = sim.status.message.clone().unwrap_or_default();
    assert!(message.contains("node node-00 has been in"), "{message}");
    // Back, it is rolled back and the plan is no longer stalled.
    sim.nodes.get_mut("node-00").unwrap().agent_alive = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::RolledBack);
    assert!(!conditions::is_true(&sim.status.conditions, STALLED));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn kube_proxy_that_ran_on_migrated_nodes_after_success_has_its_rules_cleaned_again() {
    let mut sim = Sim::new(2, &[], spec(0, 2));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    // kubeadm upgrade re-creates kube-proxy without our affinity, and its
    // pods start on the migrated nodes and write their rules there before
    // the plan re-excludes it.
    sim.ds = Some(false);
    sim.cm = true;
    sim.tick(3, &|_| false);
    sim.tick(3, &|_| false);
    assert!(sim.nodes.values().all(|n| n.kp_ready && n.kp_rules));
    let requested: Vec<i64> = sim.nodes.values().map(|n| n.cleanup_req).collect();
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    for (name, n) in &sim.nodes {
        assert!(
            !n.kp_pod && !n.kp_rules,
            "{name} keeps kube-proxy's rules: {n:?}"
        );
    }
    let renewed: Vec<i64> = sim.nodes.values().map(|n| n.cleanup_req).collect();
    assert!(renewed.iter().zip(&requested).all(|(now, was)| now > was));
    assert!(
        sim.events
            .iter()
            .any(|e| e.reason == "KubeProxyRulesCleanedAgain")
    );
    assert!(sim.status.nodes.iter().all(|p| !p.kube_proxy_returned));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_node_failed_under_pause_is_retried_through_the_spec_and_finishes() {
    let mut s = spec(1, 1);
    s.failure_policy.action = FailureAction::Pause;
    let mut sim = Sim::new(3, &[], s);
    sim.nodes.get_mut("node-00").unwrap().probe_fails = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Paused);
    let p = sim.progress("node-00");
    assert_eq!(
        (p.step, p.failed_step),
        (NodeStep::Failed, Some(NodeStep::Verify))
    );
    let probe_before = p.probe_generation;

    // Fixed, then retried: back into Verify with a new probe request.
    sim.nodes.get_mut("node-00").unwrap().probe_fails = false;
    sim.spec.failure_policy.retry = 1;
    sim.reconcile(None);
    let p = sim.progress("node-00");
    assert_eq!((p.step, p.failed_step), (NodeStep::Verify, None));
    assert!(p.probe_generation > probe_before);
    assert_eq!(sim.phase(), Phase::Migrating);
    assert!(sim.events.iter().any(|e| e.reason == "NodeRetried"));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.status.nodes.iter().all(|p| p.step == NodeStep::Done));
    // Acted on once: the same number retries nothing more.
    assert_eq!(sim.status.observed_retry, 1);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_node_rolled_back_after_failing_is_migrated_again_on_retry() {
    let mut s = spec(1, 1);
    s.failure_policy.action = FailureAction::Rollback;
    let mut sim = Sim::new(3, &[], s);
    sim.nodes.get_mut("node-00").unwrap().cleanup_fails = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Failed);
    assert_eq!(sim.progress("node-00").step, NodeStep::RolledBack);
    sim.nodes.get_mut("node-00").unwrap().cleanup_fails = false;
    sim.spec.failure_policy.retry = 7;
    sim.reconcile(None);
    let p = sim.progress("node-00");
    assert_eq!(
        (p.step, p.failed_step, p.reached),
        (NodeStep::Cordon, None, NodeStep::Cordon)
    );
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(
        sim.ds.is_none(),
        "kube-proxy deleted once every node is done"
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn retry_leaves_a_plan_rolled_back_as_a_whole_alone() {
    let mut s = spec(1, 1);
    s.failure_policy.action = FailureAction::Pause;
    let mut sim = Sim::new(2, &[], s);
    sim.nodes.get_mut("node-00").unwrap().probe_fails = true;
    run(&mut sim);
    sim.spec.rollback = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::RolledBack);
    sim.spec.failure_policy.retry = 1;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::RolledBack);
    assert!(sim.nodes.values().all(|n| n.kp_rules && !n.dp_active));
}

#[test]
fn retrying_the_failed_node_of_a_plan_that_ended_failed_finishes_it() {
    // One failure tolerated: the plan runs every wave, then ends `Failed`.
    let mut s = spec(1, 1);
    s.failure_policy.max_failed_nodes = 1;
    let mut sim = Sim::new(2, &[], s);
    sim.nodes.get_mut("node-00").unwrap().probe_fails = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Failed);
    assert_eq!(sim.progress("node-00").step, NodeStep::Failed);
    // Fixed, then retried: the plan waits for the node of its first wave
    // instead of ending again at once.
    sim.nodes.get_mut("node-00").unwrap().probe_fails = false;
    sim.spec.failure_policy.retry += 1;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded, "{:?}", sim.steps());
    assert_eq!(sim.progress("node-00").step, NodeStep::Done);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

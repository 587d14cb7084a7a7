//! After a failure: what still blocks a new plan and what does not.

use switchyard_api::Phase;

use super::sim::Sim;
use super::unit::spec;
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

//! The NodeDatapath spec a node is left with when it is rolled back.

use switchyard_api::{DatapathMode, FailureAction, NodeStep};

use super::sim::Sim;
use super::unit::{datapath_spec, spec, until};

#[test]
fn rolling_back_turns_the_datapath_off_keeping_only_answered_requests() {
    // Failed at Verify: the cleanup and probe requests were answered; the
    // spec keeps them while the mode goes Off.
    let mut spec = spec(1, 1);
    spec.failure_policy.action = FailureAction::Rollback;
    let mut sim = Sim::new(1, &[], spec.clone());
    sim.nodes.get_mut("node-00").unwrap().probe_fails = true;
    let a = until(&mut sim, "node-00", NodeStep::DeactivateDatapath);
    let s = datapath_spec(&a, "node-00");
    assert_eq!(s.mode, DatapathMode::Off);
    assert_eq!(s.cleanup.map(|c| c.generation), Some(1));
    assert_eq!(s.probe.map(|r| r.generation), Some(1));

    // Rolled back from FlushRules before the agent answered: the cleanup
    // request is withdrawn, never left for the agent to run on restored
    // kube-proxy rules.
    let mut sim = Sim::new(1, &[], spec);
    until(&mut sim, "node-00", NodeStep::FlushRules);
    sim.nodes.get_mut("node-00").unwrap().agent_alive = false;
    sim.reconcile(None);
    assert_eq!(sim.nodes["node-00"].cleanup_req, 1, "the request was sent");
    sim.spec.rollback = true;
    let a = until(&mut sim, "node-00", NodeStep::DeactivateDatapath);
    let s = datapath_spec(&a, "node-00");
    assert_eq!(
        (s.mode, s.cleanup, s.probe),
        (DatapathMode::Off, None, None)
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

//! An agent's liveness is its Lease: a node whose Lease is missing or was
//! not renewed within its duration is `AgentStale` in preflight and does
//! not advance; one renewed within its duration is alive.

use k8s_openapi::jiff::Timestamp;
use switchyard_api::{AGENT_LEASE_DURATION_SECS, NodeStep, Severity};

use super::sim::Sim;
use super::unit::{spec, until};
use crate::planner::preflight::check;
use crate::planner::{AgentLease, Input, Snapshot, plan};

const DURATION: i64 = AGENT_LEASE_DURATION_SECS as i64;

/// A Lease renewed `ago` seconds before `now`.
fn renewed(now: Timestamp, ago: i64) -> Option<AgentLease> {
    Some(AgentLease {
        renewed: Timestamp::from_second(now.as_second() - ago).expect("valid time"),
        duration_secs: DURATION,
    })
}

fn stale_findings(sim: &Sim, snap: &Snapshot) -> Vec<String> {
    let targets = vec!["node-00".to_string()];
    check(&sim.spec, snap, &targets, sim.ts())
        .into_iter()
        .filter(|f| f.reason == "AgentStale")
        .inspect(|f| assert_eq!(f.severity, Severity::Error))
        .map(|f| f.message)
        .collect()
}

#[test]
fn an_expired_or_missing_lease_is_agent_stale_and_a_fresh_one_is_not() {
    let sim = Sim::new(1, &[], spec(1, 1));
    let now = sim.ts();
    let mut snap = sim.snapshot();
    let lease = |snap: &mut Snapshot, l: Option<AgentLease>| {
        snap.datapaths
            .get_mut("node-00")
            .expect("the node's NodeDatapath")
            .lease = l;
    };

    lease(&mut snap, renewed(now, 0));
    assert!(stale_findings(&sim, &snap).is_empty());
    lease(&mut snap, renewed(now, DURATION));
    assert!(
        stale_findings(&sim, &snap).is_empty(),
        "renewed exactly its duration ago: still alive"
    );

    lease(&mut snap, renewed(now, DURATION + 1));
    let found = stale_findings(&sim, &snap);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("switchyard-node-lease/node-00") && found[0].contains("41s ago"),
        "{found:?}"
    );

    lease(&mut snap, None);
    let found = stale_findings(&sim, &snap);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("does not renew"), "{found:?}");
}

#[test]
fn a_serving_node_whose_lease_expired_does_not_advance() {
    let mut sim = Sim::new(1, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::ActivateDatapath);
    // The spec goes Active; the agent activates and programs the datapath.
    sim.reconcile(None);
    sim.tick(3, &|_| false);
    sim.tick(3, &|_| false);
    assert_eq!(sim.progress("node-00").step, NodeStep::ActivateDatapath);
    let decide = |lease: Option<AgentLease>| {
        let mut snap = sim.snapshot();
        let dp = snap.datapaths.get_mut("node-00").expect("NodeDatapath");
        assert!(dp.serving(), "the agent activated the datapath");
        dp.lease = lease;
        let d = plan(Input {
            plan_name: "p",
            generation: Some(1),
            spec: &sim.spec,
            status: &sim.status,
            snapshot: &snap,
            now: sim.ts(),
            deleting: false,
        })
        .expect("plan");
        let n = d
            .status
            .nodes
            .into_iter()
            .find(|n| n.name == "node-00")
            .expect("node-00 in the status");
        (n.step, n.message.unwrap_or_default())
    };
    let (step, message) = decide(renewed(sim.ts(), DURATION + 1));
    assert_eq!(step, NodeStep::ActivateDatapath, "{message}");
    assert!(message.contains("agent silent"), "{message}");
    let (step, _) = decide(renewed(sim.ts(), 5));
    assert_eq!(step, NodeStep::RemoveKubeProxy);
}

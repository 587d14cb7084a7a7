//! The Events a migration leaves: one on the plan when a wave starts,
//! naming its nodes, and one per node when it is done.

use switchyard_api::Phase;

use super::sim::Sim;
use super::unit::{run, spec};

#[test]
fn each_wave_starts_with_one_event_and_each_node_ends_with_its_own() {
    // A canary of 1, then waves of 12: the second wave names ten of its
    // nodes and counts the rest.
    let mut sim = Sim::new(13, &[], spec(1, 12));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded, "{:?}", sim.status.message);
    let started: Vec<&str> = sim
        .events
        .iter()
        .filter(|e| e.reason == "NodesStarted")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(started.len(), 2, "one per wave: {started:?}");
    assert!(
        started[0].contains("wave 0") && started[0].ends_with(": 1 node(s): node-00"),
        "{}",
        started[0]
    );
    assert!(
        started[1].contains("wave 1")
            && started[1].contains("12 node(s): node-01, node-02")
            && started[1].ends_with("node-10 and 2 more"),
        "{}",
        started[1]
    );
    assert!(
        sim.events
            .iter()
            .filter(|e| e.reason == "NodesStarted")
            .all(|e| e.node.is_none()),
        "on the plan, not on a node"
    );
    let migrated = sim
        .events
        .iter()
        .filter(|e| e.reason == "NodeMigrated" && e.node.is_some())
        .count();
    assert_eq!(migrated, 13);
}

//! Cordons placed by someone else during the plan: never undone.

use switchyard_api::{NodeStep, Phase};

use super::sim::Sim;
use super::unit::{run, spec};

#[test]
fn a_node_cordoned_after_its_migration_stays_cordoned_through_a_rollback() {
    let mut sim = Sim::new(2, &[], spec(0, 2));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    // Someone takes node-00 out for maintenance; then the plan is rolled back.
    sim.cordon_by_others("node-00");
    sim.spec.rollback = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::RolledBack);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(sim.nodes["node-00"].unschedulable, "their cordon stays");
    assert!(!sim.nodes["node-01"].unschedulable);
}

#[test]
fn a_node_uncordoned_and_cordoned_again_during_its_migration_keeps_the_new_cordon() {
    let mut sim = Sim::new(1, &[], spec(0, 1));
    while sim.status.nodes.first().map(|p| p.step) != Some(NodeStep::RemoveKubeProxy) {
        sim.reconcile(None);
        sim.tick(3, &|_| false);
        assert!(
            sim.now < 1_700_001_000,
            "node-00 never reached RemoveKubeProxy"
        );
    }
    assert!(sim.progress("node-00").holds_cordon);
    sim.uncordon_by_others("node-00");
    sim.reconcile(None);
    assert!(
        !sim.progress("node-00").holds_cordon,
        "seen uncordoned: let go"
    );
    assert!(sim.events.iter().any(|e| e.reason == "CordonReleased"));
    sim.cordon_by_others("node-00");
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(sim.nodes["node-00"].unschedulable, "their cordon stays");
}

//! Deleting a plan (`spec.onDeletion`): what it undoes before the
//! finalizer lets the object go.

use switchyard_api::{DeletionPolicy, NodeStep, Phase};

use super::sim::Sim;
use super::unit::{run, spec, until};

#[test]
fn deleting_a_plan_mid_migration_rolls_its_nodes_back_then_releases_it() {
    let mut sim = Sim::new(3, &[1], spec(1, 1));
    until(&mut sim, "node-01", NodeStep::FlushRules);
    assert_eq!(sim.progress("node-00").step, NodeStep::Done);
    sim.deleting = true;
    for _ in 0..200 {
        if sim.released {
            break;
        }
        sim.reconcile(None);
        sim.tick(3, &|_| false);
    }
    assert!(sim.released, "the finalizer goes once the rollback is over");
    assert_eq!(sim.phase(), Phase::RolledBack);
    for (name, n) in &sim.nodes {
        assert!(
            n.kp_ready && n.kp_rules && !n.dp_active && !n.excluded,
            "{name}: {n:?}"
        );
        assert_eq!(
            n.unschedulable,
            name == "node-01",
            "{name}: only the pre-cordoned node"
        );
    }
    assert!(
        !sim.ds_held,
        "kube-proxy's own rollout is back before the plan goes"
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn deleting_a_succeeded_or_untouched_plan_changes_no_node() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    sim.deleting = true;
    sim.reconcile(None);
    assert!(sim.released);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.nodes.values().all(|n| n.dp_active && !n.kp_rules));

    let mut sim = Sim::new(2, &[], spec(1, 1));
    sim.deleting = true;
    sim.reconcile(None);
    assert!(sim.released, "nothing touched: nothing to undo");
    assert!(sim.nodes.values().all(|n| n.kp_rules && !n.unschedulable));
}

#[test]
fn an_abandoned_plan_is_released_at_once_and_leaves_every_node_served() {
    let mut s = spec(1, 1);
    s.on_deletion = DeletionPolicy::Abandon;
    let mut sim = Sim::new(3, &[], s);
    until(&mut sim, "node-01", NodeStep::RemoveKubeProxy);
    sim.deleting = true;
    sim.reconcile(None);
    assert!(sim.released);
    assert_eq!(sim.progress("node-01").step, NodeStep::RemoveKubeProxy);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

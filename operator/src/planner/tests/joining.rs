//! Nodes that join the cluster after the plan: migrated before any pod
//! may run there, in the plan's selection only.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use switchyard_api::{NodeStep, Phase};

use super::sim::Sim;
use super::unit::{run, spec, until};
use crate::planner::Action;

#[test]
fn a_node_joining_after_success_is_migrated_before_its_startup_taint_goes() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.ds.is_none(), "kube-proxy deleted");

    sim.join("node-02");
    sim.reconcile(None);
    let p = sim.progress("node-02");
    assert_eq!(p.step, NodeStep::Cordon, "started at once");
    let message = sim.status.message.clone().unwrap_or_default();
    assert!(message.contains("node-02 (Cordon)"), "{message}");

    // The taint stays while the node migrates; it goes last.
    let mut taint_removed_at = None;
    for _ in 0..60 {
        let actions = sim.decide().actions;
        if actions
            .iter()
            .any(|a| matches!(a, Action::RemoveStartupTaint { node } if node == "node-02"))
        {
            taint_removed_at.get_or_insert(sim.progress("node-02").step);
        }
        sim.reconcile(None);
        sim.tick(3, &|_| false);
    }
    assert_eq!(taint_removed_at, Some(NodeStep::Uncordon));
    let n = &sim.nodes["node-02"];
    assert!(
        n.dp_active && n.programmed && !n.startup_taint && !n.kp_pod,
        "{n:?}"
    );
    assert!(!n.unschedulable, "the plan uncordons the node it cordoned");
    assert_eq!(sim.progress("node-02").step, NodeStep::Done);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(
        sim.events
            .iter()
            .any(|e| e.reason == "NodeMigrated" && e.node.as_deref() == Some("node-02"))
    );
}

#[test]
fn a_node_joining_outside_the_selection_is_left_to_kube_proxy() {
    let mut s = spec(1, 1);
    s.node_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("pool".into(), "ebpf".into())])),
        ..LabelSelector::default()
    });
    let mut sim = Sim::new(2, &[], s);
    for n in sim.nodes.values_mut() {
        n.labels.insert("pool".into(), "ebpf".into());
    }
    sim.join("node-02");
    // Joined outside the selection: no startup taint on such a pool.
    if let Some(n) = sim.nodes.get_mut("node-02") {
        n.startup_taint = false;
        n.kp_pod = true;
        n.kp_ready = true;
        n.kp_rules = true;
    }
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.status.nodes.iter().all(|p| p.name != "node-02"));
    assert!(sim.ds.is_some(), "kube-proxy kept for node-02");
    let n = &sim.nodes["node-02"];
    assert!(n.kp_pod && n.kp_rules && !n.dp_active, "{n:?}");

    // A node labelled into the selection later is migrated like one that
    // joined, with kube-proxy removed from it.
    sim.join("node-03");
    if let Some(n) = sim.nodes.get_mut("node-03") {
        n.labels.insert("pool".into(), "ebpf".into());
    }
    run(&mut sim);
    let n = &sim.nodes["node-03"];
    assert_eq!(sim.progress("node-03").step, NodeStep::Done);
    assert!(
        n.dp_active && !n.kp_pod && !n.kp_rules && !n.startup_taint,
        "{n:?}"
    );
    assert!(sim.nodes["node-02"].kp_rules);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_migrated_node_replaced_by_a_new_machine_under_its_name_is_migrated_again() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    // The machine is replaced between two looks of the operator: its Node
    // is new (created now), its agent and NodeDatapath too.
    sim.tick(3, &|_| false);
    sim.leave("node-00");
    sim.join("node-00");
    sim.reconcile(None);
    assert_eq!(
        sim.progress("node-00").step,
        NodeStep::Cordon,
        "started over"
    );
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert_eq!(sim.progress("node-00").step, NodeStep::Done);
    let n = &sim.nodes["node-00"];
    assert!(n.dp_active && !n.startup_taint && !n.unschedulable, "{n:?}");
    let started = sim
        .events
        .iter()
        .filter(|e| e.reason == "NodesStarted" && e.message.contains("node-00"))
        .count();
    assert_eq!(started, 2, "migrated once per machine");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_node_gone_during_the_plan_that_comes_back_is_migrated() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    until(&mut sim, "node-01", NodeStep::ActivateDatapath);
    sim.leave("node-01");
    run(&mut sim);
    assert_eq!(sim.progress("node-01").step, NodeStep::Gone);
    sim.join("node-01");
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert_eq!(sim.progress("node-01").step, NodeStep::Done);
    assert!(sim.nodes["node-01"].dp_active);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

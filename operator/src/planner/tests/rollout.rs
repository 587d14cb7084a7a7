//! kube-proxy's DaemonSet while a plan edits its template: its rollout held
//! (`OnDelete`) so that excluding one node restarts no pod on another, and
//! released at the plan's end in the form that restarts none; and kept at
//! the end while nodes outside the plan still run it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use switchyard_api::{FailureAction, NodeStep, Phase};

use crate::planner::Action;

use super::sim::Sim;
use super::unit::{run, spec, step_of, until};

#[test]
fn a_plan_failed_beside_migrated_nodes_keeps_the_rollout_held() {
    let mut spec = spec(1, 1);
    spec.failure_policy.action = FailureAction::Rollback;
    let mut sim = Sim::new(3, &[], spec);
    sim.nodes.get_mut("node-01").unwrap().probe_fails = true;
    run(&mut sim);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(sim.phase(), Phase::Failed);
    assert_eq!(step_of(&sim, "node-00"), NodeStep::Done);
    assert_eq!(step_of(&sim, "node-01"), NodeStep::RolledBack);
    // node-00 stays excluded and node-02 runs its pod from before the
    // plan: restoring the strategy would restart it, so the hold stays.
    assert_eq!((sim.ds, sim.ds_held), (Some(true), true));
    assert!(!sim.nodes["node-02"].kp_excluding_template);
    assert!(sim.rolled.is_empty(), "{:?}", sim.rolled);
}

#[test]
fn excluding_a_node_restarts_kube_proxy_on_no_other_node() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::Done);
    assert_eq!((sim.ds, sim.ds_held), (Some(true), true));
    for name in ["node-01", "node-02"] {
        let n = &sim.nodes[name];
        assert!(
            n.kp_ready && !n.kp_excluding_template,
            "{name} still runs the pod it had before the plan: {n:?}"
        );
    }
    assert!(!sim.nodes["node-00"].kp_pod);
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_partial_selection_keeps_kube_proxy_for_the_nodes_outside_it() {
    let mut spec = spec(1, 1);
    let selector = [("pool".to_string(), "ebpf".to_string())];
    spec.node_selector = Some(LabelSelector {
        match_labels: Some(selector.iter().cloned().collect()),
        ..LabelSelector::default()
    });
    let mut sim = Sim::new(3, &[], spec);
    if let Some(n) = sim.nodes.get_mut("node-00") {
        n.labels = selector.iter().cloned().collect();
    }
    run(&mut sim);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert_eq!(step_of(&sim, "node-00"), NodeStep::Done);
    // The nodes outside the selection still run kube-proxy: its DaemonSet
    // and ConfigMap stay (with the exclusion), and the status says why.
    assert_eq!(sim.ds, Some(true));
    assert!(sim.cm && !sim.status.kube_proxy_deleted);
    for name in ["node-01", "node-02"] {
        assert!(sim.nodes[name].kp_ready && !sim.nodes[name].excluded);
    }
    let message = sim.status.message.clone().unwrap_or_default();
    assert!(message.contains("node-01, node-02"), "{message}");
}

#[test]
fn a_wave_leaving_kube_proxy_together_edits_its_template_once() {
    let mut sim = Sim::new(3, &[], spec(0, 3));
    let a = until(&mut sim, "node-00", NodeStep::RemoveKubeProxy);
    let count = |f: fn(&Action) -> bool| a.iter().filter(|x| f(x)).count();
    assert_eq!(
        count(|x| matches!(x, Action::ExcludeKubeProxy { .. })),
        3,
        "the wave moved together: {a:?}"
    );
    assert_eq!(count(|x| *x == Action::HoldKubeProxyRollout), 1, "{a:?}");
    assert_eq!(count(|x| *x == Action::EnsureKubeProxyAffinity), 1, "{a:?}");
    assert_eq!(
        a[..2],
        [
            Action::HoldKubeProxyRollout,
            Action::EnsureKubeProxyAffinity
        ],
        "held, then edited, before any node leaves: {a:?}"
    );
}

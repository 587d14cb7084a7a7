//! Property tests beyond a fixed cluster running one plan to its end:
//! retries, nodes leaving and coming back, cordons by others, partial
//! selections and rollbacks that wait on dead agents — with crashes and lag,
//! the serving-datapath invariant checked at every step (see `sim`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proptest::prelude::*;
use switchyard_api::conditions::{self, STALLED};
use switchyard_api::{NodeStep, Phase};

use super::props::{Case, case, crashes, lag, sim_for};
use super::sim::Sim;

/// Cordons (`true`) and uncordons by someone else: (round, node index, cordon).
type OthersCordons = Vec<(usize, usize, bool)>;

fn others_cordons() -> impl Strategy<Value = OthersCordons> {
    prop::collection::vec((0usize..100, 0usize..10, any::<bool>()), 1..8)
}

/// Runs `sim` for 100 rounds with someone else cordoning and uncordoning
/// nodes as `others` says, with crashes and lag, then until it settles.
fn run_with_others(sim: &mut Sim, others: &OthersCordons, seed: u64) {
    let names: Vec<String> = sim.nodes.keys().cloned().collect();
    let mut crash = crashes(seed);
    let lag = lag(seed);
    for round in 0..100 {
        for (_, i, cordon) in others.iter().filter(|o| o.0 == round) {
            let name = &names[i % names.len()];
            if *cordon {
                sim.cordon_by_others(name);
            } else {
                sim.uncordon_by_others(name);
            }
        }
        sim.reconcile(crash(round));
        sim.tick(3, &|n| lag(round, n));
    }
    sim.run(600, crashes(seed ^ 5), &lag);
}

/// Nodes leaving (`false`) and coming back as new machines under the same
/// name (`true`): (round, node index, back).
type Churn = Vec<(usize, usize, bool)>;

fn churn() -> impl Strategy<Value = Churn> {
    prop::collection::vec((0usize..100, 0usize..10, any::<bool>()), 1..6)
}

/// Runs `sim` for 100 rounds with nodes leaving and coming back as `churn`
/// says, with crashes and lag, then until it settles.
fn run_with_churn(sim: &mut Sim, churn: &Churn, nodes: usize, seed: u64) {
    let mut crash = crashes(seed);
    let lag = lag(seed);
    for round in 0..100 {
        for (_, i, back) in churn.iter().filter(|o| o.0 == round) {
            let name = format!("node-{:02}", i % nodes);
            match (*back, sim.nodes.contains_key(&name)) {
                (true, false) => sim.join(&name),
                (false, true) => sim.leave(&name),
                _ => {}
            }
        }
        sim.reconcile(crash(round));
        sim.tick(3, &|n| lag(round, n));
    }
    sim.run(600, crashes(seed ^ 5), &lag);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A plan stopped by failed nodes (paused, or failed with its nodes
    /// rolled back) finishes once their faults are fixed and
    /// `spec.failurePolicy.retry` is raised, with crashes and lag.
    #[test]
    fn a_retry_after_the_faults_are_fixed_finishes_the_plan(c in case()) {
        let mut sim = sim_for(&c);
        sim.run(600, crashes(c.seed), &lag(c.seed));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        if sim.phase() == Phase::Succeeded {
            return Ok(());
        }
        for n in sim.nodes.values_mut() {
            (n.probe_fails, n.cleanup_fails, n.ingress_dead) = (false, false, false);
        }
        sim.spec.failure_policy.retry += 1;
        sim.run(600, crashes(c.seed ^ 4), &lag(c.seed ^ 4));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert_eq!(sim.phase(), Phase::Succeeded, "{:?}", sim.steps());
        for (name, n) in &sim.nodes {
            prop_assert!(n.dp_active && !n.kp_pod && !n.kp_rules, "{}: {:?}", name, n);
            prop_assert_eq!(n.unschedulable, sim.cordoned_by_others.contains(name));
        }
    }

    /// Nodes leave and come back under the same name at any moment of the
    /// migration and of the rollback after it: every node in the cluster
    /// stays served, the plan settles, a node that came back is migrated
    /// (and rolled back) like the others.
    #[test]
    fn nodes_leaving_and_coming_back_at_any_moment(c in case(), churn in churn()) {
        let mut sim = sim_for(&c);
        run_with_churn(&mut sim, &churn, c.nodes, c.seed);
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        if sim.nodes.is_empty() {
            // Every node left: nothing to migrate or to check.
            return Ok(());
        }
        prop_assert!(sim.settled(), "did not settle: {:?} {:?}", sim.phase(), sim.steps());
        let faults = c.probe_fails.len() + c.cleanup_fails.len() + c.ingress_dead.len();
        if faults == 0 {
            prop_assert_eq!(sim.phase(), Phase::Succeeded);
            for (name, n) in &sim.nodes {
                prop_assert!(n.dp_active && !n.startup_taint && !n.kp_pod, "{}: {:?}", name, n);
                prop_assert_eq!(sim.progress(name).step, NodeStep::Done);
            }
        }
        sim.spec.rollback = true;
        run_with_churn(&mut sim, &churn, c.nodes, c.seed ^ 1);
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert_eq!(sim.phase(), Phase::RolledBack);
        // A node that joined in the last round gets its kube-proxy pod
        // ready from the DaemonSet in the rounds after.
        sim.tick(3, &|_| false);
        sim.tick(3, &|_| false);
        for (name, n) in &sim.nodes {
            prop_assert!(n.kp_ready && n.kp_rules && !n.dp_active, "{}: {:?}", name, n);
        }
    }

    /// Someone else cordons and uncordons nodes at any moment of the
    /// migration and of the rollback after it: the plan never lifts their
    /// cordon (the sim records a violation), lifts every one it holds, and
    /// still settles.
    #[test]
    fn cordons_by_others_are_never_undone(c in case(), others in others_cordons()) {
        let mut sim = sim_for(&c);
        run_with_others(&mut sim, &others, c.seed);
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert!(sim.settled(), "did not settle: {:?} {:?}", sim.phase(), sim.steps());
        sim.spec.rollback = true;
        run_with_others(&mut sim, &others, c.seed ^ 1);
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert_eq!(sim.phase(), Phase::RolledBack);
        for (name, n) in &sim.nodes {
            prop_assert_eq!(n.unschedulable, sim.cordoned_by_others.contains(name), "{}", name);
        }
        prop_assert!(sim.status.nodes.iter().all(|n| !n.holds_cordon));
    }

    /// A plan whose `nodeSelector` leaves some nodes out migrates only the
    /// others; those stay on kube-proxy, untouched, and kube-proxy is kept
    /// for them.
    #[test]
    fn a_selection_leaves_the_other_nodes_to_kube_proxy(
        c in case(),
        out in prop::collection::vec(0usize..10, 1..4),
    ) {
        let mut sim = sim_for(&c);
        let out = select_all_but(&mut sim, &out);
        prop_assume!(out.len() < sim.nodes.len());
        sim.run(600, crashes(c.seed), &lag(c.seed));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert!(sim.settled(), "did not settle: {:?} {:?}", sim.phase(), sim.steps());
        prop_assert!(sim.ds.is_some(), "kube-proxy deleted although nodes need it");
        for name in &out {
            let n = &sim.nodes[name];
            prop_assert!(n.kp_ready && n.kp_rules && !n.dp_active && !n.excluded, "{}: {:?}", name, n);
            prop_assert!(sim.status.nodes.iter().all(|p| p.name != *name), "{} in the plan", name);
        }
        if faults_among(&c, &sim, &out) == 0 {
            prop_assert_eq!(sim.phase(), Phase::Succeeded);
        }
        sim.spec.rollback = true;
        sim.run(600, crashes(c.seed ^ 1), &lag(c.seed ^ 1));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert_eq!(sim.phase(), Phase::RolledBack);
        for (name, n) in &sim.nodes {
            prop_assert!(n.kp_ready && n.kp_rules && !n.dp_active, "{}: {:?}", name, n);
        }
        prop_assert!(!sim.ds_held, "kube-proxy's own update strategy is back");
    }

    /// Agents that die while the plan is rolled back hold their nodes in
    /// their rollback steps (never off the datapath before kube-proxy is
    /// back); past the step timeout the plan says `Stalled`; once the
    /// agents return, the rollback finishes.
    #[test]
    fn a_rollback_waits_for_dead_agents_and_says_stalled(
        c in case(),
        dead in prop::collection::vec(0usize..10, 1..3),
    ) {
        let mut sim = sim_for(&c);
        sim.spec.strategy.step_timeout_seconds = 60;
        sim.run(600, crashes(c.seed), &lag(c.seed));
        sim.spec.rollback = true;
        let names: Vec<String> = sim.nodes.keys().cloned().collect();
        for i in &dead {
            if let Some(n) = sim.nodes.get_mut(&names[i % names.len()]) {
                n.agent_alive = false;
            }
        }
        sim.run(100, crashes(c.seed ^ 6), &lag(c.seed ^ 6));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        if sim.phase() == Phase::RollingBack {
            prop_assert!(conditions::is_true(&sim.status.conditions, STALLED), "{:?}", sim.steps());
        }
        for n in sim.nodes.values_mut() {
            n.agent_alive = true;
        }
        sim.run(600, crashes(c.seed ^ 7), &lag(c.seed ^ 7));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert_eq!(sim.phase(), Phase::RolledBack);
        for (name, n) in &sim.nodes {
            prop_assert!(n.kp_ready && n.kp_rules && !n.dp_active, "{}: {:?}", name, n);
        }
    }
}

/// Labels every node but those `out` names (by index) into the plan's
/// selection; returns the nodes left out.
fn select_all_but(sim: &mut Sim, out: &[usize]) -> BTreeSet<String> {
    let names: Vec<String> = sim.nodes.keys().cloned().collect();
    let out: BTreeSet<String> = out.iter().map(|i| names[i % names.len()].clone()).collect();
    let pool = BTreeMap::from([("pool".to_string(), "ebpf".to_string())]);
    sim.spec.node_selector = Some(LabelSelector {
        match_labels: Some(pool.clone()),
        ..LabelSelector::default()
    });
    for (_, n) in sim
        .nodes
        .iter_mut()
        .filter(|(name, _)| !out.contains(*name))
    {
        n.labels = pool.clone();
    }
    out
}

/// How many of the case's faults fall on nodes the plan selects.
fn faults_among(c: &Case, sim: &Sim, out: &BTreeSet<String>) -> usize {
    let names: Vec<&String> = sim.nodes.keys().collect();
    [&c.probe_fails, &c.cleanup_fails, &c.ingress_dead]
        .into_iter()
        .flatten()
        .filter(|i| !out.contains(names[**i]))
        .count()
}

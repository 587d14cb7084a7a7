//! Property tests over random clusters, random agent outcomes, random lag
//! and controller crashes between applying actions and recording status.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use switchyard_api::{FailureAction, MigrationPlanSpec, NodeStep, Phase};

use super::sim::Sim;
use crate::planner::waves;

#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) nodes: usize,
    pub(super) pre_cordoned: Vec<usize>,
    pub(super) canary: u32,
    pub(super) wave: IntOrString,
    pub(super) probe_fails: Vec<usize>,
    pub(super) cleanup_fails: Vec<usize>,
    /// Nodes where traffic from outside dies once kube-proxy left.
    pub(super) ingress_dead: Vec<usize>,
    pub(super) action: FailureAction,
    pub(super) max_failed: u32,
    pub(super) seed: u64,
}

pub(super) fn case() -> impl Strategy<Value = Case> {
    (1usize..10)
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec(0..n, 0..3),
                0u32..3,
                prop_oneof![
                    (1i32..5).prop_map(IntOrString::Int),
                    (1u32..=100).prop_map(|p| IntOrString::String(format!("{p}%")))
                ],
                prop::collection::vec(0..n, 0..2),
                prop::collection::vec(0..n, 0..2),
                prop::collection::vec(0..n, 0..2),
                prop_oneof![Just(FailureAction::Pause), Just(FailureAction::Rollback)],
                0u32..3,
                any::<u64>(),
            )
        })
        .prop_map(
            |(
                nodes,
                pre_cordoned,
                canary,
                wave,
                probe_fails,
                cleanup_fails,
                ingress_dead,
                action,
                max_failed,
                seed,
            )| Case {
                nodes,
                pre_cordoned,
                canary,
                wave,
                probe_fails,
                cleanup_fails,
                ingress_dead,
                action,
                max_failed,
                seed,
            },
        )
}

pub(super) fn sim_for(c: &Case) -> Sim {
    let mut spec = MigrationPlanSpec::default();
    spec.strategy.canary_nodes = c.canary;
    spec.strategy.wave_size = c.wave.clone();
    spec.failure_policy.action = c.action;
    spec.failure_policy.max_failed_nodes = c.max_failed;
    let mut sim = Sim::new(c.nodes, &c.pre_cordoned, spec);
    for (i, n) in sim.nodes.values_mut().enumerate() {
        n.probe_fails = c.probe_fails.contains(&i);
        n.cleanup_fails = c.cleanup_fails.contains(&i);
        n.ingress_dead = c.ingress_dead.contains(&i);
    }
    sim
}

/// A cheap deterministic hash for lag and crash decisions.
fn mix(seed: u64, a: u64, b: &str) -> u64 {
    let mut h = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for byte in b.bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3);
    }
    h ^ (h >> 29)
}

pub(super) fn lag(seed: u64) -> impl Fn(usize, &str) -> bool {
    move |round, node| mix(seed, round as u64, node).is_multiple_of(4)
}

pub(super) fn crashes(seed: u64) -> impl FnMut(usize) -> Option<usize> {
    move |round| {
        let h = mix(seed, round as u64 + 7919, "crash");
        h.is_multiple_of(5).then_some((h >> 8) as usize % 4)
    }
}

/// The nodes as their own migration left them (without the peer probes
/// they answered for other nodes).
fn own_state(sim: &Sim) -> Vec<(String, super::sim::SimNode)> {
    sim.nodes
        .iter()
        .map(|(name, n)| {
            let mut n = n.clone();
            n.peer_req = None;
            n.peer_obs = None;
            (name.clone(), n)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Safety invariants hold at every change, with crashes and lag; the
    /// plan always settles; without failures it succeeds.
    #[test]
    fn invariants_hold_through_migration_and_rollback(c in case()) {
        let mut sim = sim_for(&c);
        sim.run(600, crashes(c.seed), &lag(c.seed));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert!(sim.settled(), "did not settle: {:?} {:?}", sim.phase(), sim.steps());
        let max = waves::max_in_flight(&sim.spec.strategy, c.nodes).unwrap();
        prop_assert!(sim.max_in_flight_seen <= max, "{} in flight > {max}", sim.max_in_flight_seen);

        // A node whose ingress is dead fails, unless no peer could probe
        // it (the plan said so with an event; the sim checks that too).
        let skipped = |i: &usize| {
            let name = format!("node-{i:02}");
            sim.events.iter().any(|e| e.reason == "PeerProbeSkipped" && e.node.as_deref() == Some(name.as_str()))
        };
        let probed_dead = c.ingress_dead.iter().filter(|i| !skipped(i)).count();
        let failures = c.probe_fails.len() + c.cleanup_fails.len() + probed_dead;
        if failures == 0 {
            prop_assert_eq!(sim.phase(), Phase::Succeeded);
            prop_assert!(sim.ds.is_none() && sim.backup);
            for (name, n) in &sim.nodes {
                prop_assert!(n.dp_active && !n.kp_pod && !n.kp_rules, "{}: {:?}", name, n);
                prop_assert_eq!(n.unschedulable, sim.cordoned_by_others.contains(name));
            }
            // A node joins after success: migrated like the others, with
            // crashes and lag, and part of the rollback below.
            sim.join("node-99");
            sim.run(600, crashes(c.seed ^ 2), &lag(c.seed ^ 2));
            prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
            prop_assert_eq!(sim.progress("node-99").step, NodeStep::Done);
            let n = &sim.nodes["node-99"];
            prop_assert!(n.dp_active && !n.startup_taint && !n.unschedulable, "{:?}", n);
        } else {
            prop_assert_ne!(sim.phase(), Phase::Succeeded);
            prop_assert!(sim.ds.is_some(), "kube-proxy deleted although a node failed");
        }

        // Then roll the whole plan back.
        sim.spec.rollback = true;
        sim.run(600, crashes(c.seed ^ 1), &lag(c.seed ^ 1));
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        prop_assert_eq!(sim.phase(), Phase::RolledBack);
        for (name, n) in &sim.nodes {
            prop_assert!(n.kp_ready && n.kp_rules && !n.excluded && !n.dp_active, "{}: {:?}", name, n);
            prop_assert_eq!(n.unschedulable, sim.cordoned_by_others.contains(name), "{}", name);
        }
        prop_assert!(sim.status.nodes.iter().all(|n| matches!(n.step, NodeStep::Pending | NodeStep::RolledBack)));
        prop_assert!(!sim.ds_held, "kube-proxy's own update strategy is back after the rollback");
    }

    /// Deleting the plan at any moment: with crashes and lag, the
    /// finalizer goes only once every node is back on kube-proxy (or at
    /// once for a succeeded plan, which changes no node).
    #[test]
    fn deleting_the_plan_at_any_moment_rolls_back_then_releases(c in case(), at in 0usize..60) {
        let mut sim = sim_for(&c);
        sim.run(at, crashes(c.seed), &lag(c.seed));
        let succeeded = sim.phase() == Phase::Succeeded;
        sim.deleting = true;
        let mut crash = crashes(c.seed ^ 3);
        let lag = lag(c.seed ^ 3);
        for round in 0..600 {
            if sim.released {
                break;
            }
            sim.reconcile(crash(round));
            sim.tick(3, &|n| lag(round, n));
        }
        prop_assert!(sim.released, "still held: {:?} {:?}", sim.phase(), sim.steps());
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        if !succeeded {
            for (name, n) in &sim.nodes {
                prop_assert!(n.kp_ready && n.kp_rules && !n.excluded && !n.dp_active, "{}: {:?}", name, n);
                prop_assert_eq!(n.unschedulable, sim.cordoned_by_others.contains(name), "{}", name);
            }
            prop_assert!(!sim.ds_held, "kube-proxy's own rollout is back");
        }
    }

    /// Crashes between applying actions and recording status change nothing
    /// about where the plan ends.
    #[test]
    fn crashes_do_not_change_the_outcome(c in case()) {
        let mut clean = sim_for(&c);
        clean.run(600, |_| None, &|_, _| false);
        let mut crashy = sim_for(&c);
        crashy.run(600, crashes(c.seed), &|_, _| false);
        prop_assert!(crashy.violations.is_empty(), "{:?}", crashy.violations);
        prop_assert_eq!(clean.phase(), crashy.phase());
        prop_assert_eq!(clean.steps(), crashy.steps());
        // Whether a node's peer was asked before its own probe failed
        // depends on where the controller crashed; the outcome does not.
        prop_assert_eq!(own_state(&clean), own_state(&crashy));
        prop_assert_eq!(
            (clean.ds, clean.ds_held, clean.cm, clean.backup),
            (crashy.ds, crashy.ds_held, crashy.cm, crashy.backup)
        );
    }
}

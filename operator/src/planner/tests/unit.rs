//! One test per transition: each fails if the step order or a guard changes.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use switchyard_api::conditions::{self, READY, STALLED};
use switchyard_api::{
    CleanupRequest, DatapathMode, FailureAction, KubeProxyDisposition, MigrationPlanSpec,
    NodeDatapathSpec, NodeStep, Phase, Severity,
};

use super::sim::Sim;
use crate::planner::{Action, OtherPlan};

pub(super) fn spec(canary: u32, wave: i32) -> MigrationPlanSpec {
    let mut s = MigrationPlanSpec::default();
    s.strategy.canary_nodes = canary;
    s.strategy.wave_size = IntOrString::Int(wave);
    s
}

pub(super) fn run(sim: &mut Sim) {
    sim.run(400, |_| None, &|_, _| false);
}

pub(super) fn step_of(sim: &Sim, node: &str) -> NodeStep {
    sim.steps()[node]
}

/// Reconciles (with ticks) until `node` reaches `step`; panics after 100 rounds.
pub(super) fn until(sim: &mut Sim, node: &str, step: NodeStep) -> Vec<Action> {
    for _ in 0..100 {
        sim.reconcile(None);
        if sim
            .status
            .nodes
            .iter()
            .any(|n| n.name == node && n.step == step)
        {
            // The decision after the transition carries the step's actions.
            let d = sim.decide();
            return d.actions;
        }
        sim.tick(3, &|_| false);
    }
    panic!(
        "node {node} never reached {step:?}; steps: {:?}",
        sim.steps()
    );
}

#[test]
fn full_run_walks_every_forward_step_in_order() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded, "{:?}", sim.status.message);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    for n in &sim.status.nodes {
        assert_eq!(n.step, NodeStep::Done);
        // The status keeps when the node started and finished; the steps
        // and their durations went to its NodeMigrated event.
        assert!(n.history.is_empty(), "{n:?}");
        let (started, done) = (
            n.started_at.clone().unwrap().0,
            n.step_started_at.clone().unwrap().0,
        );
        assert!(started < done, "{n:?}");
        let migrated: Vec<&str> = sim
            .events
            .iter()
            .filter(|e| e.reason == "NodeMigrated" && e.node.as_deref() == Some(n.name.as_str()))
            .map(|e| e.message.as_str())
            .collect();
        let [msg] = migrated[..] else {
            panic!("{}: NodeMigrated events {migrated:?}", n.name);
        };
        let took = msg
            .split_once(" after ")
            .map(|(_, t)| t)
            .unwrap_or_default();
        let steps: Vec<&str> = took
            .split_once(": ")
            .map(|(_, l)| l.split(", ").filter_map(|s| s.split(' ').next()).collect())
            .unwrap_or_default();
        assert_eq!(
            steps,
            [
                "Cordon",
                "ActivateDatapath",
                "RemoveKubeProxy",
                "FlushRules",
                "Verify",
                "Uncordon"
            ],
            "{msg}"
        );
        let total = (done.as_millisecond() - started.as_millisecond()) as f64 / 1000.0;
        assert!(took.starts_with(&format!("{total:.1}s: ")), "{msg}");
    }
    assert_eq!(
        sim.status.waves,
        vec![vec!["node-00"], vec!["node-01"], vec!["node-02"]]
    );
    assert!(sim.ds.is_none() && !sim.cm && sim.backup);
    assert!(sim.status.kube_proxy_deleted);
    assert_eq!(sim.status.summary.progress, "3/3");
    assert!(conditions::is_true(&sim.status.conditions, READY));
    assert!(
        sim.nodes
            .values()
            .all(|n| !n.unschedulable && n.dp_active && !n.kp_rules)
    );
}

#[test]
fn starting_a_node_records_cordon_state_before_cordoning() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    // Pending -> Preflight -> Migrating -> wave 0 started.
    let mut started = None;
    for _ in 0..5 {
        let before = sim.status.clone();
        sim.reconcile(None);
        if before.nodes.iter().all(|n| n.step == NodeStep::Pending)
            && sim.status.nodes.iter().any(|n| n.step == NodeStep::Cordon)
        {
            started = Some(sim.status.clone());
            break;
        }
    }
    let started = started.expect("a node started");
    let n0 = started.nodes.iter().find(|n| n.name == "node-00").unwrap();
    assert!(
        n0.holds_cordon,
        "the plan cordons node-00, so it holds the cordon"
    );
    // The starting decision cordoned nothing; the next one does.
    assert!(!sim.nodes["node-00"].unschedulable);
    let d = sim.decide();
    assert!(
        d.actions.contains(&Action::Cordon {
            node: "node-00".into()
        }),
        "{:?}",
        d.actions
    );
    // Only the canary started.
    assert_eq!(step_of(&sim, "node-01"), NodeStep::Pending);
}

#[test]
fn a_node_cordoned_before_the_plan_stays_cordoned() {
    let mut sim = Sim::new(2, &[1], spec(0, 2));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(sim.nodes["node-01"].unschedulable);
    assert!(!sim.nodes["node-00"].unschedulable);
}

/// The one NodeDatapath spec write among `actions`, for `node`.
pub(super) fn datapath_spec(actions: &[Action], node: &str) -> NodeDatapathSpec {
    match actions {
        [Action::ApplyDatapath { node: n, spec }] if n == node => spec.clone(),
        other => panic!("expected one NodeDatapath spec for {node}, got {other:?}"),
    }
}

#[test]
fn each_step_emits_its_actions() {
    let mut sim = Sim::new(1, &[], spec(1, 1));
    let a = until(&mut sim, "node-00", NodeStep::ActivateDatapath);
    assert!(
        matches!(
            &a[..],
            [Action::ApplyDatapath {
                spec: NodeDatapathSpec {
                    mode: DatapathMode::Active,
                    api_server: Some(_),
                    cleanup: None,
                    probe: None,
                    peer_probe: None,
                    node_port_addresses: Some(_),
                },
                ..
            }]
        ),
        "{a:?}"
    );
    let a = until(&mut sim, "node-00", NodeStep::RemoveKubeProxy);
    assert_eq!(
        a,
        vec![
            Action::HoldKubeProxyRollout,
            Action::EnsureKubeProxyAffinity,
            Action::ExcludeKubeProxy {
                node: "node-00".into()
            }
        ]
    );
    let a = until(&mut sim, "node-00", NodeStep::FlushRules);
    let s = datapath_spec(&a, "node-00");
    assert_eq!(
        s.cleanup,
        Some(CleanupRequest {
            generation: 1,
            dry_run: false
        })
    );
    assert_eq!((s.mode, s.probe.as_ref()), (DatapathMode::Active, None));
    let a = until(&mut sim, "node-00", NodeStep::Verify);
    let s = datapath_spec(&a, "node-00");
    let request = s.probe.expect("a probe request");
    assert_eq!(request.generation, 1);
    assert_eq!(request.probes[0].name, "api-server");
    // The requests of the steps before stay, unchanged.
    assert_eq!(s.mode, DatapathMode::Active);
    assert_eq!(s.cleanup.map(|c| c.generation), Some(1));
    let a = until(&mut sim, "node-00", NodeStep::Uncordon);
    assert_eq!(
        a,
        vec![Action::Uncordon {
            node: "node-00".into()
        }]
    );
}

#[test]
fn kube_proxy_stays_while_the_datapath_is_not_programmed_and_the_step_times_out() {
    let mut spec = spec(1, 1);
    spec.strategy.step_timeout_seconds = 30;
    let mut sim = Sim::new(2, &[], spec);
    until(&mut sim, "node-00", NodeStep::ActivateDatapath);
    sim.nodes.get_mut("node-00").unwrap().agent_alive = false;
    sim.run(100, |_| None, &|_, _| false);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let n0 = sim.progress("node-00");
    assert_eq!(n0.step, NodeStep::Failed);
    assert_eq!(n0.failed_step, Some(NodeStep::ActivateDatapath));
    assert!(
        n0.message.as_deref().unwrap().contains("timed out"),
        "{:?}",
        n0.message
    );
    assert!(sim.nodes["node-00"].kp_pod && !sim.nodes["node-00"].excluded);
    assert_eq!(sim.phase(), Phase::Paused);
    assert_eq!(
        step_of(&sim, "node-01"),
        NodeStep::Pending,
        "a failed node stops the wave"
    );
}

#[test]
fn probe_failure_with_pause_stalls_naming_node_and_probe() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    sim.nodes.get_mut("node-00").unwrap().probe_fails = true;
    run(&mut sim);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(sim.phase(), Phase::Paused);
    let stalled = conditions::get(&sim.status.conditions, STALLED).unwrap();
    assert_eq!(stalled.status, "True");
    assert!(
        stalled.message.contains("node-00") && stalled.message.contains("probe \"web\""),
        "{}",
        stalled.message
    );
    assert_eq!(step_of(&sim, "node-00"), NodeStep::Failed);
    // The failed node still serves through the datapath; nobody else started.
    assert!(sim.nodes["node-00"].dp_active);
    assert_eq!(step_of(&sim, "node-01"), NodeStep::Pending);
    // Paused is no end: the rollout stays held.
    assert_eq!((sim.ds, sim.ds_held), (Some(true), true));
}

#[test]
fn probe_failure_with_rollback_returns_the_node_to_kube_proxy() {
    let mut spec = spec(1, 1);
    spec.failure_policy.action = FailureAction::Rollback;
    let mut sim = Sim::new(3, &[], spec);
    sim.nodes.get_mut("node-00").unwrap().probe_fails = true;
    run(&mut sim);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(sim.phase(), Phase::Failed);
    let n0 = sim.progress("node-00");
    assert_eq!(n0.step, NodeStep::RolledBack);
    assert_eq!(n0.failed_step, Some(NodeStep::Verify));
    // The reason survives the node's rollback, in the node and the condition.
    assert!(n0.failure.as_deref().unwrap().contains("probe \"web\""));
    let stalled = conditions::get(&sim.status.conditions, STALLED).unwrap();
    assert!(
        stalled.message.contains("node-00") && stalled.message.contains("probe \"web\""),
        "{}",
        stalled.message
    );
    let w = &sim.nodes["node-00"];
    assert!(w.kp_ready && !w.excluded && !w.dp_active && !w.unschedulable);
    assert!(
        sim.ds.is_some(),
        "kube-proxy is never deleted when a node failed"
    );
    // The user's template and strategy came back before node-00 lost the
    // label: its pod was created from the template the other nodes' pods
    // run, and no rolling update replaced any pod.
    assert_eq!((sim.ds, sim.ds_held), (Some(false), false));
    assert!(sim.nodes.values().all(|n| !n.kp_excluding_template));
    assert!(sim.rolled.is_empty(), "{:?}", sim.rolled);
}

#[test]
fn tolerated_failures_let_other_nodes_finish_but_keep_kube_proxy() {
    let mut spec = spec(1, 1);
    spec.failure_policy.max_failed_nodes = 1;
    spec.failure_policy.action = FailureAction::Rollback;
    let mut sim = Sim::new(3, &[], spec);
    sim.nodes.get_mut("node-01").unwrap().cleanup_fails = true;
    run(&mut sim);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(step_of(&sim, "node-00"), NodeStep::Done);
    assert_eq!(step_of(&sim, "node-01"), NodeStep::RolledBack);
    assert_eq!(step_of(&sim, "node-02"), NodeStep::Done);
    assert_eq!(sim.phase(), Phase::Failed);
    assert!(sim.ds.is_some() && sim.cm);
    // Every remaining pod (node-01's) runs the excluding template: the
    // strategy comes back alone, the exclusion stays for the migrated nodes.
    assert_eq!((sim.ds, sim.ds_held), (Some(true), false));
}

#[test]
fn finalisation_backs_up_before_deleting_and_keep_keeps() {
    let mut sim = Sim::new(2, &[], spec(0, 2));
    let mut saw_backup_first = false;
    for _ in 0..200 {
        let d = sim.decide();
        if d.actions.contains(&Action::DeleteKubeProxy) {
            assert!(sim.backup, "delete requested before the backup exists");
            saw_backup_first = true;
        }
        sim.reconcile(None);
        sim.tick(3, &|_| false);
        if sim.phase() == Phase::Succeeded {
            break;
        }
    }
    assert!(saw_backup_first);
    assert_eq!(
        sim.status.kube_proxy_backup.as_deref(),
        Some("switchyard-kube-proxy-backup-p")
    );

    let mut keep = spec(0, 2);
    keep.kube_proxy.on_success = KubeProxyDisposition::Keep;
    let mut sim = Sim::new(2, &[], keep);
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.ds.is_some() && sim.cm && sim.backup && !sim.status.kube_proxy_deleted);
    assert!(
        sim.nodes.values().all(|n| !n.kp_pod),
        "kept kube-proxy runs on no migrated node"
    );
    assert_eq!((sim.ds, sim.ds_held), (Some(true), false));
}

#[test]
fn reappearing_kube_proxy_is_reported_and_excluded_again() {
    let mut sim = Sim::new(2, &[], spec(0, 2));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    sim.ds = Some(false); // kubeadm upgrade re-created it, without our affinity
    sim.cm = true;
    sim.reconcile(None);
    assert!(conditions::is_true(
        &sim.status.conditions,
        "KubeProxyReappeared"
    ));
    assert_eq!((sim.ds, sim.ds_held), (Some(true), true));
    sim.tick(3, &|_| false);
    assert!(sim.nodes.values().all(|n| !n.kp_pod));
    sim.reconcile(None);
    assert_eq!((sim.ds, sim.ds_held), (Some(true), false));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn dry_run_plans_and_changes_nothing() {
    let mut s = spec(1, 2);
    s.dry_run = true;
    let mut sim = Sim::new(5, &[], s);
    let before = sim.nodes.clone();
    for _ in 0..5 {
        let d = sim.decide();
        assert!(
            d.actions.iter().all(|a| matches!(a, Action::Event(_))),
            "{:?}",
            d.actions
        );
        sim.reconcile(None);
    }
    assert_eq!(sim.phase(), Phase::Planned);
    assert_eq!(
        sim.status.waves.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![1, 2, 2]
    );
    assert_eq!(sim.nodes, before);
    assert!(conditions::is_true(&sim.status.conditions, READY));
}

#[test]
fn paused_plan_starts_no_new_node_and_resumes() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::Verify);
    sim.spec.paused = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Paused);
    assert_eq!(
        step_of(&sim, "node-00"),
        NodeStep::Done,
        "in-flight nodes finish"
    );
    assert_eq!(step_of(&sim, "node-01"), NodeStep::Pending);
    sim.spec.paused = false;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
}

#[test]
fn waves_wait_for_the_pause_between_them() {
    let mut s = spec(1, 1);
    s.strategy.pause_between_waves_seconds = 60;
    let mut sim = Sim::new(2, &[], s);
    until(&mut sim, "node-00", NodeStep::Done);
    let done_at = sim.now;
    until(&mut sim, "node-01", NodeStep::Cordon);
    assert!(
        sim.now - done_at >= 60,
        "next wave started after {}s",
        sim.now - done_at
    );
}

#[test]
fn whole_plan_rollback_restores_kube_proxy_from_backup() {
    let mut sim = Sim::new(3, &[2], spec(1, 2));
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    sim.spec.rollback = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::RolledBack);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(sim.ds.is_some() && sim.cm);
    // Re-created from the backup, every pod runs the excluding template:
    // the user's strategy comes back alone, restarting none of them.
    assert_eq!((sim.ds, sim.ds_held), (Some(true), false));
    assert!(sim.rolled.is_empty(), "{:?}", sim.rolled);
    for (name, n) in &sim.nodes {
        assert!(
            n.kp_ready && n.kp_rules && !n.excluded && !n.dp_active,
            "{name}: {n:?}"
        );
        assert_eq!(n.unschedulable, name == "node-02", "{name}");
    }
    // Reverse order: the last wave was rolled back first.
    let rolled_back: Vec<&str> = sim
        .events
        .iter()
        .filter(|e| e.reason == "NodeRolledBack")
        .filter_map(|e| e.node.as_deref())
        .collect();
    assert_eq!(rolled_back.len(), 3, "{rolled_back:?}");
    assert_eq!(rolled_back.last(), Some(&"node-00"), "{rolled_back:?}");
    // A migrated node's rollback is timed from when it left Done.
    let msg = &sim
        .events
        .iter()
        .rfind(|e| e.reason == "NodeRolledBack")
        .unwrap()
        .message;
    assert!(
        msg.contains(" after ") && msg.contains(": RestoreKubeProxy ") && !msg.contains("Done "),
        "{msg}"
    );
    assert!(sim.status.nodes.iter().all(|n| n.history.is_empty()));
}

#[test]
fn preflight_blocks_until_fixed() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    sim.nodes.get_mut("node-01").unwrap().agent_alive = false;
    sim.now += 120;
    for _ in 0..3 {
        sim.reconcile(None);
    }
    assert_eq!(sim.phase(), Phase::Preflight);
    assert!(
        sim.status
            .preflight
            .iter()
            .any(|f| f.reason == "AgentStale" && f.severity == Severity::Error)
    );
    assert!(conditions::is_true(&sim.status.conditions, STALLED));
    assert!(
        sim.nodes.values().all(|n| !n.unschedulable),
        "nothing touched while blocked"
    );
    sim.nodes.get_mut("node-01").unwrap().agent_alive = true;
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
}

#[test]
fn preflight_findings() {
    use crate::planner::preflight::check;
    let sim = Sim::new(1, &[], spec(1, 1));
    let mut base = sim.snapshot();
    base.external_services.clear();
    let targets = vec!["node-00".to_string()];
    assert!(check(&sim.spec, &base, &targets, sim.ts()).is_empty());

    let reasons =
        |snap: &crate::planner::Snapshot, spec: &MigrationPlanSpec| -> Vec<(String, Severity)> {
            check(spec, snap, &targets, sim.ts())
                .into_iter()
                .map(|f| (f.reason, f.severity))
                .collect()
        };
    let mut s = base.clone();
    s.kube_proxy.daemon_set = None;
    s.kube_proxy.config_map = None;
    s.api_server_endpoints.clear();
    s.datapaths.clear();
    let mut r = reasons(&s, &sim.spec);
    r.sort();
    assert_eq!(
        r,
        vec![
            ("AgentMissing".into(), Severity::Error),
            ("ApiServerUnknown".into(), Severity::Error),
            ("KubeProxyConfigMissing".into(), Severity::Error),
            ("KubeProxyDaemonSetMissing".into(), Severity::Error),
        ]
    );

    let mut s = base.clone();
    s.unsupported_services = vec!["default/sctp: SCTP".into()];
    s.kube_proxy.daemon_set.as_mut().unwrap().managed_by = vec!["Argo CD".into()];
    s.other_plans = vec![OtherPlan {
        name: "older".into(),
        phase: Phase::Preflight,
        older: true,
        holds_nodes: false,
    }];
    let r = reasons(&s, &sim.spec);
    assert!(r.contains(&("UnsupportedServices".into(), Severity::Error)));
    assert!(r.contains(&("KubeProxyManaged".into(), Severity::Warning)));
    assert!(r.contains(&("AnotherPlanActive".into(), Severity::Error)));
    let mut allow = sim.spec.clone();
    allow.allow_unsupported = true;
    assert!(reasons(&s, &allow).contains(&("UnsupportedServices".into(), Severity::Warning)));
    // A younger plan still in preflight does not block an older one.
    s.other_plans = vec![OtherPlan {
        name: "younger".into(),
        phase: Phase::Preflight,
        older: false,
        holds_nodes: false,
    }];
    assert!(
        !reasons(&s, &sim.spec)
            .iter()
            .any(|(r, _)| r == "AnotherPlanActive")
    );

    let mut s = base.clone();
    s.kube_proxy.config_map.as_mut().unwrap().mode = Some("userspace".into());
    assert!(reasons(&s, &sim.spec).contains(&("KubeProxyModeUnsupported".into(), Severity::Error)));
}

#[test]
fn a_node_that_disappears_is_gone_and_the_plan_finishes() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    until(&mut sim, "node-01", NodeStep::ActivateDatapath);
    sim.nodes.remove("node-01");
    run(&mut sim);
    assert_eq!(step_of(&sim, "node-01"), NodeStep::Gone);
    assert_eq!(sim.phase(), Phase::Succeeded);
}

#[test]
fn a_node_that_joins_is_migrated_in_a_last_wave() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::Done);
    let mut late = sim.nodes["node-01"].clone();
    late.unschedulable = false;
    sim.nodes.insert("node-09".into(), late);
    run(&mut sim);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert_eq!(
        sim.status.waves.last().unwrap(),
        &vec!["node-09".to_string()]
    );
    assert_eq!(step_of(&sim, "node-09"), NodeStep::Done);
}

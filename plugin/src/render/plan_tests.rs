use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use switchyard_api::{MigrationPlanSpec, Phase, Summary};

use super::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).unwrap_or_default())
}

fn now() -> Timestamp {
    at(100).0
}

fn node(name: &str, wave: u32, step: NodeStep) -> NodeProgress {
    NodeProgress {
        name: name.into(),
        wave,
        step,
        ..NodeProgress::default()
    }
}

fn plan(status: Option<MigrationPlanStatus>) -> MigrationPlan {
    let mut p = MigrationPlan::new("to-ebpf", MigrationPlanSpec::default());
    p.metadata = ObjectMeta {
        name: Some("to-ebpf".into()),
        creation_timestamp: Some(at(-20)),
        ..ObjectMeta::default()
    };
    p.status = status;
    p
}

/// A plan mid-migration: node1 done in 2 s, node2 in Verify for 4 s,
/// node3 pending.
fn migrating() -> MigrationPlanStatus {
    let mut done = node("node1", 0, NodeStep::Done);
    done.started_at = Some(at(80));
    done.step_started_at = Some(at(82));
    let mut verify = node("node2", 1, NodeStep::Verify);
    verify.started_at = Some(at(90));
    verify.step_started_at = Some(at(96));
    verify.message = Some("waiting for probe results (request 1)".into());
    verify.verify_peer = Some("node1".into());
    verify.reached = NodeStep::Verify;
    MigrationPlanStatus {
        phase: Phase::Migrating,
        waves: vec![
            vec!["node1".into()],
            vec!["node2".into()],
            vec!["node3".into()],
        ],
        current_wave: Some(1),
        nodes: vec![done, verify, node("node3", 2, NodeStep::Pending)],
        summary: Summary {
            total: 3,
            pending: 1,
            in_progress: 1,
            migrated: 1,
            ..Summary::default()
        },
        started_at: Some(at(80)),
        ..MigrationPlanStatus::default()
    }
}

#[test]
fn status_shows_each_nodes_step_and_how_long() {
    let out = plan_status(&plan(Some(migrating())), now(), Width::Table);
    assert_eq!(
        out,
        "to-ebpf: Migrating, 1/3 migrated (1 in progress, 1 pending), in wave 1 (waves 0-2), for 20s\n\
         \n\
         NODE    WAVE   STEP      TIME                 MESSAGE\n\
         node1   0      Done      took 2s\n\
         node2   1      Verify    for 4s, 10s in all   waiting for probe results (request 1)\n\
         node3   2      Pending\n"
    );
}

#[test]
fn nodes_counted_in_their_wave_get_their_row_with_the_waves_time() {
    // As the operator records it: node1 and node3 in their waves' summaries.
    let recorded = migrating().compacted();
    assert_eq!(recorded.nodes.len(), 1, "{recorded:?}");
    let out = plan_status(&plan(Some(recorded)), now(), Width::Table);
    assert!(
        out.ends_with(
            "node1   0      Done      wave took 2s\n\
             node2   1      Verify    for 4s, 10s in all   waiting for probe results (request 1)\n\
             node3   2      Pending\n"
        ),
        "{out}"
    );
}

#[test]
fn wide_adds_the_reached_step_failed_step_and_peer() {
    let out = plan_status(&plan(Some(migrating())), now(), Width::Wide);
    let header = out.lines().nth(2).unwrap_or_default();
    assert!(header.contains("REACHED   FAILED-STEP   PEER"), "{out}");
    let node2 = out
        .lines()
        .find(|l| l.starts_with("node2"))
        .unwrap_or_default();
    // Reached Verify, no failed step, probed from node1.
    assert!(node2.contains("10s in all   Verify "), "{node2}");
    assert!(node2.contains("   node1   waiting for probe"), "{node2}");
}

#[test]
fn a_failed_node_shows_its_failure_and_a_finished_plan_its_duration() {
    let mut s = migrating();
    s.phase = Phase::Failed;
    s.completed_at = Some(at(95));
    s.message = Some("1 node failed".into());
    let long = "probe \"web\" failed ".repeat(10);
    if let Some(n) = s.nodes.get_mut(1) {
        n.step = NodeStep::Failed;
        n.failed_step = Some(NodeStep::Verify);
        n.step_started_at = Some(at(40));
        n.message = None;
        n.failure = Some(long.clone());
    }
    let out = plan_status(&plan(Some(s.clone())), now(), Width::Table);
    assert!(
        out.contains(", took 15s\nmessage: 1 node failed\n"),
        "{out}"
    );
    let node2 = out
        .lines()
        .find(|l| l.starts_with("node2"))
        .unwrap_or_default();
    assert!(node2.contains("failed 60s ago"), "{node2}");
    assert!(node2.ends_with('…') && !node2.contains(&long), "{node2}");
    let wide = plan_status(&plan(Some(s)), now(), Width::Wide);
    assert!(wide.contains(long.trim_end()), "{wide}");
}

#[test]
fn a_plan_without_status_says_the_controller_has_not_seen_it() {
    let out = plan_status(&plan(None), now(), Width::Table);
    assert_eq!(out, "to-ebpf: no status yet (waiting for the controller)\n");
}

#[test]
fn every_plan_on_one_line() {
    let out = plans_table(&[plan(Some(migrating())), plan(None)], now(), Width::Table);
    assert_eq!(
        out,
        "NAME      PHASE       MIGRATED   IN-PROGRESS   FAILED   WAVE   AGE\n\
         to-ebpf   Migrating   1/3        1             0        1      2m0s\n\
         to-ebpf               0/0        0             0               2m0s\n"
    );
    assert_eq!(
        plans_table(&[], now(), Width::Wide),
        "No migration plans found.\n"
    );
}

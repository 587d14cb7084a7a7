use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::{MigrationPlanStatus, NodeProgress, NodeStep, Phase, StepRecord};

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_790_000_000 + secs).unwrap_or_default())
}

/// A node of wave `wave` migrated: started at `start`, done at `end`.
fn done(name: &str, wave: u32, start: i64, end: i64) -> NodeProgress {
    NodeProgress {
        name: name.into(),
        wave,
        step: NodeStep::Done,
        started_at: Some(at(start)),
        step_started_at: Some(at(end)),
        reached: NodeStep::Uncordon,
        cleanup_generation: 1,
        probe_generation: 1,
        ..NodeProgress::default()
    }
}

fn pending(name: &str, wave: u32) -> NodeProgress {
    NodeProgress {
        name: name.into(),
        wave,
        ..NodeProgress::default()
    }
}

/// A node in Verify, as the planner leaves it while it waits for the peer.
fn verifying(name: &str, wave: u32, start: i64, peer: &str) -> NodeProgress {
    let steps = [
        NodeStep::Cordon,
        NodeStep::ActivateDatapath,
        NodeStep::RemoveKubeProxy,
        NodeStep::FlushRules,
    ];
    NodeProgress {
        name: name.into(),
        wave,
        step: NodeStep::Verify,
        holds_cordon: true,
        started_at: Some(at(start)),
        step_started_at: Some(at(start + 9)),
        history: (0..)
            .zip(steps)
            .map(|(i, step)| StepRecord {
                step,
                completed_at: at(start + 1 + 2 * i),
            })
            .collect(),
        reached: NodeStep::Verify,
        cleanup_generation: 1,
        probe_generation: 1,
        verify_peer: Some(peer.into()),
        peer_probe_generation: 7,
        message: Some(format!(
            "waiting for node {peer} to probe this node's NodePort and health port from outside (request 7)"
        )),
        ..NodeProgress::default()
    }
}

/// A plan over `names` in waves of `wave_size`: waves before `current`
/// migrated, `current` in Verify (`None`: every wave migrated).
fn plan(names: &[String], wave_size: usize, current: Option<usize>) -> MigrationPlanStatus {
    let waves: Vec<Vec<String>> = names.chunks(wave_size).map(<[String]>::to_vec).collect();
    let last = waves.len() - 1;
    let current_wave = current.unwrap_or(last);
    let mut nodes = Vec::new();
    for (w, names) in waves.iter().enumerate() {
        let start = 100 * w as i64;
        for (i, name) in names.iter().enumerate() {
            let wave = w as u32;
            nodes.push(match current {
                Some(c) if w == c => verifying(name, wave, start, &waves[0][0]),
                Some(c) if w > c => pending(name, wave),
                _ => done(name, wave, start, start + 20 + (i % 50) as i64),
            });
        }
    }
    let mut st = MigrationPlanStatus {
        phase: if current.is_some() {
            Phase::Migrating
        } else {
            Phase::Succeeded
        },
        waves,
        current_wave: Some(current_wave as u32),
        nodes,
        started_at: Some(at(0)),
        ..MigrationPlanStatus::default()
    };
    st.summary.total = names.len() as u32;
    st
}

/// `s` with every summarised finished node's finish time replaced by its
/// wave's latest (what compaction gives up).
fn with_wave_finish(s: &MigrationPlanStatus, compact: &MigrationPlanStatus) -> MigrationPlanStatus {
    let listed: Vec<&str> = compact.nodes.iter().map(|p| p.name.as_str()).collect();
    let mut out = s.clone();
    for p in out
        .nodes
        .iter_mut()
        .filter(|p| !listed.contains(&p.name.as_str()))
    {
        p.step_started_at = compact.wave_progress[p.wave as usize].finished_at.clone();
    }
    out
}

fn short_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i:05}")).collect()
}

/// EC2-style names: `ip-10-0-12-34.ec2.internal`.
fn ec2_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("ip-10-0-{}-{}.ec2.internal", 10 + i / 250, 4 + i % 250))
        .collect()
}

#[test]
fn a_finished_plan_keeps_no_entry_per_node_and_expands_back() {
    let full = plan(&short_names(40), 10, None);
    let compact = full.compacted();
    assert!(compact.nodes.is_empty(), "{:?}", compact.nodes);
    assert_eq!(compact.wave_progress.len(), 4);
    let w1 = &compact.wave_progress[1];
    assert_eq!((w1.nodes, w1.step), (10, NodeStep::Done));
    assert_eq!(w1.started_at, Some(at(100)));
    assert_eq!(w1.finished_at, Some(at(129)));
    assert_eq!(compact.expanded(), with_wave_finish(&full, &compact));
    assert_eq!(compact.expanded().compacted(), compact);
}

#[test]
fn nodes_in_flight_keep_their_entries_pending_ones_are_counted() {
    let full = plan(&short_names(40), 10, Some(2));
    let compact = full.compacted();
    let listed: Vec<NodeStep> = compact.nodes.iter().map(|p| p.step).collect();
    assert_eq!(listed, vec![NodeStep::Verify; 10]);
    let w3 = &compact.wave_progress[3];
    assert_eq!(
        (w3.nodes, w3.step, w3.started_at.clone()),
        (10, NodeStep::Pending, None)
    );
    assert_eq!(compact.wave_progress[2].nodes, 0);
    assert_eq!(compact.expanded(), with_wave_finish(&full, &compact));
}

#[test]
fn a_node_unlike_its_wave_keeps_its_entry() {
    let mut full = plan(&short_names(20), 10, None);
    // Retried after a rollback: it started later than its wave.
    full.nodes[3].started_at = Some(at(50));
    // A cleanup sent again after kube-proxy came back.
    full.nodes[12].cleanup_generation = 2;
    let compact = full.compacted();
    let listed: Vec<&str> = compact.nodes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(listed, ["node-00003", "node-00012"]);
    assert_eq!(compact.expanded(), with_wave_finish(&full, &compact));
}

#[test]
fn a_status_with_every_entry_expands_to_itself() {
    let full = plan(&short_names(20), 10, Some(1));
    assert_eq!(full.expanded(), full);
    // What an earlier operator recorded: no wave summaries.
    let read: MigrationPlanStatus =
        serde_json::from_str(&serde_json::to_string(&full).unwrap_or_default()).unwrap_or_default();
    assert_eq!(read.expanded(), full);
}

/// The recorded status's size (JSON, as the API server stores it) for a
/// plan over 1 000 and 5 000 nodes in waves of 10%, finished and in the
/// middle of a wave (its nodes in Verify, each with its entry in full:
/// about 600 bytes a node in flight, so the size mid-wave grows with the
/// wave). Run with `cargo test -p switchyard-api status_size -- --nocapture`
/// for the figures.
#[test]
fn status_size_at_scale() {
    let size = |st: &MigrationPlanStatus| serde_json::to_vec(st).map_or(0, |v| v.len());
    for n in [1000, 5000] {
        for (style, names) in [("node-01234", short_names(n)), ("ec2", ec2_names(n))] {
            for (what, current) in [("finished", None), ("mid-wave", Some(4))] {
                let full = plan(&names, n / 10, current);
                let (before, after) = (size(&full), size(&full.compacted()));
                println!(
                    "{n} nodes, {style} names, {what}: {before} bytes with an entry per node, \
                     {after} bytes recorded ({:.1} bytes a node)",
                    after as f64 / n as f64
                );
                // Mid-wave, half of etcd's request limit: the wave's nodes
                // in flight keep their entries in full.
                let bound = match current {
                    None => 256 * 1024,
                    Some(_) => 768 * 1024,
                };
                assert!(after < bound, "{after} bytes");
            }
        }
    }
}

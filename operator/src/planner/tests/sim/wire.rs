//! The status as the controller records it: compacted per wave. The
//! planner must decide the same from it as from every node's progress,
//! and compaction must give up nothing but the summarised nodes' own
//! finish times.

use switchyard_api::{MigrationPlanStatus, NodeStep};

use super::Sim;
use crate::planner::Decision;

impl Sim {
    /// `d`: the decision from the status read back from its compacted
    /// form; `from_full`: the one from the status never compacted.
    pub(super) fn check_wire(&mut self, d: &Decision, from_full: &Decision) {
        if d.actions != from_full.actions
            || d.requeue_after_secs != from_full.requeue_after_secs
            || d.release != from_full.release
            || recorded(&d.status) != recorded(&from_full.status)
        {
            self.violations.push(format!(
                "the recorded (compacted) status changes the decision: {:?} vs {:?}",
                d.actions, from_full.actions
            ));
        }
        if let Some(lost) = round_trip_loss(&d.status) {
            self.violations.push(lost);
        }
    }
}

/// The status as recorded, without finished nodes' finish times: once
/// summarised, a node's own is gone (its wave's latest stands for it, also
/// when the node gets an entry of its own again, e.g. when the rest of
/// its wave finished otherwise).
fn recorded(st: &MigrationPlanStatus) -> MigrationPlanStatus {
    let mut out = st.compacted();
    for w in &mut out.wave_progress {
        w.finished_at = None;
    }
    for p in &mut out.nodes {
        if matches!(p.step, NodeStep::Done | NodeStep::RolledBack) {
            p.step_started_at = None;
        }
    }
    out
}

/// What compacting `full` and expanding it again changes besides the
/// summarised nodes' finish times (`stepStartedAt`, given back as their
/// wave's latest), if anything.
fn round_trip_loss(full: &MigrationPlanStatus) -> Option<String> {
    let compact = full.compacted();
    let back = compact.expanded();
    if back.compacted() != compact {
        return Some("compacting an expanded status changes it".into());
    }
    if back.nodes.len() != full.nodes.len() || back.waves != full.waves {
        return Some(format!(
            "the compacted status loses nodes: {} of {}",
            back.nodes.len(),
            full.nodes.len()
        ));
    }
    let listed = |name: &str| compact.nodes.iter().any(|p| p.name == name);
    for (a, b) in full.nodes.iter().zip(&back.nodes) {
        let mut a = a.clone();
        if !listed(&a.name) {
            let wave = compact.wave_progress.get(a.wave as usize);
            a.step_started_at = wave.and_then(|w| w.finished_at.clone());
        }
        if a != *b {
            return Some(format!("compaction changes a node: {a:?} became {b:?}"));
        }
    }
    let rest = |s: &MigrationPlanStatus| MigrationPlanStatus {
        nodes: Vec::new(),
        ..s.clone()
    };
    (rest(full) != rest(&back)).then(|| "compaction changes the plan's fields".into())
}

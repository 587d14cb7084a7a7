//! The plan status as stored: most nodes of a wave share their progress
//! (every node of a wave not yet started is `Pending` with nothing
//! recorded; the nodes of a migrated wave started together and finished
//! alike), so only the nodes unlike the rest of their wave get an entry of
//! their own and the others are counted in the wave's [`WaveProgress`].
//! The status of a plan over thousands of nodes then stays far below
//! etcd's request size limit (1.5 MiB by default): node names appear once,
//! in `waves`.
//!
//! The operator decides on the expanded form (an entry per node) and
//! records the compacted one. The one thing compaction gives up is each
//! summarised finished node's own finish time (`stepStartedAt`): the
//! wave's latest finish stands in for it. Nothing decides on it (a
//! finished node takes no step, so no step timeout runs); the node's
//! `NodeMigrated` or `NodeRolledBack` event and its NodeDatapath status
//! keep its own timings.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{MigrationPlanStatus, NodeProgress, NodeStep, WaveProgress};

/// What a summarised node shares with the others of its wave.
type Shape = (NodeStep, Option<Timestamp>, NodeStep, i64, i64);

/// A wave's candidate shapes: each with where it was first seen and the
/// indexes of its nodes.
type Shapes = BTreeMap<Shape, (usize, Vec<usize>)>;

impl MigrationPlanStatus {
    /// The status with an entry per node in `nodes`, in wave order: a node
    /// of a wave without an entry gets the progress its wave's
    /// [`WaveProgress`] gives (`Pending` with nothing recorded when there
    /// is none). A status with an entry per node comes back unchanged but
    /// for the order.
    pub fn expanded(&self) -> MigrationPlanStatus {
        let mut listed: HashMap<&str, &NodeProgress> =
            self.nodes.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut nodes = Vec::with_capacity(self.waves.iter().map(Vec::len).sum());
        for (i, names) in self.waves.iter().enumerate() {
            let wave = self.wave_progress.get(i);
            for name in names {
                match listed.remove(name.as_str()) {
                    Some(p) => nodes.push(p.clone()),
                    None => nodes.push(implied(name, i as u32, wave)),
                }
            }
        }
        // Entries of no wave (the planner writes none) are kept, last.
        nodes.extend(
            self.nodes
                .iter()
                .filter(|p| listed.contains_key(p.name.as_str()))
                .cloned(),
        );
        MigrationPlanStatus {
            nodes,
            wave_progress: Vec::new(),
            waves: self.waves.clone(),
            ..self.without_nodes()
        }
    }

    /// The status as recorded: per wave, the nodes that share the wave's
    /// most common finished (or never started) progress are counted in its
    /// [`WaveProgress`] and have no entry in `nodes`; every other node
    /// keeps its entry. `expanded()` gives back the same status, but for
    /// the summarised nodes' own finish times (the wave's latest instead).
    pub fn compacted(&self) -> MigrationPlanStatus {
        let full = self.expanded();
        if full.waves.is_empty() {
            return full;
        }
        let mut summarised: Vec<bool> = vec![false; full.nodes.len()];
        let wave_progress = by_wave(&full)
            .into_iter()
            .map(|shapes| {
                let (progress, members) = summarise(&full.nodes, shapes);
                for m in members {
                    summarised[m] = true;
                }
                progress
            })
            .collect();
        let nodes = full
            .nodes
            .iter()
            .zip(&summarised)
            .filter(|(_, s)| !**s)
            .map(|(p, _)| p.clone())
            .collect();
        MigrationPlanStatus {
            nodes,
            wave_progress,
            waves: full.waves.clone(),
            ..full.without_nodes()
        }
    }

    /// A copy of everything but the per-node lists (`waves`, `nodes`,
    /// `waveProgress`): those are what is large.
    fn without_nodes(&self) -> MigrationPlanStatus {
        MigrationPlanStatus {
            phase: self.phase,
            conditions: self.conditions.clone(),
            observed_generation: self.observed_generation,
            observed_retry: self.observed_retry,
            waves: Vec::new(),
            wave_progress: Vec::new(),
            current_wave: self.current_wave,
            wave_completed_at: self.wave_completed_at.clone(),
            nodes: Vec::new(),
            summary: self.summary.clone(),
            preflight: self.preflight.clone(),
            kube_proxy_mode: self.kube_proxy_mode.clone(),
            kube_proxy_node_ports: self.kube_proxy_node_ports.clone(),
            api_server: self.api_server.clone(),
            kube_proxy_backup: self.kube_proxy_backup.clone(),
            kube_proxy_deleted: self.kube_proxy_deleted,
            started_at: self.started_at.clone(),
            completed_at: self.completed_at.clone(),
            message: self.message.clone(),
        }
    }
}

/// The progress `wave` gives node `name` that has no entry of its own.
fn implied(name: &str, wave: u32, summary: Option<&WaveProgress>) -> NodeProgress {
    let mut p = NodeProgress {
        name: name.to_string(),
        wave,
        ..NodeProgress::default()
    };
    if let Some(s) = summary {
        p.step = s.step;
        p.started_at = s.started_at.clone();
        p.step_started_at = s.finished_at.clone();
        p.reached = s.reached;
        p.cleanup_generation = s.cleanup_generation;
        p.probe_generation = s.probe_generation;
    }
    p
}

/// Per wave, the nodes its summary could stand for, grouped by shape:
/// each shape with the position it was first seen at and the indexes of
/// its nodes in `full.nodes`. Only a node whose entry is where its name is
/// in `waves` (as [`MigrationPlanStatus::expanded`] puts it) and names
/// that same wave.
fn by_wave(full: &MigrationPlanStatus) -> Vec<Shapes> {
    let mut out: Vec<Shapes> = vec![BTreeMap::new(); full.waves.len()];
    let position = full
        .waves
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |_| i));
    for ((k, p), wave) in full.nodes.iter().enumerate().zip(position) {
        if p.wave as usize != wave {
            continue;
        }
        if let Some(shape) = shape(p) {
            let shapes = &mut out[wave];
            let first = shapes.len();
            shapes.entry(shape).or_insert((first, Vec::new())).1.push(k);
        }
    }
    out
}

/// A wave's summary, and the indexes in `nodes` of the nodes it stands
/// for: those of the wave's most common shape (the first seen among
/// equals, so the choice is deterministic).
fn summarise(nodes: &[NodeProgress], shapes: Shapes) -> (WaveProgress, Vec<usize>) {
    let best = shapes
        .into_iter()
        .max_by_key(|(_, (first, members))| (members.len(), std::cmp::Reverse(*first)));
    let Some(((step, started_at, reached, cleanup, probe), (_, members))) = best else {
        return (WaveProgress::default(), Vec::new());
    };
    let finished_at = members
        .iter()
        .filter_map(|&i| nodes[i].step_started_at.as_ref().map(|t| t.0))
        .max();
    let progress = WaveProgress {
        nodes: members.len() as u32,
        step,
        started_at: started_at.map(Time),
        finished_at: finished_at.map(Time),
        reached,
        cleanup_generation: cleanup,
        probe_generation: probe,
    };
    (progress, members)
}

/// What node `p` shares with the others of its wave, if its wave's summary
/// can stand for it: it is `Pending` with nothing recorded but request
/// generations, or finished (`Done`, `RolledBack`) without a failure, a
/// cordon, a peer or anything else of its own. Its finish time is the
/// only field the summary does not give back.
fn shape(p: &NodeProgress) -> Option<Shape> {
    let finished = matches!(p.step, NodeStep::Done | NodeStep::RolledBack);
    let plain = (finished || (p.step == NodeStep::Pending && p.step_started_at.is_none()))
        && !p.holds_cordon
        && p.history.is_empty()
        && p.failed_step.is_none()
        && p.failure.is_none()
        && p.verify_peer.is_none()
        && p.peer_probe_generation == 0
        && !p.kube_proxy_returned
        && p.message.is_none();
    plain.then(|| {
        (
            p.step,
            p.started_at.as_ref().map(|t| t.0),
            p.reached,
            p.cleanup_generation,
            p.probe_generation,
        )
    })
}

#[cfg(test)]
mod tests;

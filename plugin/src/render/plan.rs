//! `kubectl switchyard status`: one plan's per-node steps, or every plan on
//! a line.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use switchyard_api::{MigrationPlan, MigrationPlanStatus, NodeProgress, NodeStep, Phase};

use super::{Width, human, span, table, truncate};

/// Messages longer than this are cut in the `table` layout (`wide` shows
/// them whole): a waiting Verify step names every probe it waits for.
const MESSAGE_WIDTH: usize = 100;

/// The summary line, the plan's message, and the per-node step table.
pub fn plan_status(plan: &MigrationPlan, now: Timestamp, width: Width) -> String {
    let name = plan.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = plan.status.as_ref() else {
        return format!("{name}: no status yet (waiting for the controller)\n");
    };
    let mut out = format!("{name}: {}\n", summary_line(status, now));
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        out.push_str(&format!("message: {message}\n"));
    }
    // The recorded status counts most finished or pending nodes per wave:
    // every node gets its row from the expanded one.
    let full = status.expanded();
    if full.nodes.is_empty() {
        return out;
    }
    out.push('\n');
    let own: BTreeSet<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
    let (headers, rows) = node_table(&full.nodes, &own, now, width);
    out.push_str(&table(&headers, &rows));
    out
}

/// `Migrating, 1/3 migrated (1 in progress, 1 pending), in wave 1 (waves 0-2), for 12s`.
fn summary_line(status: &MigrationPlanStatus, now: Timestamp) -> String {
    let s = &status.summary;
    let mut line = format!("{:?}, {}/{} migrated", status.phase, s.migrated, s.total);
    let counts: Vec<String> = [
        (s.in_progress, "in progress"),
        (s.pending, "pending"),
        (s.failed, "failed"),
        (s.rolled_back, "rolled back"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if !counts.is_empty() {
        line.push_str(&format!(" ({})", counts.join(", ")));
    }
    // The wave index stays in the status once the plan ends; it only says
    // something while nodes move.
    let moving = matches!(status.phase, Phase::Migrating | Phase::Paused);
    if let Some(wave) = status
        .current_wave
        .filter(|_| moving && !status.waves.is_empty())
    {
        // Waves are numbered from 0, as in the WAVE column and the status.
        line.push_str(&format!(
            ", in wave {wave} (waves 0-{})",
            status.waves.len() - 1
        ));
    }
    match (&status.started_at, &status.completed_at) {
        (Some(start), Some(end)) => line.push_str(&format!(", took {}", human(span(start, end.0)))),
        (Some(start), None) => line.push_str(&format!(", for {}", human(span(start, now)))),
        _ => {}
    }
    line
}

/// The per-node table; `own`: the nodes with an entry of their own in the
/// recorded status (the others' finish time is their wave's).
fn node_table(
    nodes: &[NodeProgress],
    own: &BTreeSet<&str>,
    now: Timestamp,
    width: Width,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut headers = vec!["NODE", "WAVE", "STEP", "TIME"];
    if width == Width::Wide {
        headers.extend(["REACHED", "FAILED-STEP", "PEER"]);
    }
    headers.push("MESSAGE");
    let rows = nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.name.clone(),
                n.wave.to_string(),
                format!("{:?}", n.step),
                node_time(n, own.contains(n.name.as_str()), now),
            ];
            if width == Width::Wide {
                row.push(format!("{:?}", n.reached));
                row.push(n.failed_step.map(|s| format!("{s:?}")).unwrap_or_default());
                row.push(n.verify_peer.clone().unwrap_or_default());
            }
            row.push(node_message(n, width));
            row
        })
        .collect();
    (headers, rows)
}

/// How long the node has been in its step (and in the plan), or how long
/// its whole migration or rollback took once it finished (for a node
/// counted in its wave's summary, `own` false, how long its wave took: its
/// own finish time is in its `NodeMigrated` event).
fn node_time(n: &NodeProgress, own: bool, now: Timestamp) -> String {
    let (Some(started), Some(step_started)) = (&n.started_at, &n.step_started_at) else {
        return String::new();
    };
    match n.step {
        // A finished node's step start is when it finished.
        NodeStep::Done | NodeStep::RolledBack if own => {
            format!("took {}", human(span(started, step_started.0)))
        }
        NodeStep::Done | NodeStep::RolledBack => {
            format!("wave took {}", human(span(started, step_started.0)))
        }
        NodeStep::Failed => format!("failed {} ago", human(span(step_started, now))),
        NodeStep::Pending | NodeStep::Gone => String::new(),
        _ => format!(
            "for {}, {} in all",
            human(span(step_started, now)),
            human(span(started, now))
        ),
    }
}

/// The node's message; a failed node's failure when it has no other.
fn node_message(n: &NodeProgress, width: Width) -> String {
    let text = n
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .or(n.failure.as_deref())
        .unwrap_or_default();
    match width {
        Width::Table => truncate(text, MESSAGE_WIDTH),
        Width::Wide => text.to_string(),
    }
}

/// Every plan on one line, oldest first (as the API server lists them).
pub fn plans_table(plans: &[MigrationPlan], now: Timestamp, width: Width) -> String {
    let mut headers = vec![
        "NAME",
        "PHASE",
        "MIGRATED",
        "IN-PROGRESS",
        "FAILED",
        "WAVE",
        "AGE",
    ];
    if width == Width::Wide {
        headers.push("MESSAGE");
    }
    let rows: Vec<Vec<String>> = plans
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let phase = match &p.status {
                Some(_) => format!("{:?}", status.phase),
                None => String::new(),
            };
            let mut row = vec![
                p.metadata.name.clone().unwrap_or_default(),
                phase,
                format!("{}/{}", status.summary.migrated, status.summary.total),
                status.summary.in_progress.to_string(),
                status.summary.failed.to_string(),
                status
                    .current_wave
                    .map(|w| w.to_string())
                    .unwrap_or_default(),
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| human(span(t, now)))
                    .unwrap_or_default(),
            ];
            if width == Width::Wide {
                row.push(status.message.unwrap_or_default());
            }
            row
        })
        .collect();
    if rows.is_empty() {
        return "No migration plans found.\n".to_string();
    }
    table(&headers, &rows)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

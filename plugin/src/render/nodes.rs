//! `kubectl switchyard nodes`: each node's datapath as its agent reports
//! it, and whether the agent is alive (its Lease).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use switchyard_api::{AGENT_LEASE_DURATION_SECS, NodeDatapath, conditions};

use super::{Width, human, table};

/// One node's line; also what `-o json|yaml` prints, so scripts read the
/// same fields the table shows.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    /// `spec.mode`: what the operator asks for.
    pub mode: String,
    /// `status.activeMode`: what the agent has in effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_mode: Option<String>,
    pub services_programmed: u32,
    pub services_seen: u32,
    /// Datapath drops since activation, all reasons.
    pub drops: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Seconds since the agent last renewed its Lease; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_seconds: Option<f64>,
    /// Renewed within the Lease's duration (the operator's own test).
    pub agent_alive: bool,
    /// The `Ready` condition's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Interfaces the ingress program runs on, or why it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
}

/// One row per NodeDatapath, its agent's Lease looked up by node name.
pub fn node_rows(datapaths: &[NodeDatapath], leases: &[Lease], now: Timestamp) -> Vec<NodeRow> {
    let leases: BTreeMap<&str, &Lease> = leases
        .iter()
        .filter_map(|l| Some((l.metadata.name.as_deref()?, l)))
        .collect();
    datapaths
        .iter()
        .map(|d| {
            let name = d.metadata.name.clone().unwrap_or_default();
            let lease = leases.get(name.as_str()).and_then(|l| lease_age(l, now));
            let mut row = status_fields(d);
            row.name = name;
            row.mode = format!("{:?}", d.spec.mode);
            row.heartbeat_age_seconds = lease.map(|(age, _)| age);
            row.agent_alive = lease.is_some_and(|(age, duration)| age <= duration);
            row
        })
        .collect()
}

/// The fields the agent reports in the status.
fn status_fields(d: &NodeDatapath) -> NodeRow {
    let Some(st) = d.status.as_ref() else {
        return NodeRow::default();
    };
    let ingress = st.ingress.as_ref().map(|i| match &i.unavailable {
        Some(why) => format!("unavailable: {why}"),
        None => i.interfaces.join(","),
    });
    NodeRow {
        active_mode: st.active_mode.map(|m| format!("{m:?}")),
        services_programmed: st.sync.services_programmed,
        services_seen: st.sync.services_seen,
        drops: st.drops.values().sum(),
        drops_by_reason: st.drops.clone(),
        ready: conditions::get(&st.conditions, conditions::READY).map(|c| c.status.clone()),
        agent_version: st.agent_version.clone(),
        kernel: st.capabilities.as_ref().map(|c| c.kernel.clone()),
        ingress,
        ..NodeRow::default()
    }
}

/// Seconds since the Lease was renewed, and its duration (`None` when it
/// was never renewed).
fn lease_age(l: &Lease, now: Timestamp) -> Option<(f64, f64)> {
    let spec = l.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?;
    let duration = spec
        .lease_duration_seconds
        .unwrap_or(AGENT_LEASE_DURATION_SECS);
    Some((
        now.duration_since(renewed.0).as_secs_f64(),
        f64::from(duration),
    ))
}

/// The rows as a table.
pub fn nodes_table(rows: &[NodeRow], width: Width) -> String {
    if rows.is_empty() {
        return "No NodeDatapaths found (is the switchyard agent installed?).\n".to_string();
    }
    let mut headers = vec![
        "NODE",
        "MODE",
        "ACTIVE",
        "SERVICES",
        "DROPS",
        "READY",
        "HEARTBEAT",
    ];
    if width == Width::Wide {
        headers.extend(["AGENT", "KERNEL", "INGRESS", "DROPS-BY-REASON"]);
    }
    let cells: Vec<Vec<String>> = rows.iter().map(|r| row_cells(r, width)).collect();
    table(&headers, &cells)
}

fn row_cells(r: &NodeRow, width: Width) -> Vec<String> {
    let heartbeat = match r.heartbeat_age_seconds {
        None => "<no lease>".to_string(),
        Some(age) if r.agent_alive => format!("{} ago", human(age)),
        Some(age) => format!("{} ago (expired)", human(age)),
    };
    let mut cells = vec![
        r.name.clone(),
        r.mode.clone(),
        r.active_mode.clone().unwrap_or_else(|| "<unknown>".into()),
        format!("{}/{}", r.services_programmed, r.services_seen),
        r.drops.to_string(),
        r.ready.clone().unwrap_or_else(|| "Unknown".into()),
        heartbeat,
    ];
    if width == Width::Wide {
        let reasons: Vec<String> = r
            .drops_by_reason
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        cells.extend([
            r.agent_version.clone().unwrap_or_default(),
            r.kernel.clone().unwrap_or_default(),
            r.ingress.clone().unwrap_or_default(),
            reasons.join(","),
        ]);
    }
    cells
}

#[cfg(test)]
#[path = "nodes_tests.rs"]
mod tests;

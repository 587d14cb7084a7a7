//! The migration planner: a pure function
//! `(plan spec, plan status, observed cluster, now) → (actions, new status)`.
//!
//! No client, no async, no clock. The controller gathers a [`Snapshot`],
//! calls [`plan`], writes the returned status (status subresource) and then
//! applies the actions. Every action is an idempotent "ensure" derived from a
//! step already recorded in the status, so a crash at any point followed by
//! a re-run converges to the same place.

pub mod actions;
mod deletion;
mod node;
mod phases;
pub mod preflight;
pub mod snapshot;
pub mod waves;

pub use actions::{Action, Event};
pub use snapshot::*;

use k8s_openapi::jiff::Timestamp;
use switchyard_api::{MigrationPlanSpec, MigrationPlanStatus, NodePortAddresses, NodeProgress};

/// Errors in the plan that the API server's validation cannot catch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("waveSize {0:?} is not a count or a percentage between 1% and 100%")]
    BadWaveSize(String),
    #[error("node selector operator {0:?} is not In, NotIn, Exists or DoesNotExist")]
    BadSelectorOperator(String),
}

/// Everything one decision looks at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub plan_name: &'a str,
    /// `metadata.generation` of the plan.
    pub generation: Option<i64>,
    pub spec: &'a MigrationPlanSpec,
    pub status: &'a MigrationPlanStatus,
    pub snapshot: &'a Snapshot,
    pub now: Timestamp,
    /// The plan is being deleted (`metadata.deletionTimestamp`).
    pub deleting: bool,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to record (before applying `actions`).
    pub status: MigrationPlanStatus,
    /// What to change in the cluster, in order.
    pub actions: Vec<Action>,
    /// When to look again even if nothing changes (seconds; 0 = right away).
    pub requeue_after_secs: u64,
    /// The plan is being deleted and its finalizer may go now (after the
    /// actions are applied).
    pub release: bool,
}

/// Shared read-only context of one decision.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub plan_name: &'a str,
    pub spec: &'a MigrationPlanSpec,
    pub snap: &'a Snapshot,
    pub now: Timestamp,
    pub api_server: Option<String>,
    /// Where nodes serve NodePorts (kube-proxy's configuration; recorded in
    /// the status for when its ConfigMap is gone).
    pub node_ports: Option<NodePortAddresses>,
    /// Every node's progress as the decision found it (what one node's
    /// step knows of the others: the peer probes).
    pub nodes: &'a [NodeProgress],
}

/// Decides the next step of a plan. Deterministic: the same input always
/// gives the same decision.
pub fn plan(input: Input<'_>) -> Result<Decision, PlanError> {
    let deletion = deletion::classify(input.spec, input.status, input.deleting);
    let rolled_back;
    let spec = if deletion == deletion::Deletion::RollBack {
        rolled_back = MigrationPlanSpec {
            rollback: true,
            ..input.spec.clone()
        };
        &rolled_back
    } else {
        input.spec
    };
    let ctx = Ctx {
        plan_name: input.plan_name,
        spec,
        snap: input.snapshot,
        now: input.now,
        api_server: preflight::api_server(spec, input.snapshot),
        node_ports: preflight::node_port_addresses(input.snapshot)
            .or_else(|| input.status.kube_proxy_node_ports.clone()),
        nodes: &input.status.nodes,
    };
    let mut decision = phases::decide(&ctx, input.generation, input.status.clone())?;
    decision.release = deletion::releases(deletion, &decision);
    Ok(decision)
}

/// The name of a plan's kube-proxy backup ConfigMap.
pub fn backup_name(plan_name: &str) -> String {
    let mut name = format!("switchyard-kube-proxy-backup-{plan_name}");
    name.truncate(253);
    name
}

#[cfg(test)]
mod tests;

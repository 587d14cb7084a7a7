//! Condition types and helpers. A plan carries kstatus conditions: `Ready`
//! (normal-true), `Reconciling` and `Stalled` (abnormal-true), so Argo CD,
//! Flux and `kstatus` read its health. A NodeDatapath carries `Ready`,
//! `Degraded` and `WaitingForKubeProxy`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const PREFLIGHT_PASSED: &str = "PreflightPassed";
pub const KUBE_PROXY_REAPPEARED: &str = "KubeProxyReappeared";
/// NodeDatapath: the datapath failed to start, sync or stop.
pub const DEGRADED: &str = "Degraded";
/// NodeDatapath: mode Off was requested; the datapath stays until
/// kube-proxy serves the node.
pub const WAITING_FOR_KUBE_PROXY: &str = "WaitingForKubeProxy";

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime`
/// when the status does not change (as the API conventions require).
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

/// Whether condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

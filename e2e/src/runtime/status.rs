//! Pod status as the lab runtime reports it (pure): phase, IPs, the four
//! standard conditions and one status per container.

use serde_json::{Value, json};

/// What one container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not started: reason and message (e.g. `UnknownImage`).
    Waiting {
        /// Machine-readable reason.
        reason: String,
        /// Human-readable message.
        message: String,
    },
    /// Running since `started_at` (RFC 3339).
    Running {
        /// Start time.
        started_at: String,
    },
    /// Exited.
    Terminated {
        /// Exit code (128+signal when killed).
        exit_code: i32,
        /// `Completed` or `Error`.
        reason: String,
        /// Start time.
        started_at: String,
        /// End time.
        finished_at: String,
    },
}

/// One container's reported status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport {
    /// Container name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// Current state.
    pub state: ContainerState,
    /// Previous termination, after a restart.
    pub last: Option<ContainerState>,
    /// Ready (running and its TCP ports accept).
    pub ready: bool,
    /// Restarts so far.
    pub restart_count: i32,
    /// Runtime id (`switchyard-lab://<pid>`).
    pub container_id: Option<String>,
}

fn state_json(s: &ContainerState) -> Value {
    match s {
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at}}),
    }
}

/// The pod phase implied by its containers and restart policy.
pub fn phase(containers: &[ContainerReport]) -> &'static str {
    let all_terminated = !containers.is_empty()
        && containers
            .iter()
            .all(|c| matches!(c.state, ContainerState::Terminated { .. }));
    if all_terminated {
        let failed = containers.iter().any(
            |c| matches!(c.state, ContainerState::Terminated { exit_code, .. } if exit_code != 0),
        );
        return if failed { "Failed" } else { "Succeeded" };
    }
    if containers
        .iter()
        .any(|c| matches!(c.state, ContainerState::Waiting { .. }))
    {
        return "Pending";
    }
    "Running"
}

/// The status subresource body for a merge patch.
pub fn pod_status(
    containers: &[ContainerReport],
    pod_ip: Option<&str>,
    host_ip: &str,
    started: &str,
    now: &str,
) -> Value {
    let ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let phase = phase(containers);
    let initialized = true;
    let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now});
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name, "image": c.image, "imageID": format!("switchyard-lab://{}", c.image),
                "ready": c.ready, "restartCount": c.restart_count,
                "started": matches!(c.state, ContainerState::Running { .. }),
                "state": state_json(&c.state),
            });
            if let Some(id) = &c.container_id {
                v["containerID"] = json!(id);
            }
            if let Some(l) = &c.last {
                v["lastState"] = state_json(l);
            }
            v
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": started,
        "conditions": [cond("PodScheduled", true), cond("Initialized", initialized),
                       cond("ContainersReady", ready), cond("Ready", ready)],
        "containerStatuses": statuses,
    });
    if let Some(ip) = pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(state: ContainerState, ready: bool) -> ContainerReport {
        ContainerReport {
            name: "c".into(),
            image: "nginx".into(),
            state,
            last: None,
            ready,
            restart_count: 0,
            container_id: None,
        }
    }

    #[test]
    fn unknown_image_keeps_the_pod_pending_and_not_ready() {
        let w = ContainerState::Waiting {
            reason: "UnknownImage".into(),
            message: "m".into(),
        };
        let s = pod_status(&[c(w, false)], None, "1.1.1.1", "t0", "t1");
        assert_eq!(s["status"]["phase"], "Pending");
        assert_eq!(s["status"]["conditions"][3]["status"], "False");
        assert_eq!(
            s["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "UnknownImage"
        );
        assert!(s["status"].get("podIP").is_none());
    }

    #[test]
    fn running_ready_pod_reports_ip_and_ready() {
        let r = ContainerState::Running {
            started_at: "t0".into(),
        };
        let s = pod_status(
            &[c(r, true)],
            Some("10.244.1.2"),
            "172.31.255.11",
            "t0",
            "t1",
        );
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(s["status"]["podIP"], "10.244.1.2");
        assert_eq!(s["status"]["conditions"][3]["status"], "True");
    }

    #[test]
    fn phase_follows_exit_codes() {
        let t = |code| ContainerState::Terminated {
            exit_code: code,
            reason: "x".into(),
            started_at: "a".into(),
            finished_at: "b".into(),
        };
        assert_eq!(phase(&[c(t(0), false)]), "Succeeded");
        assert_eq!(phase(&[c(t(0), false), c(t(2), false)]), "Failed");
    }
}

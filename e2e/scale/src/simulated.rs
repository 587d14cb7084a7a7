//! The objects of the operator scale benchmark's simulated cluster: the
//! Node objects no kubelet registers, the one MigrationPlan, and the clock
//! that times its waves from the plan's status. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;
use switchyard_api::{MigrationPlan, NodeStep};

/// Name of the benchmark's MigrationPlan.
pub const PLAN: &str = "scale";

/// The address a simulated node reports (object data only: nothing is
/// ever sent to it).
pub fn node_ip(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, i % 250 + 1)
}

/// Name of simulated node `i` (0-based).
pub fn node_name(i: usize) -> String {
    format!("sim-{:05}", i + 1)
}

/// A Node as a kubelet registers it, Ready, with room for pods.
pub fn node_object(i: usize) -> Node {
    let name = node_name(i);
    let cap = json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let v = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                     "kubernetes.io/arch": "amd64", "switchyard.dev/simulated-node": "true"}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": node_ip(i)}, {"type": "Hostname", "address": name}],
            "capacity": cap, "allocatable": cap,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "simulated", "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                         "osImage": "simulated", "containerRuntimeVersion": "simulated://0",
                         "kubeletVersion": switchyard_e2e::binaries::K8S_VERSION, "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": "amd64"}
        }
    });
    serde_json::from_value(v).unwrap_or_default()
}

/// The benchmark's MigrationPlan: every node, no canary, waves of
/// `wave_percent`, the built-in API server probe.
pub fn plan_object(wave_percent: u32) -> serde_json::Value {
    json!({
        "apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationPlan",
        "metadata": {"name": PLAN},
        "spec": {
            "strategy": {"canaryNodes": 0, "waveSize": format!("{wave_percent}%"),
                         "pauseBetweenWavesSeconds": 0, "stepTimeoutSeconds": 900},
            "verification": {"apiServerProbe": true, "dnsProbe": false,
                             "consecutiveSuccesses": 3, "timeoutSeconds": 5},
            "failurePolicy": {"maxFailedNodes": 0, "action": "Pause"}
        }
    })
}

/// First-start and all-done instants of each wave, from polled statuses.
#[derive(Debug, Default)]
pub struct WaveClock {
    started: BTreeMap<u32, f64>,
    done: BTreeMap<u32, f64>,
}

impl WaveClock {
    /// Records what the status shows at `t` seconds.
    pub fn observe(&mut self, plan: &MigrationPlan, t: f64) {
        let Some(s) = &plan.status else { return };
        let mut all_done: BTreeMap<u32, bool> = BTreeMap::new();
        for n in &s.expanded().nodes {
            if n.step != NodeStep::Pending {
                self.started.entry(n.wave).or_insert(t);
            }
            let d = all_done.entry(n.wave).or_insert(true);
            *d &= n.step == NodeStep::Done;
        }
        for (w, d) in all_done {
            if d {
                self.done.entry(w).or_insert(t);
            }
        }
    }

    /// Seconds each wave took (waves seen both starting and done).
    pub fn durations(&self) -> Vec<f64> {
        self.done
            .iter()
            .filter_map(|(w, d)| Some(d - self.started.get(w)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::{MigrationPlanSpec, MigrationPlanStatus, NodeProgress};

    #[test]
    fn simulated_nodes_are_ready_linux_nodes_with_distinct_addresses() {
        let a = node_object(0);
        let b = node_object(999);
        assert_eq!(a.metadata.name.as_deref(), Some("sim-00001"));
        assert_ne!(node_ip(0), node_ip(999));
        assert_ne!(node_ip(249), node_ip(250));
        let labels = b.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let conds = b.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }

    #[test]
    fn the_plan_uses_percentage_waves_without_canary() {
        let p: MigrationPlan = serde_json::from_value(plan_object(10))
            .unwrap_or_else(|_| MigrationPlan::new("invalid", MigrationPlanSpec::default()));
        assert_eq!(p.metadata.name.as_deref(), Some(PLAN));
        assert_eq!(p.spec.strategy.canary_nodes, 0);
        assert_eq!(
            p.spec.strategy.wave_size,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("10%".into())
        );
    }

    #[test]
    fn wave_clock_times_each_wave_from_first_start_to_last_done() {
        let mk = |steps: &[(u32, NodeStep)]| {
            let mut p = MigrationPlan::new(PLAN, MigrationPlanSpec::default());
            p.status = Some(MigrationPlanStatus {
                nodes: steps
                    .iter()
                    .map(|(w, s)| NodeProgress {
                        wave: *w,
                        step: *s,
                        ..NodeProgress::default()
                    })
                    .collect(),
                ..MigrationPlanStatus::default()
            });
            p
        };
        let mut c = WaveClock::default();
        c.observe(
            &mk(&[
                (0, NodeStep::Pending),
                (0, NodeStep::Pending),
                (1, NodeStep::Pending),
            ]),
            0.0,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Cordon),
                (0, NodeStep::Pending),
                (1, NodeStep::Pending),
            ]),
            1.0,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Done),
                (0, NodeStep::Verify),
                (1, NodeStep::Pending),
            ]),
            2.0,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Done),
                (0, NodeStep::Done),
                (1, NodeStep::Cordon),
            ]),
            3.5,
        );
        c.observe(
            &mk(&[
                (0, NodeStep::Done),
                (0, NodeStep::Done),
                (1, NodeStep::Done),
            ]),
            5.0,
        );
        assert_eq!(c.durations(), vec![2.5, 1.5]);
    }
}

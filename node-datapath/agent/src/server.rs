//! What the agent's `/metrics` and `/readyz` report, and its flows on
//! `/v1/flows` (served by `switchyard-daemon`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use switchyard_api::SyncStatus;

use crate::flows::reader::FlowHub;

/// What the loop publishes for the endpoint.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once the first sync and status write are done.
    pub ready: AtomicBool,
    /// Set when the agent was asked to stop (its pod is going away).
    pub stopping: AtomicBool,
    /// NodeDatapath status writes (made only when the status changed).
    pub status_writes: AtomicU64,
    /// Lease renewals that succeeded, and those that failed.
    pub lease_renewals: AtomicU64,
    pub lease_renewal_errors: AtomicU64,
    /// Answers on kube-proxy's health ports.
    pub health_checks: std::sync::Arc<crate::health::Answered>,
    /// The flows, when the agent keeps them, and the node they are seen on.
    pub flows: Option<(std::sync::Arc<FlowHub>, std::sync::Arc<str>)>,
    metrics: Mutex<Metrics>,
}

#[derive(Debug, Default)]
struct Metrics {
    datapath: String,
    sync: SyncStatus,
    syncs: u64,
}

impl Shared {
    /// Published state that also reports `flows`' counts and serves them
    /// (seen on `node`).
    pub fn with_flows(flows: std::sync::Arc<FlowHub>, node: &str) -> Self {
        Self {
            flows: Some((flows, node.into())),
            ..Self::default()
        }
    }

    pub fn set_datapath_metrics(&self, text: String) {
        if let Ok(mut m) = self.metrics.lock() {
            m.datapath = text;
        }
    }

    pub fn set_sync(&self, s: &SyncStatus) {
        if let Ok(mut m) = self.metrics.lock() {
            if m.sync.last_sync_time != s.last_sync_time {
                m.syncs += 1;
            }
            m.sync = s.clone();
        }
    }

    /// Prometheus text: the datapath's counters plus the sync gauges.
    pub fn render(&self) -> String {
        let Ok(m) = self.metrics.lock() else {
            return String::new();
        };
        let mut out = m.datapath.clone();
        sync_metrics(&mut out, &m.sync, m.syncs);
        self.agent_counters(&mut out);
        self.health_checks.render(&mut out);
        if let Some((flows, _)) = &self.flows {
            out.push_str(&flows.metrics());
        }
        out
    }

    /// The agent's own counters: status writes and Lease renewals.
    fn agent_counters(&self, out: &mut String) {
        let counters = [
            (
                "switchyard_agent_status_writes_total",
                "NodeDatapath status writes (only when the status changed)",
                &self.status_writes,
            ),
            (
                "switchyard_agent_lease_renewals_total",
                "Renewals of the node's Lease (the agent's heartbeat)",
                &self.lease_renewals,
            ),
            (
                "switchyard_agent_lease_renewal_errors_total",
                "Lease renewals that failed",
                &self.lease_renewal_errors,
            ),
        ];
        for (name, help, v) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
    }
}

/// The sync's gauges and the count of syncs.
fn sync_metrics(out: &mut String, s: &SyncStatus, syncs: u64) {
    let gauges = [
        (
            "switchyard_agent_services_seen",
            "Services the datapath should serve",
            u64::from(s.services_seen),
        ),
        (
            "switchyard_agent_services_programmed",
            "Services programmed into the maps",
            u64::from(s.services_programmed),
        ),
        (
            "switchyard_agent_backends_programmed",
            "Backends in the maps",
            u64::from(s.backends_programmed),
        ),
        (
            "switchyard_agent_frontends_programmed",
            "Frontends in the maps",
            u64::from(s.frontends_programmed),
        ),
        (
            "switchyard_agent_last_sync_duration_milliseconds",
            "Duration of the last map sync",
            s.last_sync_millis,
        ),
    ];
    for (name, help, v) in gauges {
        out.push_str(&format!(
            "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP switchyard_agent_syncs_total Map syncs completed.\n# TYPE switchyard_agent_syncs_total counter\nswitchyard_agent_syncs_total {}\n",
        syncs
    ));
}

impl switchyard_daemon::Health for Shared {
    fn metrics(&self) -> String {
        self.render()
    }

    fn not_ready(&self) -> Option<&'static str> {
        (!self.ready.load(Ordering::Relaxed)).then_some("first sync pending")
    }

    fn handle(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Option<hyper::Response<switchyard_daemon::Body>> {
        let (flows, node) = self.flows.as_ref()?;
        (path == crate::observer::http::PATH)
            .then(|| crate::observer::http::respond(flows, node, query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sync_gauges_after_datapath_counters() {
        let s = Shared::default();
        s.set_datapath_metrics(
            "switchyard_datapath_drop_count_total{reason=\"no_backend\"} 2\n".into(),
        );
        s.set_sync(&SyncStatus {
            services_seen: 7,
            services_programmed: 5,
            ..SyncStatus::default()
        });
        let text = s.render();
        assert!(text.starts_with("switchyard_datapath_drop_count_total"));
        assert!(text.contains("switchyard_agent_services_seen 7\n"));
        assert!(text.contains("switchyard_agent_services_programmed 5\n"));
        assert!(text.contains("switchyard_agent_syncs_total 0\n"));
        s.status_writes.fetch_add(2, Ordering::Relaxed);
        s.lease_renewals.fetch_add(6, Ordering::Relaxed);
        let text = s.render();
        assert!(text.contains("switchyard_agent_status_writes_total 2\n"));
        assert!(text.contains("switchyard_agent_lease_renewals_total 6\n"));
        assert!(text.contains("switchyard_agent_lease_renewal_errors_total 0\n"));
        assert!(
            text.contains(
                "switchyard_agent_health_checks_total{port=\"service\",code=\"503\"} 0\n"
            )
        );
        assert!(!text.contains("switchyard_agent_flows_total"));
        let hub = std::sync::Arc::new(FlowHub::new(8, true));
        let text = Shared::with_flows(hub, "node1").render();
        assert!(text.contains("switchyard_agent_flows_total{verdict=\"dropped\"} 0\n"));
    }
}

//! What a migrated cluster costs at rest: the API requests of a window with
//! no plan running after the migration succeeded (the operator's from the
//! audit log, the simulated agents' and kubelets' from the responder, the
//! API server's CPU), and the size of etcd's database.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use switchyard_e2e::cluster::Cluster;
use switchyard_e2e::error::{Error, Result};
use switchyard_e2e::request::http_get;

use crate::measure;
use crate::operator::OPERATOR_USER;
use crate::responder::Counters;

/// etcd's metrics listener inside the control-plane namespace
/// (`--listen-metrics-urls` of the lab's etcd).
const ETCD_METRICS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2381);

/// The load of one window at rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AtRest {
    /// Length of the window, seconds.
    pub secs: f64,
    /// The operator's API requests in the window, and by verb and resource.
    pub operator_requests: u64,
    pub operator_by_kind: BTreeMap<String, u64>,
    /// The simulated agents' Lease renewals in the window.
    pub lease_renewals: u64,
    /// The simulated agents' NodeDatapath status writes in the window.
    pub status_writes: u64,
    /// The simulated kubelets' pod writes in the window.
    pub pod_writes: u64,
    /// kube-apiserver's CPU in the window, seconds.
    pub apiserver_cpu_secs: f64,
}

impl AtRest {
    /// Every request switchyard's parts made, per second.
    pub fn requests_per_sec(&self) -> f64 {
        let all = self.operator_requests + self.lease_renewals + self.status_writes;
        all as f64 / self.secs.max(f64::EPSILON)
    }
}

/// Measures `window` of the cluster at rest: nothing is done but counting.
pub async fn measure_window(
    c: &Cluster,
    window: Duration,
    counters: &Counters,
    audit_log: &Path,
) -> Result<AtRest> {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let api_pid = c.control_plane_pid("kube-apiserver");
    let api = || api_pid.and_then(measure::sample).unwrap_or_default();
    let before = (
        load(&counters.heartbeats),
        load(&counters.answers),
        load(&counters.pod_writes),
    );
    let (api0, t0, started) = (api(), Utc::now(), Instant::now());
    // The window is what is measured: there is nothing to wait for.
    tokio::time::sleep(window).await;
    let (api1, t1, secs) = (api(), Utc::now(), started.elapsed().as_secs_f64());
    let audit = std::fs::read_to_string(audit_log).map_err(Error::io("reading", audit_log))?;
    let operator = measure::count_requests(audit.lines(), OPERATOR_USER, t0, t1);
    Ok(AtRest {
        secs,
        operator_requests: operator.total,
        operator_by_kind: operator.by_kind,
        lease_renewals: load(&counters.heartbeats) - before.0,
        status_writes: load(&counters.answers) - before.1,
        pod_writes: load(&counters.pod_writes) - before.2,
        apiserver_cpu_secs: api1.cpu_secs - api0.cpu_secs,
    })
}

/// The bytes of etcd's database in use now (its
/// `etcd_mvcc_db_total_size_in_use_in_bytes`).
pub async fn etcd_db_in_use(c: &Cluster) -> Result<u64> {
    let what = "etcd /metrics";
    let r = http_get(c.control_plane_netns(), ETCD_METRICS, "/metrics".into()).await?;
    db_in_use(&r.body).ok_or_else(|| Error::Request {
        what: what.into(),
        detail: format!("{}: no etcd_mvcc_db_total_size_in_use_in_bytes", r.status),
    })
}

/// `etcd_mvcc_db_total_size_in_use_in_bytes` of an exposition (pure).
pub fn db_in_use(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let value = l.strip_prefix("etcd_mvcc_db_total_size_in_use_in_bytes ")?;
        // Written as a float, often in exponent form.
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_database_size_in_use() {
        let text = "# HELP etcd_mvcc_db_total_size_in_bytes x\n\
                    etcd_mvcc_db_total_size_in_bytes 9.8304e+06\n\
                    etcd_mvcc_db_total_size_in_use_in_bytes 5.738496e+06\n";
        assert_eq!(db_in_use(text), Some(5_738_496));
        assert_eq!(db_in_use("etcd_server_has_leader 1\n"), None);
    }

    #[test]
    fn requests_per_second_count_every_part() {
        let w = AtRest {
            secs: 10.0,
            operator_requests: 2,
            operator_by_kind: BTreeMap::new(),
            lease_renewals: 100,
            status_writes: 3,
            pod_writes: 0,
            apiserver_cpu_secs: 1.0,
        };
        assert_eq!(w.requests_per_sec(), 10.5);
    }
}

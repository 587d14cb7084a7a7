//! The eBPF datapath's programming path, as the agent runs it: Services and
//! EndpointSlices (k8s-openapi objects, as an informer cache holds them) →
//! `switchyard_lb::desired_state` → `plan_sync` against the maps' current
//! contents → `PinnedLbMaps::apply_all`. Timed phase by phase in a fresh
//! child process, whose peak RSS (`VmHWM`) is the agent-side memory figure.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use serde::{Deserialize, Serialize};
use switchyard_lb::{IdAllocator, LbMaps, NodeContext, Options, desired_state, plan_sync};
use switchyard_node_datapath::PinnedLbMaps;

use crate::{
    BenchError,
    model::{ENDPOINTS, NAMESPACE, Scenario, endpoint, service_name, vip},
};

/// The Service and EndpointSlice objects of a scenario.
pub fn objects(sc: &Scenario) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(sc.services);
    let mut slices = Vec::with_capacity(sc.services);
    for i in 0..sc.services {
        let name = service_name(i);
        let ports = sc.ports(i);
        services.push(Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(vip(i).to_string()),
                cluster_ips: Some(vec![vip(i).to_string()]),
                ip_families: Some(vec!["IPv4".into()]),
                ports: Some(
                    ports
                        .iter()
                        .map(|p| ServicePort {
                            name: Some(p.name.into()),
                            port: i32::from(p.port),
                            protocol: Some(p.proto.to_uppercase()),
                            target_port: Some(IntOrString::Int(i32::from(p.target_port))),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        slices.push(EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{name}-x7k2p")),
                namespace: Some(NAMESPACE.into()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_string(),
                    name.clone(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: (0..ENDPOINTS)
                .map(|k| Endpoint {
                    addresses: vec![endpoint(i, k).to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(format!("node-{k}")),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: Some(p.name.into()),
                        port: Some(i32::from(p.target_port)),
                        protocol: Some(p.proto.to_uppercase()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        });
    }
    (services, slices)
}

/// The timed phases of one full sync (seconds) and the process memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncResult {
    /// Services programmed.
    pub services: usize,
    /// Map operations applied.
    pub ops: usize,
    /// Building the objects (stands in for the informer cache; not part of
    /// the sync time).
    pub objects_s: f64,
    /// Reading the maps' current contents (the adoption snapshot).
    pub snapshot_s: f64,
    /// `desired_state`.
    pub desired_s: f64,
    /// `plan_sync` (id assignment + diff).
    pub plan_s: f64,
    /// `apply_all` (one `bpf(BPF_MAP_UPDATE_ELEM)` per operation).
    pub apply_s: f64,
    /// snapshot + desired + plan + apply.
    pub total_s: f64,
    /// Peak resident set of the syncing process (`VmHWM`), KiB.
    pub rss_peak_kib: u64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `VmHWM` of this process in KiB (0 if unreadable).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Programs the maps pinned under `bpffs_dir` with `sc`, timing each phase.
pub fn full_sync(bpffs_dir: &Path, sc: &Scenario) -> Result<SyncResult, BenchError> {
    let t = Instant::now();
    let (services, slices) = objects(sc);
    let objects_s = secs(t.elapsed());
    let mut maps = PinnedLbMaps::open(bpffs_dir)?;

    let t0 = Instant::now();
    let snapshot = maps.snapshot()?;
    let t1 = Instant::now();
    let node = NodeContext {
        name: "bench-node".into(),
        ..Default::default()
    };
    let desired = desired_state(&services, &slices, &node, &Options::default());
    let t2 = Instant::now();
    let mut ids = IdAllocator::from_snapshot(&snapshot);
    let plan = plan_sync(&snapshot, &desired.state, &mut ids)?;
    let t3 = Instant::now();
    maps.apply_all(&plan.ops).map_err(|(i, e)| {
        BenchError::Arg(format!("map op {i} of {} failed: {e}", plan.ops.len()))
    })?;
    let t4 = Instant::now();
    if !desired.findings.is_empty() {
        tracing::warn!(findings = ?desired.findings, "unexpected findings");
    }
    Ok(SyncResult {
        services: plan.stats.services,
        ops: plan.ops.len(),
        objects_s,
        snapshot_s: secs(t1 - t0),
        desired_s: secs(t2 - t1),
        plan_s: secs(t3 - t2),
        apply_s: secs(t4 - t3),
        total_s: secs(t4 - t0),
        rss_peak_kib: peak_rss_kib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_lb::Proto;

    #[test]
    fn objects_become_one_frontend_per_port_with_ten_backends() {
        let sc = Scenario::new(5).unwrap();
        let (svcs, slices) = objects(&sc);
        let node = NodeContext {
            name: "bench-node".into(),
            ..Default::default()
        };
        let d = desired_state(&svcs, &slices, &node, &Options::default());
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        let ports: usize = (0..5).map(|i| sc.ports(i).len()).sum();
        assert_eq!(d.state.frontends.len(), ports);
        for (fe, st) in &d.state.frontends {
            assert_eq!(st.backends.len(), ENDPOINTS, "{fe}");
            let want = if fe.proto == Proto::Tcp { 8080 } else { 5353 };
            assert!(st.backends.iter().all(|b| b.key.port == want));
        }
    }
}

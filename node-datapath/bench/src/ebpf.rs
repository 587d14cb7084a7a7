//! The eBPF datapath's programming path, as the agent runs it: Services and
//! EndpointSlices (k8s-openapi objects, as an informer cache holds them) →
//! the per-Service desired state (`switchyard_lb::LbState`) → `plan_sync`
//! against the maps' current contents → `PinnedLbMaps::apply_all` (batched;
//! then once more per operation for comparison). Timed phase by phase in a
//! fresh child process. The agent's own path (reflector stores, `Syncer`,
//! incremental updates, memory) is measured in [`crate::agent_path`].

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
use switchyard_lb::{
    IdAllocator, LbMaps, LbState, NodeContext, Options, ServiceView, SliceView, plan_sync,
};
use switchyard_node_datapath::PinnedLbMaps;

use crate::{
    BenchError,
    model::{ENDPOINTS, NAMESPACE, NODE_IP, Scenario, endpoint, service_name, vip},
};

/// The node every benchmark sync and check runs as (one definition, so a
/// verification computes the same desired state as the sync it checks).
pub fn node_context() -> NodeContext {
    NodeContext {
        name: "bench-node".into(),
        ..Default::default()
    }
}

/// [`node_context`] for `sc`: in north-south scenarios the node serves its
/// NodePorts on [`NODE_IP`].
pub fn node_context_for(sc: &Scenario) -> NodeContext {
    NodeContext {
        addresses: if sc.node_ports {
            vec![NODE_IP]
        } else {
            Vec::new()
        },
        ..node_context()
    }
}

/// The Service and EndpointSlice objects of a scenario.
pub fn objects(sc: &Scenario) -> (Vec<Service>, Vec<EndpointSlice>) {
    (0..sc.services)
        .map(|i| (service_object(sc, i), slice_object(sc, i)))
        .unzip()
}

/// Service `i` of a scenario, as the API server returns it.
pub fn service_object(sc: &Scenario, i: usize) -> Service {
    let name = service_name(i);
    Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(
                if sc.node_ports {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            external_traffic_policy: sc.node_ports.then(|| "Cluster".into()),
            cluster_ip: Some(vip(i).to_string()),
            cluster_ips: Some(vec![vip(i).to_string()]),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(
                sc.ports(i)
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.into()),
                        port: i32::from(p.port),
                        protocol: Some(p.proto.to_uppercase()),
                        target_port: Some(IntOrString::Int(i32::from(p.target_port))),
                        node_port: sc.node_port(i).map(i32::from),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The name of Service `i`'s one EndpointSlice.
pub fn slice_name(i: usize) -> String {
    format!("{}-x7k2p", service_name(i))
}

/// The EndpointSlice of Service `i` ([`ENDPOINTS`] ready endpoints).
pub fn slice_object(sc: &Scenario, i: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(i)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service_name(i),
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
            sc.ports(i)
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.into()),
                    port: Some(i32::from(p.target_port)),
                    protocol: Some(p.proto.to_uppercase()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
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
    /// The per-Service desired state built from all objects (`LbState`).
    pub desired_s: f64,
    /// `plan_sync` (id assignment + diff).
    pub plan_s: f64,
    /// `apply_all`: one batch call per run of same-map, same-kind ops.
    pub apply_s: f64,
    /// The same operations written one `bpf(2)` call each (maps emptied
    /// first, untimed), for comparison.
    pub apply_per_op_s: f64,
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
    self_status_kib("VmHWM")
}

/// A KiB field of this process's `/proc/self/status`; 0 when unreadable.
pub fn self_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| switchyard_testkit::procfs::status_kib(&s, field))
        .unwrap_or(0)
}

/// Programs the maps pinned under `bpffs_dir` with `sc`, timing each phase.
pub fn full_sync(bpffs_dir: &Path, sc: &Scenario) -> Result<SyncResult, BenchError> {
    let t = Instant::now();
    let (services, slices) = objects(sc);
    // Projected as the agent's stores hold them (done at arrival, before
    // any sync: counted in `objects_s`).
    let svc_index: std::collections::HashMap<&str, ServiceView> = services
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, ServiceView::from(s))))
        .collect();
    let slice_index: std::collections::HashMap<&str, SliceView> = slices
        .iter()
        .filter_map(|s| Some((s.metadata.name.as_deref()?, SliceView::from(s))))
        .collect();
    let objects_s = secs(t.elapsed());
    let mut maps = PinnedLbMaps::open(bpffs_dir)?;

    let t0 = Instant::now();
    let snapshot = maps.snapshot()?;
    let t1 = Instant::now();
    let node = node_context_for(sc);
    let mut lb = LbState::new(node, Options::default());
    lb.reset(
        services
            .iter()
            .map(|s| (NAMESPACE, s.metadata.name.as_deref().unwrap_or_default())),
        slices.iter().map(|s| {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (NAMESPACE, name, LbState::slice_service(s))
        }),
    );
    lb.refresh(
        |_, name| svc_index.get(name),
        |_, name| slice_index.get(name),
    );
    let t2 = Instant::now();
    let mut ids = IdAllocator::from_snapshot(&snapshot);
    let plan = plan_sync(&snapshot, lb.state(), &mut ids)?;
    let t3 = Instant::now();
    let failed = |(i, e): (usize, switchyard_node_datapath::DatapathError)| {
        BenchError::Arg(format!("map op {i} of {} failed: {e}", plan.ops.len()))
    };
    maps.apply_all(&plan.ops).map_err(failed)?;
    let t4 = Instant::now();
    let findings = lb.findings();
    if !findings.is_empty() {
        tracing::warn!(?findings, "unexpected findings");
    }
    // Per-op comparison: empty the maps (batched, untimed), write again.
    let empty = switchyard_lb::diff::diff_snapshots(&maps.snapshot()?, &Default::default());
    maps.apply_all(&empty).map_err(failed)?;
    maps.set_batching(false);
    let t5 = Instant::now();
    maps.apply_all(&plan.ops).map_err(failed)?;
    let apply_per_op_s = secs(t5.elapsed());
    Ok(SyncResult {
        services: plan.stats.services,
        ops: plan.ops.len(),
        objects_s,
        snapshot_s: secs(t1 - t0),
        desired_s: secs(t2 - t1),
        plan_s: secs(t3 - t2),
        apply_s: secs(t4 - t3),
        apply_per_op_s,
        total_s: secs(t4 - t0),
        rss_peak_kib: peak_rss_kib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_lb::{Proto, desired_state};

    #[test]
    fn objects_become_one_frontend_per_port_with_ten_backends() {
        let sc = Scenario::new(5).unwrap();
        let (svcs, slices) = objects(&sc);
        let node = node_context();
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

    #[test]
    fn north_south_services_add_a_node_port_frontend_on_the_node_address() {
        let sc = Scenario::north_south(3).unwrap();
        let (svcs, slices) = objects(&sc);
        let d = desired_state(&svcs, &slices, &node_context_for(&sc), &Options::default());
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        let ports: usize = (0..3).map(|i| sc.ports(i).len()).sum();
        assert_eq!(d.state.frontends.len(), 2 * ports);
        let fe = d
            .state
            .frontends
            .iter()
            .find(|(fe, _)| fe.ip == NODE_IP && fe.port == 20_002 && fe.proto == Proto::Tcp);
        let (_, st) = fe.expect("NodePort frontend of the last Service");
        assert_eq!(st.backends.len(), ENDPOINTS);
    }
}

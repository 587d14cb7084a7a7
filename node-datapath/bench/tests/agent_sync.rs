//! Privileged test of the agent's incremental sync on real pinned maps
//! (`switchyard_agent::sync::Syncer` fed by kube-runtime reflector stores,
//! as the agent runs it): after the first full sync, after an endpoint
//! change, after a Service deletion and after a restart, the maps hold
//! exactly the desired state of all objects (a full diff of them is
//! empty), and a single change writes only that Service's keys.
//! Run as root: `cargo test -p switchyard-bench --test agent_sync`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::{
    reflector::{self, ObjectRef, Store},
    watcher::Event,
};
use switchyard_agent::sync::{Syncer, Touched};
use switchyard_bench::{
    ebpf::{service_object, slice_name, slice_object},
    model::{NAMESPACE, Scenario, endpoint, service_name},
    topo::Topo,
};
use switchyard_lb::{
    IdAllocator, LbMaps, NodeContext, Options, consistent, desired_state, diff, trim_service,
    trim_slice,
};
use switchyard_node_datapath::{Capacities, Datapath, DatapathConfig, PinnedLbMaps};

fn node() -> NodeContext {
    NodeContext {
        name: "bench-node".into(),
        ..Default::default()
    }
}

/// The maps under `topo` hold exactly the desired state of the stores.
fn assert_maps_match(topo: &Topo, services: &Store<Service>, slices: &Store<EndpointSlice>) {
    let snapshot = PinnedLbMaps::open(&topo.bpffs_dir)
        .unwrap()
        .snapshot()
        .unwrap();
    consistent(&snapshot).unwrap();
    let (svcs, sls) = (services.state(), slices.state());
    let want = desired_state(
        svcs.iter().map(|s| s.as_ref()),
        sls.iter().map(|s| s.as_ref()),
        &node(),
        &Options::default(),
    );
    assert!(!want.state.frontends.is_empty());
    let mut ids = IdAllocator::from_snapshot(&snapshot);
    let ops = diff(&snapshot, &want.state, &mut ids).unwrap();
    assert!(
        ops.is_empty(),
        "maps differ from the desired state: {ops:?}"
    );
}

#[test]
fn incremental_agent_sync_keeps_the_maps_equal_to_the_full_state() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces, cgroups, BPF)");
        return;
    }
    let topo = Topo::new().unwrap();
    let _dp = Datapath::start(&DatapathConfig {
        bpffs_dir: topo.bpffs_dir.clone(),
        cgroup: topo.cgroup.clone(),
        capacities: Capacities::default(),
    })
    .unwrap();
    let sc = Scenario::new(50).unwrap();
    let (services, mut services_w) = reflector::store::<Service>();
    let (slices, mut slices_w) = reflector::store::<EndpointSlice>();
    services_w.apply_watcher_event(&Event::Init);
    slices_w.apply_watcher_event(&Event::Init);
    for i in 0..sc.services {
        let (mut s, mut e) = (service_object(&sc, i), slice_object(&sc, i));
        trim_service(&mut s);
        trim_slice(&mut e);
        services_w.apply_watcher_event(&Event::InitApply(s));
        slices_w.apply_watcher_event(&Event::InitApply(e));
    }
    services_w.apply_watcher_event(&Event::InitDone);
    slices_w.apply_watcher_event(&Event::InitDone);

    let mut syncer = Syncer::new(node());
    syncer.adopt(&topo.bpffs_dir).unwrap();
    syncer
        .sync(&services, &slices, vec![Touched::Relisted])
        .unwrap();
    assert!(
        syncer.last_ops > 50 * 11,
        "the first sync writes everything"
    );
    assert_maps_match(&topo, &services, &slices);

    // One endpoint of Service 7 moves: its backend, its 10 slots (ordered
    // by address, all shift) and the old backend's deletion, nothing else.
    let key = ObjectRef::new(&slice_name(7)).within(NAMESPACE);
    let mut slice = (*slices.get(&key).unwrap()).clone();
    slice.endpoints[0].addresses = vec![endpoint(7, 10).to_string()];
    let touched = Touched::slice(&slice, false);
    slices_w.apply_watcher_event(&Event::Apply(slice));
    syncer.sync(&services, &slices, vec![touched]).unwrap();
    let ports = sc.ports(7).len();
    assert_eq!(syncer.last_ops, ports * 12);
    assert_maps_match(&topo, &services, &slices);

    // Nothing changed: nothing written.
    syncer.sync(&services, &slices, Vec::new()).unwrap();
    assert_eq!(syncer.last_ops, 0);

    // Service 3 deleted (its slice stays, as until the controller GCs it).
    let svc = (*services
        .get(&ObjectRef::new(&service_name(3)).within(NAMESPACE))
        .unwrap())
    .clone();
    let touched = Touched::service(&svc);
    services_w.apply_watcher_event(&Event::Delete(svc));
    syncer.sync(&services, &slices, vec![touched]).unwrap();
    assert!(syncer.last_ops > 0);
    assert_maps_match(&topo, &services, &slices);

    // A restarted agent adopts the maps and finds nothing to write.
    let mut again = Syncer::new(node());
    again.adopt(&topo.bpffs_dir).unwrap();
    again
        .sync(&services, &slices, vec![Touched::Relisted])
        .unwrap();
    assert_eq!(again.last_ops, 0, "ids adopted from the maps");
    assert_maps_match(&topo, &services, &slices);
}

//! Privileged test of the agent's incremental sync on real pinned maps
//! (`switchyard_agent::sync::Syncer` fed by the agent's stores of
//! projected objects, as the agent runs it): after the first full sync, after an endpoint
//! change, after a Service deletion and after a restart, the maps hold
//! exactly the desired state of all objects (a full diff of them is
//! empty), and a single change writes only that Service's keys.
//! Run as root: `cargo test -p switchyard-bench --test agent_sync`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

use switchyard_agent::store::{self, Event, Services, Slices};
use switchyard_agent::sync::{Syncer, Touched};
use switchyard_bench::{
    ebpf::{node_context, service_object, slice_name, slice_object},
    model::{NAMESPACE, Scenario, endpoint, service_name},
    topo::Topo,
};
use switchyard_lb::{
    Desired, IdAllocator, LbMaps, Options, consistent, desired_state, desired_state_of_views, diff,
};
use switchyard_node_datapath::{Datapath, DatapathConfig, PinnedLbMaps};

/// The desired state the stores' projections give.
fn state_of_stores(services: &Services, slices: &Slices) -> Desired {
    let (svcs, sls) = (services.read(), slices.read());
    desired_state_of_views(
        svcs.iter().map(|(_, s)| s.as_ref()),
        sls.iter().map(|(_, s)| s.as_ref()),
        &node_context(),
        &Options::default(),
    )
}

/// The maps under `topo` hold exactly the desired state of the stores.
fn assert_maps_match(topo: &Topo, services: &Services, slices: &Slices) {
    let snapshot = PinnedLbMaps::open(&topo.bpffs_dir)
        .unwrap()
        .snapshot()
        .unwrap();
    consistent(&snapshot).unwrap();
    let want = state_of_stores(services, slices);
    assert!(!want.state.frontends.is_empty());
    let mut ids = IdAllocator::from_snapshot(&snapshot);
    let ops = diff(&snapshot, &want.state, &mut ids).unwrap();
    assert!(
        ops.is_empty(),
        "maps differ from the desired state: {ops:?}"
    );
}

/// The stores after the initial list of the scenario's Services and slices, with a
/// Service and a slice from before the list that the list's end drops.
fn listed_stores(sc: &Scenario) -> (Services, Slices) {
    let (services, slices) = (Services::default(), Slices::default());
    services.apply(Event::Init);
    slices.apply(Event::Init);
    // A Service and a slice from before the list: gone after InitDone.
    let (k, v) = store::service_entry(&service_object(sc, 60));
    services.apply(Event::Apply(k, v));
    let (k, v) = store::slice_entry(&slice_object(sc, 60));
    slices.apply(Event::Apply(k, v));
    for i in 0..sc.services {
        let (k, v) = store::service_entry(&service_object(sc, i));
        services.apply(Event::InitApply(k, v));
        let (k, v) = store::slice_entry(&slice_object(sc, i));
        slices.apply(Event::InitApply(k, v));
    }
    services.apply(Event::InitDone);
    slices.apply(Event::InitDone);
    assert!(services.get(NAMESPACE, &service_name(60)).is_none());
    (services, slices)
}

/// The projections give the state the objects give.
fn assert_views_match_objects(sc: &Scenario, services: &Services, slices: &Slices) {
    let objects = desired_state(
        &(0..sc.services)
            .map(|i| service_object(sc, i))
            .collect::<Vec<_>>(),
        &(0..sc.services)
            .map(|i| slice_object(sc, i))
            .collect::<Vec<_>>(),
        &node_context(),
        &Options::default(),
    );
    assert_eq!(state_of_stores(services, slices), objects);
}

/// The datapath attached under `topo`, with the default configuration otherwise.
fn start_datapath(topo: &Topo) -> Datapath {
    Datapath::start(&DatapathConfig {
        bpffs_dir: topo.bpffs_dir.clone(),
        cgroup: topo.cgroup.clone(),
        ..DatapathConfig::new(&topo.cgroup)
    })
    .unwrap()
}

/// Moves the first endpoint of Service 7's slice to a new address in the store; the
/// change touches exactly that slice of that Service.
fn move_first_endpoint_of_7(sc: &Scenario, slices: &Slices) -> Option<Touched> {
    let mut slice = slice_object(sc, 7);
    slice.endpoints[0].addresses = vec![endpoint(7, 10).to_string()];
    let (k, v) = store::slice_entry(&slice);
    let touched = Touched::of_slice(&slices.apply(Event::Apply(k, v)));
    assert_eq!(
        touched,
        Some(Touched::Slice {
            namespace: NAMESPACE.into(),
            name: slice_name(7),
            service: Some(service_name(7)),
        })
    );
    touched
}

#[test]
fn incremental_agent_sync_keeps_the_maps_equal_to_the_full_state() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces, cgroups, BPF)");
        return;
    }
    let topo = Topo::new().unwrap();
    let _dp = start_datapath(&topo);
    let sc = Scenario::new(50).unwrap();
    let (services, slices) = listed_stores(&sc);
    assert_views_match_objects(&sc, &services, &slices);

    let mut syncer = Syncer::new(node_context());
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
    let touched = move_first_endpoint_of_7(&sc, &slices);
    syncer
        .sync(&services, &slices, touched.into_iter().collect())
        .unwrap();
    let ports = sc.ports(7).len();
    assert_eq!(syncer.last_ops, ports * 12);
    assert_maps_match(&topo, &services, &slices);

    // Nothing changed: nothing written.
    syncer.sync(&services, &slices, Vec::new()).unwrap();
    assert_eq!(syncer.last_ops, 0);

    // Service 3 deleted (its slice stays, as until the controller GCs it).
    let key = store::key(&service_object(&sc, 3).metadata);
    let touched = Touched::of_service(&services.apply(Event::Delete(key)));
    syncer
        .sync(&services, &slices, touched.into_iter().collect())
        .unwrap();
    assert!(syncer.last_ops > 0);
    assert_maps_match(&topo, &services, &slices);

    // A restarted agent adopts the maps and finds nothing to write.
    let mut again = Syncer::new(node_context());
    again.adopt(&topo.bpffs_dir).unwrap();
    again
        .sync(&services, &slices, vec![Touched::Relisted])
        .unwrap();
    assert_eq!(again.last_ops, 0, "ids adopted from the maps");
    assert_maps_match(&topo, &services, &slices);
}

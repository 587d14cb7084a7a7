//! Privileged tests of the batched map writes of `PinnedLbMaps::apply_all`
//! on real pinned maps: the result equals the per-operation writes of the
//! in-memory `MirrorMaps`, absent keys in a delete batch are skipped, and a
//! failing batch reports exactly how many operations reached the kernel.
//! Run as root: `cargo test -p switchyard-node-datapath --test batch`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

mod common;

use std::net::Ipv4Addr;

use common::{Lab, started};
use switchyard_abi::{IPPROTO_TCP, SCOPE_NODE, SvcKey, SvcValue, svc_flags};
use switchyard_lb::maps::{LbMaps, MapOp};
use switchyard_lb::{
    BackendKey, DesiredBackend, DesiredState, Frontend, FrontendState, IdAllocator, MirrorMaps,
    Proto, ServicePortRef, diff,
};
use switchyard_node_datapath::Datapath;

/// `services` frontends, frontend `i` with `(i + shift) % 7` backends drawn
/// from a pool that `shift` rotates, so consecutive states differ in slots,
/// backends, counts and frontends.
fn state(services: u8, shift: u8) -> DesiredState {
    let mut s = DesiredState::default();
    for i in 0..services {
        let fe = Frontend::new(Ipv4Addr::new(10, 96, 1, i + 1), 80, Proto::Tcp);
        let backends = (0..(i + shift) % 7)
            .map(|k| DesiredBackend {
                key: BackendKey {
                    ip: Ipv4Addr::new(10, 244, 0, (k * 3 + shift) % 40 + 1),
                    port: 8080,
                    proto: Proto::Tcp,
                },
                terminating: false,
            })
            .collect();
        s.frontends.insert(
            fe,
            FrontendState {
                source_ranges: Vec::new(),
                flags: svc_flags::CLUSTER_IP,
                affinity_timeout: 0,
                backends,
                service: ServicePortRef {
                    namespace: "default".into(),
                    name: format!("s{i}").into(),
                    port_name: "".into(),
                },
            },
        );
        s.vips.insert(fe.ip);
    }
    s
}

#[test]
fn batched_writes_leave_the_maps_as_per_op_writes_do() {
    require_privileged!();
    let lab = Lab::new(0);
    let dp = lab.start();
    let mut maps = dp.lb_maps().unwrap();
    assert!(maps.batching());
    let mut mirror = MirrorMaps::new();
    let mut ids = IdAllocator::new();
    for (services, shift) in [(20, 0), (25, 1), (25, 4), (10, 2), (30, 5), (0, 0)] {
        let ops = diff(mirror.contents(), &state(services, shift), &mut ids).unwrap();
        assert!(!ops.is_empty());
        maps.apply_all(&ops).unwrap();
        mirror.apply_all(&ops).unwrap();
        assert!(maps.batching(), "this kernel supports batched writes");
        assert_eq!(
            &maps.snapshot().unwrap(),
            mirror.contents(),
            "{services} services, shift {shift}"
        );
    }
    assert_eq!(maps.snapshot().unwrap(), Default::default());
}

#[test]
fn absent_keys_in_a_delete_batch_are_skipped() {
    require_privileged!();
    let lab = Lab::new(0);
    let dp = lab.start();
    let mut maps = dp.lb_maps().unwrap();
    let key = |i: u16| SvcKey::new(Ipv4Addr::new(10, 96, 2, 1), 80, IPPROTO_TCP, SCOPE_NODE, i);
    let ups: Vec<MapOp> = (0..6)
        .map(|i| MapOp::UpsertService(key(i), SvcValue::default()))
        .collect();
    maps.apply_all(&ups).unwrap();
    // Present, absent, present, absent, absent, present.
    let dels: Vec<MapOp> = [0, 10, 2, 11, 12, 5]
        .into_iter()
        .map(|i| MapOp::DeleteService(key(i)))
        .collect();
    maps.apply_all(&dels).unwrap();
    let left: Vec<u16> = maps
        .snapshot()
        .unwrap()
        .services
        .keys()
        .map(|k| k.backend_slot)
        .collect();
    assert_eq!(left, vec![1, 3, 4]);
}

#[test]
fn a_full_map_fails_the_batch_at_the_first_refused_op() {
    require_privileged!();
    let lab = Lab::new(0);
    let config = lab.config();
    let capacity = config.capacities.services as usize;
    let dp = started(Datapath::start(&config));
    let mut maps = dp.lb_maps().unwrap();
    let ops: Vec<MapOp> = (0..capacity as u32 + 10)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a60_0000 + i);
            let key = SvcKey::new(ip, 80, IPPROTO_TCP, SCOPE_NODE, 1);
            MapOp::UpsertService(key, SvcValue::default())
        })
        .collect();
    let (applied, _err) = maps.apply_all(&ops).unwrap_err();
    assert_eq!(applied, capacity);
    assert_eq!(maps.snapshot().unwrap().services.len(), capacity);
    assert!(maps.batching(), "a full map is not a missing batch feature");
}

//! Property tests of the diff: for random current/desired states, applying
//! the operations one at a time keeps the maps consistent after every op,
//! converges to the desired state, is idempotent and keeps ids stable.

// Test code: helpers outside #[test] fns unwrap too (clippy.toml covers only those).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use switchyard_abi::{Backend, IPPROTO_TCP, RevNat, backend_flags, svc_flags};
use switchyard_lb::diff::is_vip_marker;
use switchyard_lb::{
    BackendKey, DesiredBackend, DesiredState, Frontend, FrontendState, IdAllocator, LbMaps,
    MapsSnapshot, MirrorMaps, Proto, ServicePortRef, consistent, diff,
};

fn arb_proto() -> impl Strategy<Value = Proto> {
    prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)]
}

fn arb_frontend() -> impl Strategy<Value = Frontend> {
    (
        1u8..=5,
        prop_oneof![Just(53u16), Just(80), Just(443)],
        arb_proto(),
    )
        .prop_map(|(last, port, proto)| Frontend::new(Ipv4Addr::new(10, 96, 0, last), port, proto))
}

fn arb_backend() -> impl Strategy<Value = DesiredBackend> {
    (
        1u8..=12,
        prop_oneof![Just(53u16), Just(8080)],
        any::<bool>(),
    )
        .prop_map(|(last, port, terminating)| DesiredBackend {
            key: BackendKey {
                ip: Ipv4Addr::new(10, 244, 0, last),
                port,
                // Fixed up to the frontend's protocol below.
                proto: Proto::Tcp,
            },
            terminating,
        })
}

fn arb_state() -> impl Strategy<Value = DesiredState> {
    let fe_state = (
        prop::sample::select(vec![
            svc_flags::CLUSTER_IP,
            svc_flags::NODEPORT,
            svc_flags::EXTERNAL_IP,
            svc_flags::LOADBALANCER | svc_flags::LOCAL_ONLY,
        ]),
        prop::option::of(1u32..=86_400),
        prop::collection::vec(arb_backend(), 0..7),
    );
    (
        prop::collection::btree_map(arb_frontend(), fe_state, 0..8),
        prop::collection::btree_set((1u8..=5).prop_map(|l| Ipv4Addr::new(10, 96, 0, l)), 0..4),
    )
        .prop_map(|(fes, vips)| {
            let mut s = DesiredState {
                vips,
                ..DesiredState::default()
            };
            for (fe, (kind, affinity, backends)) in fes {
                let mut seen = std::collections::BTreeSet::new();
                let backends: Vec<_> = backends
                    .into_iter()
                    .map(|mut b| {
                        b.key.proto = fe.proto;
                        b
                    })
                    .filter(|b| seen.insert(b.key))
                    .collect();
                let flags = kind
                    | if affinity.is_some() {
                        svc_flags::AFFINITY
                    } else {
                        0
                    };
                s.frontends.insert(
                    fe,
                    FrontendState {
                        source_ranges: Vec::new(),
                        flags,
                        affinity_timeout: affinity.unwrap_or(0),
                        backends,
                        service: ServicePortRef {
                            namespace: "ns".into(),
                            name: format!("svc-{}", fe.ip.octets()[3]).into(),
                            port_name: format!("p{}", fe.port).into(),
                        },
                    },
                );
            }
            s
        })
}

/// Checks, without using the allocator, that `maps` serve exactly `desired`.
fn assert_serves(maps: &MapsSnapshot, desired: &DesiredState) {
    let masters: Vec<_> = maps
        .services
        .iter()
        .filter(|(k, _)| k.backend_slot == 0 && !is_vip_marker(k))
        .collect();
    assert_eq!(masters.len(), desired.frontends.len(), "master entries");
    for (fe, st) in &desired.frontends {
        let m = maps.services.get(&fe.master_key()).expect("master present");
        assert_eq!(usize::from(m.count), st.backends.len(), "{fe} count");
        assert_eq!(
            (m.flags, m.affinity_timeout),
            (st.flags, st.affinity_timeout)
        );
        assert_eq!(
            maps.rev_nat.get(&m.rev_nat_index),
            Some(&RevNat::new(fe.ip, fe.port))
        );
        for (i, b) in st.backends.iter().enumerate() {
            let slot = u16::try_from(i + 1).unwrap();
            let sv = maps.services[&fe.master_key().with_slot(slot)];
            let got = maps.backends[&sv.backend_id];
            assert_eq!(
                (got.ip(), got.host_port(), got.proto),
                (b.key.ip, b.key.port, b.key.proto.number()),
                "{fe} slot {slot}"
            );
        }
    }
    let vips: Vec<_> = maps
        .services
        .keys()
        .filter(|k| is_vip_marker(k))
        .map(|k| k.ip())
        .collect();
    assert_eq!(vips.len(), desired.vips.len());
    assert!(vips.iter().all(|v| desired.vips.contains(v)));
    let slots: usize = desired.frontends.values().map(|f| f.backends.len()).sum();
    assert_eq!(
        maps.services.len(),
        desired.frontends.len() + slots + desired.vips.len()
    );
    assert_eq!(
        maps.backends.len(),
        desired.backends().len(),
        "no orphan backends"
    );
    assert_eq!(
        maps.rev_nat.len(),
        desired.frontends.len(),
        "no orphan rev-NATs"
    );
}

/// Applies the diff to `to` one op at a time, checking consistency after each.
fn step(maps: &mut MirrorMaps, to: &DesiredState, ids: &mut IdAllocator) -> usize {
    let ops = diff(maps.contents(), to, ids).unwrap();
    for (i, op) in ops.iter().enumerate() {
        maps.apply(op).unwrap();
        if let Err(e) = consistent(maps.contents()) {
            panic!(
                "inconsistent after op {i}/{} {op:?}: {e}\nops: {ops:#?}",
                ops.len()
            );
        }
    }
    ops.len()
}

fn backend_ids(ids: &IdAllocator, s: &DesiredState) -> BTreeMap<BackendKey, u32> {
    s.backends()
        .keys()
        .map(|k| (*k, ids.backend(k).unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_op_keeps_maps_consistent_and_converges(
        a in arb_state(),
        b in arb_state(),
        restart in any::<bool>(),
        garbage in prop::collection::btree_map(1000u32..1010, 1u8..=9, 0..3),
    ) {
        let mut ids = IdAllocator::new();
        let mut maps = MirrorMaps::new();
        // Unreferenced entries (e.g. left by an interrupted sync) are legal.
        for (id, last) in &garbage {
            let be = Backend::new(Ipv4Addr::new(10, 244, 9, *last), 80, IPPROTO_TCP, 0);
            maps.apply(&switchyard_lb::MapOp::UpsertBackend(*id, be)).unwrap();
        }
        step(&mut maps, &a, &mut ids);
        assert_serves(maps.contents(), &a);
        let before = backend_ids(&ids, &a);
        let rev_before: BTreeMap<_, _> =
            a.frontends.keys().map(|f| (*f, ids.rev_nat(f).unwrap())).collect();

        if restart {
            ids = IdAllocator::from_snapshot(maps.contents());
        }
        step(&mut maps, &b, &mut ids);
        assert_serves(maps.contents(), &b);
        prop_assert_eq!(step(&mut maps, &b, &mut ids), 0, "second diff is empty");

        let after = backend_ids(&ids, &b);
        for (k, id) in &after {
            if let Some(old) = before.get(k) {
                prop_assert_eq!(old, id, "backend {} changed id", k);
            }
        }
        for f in b.frontends.keys() {
            if let Some(old) = rev_before.get(f) {
                prop_assert_eq!(Some(*old), ids.rev_nat(f), "rev-NAT of {} changed", f);
            }
        }
        // Terminating only when every user of the backend says so.
        for (k, term) in b.backends() {
            let id = ids.backend(&k).unwrap();
            let flag = maps.contents().backends[&id].flags & backend_flags::TERMINATING != 0;
            prop_assert_eq!(flag, term);
        }
    }

    #[test]
    fn interrupted_sync_recovers_from_any_prefix(
        a in arb_state(),
        b in arb_state(),
        c in arb_state(),
        cut in any::<prop::sample::Index>(),
        restart in any::<bool>(),
    ) {
        let mut ids = IdAllocator::new();
        let mut maps = MirrorMaps::new();
        step(&mut maps, &a, &mut ids);
        // The sync to `b` stops after an arbitrary prefix (agent killed, map
        // error); every prefix must itself be consistent.
        let ops = diff(maps.contents(), &b, &mut ids).unwrap();
        let n = if ops.is_empty() { 0 } else { cut.index(ops.len() + 1) };
        for op in &ops[..n] {
            maps.apply(op).unwrap();
            prop_assert!(consistent(maps.contents()).is_ok());
        }
        if restart {
            ids = IdAllocator::from_snapshot(maps.contents());
        }
        // The next sync (to `b` again, or already to `c`) finishes the job.
        for target in [&b, &c] {
            step(&mut maps, target, &mut ids);
            assert_serves(maps.contents(), target);
            prop_assert_eq!(step(&mut maps, target, &mut ids), 0);
        }
    }
}

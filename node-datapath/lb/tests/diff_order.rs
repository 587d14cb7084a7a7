//! The exact operation sequences of typical changes, and id behaviour across
//! syncs, restarts and exhaustion.

// Test code: helpers outside #[test] fns unwrap too (clippy.toml covers only those).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use switchyard_abi::{Backend, IPPROTO_TCP, RevNat, SvcKey, SvcValue, svc_flags};
use switchyard_lb::MapOp::{
    DeleteBackend, DeleteRevNat, DeleteService, UpsertBackend, UpsertRevNat, UpsertService,
};
use switchyard_lb::{
    BackendKey, DesiredBackend, DesiredState, Frontend, FrontendState, IdAllocator, LbError,
    LbMaps, MapOp, MirrorCapacity, MirrorMaps, Proto, ServicePortRef, consistent, diff,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

fn fe() -> Frontend {
    Frontend::new(VIP, 80, Proto::Tcp)
}

fn be(last: u8) -> BackendKey {
    BackendKey {
        ip: Ipv4Addr::new(10, 244, 0, last),
        port: 8080,
        proto: Proto::Tcp,
    }
}

/// One ClusterIP service on `VIP:80/TCP` with backends `10.244.0.<last>`.
fn state(backends: &[u8]) -> DesiredState {
    let mut s = DesiredState::default();
    s.frontends.insert(
        fe(),
        FrontendState {
            source_ranges: Vec::new(),
            flags: svc_flags::CLUSTER_IP,
            affinity_timeout: 0,
            backends: backends
                .iter()
                .map(|l| DesiredBackend {
                    key: be(*l),
                    terminating: false,
                })
                .collect(),
            service: ServicePortRef {
                namespace: "default".into(),
                name: "web".into(),
                port_name: "http".into(),
            },
        },
    );
    s.vips.insert(VIP);
    s
}

fn backend(last: u8) -> Backend {
    Backend::new(Ipv4Addr::new(10, 244, 0, last), 8080, IPPROTO_TCP, 0)
}

fn master() -> SvcKey {
    SvcKey::new(VIP, 80, IPPROTO_TCP, 0, 0)
}

fn slot(n: u16, backend_id: u32) -> MapOp {
    UpsertService(
        master().with_slot(n),
        SvcValue {
            backend_id,
            rev_nat_index: 1,
            ..SvcValue::default()
        },
    )
}

fn count(n: u16) -> MapOp {
    UpsertService(
        master(),
        SvcValue {
            count: n,
            rev_nat_index: 1,
            flags: svc_flags::CLUSTER_IP,
            ..SvcValue::default()
        },
    )
}

/// Applies `ops` one by one, asserting consistency after each.
fn apply(maps: &mut MirrorMaps, ops: &[MapOp]) {
    for (i, op) in ops.iter().enumerate() {
        maps.apply(op).unwrap();
        if let Err(e) = consistent(maps.contents()) {
            panic!("inconsistent after op {i} {op:?}: {e}");
        }
    }
}

/// Plans `desired` against `maps` and applies it op by op.
fn sync(maps: &mut MirrorMaps, desired: &DesiredState, ids: &mut IdAllocator) {
    let ops = diff(maps.contents(), desired, ids).unwrap();
    apply(maps, &ops);
}

/// Syncs `from` into fresh maps, then returns the ops for `to`.
fn transition(from: &[u8], to: &[u8]) -> (Vec<MapOp>, MirrorMaps, IdAllocator) {
    transition_states(&state(from), &state(to))
}

/// Syncs `from` into fresh maps, then returns the ops for `to` (checking
/// that applying them is consistent throughout and converges).
fn transition_states(
    from: &DesiredState,
    to: &DesiredState,
) -> (Vec<MapOp>, MirrorMaps, IdAllocator) {
    let mut ids = IdAllocator::new();
    let mut maps = MirrorMaps::new();
    sync(&mut maps, from, &mut ids);
    let ops = diff(maps.contents(), to, &mut ids).unwrap();
    let mut after = maps.clone();
    apply(&mut after, &ops);
    assert!(diff(after.contents(), to, &mut ids).unwrap().is_empty());
    (ops, maps, ids)
}

#[test]
fn add_service_writes_backends_revnat_slots_master_marker() {
    let (ops, _, _) = transition_states(&DesiredState::default(), &state(&[1, 2]));
    assert_eq!(
        ops,
        vec![
            UpsertBackend(1, backend(1)),
            UpsertBackend(2, backend(2)),
            UpsertRevNat(1, RevNat::new(VIP, 80)),
            slot(1, 1),
            slot(2, 2),
            count(2),
            UpsertService(SvcKey::vip_marker(VIP), SvcValue::default()),
        ]
    );
}

#[test]
fn scale_up_writes_new_slot_before_raising_count() {
    let (ops, _, _) = transition(&[1, 2], &[1, 2, 3]);
    assert_eq!(
        ops,
        vec![UpsertBackend(3, backend(3)), slot(3, 3), count(3)]
    );
}

#[test]
fn scale_down_lowers_count_before_deleting_slots_and_backends() {
    let (ops, _, _) = transition(&[1, 2, 3], &[1]);
    assert_eq!(
        ops,
        vec![
            count(1),
            DeleteService(master().with_slot(2)),
            DeleteService(master().with_slot(3)),
            DeleteBackend(2),
            DeleteBackend(3),
        ]
    );
}

#[test]
fn removing_the_first_backend_shifts_slots_then_shrinks() {
    let (ops, _, ids) = transition(&[1, 2, 3], &[2, 3]);
    assert_eq!(
        ops,
        vec![
            slot(1, 2),
            slot(2, 3),
            count(2),
            DeleteService(master().with_slot(3)),
            DeleteBackend(1),
        ]
    );
    assert_eq!(
        ids.backend(&be(2)),
        Some(2),
        "surviving backend keeps its id"
    );
}

#[test]
fn replaced_backend_gets_a_fresh_id_and_the_old_one_goes_last() {
    let (ops, _, _) = transition(&[1, 2], &[1, 4]);
    assert_eq!(
        ops,
        vec![UpsertBackend(3, backend(4)), slot(2, 3), DeleteBackend(2)]
    );
}

#[test]
fn deleted_service_removes_master_then_slots_marker_revnat_backends() {
    // Endpoints gone but the Service still there: count 0, nothing deleted
    // but the slots and backends.
    let (ops, _, _) = transition(&[1, 2], &[]);
    assert_eq!(
        ops,
        vec![
            count(0),
            DeleteService(master().with_slot(1)),
            DeleteService(master().with_slot(2)),
            DeleteBackend(1),
            DeleteBackend(2),
        ]
    );
    // The Service itself deleted.
    let (ops, maps, ids) = transition_states(&state(&[1, 2]), &DesiredState::default());
    let mut maps = maps;
    assert_eq!(
        ops,
        vec![
            DeleteService(master()),
            DeleteService(master().with_slot(1)),
            DeleteService(master().with_slot(2)),
            DeleteService(SvcKey::vip_marker(VIP)),
            DeleteRevNat(1),
            DeleteBackend(1),
            DeleteBackend(2),
        ]
    );
    apply(&mut maps, &ops);
    assert_eq!(maps.contents(), &switchyard_lb::MapsSnapshot::default());
    assert_eq!((ids.backend_count(), ids.rev_nat_count()), (0, 0));
}

#[test]
fn restarted_agent_adopts_ids_and_has_nothing_to_do() {
    let mut maps = MirrorMaps::new();
    sync(&mut maps, &state(&[5, 6, 7]), &mut IdAllocator::new());
    let pinned = maps.contents().clone();
    let mut restored = IdAllocator::from_snapshot(&pinned);
    assert_eq!(restored.backend(&be(6)), Some(2));
    assert_eq!(restored.rev_nat(&fe()), Some(1));
    assert!(
        diff(&pinned, &state(&[5, 6, 7]), &mut restored)
            .unwrap()
            .is_empty()
    );
    // An empty allocator adopts the same ids during assignment.
    assert!(
        diff(&pinned, &state(&[5, 6, 7]), &mut IdAllocator::new())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn freed_ids_are_reused_only_after_their_deletion() {
    let mut ids = IdAllocator::with_limits(3, 10);
    let mut maps = MirrorMaps::new();
    sync(&mut maps, &state(&[1, 2]), &mut ids);
    // 1 and 2 are still in the maps: the new backend must not take them.
    let ops = diff(maps.contents(), &state(&[3]), &mut ids).unwrap();
    assert_eq!(ids.backend(&be(3)), Some(3));
    apply(&mut maps, &ops);
    // Now 1 and 2 are gone from the maps and free again.
    sync(&mut maps, &state(&[3, 4]), &mut ids);
    assert_eq!(ids.backend(&be(4)), Some(1));
    assert_eq!(ids.backend(&be(3)), Some(3));
}

#[test]
fn exhausted_ids_are_an_error() {
    let mut ids = IdAllocator::with_limits(2, 10);
    let err = diff(&Default::default(), &state(&[1, 2, 3]), &mut ids).unwrap_err();
    assert!(
        matches!(err, LbError::BackendIdsExhausted { limit: 2 }),
        "{err}"
    );

    let mut ids = IdAllocator::with_limits(10, 1);
    let mut two = state(&[1]);
    let other = Frontend { port: 81, ..fe() };
    let st = two.frontends[&fe()].clone();
    two.frontends.insert(other, st);
    let err = diff(&Default::default(), &two, &mut ids).unwrap_err();
    assert!(
        matches!(err, LbError::RevNatIdsExhausted { limit: 1 }),
        "{err}"
    );
}

#[test]
fn full_mirror_map_fails_and_reports_the_position() {
    let mut maps = MirrorMaps::with_capacity(MirrorCapacity {
        backends: Some(1),
        ..MirrorCapacity::default()
    });
    let ops = diff(maps.contents(), &state(&[1, 2]), &mut IdAllocator::new()).unwrap();
    let (at, err) = maps.apply_all(&ops).unwrap_err();
    assert_eq!(at, 1, "the second backend insert fails");
    assert!(matches!(err, LbError::MapFull { capacity: 1, .. }), "{err}");
    assert!(consistent(maps.contents()).is_ok());
}

#[test]
fn contradicting_pinned_backend_is_not_trusted() {
    // Pinned maps where id 1 holds another backend than the allocator thinks.
    let (_, maps, mut ids) = transition(&[], &[1]);
    let mut pinned = maps.contents().clone();
    pinned.backends.insert(1, backend(9));
    let ops = diff(&pinned, &state(&[1]), &mut ids).unwrap();
    let mut m = MirrorMaps::from_snapshot(pinned);
    m.apply_all(&ops).unwrap();
    let id = ids.backend(&be(1)).unwrap();
    assert_eq!(m.contents().backends.get(&id), Some(&backend(1)));
    assert!(consistent(m.contents()).is_ok());
}

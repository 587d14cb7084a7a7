//! Current maps + desired state → the ordered map operations between them.
//!
//! The order is the contract of `node-datapath/bpf/lb.h`, chosen so that a
//! reader (the BPF programs, running concurrently) never sees a half-written
//! service:
//!
//! 1. upsert backends (so no slot ever points at a backend not yet written);
//! 2. upsert rev-NATs (so no master references a missing one);
//! 3. upsert changed slots `1..=n` (the old master still bounds the slots a
//!    reader picks from, and every slot it can see is valid);
//! 4. upsert master entries (count, rev-NAT id, flags, affinity timeout);
//! 5. upsert VIP markers;
//! 6. delete orphan slots of frontends that shrank (their masters' counts
//!    were lowered in step 4), then deleted frontends — master first, then
//!    its slots — then stale VIP markers;
//! 7. delete orphan rev-NATs;
//! 8. delete orphan backends, last.
//!
//! Unchanged entries produce no operation, so diffing a state against
//! itself yields nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use switchyard_abi::{Backend, SCOPE_SOURCE_RANGE, SvcKey, SvcValue, backend_flags};

use crate::LbError;
use crate::ids::{IdAllocator, rev_nat_of};
use crate::maps::{MapOp, MapsSnapshot};
use crate::model::{BackendKey, DesiredState, Frontend, FrontendState, Scope};

/// Assigns ids for `desired` (see [`IdAllocator::assign`]) and returns the
/// ordered operations that turn `current` into it.
pub fn diff(
    current: &MapsSnapshot,
    desired: &DesiredState,
    ids: &mut IdAllocator,
) -> Result<Vec<MapOp>, LbError> {
    Ok(plan(current, desired, ids)?.0)
}

/// [`diff`], also returning the target map contents.
pub(crate) fn plan(
    current: &MapsSnapshot,
    desired: &DesiredState,
    ids: &mut IdAllocator,
) -> Result<(Vec<MapOp>, MapsSnapshot), LbError> {
    let wanted = desired.backends();
    ids.assign_with(desired, &wanted, current)?;
    let target = build_target(desired, &wanted, ids)?;
    Ok((diff_snapshots(current, &target), target))
}

/// The exact map contents `desired` means, with the ids `ids` assigned.
/// Fails if a backend or frontend of `desired` has no id (call
/// [`IdAllocator::assign`] first).
pub fn target_maps(desired: &DesiredState, ids: &IdAllocator) -> Result<MapsSnapshot, LbError> {
    build_target(desired, &desired.backends(), ids)
}

fn build_target(
    desired: &DesiredState,
    wanted: &BTreeMap<BackendKey, bool>,
    ids: &IdAllocator,
) -> Result<MapsSnapshot, LbError> {
    let mut out = MapsSnapshot::default();
    // Collected, then bulk-built: `BTreeMap: FromIterator` sorts once.
    let mut services: Vec<(SvcKey, SvcValue)> = Vec::new();
    for (&key, &terminating) in wanted {
        let id = ids
            .backend(&key)
            .ok_or(LbError::MissingBackendId { backend: key })?;
        let flags = if terminating {
            backend_flags::TERMINATING
        } else {
            0
        };
        let value = Backend::new(key.ip, key.port, key.proto.number(), flags);
        out.backends.insert(id, value);
    }
    for (fe, st) in &desired.frontends {
        let rev = ids
            .rev_nat(fe)
            .ok_or(LbError::MissingRevNatId { frontend: *fe })?;
        out.rev_nat.insert(rev, rev_nat_of(fe));
        frontend_entries(fe, st, rev, ids, &mut services)?;
    }
    services.extend(
        desired
            .vips
            .iter()
            .map(|vip| (SvcKey::vip_marker(*vip), SvcValue::default())),
    );
    out.services = services.into_iter().collect();
    Ok(out)
}

/// The master and slot entries of one frontend whose rev-NAT id is `rev`.
fn frontend_entries(
    fe: &Frontend,
    st: &FrontendState,
    rev: u16,
    ids: &IdAllocator,
    services: &mut Vec<(SvcKey, SvcValue)>,
) -> Result<(), LbError> {
    let master = fe.master_key();
    // Truncation to the slot limit is reported by `desired`.
    let count = u16::try_from(st.backends.len()).unwrap_or(u16::MAX);
    for (slot, b) in (1..=count).zip(&st.backends) {
        let backend_id = ids
            .backend(&b.key)
            .ok_or(LbError::MissingBackendId { backend: b.key })?;
        let value = SvcValue {
            backend_id,
            rev_nat_index: rev,
            ..SvcValue::default()
        };
        services.push((master.with_slot(slot), value));
    }
    let ranges = master.with_scope(SCOPE_SOURCE_RANGE);
    for (slot, (net, len)) in (1..).zip(&st.source_ranges) {
        let value = SvcValue {
            backend_id: u32::from(*net).to_be(),
            count: u16::from(*len),
            ..SvcValue::default()
        };
        services.push((ranges.with_slot(slot), value));
    }
    let value = SvcValue {
        count,
        rev_nat_index: rev,
        flags: st.flags,
        affinity_timeout: st.affinity_timeout,
        ..SvcValue::default()
    };
    services.push((master, value));
    Ok(())
}

/// The keys whose map entries may differ from the desired state since the
/// last plan (see [`diff_dirty`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Frontends whose master, slots or rev-NAT entry may have changed.
    pub frontends: BTreeSet<Frontend>,
    /// ClusterIPs whose VIP marker may have appeared or gone.
    pub vips: BTreeSet<Ipv4Addr>,
    /// Backends that may have appeared, gone or changed flags.
    pub backends: BTreeSet<BackendKey>,
}

impl Dirty {
    /// Whether nothing is dirty.
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.vips.is_empty() && self.backends.is_empty()
    }
}

/// Incremental [`diff`]: the ordered operations that bring the entries of
/// the `dirty` keys in `current` to what `desired` means, in the same order
/// the full diff uses, assuming every other key is already in sync.
/// `backend` says whether a backend key is wanted and with which
/// terminating flag (as [`DesiredState::backends`] would). Ids are
/// allocated for new keys and freed for keys no longer wanted. Costs
/// O(dirty keys × log map size), independent of the number of Services.
pub fn diff_dirty(
    current: &MapsSnapshot,
    desired: &DesiredState,
    backend: impl Fn(&BackendKey) -> Option<bool>,
    dirty: &Dirty,
    ids: &mut IdAllocator,
) -> Result<Vec<MapOp>, LbError> {
    let (mut cur, mut tgt) = (MapsSnapshot::default(), MapsSnapshot::default());
    for key in &dirty.backends {
        if let Some(id) = ids.backend(key)
            && let Some(v) = current.backends.get(&id)
        {
            cur.backends.insert(id, *v);
        }
        match backend(key) {
            Some(terminating) => {
                let id = ids.ensure_backend(*key, current)?;
                let flags = if terminating {
                    backend_flags::TERMINATING
                } else {
                    0
                };
                tgt.backends.insert(
                    id,
                    Backend::new(key.ip, key.port, key.proto.number(), flags),
                );
            }
            None => ids.release_backend(key),
        }
    }
    let mut services = Vec::new();
    for fe in &dirty.frontends {
        dirty_frontend(fe, current, desired, ids, &mut cur, &mut tgt, &mut services)?;
    }
    for vip in &dirty.vips {
        let key = SvcKey::vip_marker(*vip);
        if let Some(v) = current.services.get(&key) {
            cur.services.insert(key, *v);
        }
        if desired.vips.contains(vip) {
            services.push((key, SvcValue::default()));
        }
    }
    tgt.services = services.into_iter().collect();
    Ok(diff_snapshots(&cur, &tgt))
}

/// The current entries (into `cur`) and the desired ones (its rev-NAT
/// into `tgt`, its service-map entries into `services`) of one dirty
/// frontend; allocates or frees its rev-NAT id.
fn dirty_frontend(
    fe: &Frontend,
    current: &MapsSnapshot,
    desired: &DesiredState,
    ids: &mut IdAllocator,
    cur: &mut MapsSnapshot,
    tgt: &mut MapsSnapshot,
    services: &mut Vec<(SvcKey, SvcValue)>,
) -> Result<(), LbError> {
    let master = fe.master_key();
    let lo = SvcKey {
        backend_slot: 0,
        proto: 0,
        scope: 0,
        pad: [0; 2],
        ..master
    };
    let hi = SvcKey {
        backend_slot: u16::MAX,
        proto: u8::MAX,
        scope: u8::MAX,
        pad: [u8::MAX; 2],
        ..master
    };
    // A node-scope frontend also owns its source ranges' entries.
    let ranges = (fe.scope == Scope::Node).then(|| master.with_scope(SCOPE_SOURCE_RANGE));
    for (k, v) in current.services.range(lo..=hi) {
        let owner = k.with_slot(0);
        if owner == master || Some(owner) == ranges {
            cur.services.insert(*k, *v);
        }
    }
    if let Some(id) = ids.rev_nat(fe)
        && let Some(r) = current.rev_nat.get(&id)
    {
        cur.rev_nat.insert(id, *r);
    }
    match desired.frontends.get(fe) {
        Some(st) => {
            let rev = ids.ensure_rev_nat(*fe, current)?;
            tgt.rev_nat.insert(rev, rev_nat_of(fe));
            frontend_entries(fe, st, rev, ids, services)?;
        }
        None => ids.release_rev_nat(fe),
    }
    Ok(())
}

/// Whether a service-map key is a VIP marker (port 0, proto 0, slot 0).
pub fn is_vip_marker(key: &SvcKey) -> bool {
    key.dport == 0 && key.proto == 0 && key.backend_slot == 0
}

/// The ordered operations turning `current` into `target` (see the module
/// documentation for the order).
pub fn diff_snapshots(current: &MapsSnapshot, target: &MapsSnapshot) -> Vec<MapOp> {
    let mut ops = Vec::new();
    for (id, b) in &target.backends {
        if current.backends.get(id) != Some(b) {
            ops.push(MapOp::UpsertBackend(*id, *b));
        }
    }
    for (id, r) in &target.rev_nat {
        if current.rev_nat.get(id) != Some(r) {
            ops.push(MapOp::UpsertRevNat(*id, *r));
        }
    }
    let changed = |k: &SvcKey, v: &SvcValue| current.services.get(k) != Some(v);
    let (mut masters, mut markers) = (Vec::new(), Vec::new());
    for (k, v) in &target.services {
        if !changed(k, v) {
            continue;
        }
        if k.backend_slot != 0 {
            ops.push(MapOp::UpsertService(*k, *v));
        } else if is_vip_marker(k) {
            markers.push(MapOp::UpsertService(*k, *v));
        } else {
            masters.push(MapOp::UpsertService(*k, *v));
        }
    }
    ops.append(&mut masters);
    ops.append(&mut markers);

    // Orphan service entries, grouped by their slot-0 key.
    let mut orphans: BTreeMap<SvcKey, BTreeSet<u16>> = BTreeMap::new();
    for k in current.services.keys() {
        if !target.services.contains_key(k) {
            orphans
                .entry(k.with_slot(0))
                .or_default()
                .insert(k.backend_slot);
        }
    }
    let (shrunk, mut gone): (Vec<_>, Vec<_>) = orphans
        .into_iter()
        .partition(|(master, _)| target.services.contains_key(master));
    // Stale VIP markers go after the frontends they guarded.
    gone.sort_by_key(|(master, _)| is_vip_marker(master));
    for (master, slots) in shrunk {
        ops.extend(
            slots
                .into_iter()
                .map(|s| MapOp::DeleteService(master.with_slot(s))),
        );
    }
    for (master, slots) in gone {
        // `slots` is ordered, so slot 0 (the master) is deleted first.
        ops.extend(
            slots
                .into_iter()
                .map(|s| MapOp::DeleteService(master.with_slot(s))),
        );
    }
    for id in current.rev_nat.keys() {
        if !target.rev_nat.contains_key(id) {
            ops.push(MapOp::DeleteRevNat(*id));
        }
    }
    for id in current.backends.keys() {
        if !target.backends.contains_key(id) {
            ops.push(MapOp::DeleteBackend(*id));
        }
    }
    ops
}

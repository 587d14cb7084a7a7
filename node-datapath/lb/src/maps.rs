//! The seam between the pure diff and the kernel: ordered map operations and
//! the trait that applies them. The aya implementation lives in the agent
//! crate (`switchyard-node-datapath`); `MirrorMaps` (in this crate) is the
//! in-memory one: the agent's mirror of the pinned maps, and the tests' maps.

use switchyard_abi::{Backend, BackendId, RevNat, RevNatId, SvcKey, SvcValue};

/// One write to the BPF maps. A diff is a `Vec<MapOp>` whose order is part of
/// the contract: backends, rev-NAT, then service slots, then master entries,
/// then deletions of orphaned slots/masters, rev-NATs and backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Insert or update a backend-map entry.
    UpsertBackend(BackendId, Backend),
    /// Insert or update a rev-NAT entry.
    UpsertRevNat(RevNatId, RevNat),
    /// Insert or update a service-map entry (master, slot or VIP marker).
    UpsertService(SvcKey, SvcValue),
    /// Delete a service-map entry.
    DeleteService(SvcKey),
    /// Delete a rev-NAT entry.
    DeleteRevNat(RevNatId),
    /// Delete a backend-map entry.
    DeleteBackend(BackendId),
}

/// Everything userspace owns in the maps (the LRU socket/affinity maps are
/// the kernel's). Used to adopt pinned maps on restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapsSnapshot {
    /// The service map: masters, slots and VIP markers.
    pub services: std::collections::BTreeMap<SvcKey, SvcValue>,
    /// The backend map.
    pub backends: std::collections::BTreeMap<BackendId, Backend>,
    /// The rev-NAT map.
    pub rev_nat: std::collections::BTreeMap<RevNatId, RevNat>,
}

/// The load-balancer maps, as the sync loop sees them.
pub trait LbMaps {
    /// The implementation's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies one operation. Deleting an absent key is not an error.
    fn apply(&mut self, op: &MapOp) -> Result<(), Self::Error>;

    /// Reads back everything userspace owns (for adoption after restart).
    fn snapshot(&self) -> Result<MapsSnapshot, Self::Error>;

    /// Applies operations in order, stopping at the first error, which is
    /// returned with the number of operations applied before it.
    /// Implementations may group operations into fewer kernel calls (the
    /// pinned maps batch runs of same-map, same-kind operations) as long as
    /// a concurrent reader observes the operations taking effect in order.
    fn apply_all(&mut self, ops: &[MapOp]) -> Result<(), (usize, Self::Error)> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op).map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

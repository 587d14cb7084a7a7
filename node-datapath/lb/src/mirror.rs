//! The in-memory [`LbMaps`] — the agent's mirror of what it wrote to the
//! pinned maps, and the maps of the pure tests — and the consistency check a
//! BPF reader relies on.

use std::fmt;

use switchyard_abi::{BackendId, RevNatId, SvcKey};

use crate::LbError;
use crate::diff::is_vip_marker;
use crate::maps::{LbMaps, MapOp, MapsSnapshot};

/// Entry limits of the in-memory maps (`None`: unlimited), like `max_entries`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorCapacity {
    /// Service map entries (masters, slots and VIP markers).
    pub services: Option<usize>,
    /// Backend map entries.
    pub backends: Option<usize>,
    /// Rev-NAT map entries.
    pub rev_nat: Option<usize>,
}

/// The maps, in memory. Inserting a new key into a full map fails with
/// [`LbError::MapFull`], as the kernel's `E2BIG` would; updating an existing
/// key always succeeds.
#[derive(Clone, Debug, Default)]
pub struct MirrorMaps {
    contents: MapsSnapshot,
    capacity: MirrorCapacity,
    applied: usize,
}

impl MirrorMaps {
    /// Empty, unlimited maps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty maps with entry limits.
    pub fn with_capacity(capacity: MirrorCapacity) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// Maps pre-filled with `contents` (e.g. "pinned maps after a restart").
    pub fn from_snapshot(contents: MapsSnapshot) -> Self {
        Self {
            contents,
            ..Self::default()
        }
    }

    /// What the maps hold now.
    pub fn contents(&self) -> &MapsSnapshot {
        &self.contents
    }

    /// Number of operations applied successfully so far.
    pub fn applied(&self) -> usize {
        self.applied
    }
}

fn insert<K: Ord, V>(
    map: &mut std::collections::BTreeMap<K, V>,
    k: K,
    v: V,
    cap: Option<usize>,
    name: &'static str,
) -> Result<(), LbError> {
    if let Some(cap) = cap
        && map.len() >= cap
        && !map.contains_key(&k)
    {
        return Err(LbError::MapFull {
            map: name,
            capacity: cap,
        });
    }
    map.insert(k, v);
    Ok(())
}

impl LbMaps for MirrorMaps {
    type Error = LbError;

    fn apply(&mut self, op: &MapOp) -> Result<(), LbError> {
        use switchyard_abi::map_names as names;
        let c = &mut self.contents;
        match *op {
            MapOp::UpsertBackend(id, b) => insert(
                &mut c.backends,
                id,
                b,
                self.capacity.backends,
                names::BACKENDS,
            )?,
            MapOp::UpsertRevNat(id, r) => {
                insert(&mut c.rev_nat, id, r, self.capacity.rev_nat, names::REV_NAT)?
            }
            MapOp::UpsertService(k, v) => insert(
                &mut c.services,
                k,
                v,
                self.capacity.services,
                names::SERVICES,
            )?,
            MapOp::DeleteService(k) => {
                c.services.remove(&k);
            }
            MapOp::DeleteRevNat(id) => {
                c.rev_nat.remove(&id);
            }
            MapOp::DeleteBackend(id) => {
                c.backends.remove(&id);
            }
        }
        self.applied += 1;
        Ok(())
    }

    fn snapshot(&self) -> Result<MapsSnapshot, LbError> {
        Ok(self.contents.clone())
    }
}

/// A state in which a BPF reader could fail to serve a frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inconsistency {
    /// The master's count covers a slot that is absent.
    SlotMissing { master: SvcKey, slot: u16 },
    /// A slot within the count points at an absent backend.
    BackendMissing {
        master: SvcKey,
        slot: u16,
        backend: BackendId,
    },
    /// The master's rev-NAT entry is absent.
    RevNatMissing { master: SvcKey, rev_nat: RevNatId },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fe = |k: &SvcKey| format!("{}:{}/{}", k.ip(), k.port(), k.proto);
        match self {
            Inconsistency::SlotMissing { master, slot } => {
                write!(f, "{}: slot {slot} missing", fe(master))
            }
            Inconsistency::BackendMissing {
                master,
                slot,
                backend,
            } => write!(
                f,
                "{}: slot {slot} -> missing backend {backend}",
                fe(master)
            ),
            Inconsistency::RevNatMissing { master, rev_nat } => {
                write!(f, "{}: rev-NAT {rev_nat} missing", fe(master))
            }
        }
    }
}

impl std::error::Error for Inconsistency {}

/// Checks that every master entry's slots `1..=count` exist and point at
/// existing backends and that its rev-NAT entry exists (VIP markers are
/// not masters).
pub fn consistent(s: &MapsSnapshot) -> Result<(), Inconsistency> {
    for (k, v) in &s.services {
        if k.backend_slot != 0 || is_vip_marker(k) {
            continue;
        }
        if !s.rev_nat.contains_key(&v.rev_nat_index) {
            return Err(Inconsistency::RevNatMissing {
                master: *k,
                rev_nat: v.rev_nat_index,
            });
        }
        for slot in 1..=v.count {
            let Some(sv) = s.services.get(&k.with_slot(slot)) else {
                return Err(Inconsistency::SlotMissing { master: *k, slot });
            };
            if !s.backends.contains_key(&sv.backend_id) {
                return Err(Inconsistency::BackendMissing {
                    master: *k,
                    slot,
                    backend: sv.backend_id,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use switchyard_abi::{Backend, IPPROTO_TCP, RevNat, SvcValue};

    use super::*;

    fn base() -> (MapsSnapshot, SvcKey) {
        let m = SvcKey::new(Ipv4Addr::new(10, 96, 0, 1), 80, IPPROTO_TCP, 0, 0);
        let mut s = MapsSnapshot::default();
        s.backends.insert(
            7,
            Backend::new(Ipv4Addr::new(10, 244, 0, 1), 80, IPPROTO_TCP, 0),
        );
        s.rev_nat.insert(3, RevNat::new(m.ip(), 80));
        let slot = SvcValue {
            backend_id: 7,
            rev_nat_index: 3,
            ..SvcValue::default()
        };
        s.services.insert(m.with_slot(1), slot);
        let master = SvcValue {
            count: 1,
            rev_nat_index: 3,
            ..SvcValue::default()
        };
        s.services.insert(m, master);
        s.services
            .insert(SvcKey::vip_marker(m.ip()), SvcValue::default());
        (s, m)
    }

    #[test]
    fn consistent_accepts_a_complete_service_and_names_each_defect() {
        let (s, m) = base();
        assert_eq!(consistent(&s), Ok(()));

        let mut t = s.clone();
        t.services.get_mut(&m).unwrap().count = 2;
        assert_eq!(
            consistent(&t),
            Err(Inconsistency::SlotMissing { master: m, slot: 2 })
        );

        let mut t = s.clone();
        t.backends.clear();
        assert_eq!(
            consistent(&t),
            Err(Inconsistency::BackendMissing {
                master: m,
                slot: 1,
                backend: 7
            })
        );

        let mut t = s;
        t.rev_nat.clear();
        assert_eq!(
            consistent(&t),
            Err(Inconsistency::RevNatMissing {
                master: m,
                rev_nat: 3
            })
        );
    }

    #[test]
    fn full_map_refuses_new_keys_but_accepts_updates_and_deletes() {
        let (s, m) = base();
        let mut maps = MirrorMaps::with_capacity(MirrorCapacity {
            services: Some(3),
            ..MirrorCapacity::default()
        });
        for (k, v) in &s.services {
            maps.apply(&MapOp::UpsertService(*k, *v)).unwrap();
        }
        let extra = MapOp::UpsertService(m.with_slot(2), SvcValue::default());
        assert!(matches!(
            maps.apply(&extra),
            Err(LbError::MapFull { capacity: 3, .. })
        ));
        let update = MapOp::UpsertService(m, SvcValue::default());
        maps.apply(&update).unwrap();
        maps.apply(&MapOp::DeleteService(m.with_slot(9))).unwrap();
        assert_eq!(maps.applied(), 5);
        assert_eq!(maps.snapshot().unwrap().services.len(), 3);
    }
}

//! Stable id allocation for backends and rev-NAT entries.
//!
//! A backend id names one `(ip, port, proto)`; a rev-NAT id names one
//! frontend. Both are reused across syncs for as long as the key is wanted,
//! are adopted from the maps after an agent restart (so live connections and
//! affinity entries keep their meaning), and are freed when unused. A new id
//! is never one still present in the maps: an orphan may be referenced by a
//! slot until the diff's deletions run, so handing it to another key in the
//! same diff would make that slot point at the wrong backend. Running out of
//! ids is an error ([`crate::LbError`]), never a silent wrap.

use std::collections::{BTreeMap, HashMap, HashSet};

use switchyard_abi::{BackendId, RevNat, RevNatId};

use crate::LbError;
use crate::maps::MapsSnapshot;
use crate::model::{BackendKey, DesiredState, Frontend};

/// One id space: a bijection key ↔ id plus a cursor for new ids.
#[derive(Clone, Debug)]
struct Space<K, I> {
    by_key: HashMap<K, I>,
    by_id: HashMap<I, K>,
    next: u64,
    max: u64,
}

impl<K: Eq + std::hash::Hash + Copy, I: Copy + Eq + std::hash::Hash + Into<u64> + TryFrom<u64>>
    Space<K, I>
{
    fn new(max: u64) -> Self {
        Self {
            by_key: HashMap::new(),
            by_id: HashMap::new(),
            next: 1,
            max,
        }
    }

    fn insert(&mut self, key: K, id: I) {
        self.by_key.insert(key, id);
        self.by_id.insert(id, key);
    }

    fn remove_key(&mut self, key: &K) {
        if let Some(id) = self.by_key.remove(key) {
            self.by_id.remove(&id);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, I) -> bool) {
        let drop: Vec<K> = self
            .by_key
            .iter()
            .filter(|(k, id)| !keep(k, **id))
            .map(|(k, _)| *k)
            .collect();
        for k in drop {
            self.remove_key(&k);
        }
    }

    /// A fresh id, used neither here nor in `busy`; `None` when exhausted.
    fn allocate(&mut self, key: K, busy: &HashSet<u64>) -> Option<I> {
        self.allocate_avoiding(key, |c| busy.contains(&c))
    }

    /// A fresh id, used neither here nor where `busy` says; `None` when
    /// exhausted.
    fn allocate_avoiding(&mut self, key: K, busy: impl Fn(u64) -> bool) -> Option<I> {
        for _ in 0..self.max {
            let candidate = self.next;
            self.next = if self.next >= self.max {
                1
            } else {
                self.next + 1
            };
            let Ok(id) = I::try_from(candidate) else {
                continue;
            };
            if !self.by_id.contains_key(&id) && !busy(candidate) {
                self.insert(key, id);
                return Some(id);
            }
        }
        None
    }
}

/// Allocates and remembers backend and rev-NAT ids across syncs.
#[derive(Clone, Debug)]
pub struct IdAllocator {
    backends: Space<BackendKey, BackendId>,
    rev_nat: Space<Frontend, RevNatId>,
}

impl Default for IdAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdAllocator {
    /// An empty allocator using the full id ranges (`1..=u32::MAX` backends,
    /// `1..=u16::MAX` rev-NATs).
    pub fn new() -> Self {
        Self::with_limits(BackendId::MAX, RevNatId::MAX)
    }

    /// An empty allocator with smaller id ranges (`1..=max_*`), e.g. to
    /// match map capacities or to test exhaustion.
    pub fn with_limits(max_backend: BackendId, max_rev_nat: RevNatId) -> Self {
        Self {
            backends: Space::new(u64::from(max_backend)),
            rev_nat: Space::new(u64::from(max_rev_nat)),
        }
    }

    /// An allocator that adopts the ids found in pinned maps: each backend
    /// key keeps its (lowest) id, each frontend keeps the rev-NAT id of its
    /// master entry.
    pub fn from_snapshot(snapshot: &MapsSnapshot) -> Self {
        let mut ids = Self::new();
        ids.adopt(snapshot, &master_rev_nats(snapshot), |_| true, |_| true);
        ids
    }

    /// The backend id of `key`, if it has one.
    pub fn backend(&self, key: &BackendKey) -> Option<BackendId> {
        self.backends.by_key.get(key).copied()
    }

    /// The rev-NAT id of `frontend`, if it has one.
    pub fn rev_nat(&self, frontend: &Frontend) -> Option<RevNatId> {
        self.rev_nat.by_key.get(frontend).copied()
    }

    /// Number of backend ids in use.
    pub fn backend_count(&self) -> usize {
        self.backends.by_key.len()
    }

    /// Number of rev-NAT ids in use.
    pub fn rev_nat_count(&self) -> usize {
        self.rev_nat.by_key.len()
    }

    /// Gives every backend and frontend of `desired` an id and frees the ids
    /// of keys no longer wanted. Ids are kept when valid, adopted from
    /// `current` when the allocator has none, and otherwise allocated fresh,
    /// avoiding every id present in `current`.
    pub fn assign(
        &mut self,
        desired: &DesiredState,
        current: &MapsSnapshot,
    ) -> Result<(), LbError> {
        self.assign_with(desired, &desired.backends(), current)
    }

    /// [`Self::assign`] with `desired.backends()` already computed.
    pub(crate) fn assign_with(
        &mut self,
        desired: &DesiredState,
        want_b: &BTreeMap<BackendKey, bool>,
        current: &MapsSnapshot,
    ) -> Result<(), LbError> {
        let want_f = &desired.frontends;

        // Free unwanted keys; drop mappings the maps contradict.
        self.backends.retain(|k, id| {
            want_b.contains_key(k)
                && current
                    .backends
                    .get(&id)
                    .is_none_or(|b| BackendKey::from_backend(b).as_ref() == Some(k))
        });
        let masters = master_rev_nats(current);
        self.rev_nat.retain(|fe, id| {
            want_f.contains_key(fe)
                && masters
                    .get(&id)
                    .is_none_or(|users| users.iter().all(|u| u == fe))
                && current
                    .rev_nat
                    .get(&id)
                    .is_none_or(|r| *r == rev_nat_of(fe))
        });

        // After `retain`, every mapped key is wanted: equal sizes mean every
        // wanted key has an id and the (costly) scans below can be skipped.
        let missing_b = self.backends.by_key.len() < want_b.len();
        let missing_f = self.rev_nat.by_key.len() < want_f.len();
        if !missing_b && !missing_f {
            return Ok(());
        }
        self.adopt(
            current,
            &masters,
            |k| missing_b && want_b.contains_key(k),
            |f| missing_f && want_f.contains_key(f),
        );
        if missing_b {
            self.allocate_backends(want_b, current)?;
        }
        if missing_f {
            self.allocate_rev_nats(want_f, current)?;
        }
        Ok(())
    }

    fn allocate_backends(
        &mut self,
        want_b: &BTreeMap<BackendKey, bool>,
        current: &MapsSnapshot,
    ) -> Result<(), LbError> {
        let mut busy: HashSet<u64> = current.backends.keys().map(|i| u64::from(*i)).collect();
        busy.extend(
            current
                .services
                .iter()
                .filter(|(k, _)| k.backend_slot != 0)
                .map(|(_, v)| u64::from(v.backend_id)),
        );
        for key in want_b.keys() {
            if self.backends.by_key.contains_key(key) {
                continue;
            }
            if self.backends.allocate(*key, &busy).is_none() {
                return Err(LbError::BackendIdsExhausted {
                    limit: self.backends.max,
                });
            }
        }
        Ok(())
    }

    fn allocate_rev_nats<V>(
        &mut self,
        want_f: &BTreeMap<Frontend, V>,
        current: &MapsSnapshot,
    ) -> Result<(), LbError> {
        let mut busy: HashSet<u64> = current.rev_nat.keys().map(|i| u64::from(*i)).collect();
        busy.extend(
            current
                .services
                .values()
                .map(|v| u64::from(v.rev_nat_index)),
        );
        for fe in want_f.keys() {
            if self.rev_nat.by_key.contains_key(fe) {
                continue;
            }
            if self.rev_nat.allocate(*fe, &busy).is_none() {
                return Err(LbError::RevNatIdsExhausted {
                    limit: self.rev_nat.max,
                });
            }
        }
        Ok(())
    }

    /// The id of backend `key`, allocating one if it has none. A new id is
    /// never one present in `current`'s backend map (an orphan still
    /// referenced by a slot until the diff deletes it). For incremental
    /// planning: costs O(1) unless ids are crowded.
    pub(crate) fn ensure_backend(
        &mut self,
        key: BackendKey,
        current: &MapsSnapshot,
    ) -> Result<BackendId, LbError> {
        if let Some(id) = self.backend(&key) {
            return Ok(id);
        }
        let busy =
            |c: u64| BackendId::try_from(c).is_ok_and(|id| current.backends.contains_key(&id));
        self.backends
            .allocate_avoiding(key, busy)
            .ok_or(LbError::BackendIdsExhausted {
                limit: self.backends.max,
            })
    }

    /// The rev-NAT id of `fe`, allocating one (not present in `current`'s
    /// rev-NAT map) if it has none.
    pub(crate) fn ensure_rev_nat(
        &mut self,
        fe: Frontend,
        current: &MapsSnapshot,
    ) -> Result<RevNatId, LbError> {
        if let Some(id) = self.rev_nat(&fe) {
            return Ok(id);
        }
        let busy = |c: u64| RevNatId::try_from(c).is_ok_and(|id| current.rev_nat.contains_key(&id));
        self.rev_nat
            .allocate_avoiding(fe, busy)
            .ok_or(LbError::RevNatIdsExhausted {
                limit: self.rev_nat.max,
            })
    }

    /// Frees the id of a backend no longer wanted.
    pub(crate) fn release_backend(&mut self, key: &BackendKey) {
        self.backends.remove_key(key);
    }

    /// Frees the rev-NAT id of a frontend no longer wanted.
    pub(crate) fn release_rev_nat(&mut self, fe: &Frontend) {
        self.rev_nat.remove_key(fe);
    }

    /// Adopts ids from the maps for keys without one, where the id is free.
    fn adopt(
        &mut self,
        current: &MapsSnapshot,
        masters: &BTreeMap<RevNatId, Vec<Frontend>>,
        want_b: impl Fn(&BackendKey) -> bool,
        want_f: impl Fn(&Frontend) -> bool,
    ) {
        // BTreeMap order: the lowest id of a duplicated key wins.
        for (id, b) in &current.backends {
            let Some(key) = BackendKey::from_backend(b) else {
                continue;
            };
            if *id != 0
                && want_b(&key)
                && !self.backends.by_key.contains_key(&key)
                && !self.backends.by_id.contains_key(id)
            {
                self.backends.insert(key, *id);
            }
        }
        for (id, users) in masters {
            let [fe] = users.as_slice() else {
                continue; // shared by several frontends: adopt none of them
            };
            if *id != 0
                && want_f(fe)
                && !self.rev_nat.by_key.contains_key(fe)
                && !self.rev_nat.by_id.contains_key(id)
                && current.rev_nat.get(id).is_none_or(|r| *r == rev_nat_of(fe))
            {
                self.rev_nat.insert(*fe, *id);
            }
        }
    }
}

/// The rev-NAT value of a frontend.
pub(crate) fn rev_nat_of(fe: &Frontend) -> RevNat {
    RevNat::new(fe.ip, fe.port)
}

/// rev-NAT id → the frontends whose master entries use it.
fn master_rev_nats(current: &MapsSnapshot) -> BTreeMap<RevNatId, Vec<Frontend>> {
    let mut out: BTreeMap<RevNatId, Vec<Frontend>> = BTreeMap::new();
    for (k, v) in &current.services {
        if k.backend_slot != 0 {
            continue;
        }
        if let Some(fe) = Frontend::from_key(k) {
            out.entry(v.rev_nat_index).or_default().push(fe);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::Proto;

    fn key(last: u8) -> BackendKey {
        BackendKey {
            ip: Ipv4Addr::new(10, 0, 0, last),
            port: 80,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn cursor_wraps_past_the_limit_and_never_yields_zero() {
        let mut s: Space<BackendKey, BackendId> = Space::new(3);
        let none = HashSet::new();
        let got: Vec<_> = (1..=3)
            .map(|i| s.allocate(key(i), &none).unwrap())
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(s.allocate(key(4), &none), None, "exhausted");
        s.remove_key(&key(2));
        assert_eq!(
            s.allocate(key(5), &none),
            Some(2),
            "wrapped to the freed id"
        );
        let busy: HashSet<u64> = [1].into();
        s.remove_key(&key(1));
        assert_eq!(s.allocate(key(6), &busy), None, "id 1 still in the maps");
    }
}

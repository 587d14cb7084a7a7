//! The aya side of the map seam: [`PinnedLbMaps`] implements
//! [`switchyard_lb::maps::LbMaps`] over the pinned maps (ordered op lists
//! are written in batches, see [`crate::batch`]), and
//! [`read_stats`] reads counters and occupancy for metrics.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use switchyard_abi::{
    AffinityKey, AffinityValue, Backend, BackendId, Counter, RevNat, RevNatId, SockKey, SockRevNat,
    SvcKey, SvcValue, map_names,
};
use switchyard_lb::maps::{LbMaps, MapOp, MapsSnapshot};

use crate::{
    DatapathError,
    batch::{self, RunError, RunKind},
    config::maps_dir,
    metrics::{DatapathStats, MapOccupancy},
};

pub(crate) fn open_map(bpffs_dir: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let path = maps_dir(bpffs_dir).join(name);
    let data = MapData::from_pin(&path).map_err(|e| DatapathError::map(name, e))?;
    Map::from_map_data(data).map_err(|e| DatapathError::map(name, e))
}

fn open_hash<K: aya::Pod, V: aya::Pod>(
    bpffs_dir: &Path,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, DatapathError> {
    HashMap::try_from(open_map(bpffs_dir, name)?).map_err(|e| DatapathError::map(name, e))
}

/// Whether a delete failed only because the key was absent.
fn is_absent(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound | aya::maps::MapError::ElementNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    key: &K,
) -> Result<(), DatapathError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(DatapathError::map(name, e)),
    }
}

fn read_all<K: aya::Pod + Ord, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<std::collections::BTreeMap<K, V>, DatapathError> {
    map.iter()
        .map(|r| r.map_err(|e| DatapathError::map(name, e)))
        .collect()
}

/// The three userspace-owned maps, opened from their pins. Independent of
/// any loaded object, so the sync loop can hold it across restarts of the
/// loader.
#[derive(Debug)]
pub struct PinnedLbMaps {
    services: HashMap<MapData, SvcKey, SvcValue>,
    backends: HashMap<MapData, BackendId, Backend>,
    rev_nat: HashMap<MapData, RevNatId, RevNat>,
    /// Raw descriptors of the same maps, for the batch commands aya lacks:
    /// services, backends, rev-NAT.
    raw: [OwnedFd; 3],
    /// Write runs of operations with one batch call each (turned off when
    /// the kernel refuses batch commands).
    batch: bool,
}

fn open_raw(bpffs_dir: &Path, name: &'static str) -> Result<OwnedFd, DatapathError> {
    let path = maps_dir(bpffs_dir).join(name);
    crate::sys::obj_get(&path).map_err(|e| DatapathError::io("open pinned map", path, e))
}

impl PinnedLbMaps {
    /// Opens the maps pinned under `bpffs_dir` (see [`crate::Datapath`]).
    pub fn open(bpffs_dir: &Path) -> Result<Self, DatapathError> {
        Ok(Self {
            services: open_hash(bpffs_dir, map_names::SERVICES)?,
            backends: open_hash(bpffs_dir, map_names::BACKENDS)?,
            rev_nat: open_hash(bpffs_dir, map_names::REV_NAT)?,
            raw: [
                open_raw(bpffs_dir, map_names::SERVICES)?,
                open_raw(bpffs_dir, map_names::BACKENDS)?,
                open_raw(bpffs_dir, map_names::REV_NAT)?,
            ],
            batch: true,
        })
    }

    /// Chooses batched (the default) or one-syscall-per-operation writes in
    /// [`LbMaps::apply_all`] (for comparison in benchmarks and tests).
    pub fn set_batching(&mut self, on: bool) {
        self.batch = on;
    }

    /// Whether [`LbMaps::apply_all`] writes in batches (false after the
    /// kernel refused a batch command).
    pub fn batching(&self) -> bool {
        self.batch
    }

    fn raw_fd(&self, kind: RunKind) -> &OwnedFd {
        match kind {
            RunKind::UpsertServices | RunKind::DeleteServices => &self.raw[0],
            RunKind::UpsertBackends | RunKind::DeleteBackends => &self.raw[1],
            RunKind::UpsertRevNats | RunKind::DeleteRevNats => &self.raw[2],
        }
    }

    fn apply_each(&mut self, ops: &[MapOp], offset: usize) -> Result<(), (usize, DatapathError)> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op).map_err(|e| (offset + i, e))?;
        }
        Ok(())
    }
}

impl LbMaps for PinnedLbMaps {
    type Error = DatapathError;

    fn apply(&mut self, op: &MapOp) -> Result<(), DatapathError> {
        match op {
            MapOp::UpsertBackend(id, b) => self
                .backends
                .insert(id, b, 0)
                .map_err(|e| DatapathError::map(map_names::BACKENDS, e)),
            MapOp::UpsertRevNat(id, r) => self
                .rev_nat
                .insert(id, r, 0)
                .map_err(|e| DatapathError::map(map_names::REV_NAT, e)),
            MapOp::UpsertService(k, v) => self
                .services
                .insert(k, v, 0)
                .map_err(|e| DatapathError::map(map_names::SERVICES, e)),
            MapOp::DeleteService(k) => remove(&mut self.services, map_names::SERVICES, k),
            MapOp::DeleteRevNat(id) => remove(&mut self.rev_nat, map_names::REV_NAT, id),
            MapOp::DeleteBackend(id) => remove(&mut self.backends, map_names::BACKENDS, id),
        }
    }

    /// In order, one batch call per run of same-map, same-kind operations
    /// (see [`crate::batch`]); per operation when batching is off or the
    /// kernel refuses it.
    fn apply_all(&mut self, ops: &[MapOp]) -> Result<(), (usize, DatapathError)> {
        if !self.batch {
            return self.apply_each(ops, 0);
        }
        for (kind, range) in batch::runs(ops) {
            let start = range.start;
            match batch::write_run(self.raw_fd(kind).as_fd(), kind, &ops[range]) {
                Ok(()) => {}
                Err(RunError::Unsupported(e)) => {
                    tracing::warn!(error = %e, "batched map writes refused; writing per operation");
                    self.batch = false;
                    return self.apply_each(&ops[start..], start);
                }
                Err(RunError::Failed { done, source }) => return Err((start + done, source)),
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<MapsSnapshot, DatapathError> {
        Ok(MapsSnapshot {
            services: read_all(&self.services, map_names::SERVICES)?,
            backends: read_all(&self.backends, map_names::BACKENDS)?,
            rev_nat: read_all(&self.rev_nat, map_names::REV_NAT)?,
        })
    }
}

fn occupancy<K: aya::Pod, V: aya::Pod>(
    bpffs_dir: &Path,
    name: &'static str,
) -> Result<MapOccupancy, DatapathError> {
    let map: HashMap<MapData, K, V> = open_hash(bpffs_dir, name)?;
    let mut entries = 0u64;
    for k in map.keys() {
        k.map_err(|e| DatapathError::map(name, e))?;
        entries += 1;
    }
    let path = maps_dir(bpffs_dir).join(name);
    let info = MapData::from_pin(&path)
        .and_then(|d| d.info())
        .map_err(|e| DatapathError::map(name, e))?;
    Ok(MapOccupancy {
        map: name,
        entries,
        capacity: info.max_entries(),
    })
}

/// Reads every counter (summed over CPUs), the flow events lost and the
/// occupancy of every hash map under `bpffs_dir`.
pub fn read_stats(bpffs_dir: &Path) -> Result<DatapathStats, DatapathError> {
    let name = map_names::COUNTERS;
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open_map(bpffs_dir, name)?)
        .map_err(|e| DatapathError::map(name, e))?;
    let mut stats = DatapathStats::default();
    for c in Counter::ALL {
        let per_cpu = counters
            .get(&(c as u32), 0)
            .map_err(|e| DatapathError::map(name, e))?;
        stats.counters[c as usize] = per_cpu.iter().copied().sum();
    }
    stats.maps = vec![
        occupancy::<SvcKey, SvcValue>(bpffs_dir, map_names::SERVICES)?,
        occupancy::<BackendId, Backend>(bpffs_dir, map_names::BACKENDS)?,
        occupancy::<RevNatId, RevNat>(bpffs_dir, map_names::REV_NAT)?,
        occupancy::<SockKey, SockRevNat>(bpffs_dir, map_names::SOCK_REV_NAT)?,
        occupancy::<AffinityKey, AffinityValue>(bpffs_dir, map_names::AFFINITY)?,
    ];
    stats.events_lost = crate::events::events_lost(bpffs_dir)?;
    stats.events_shed = crate::events::events_shed(bpffs_dir)?;
    Ok(stats)
}

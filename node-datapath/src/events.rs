//! Flow events from the socket load balancer (lb.h, "Flow events"): the
//! reading end of the `sy_events` ring buffer, the `sy_config` switch that
//! turns events on and off, and the kernel's count of events lost.
//!
//! The ring is read from its pin, like the other maps, so a reader is
//! independent of the loaded object and survives a restart of the loader.
//! Decoding a record is left to the reader's owner:
//! [`switchyard_abi::FlowEvent::from_bytes`] is the layout.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    path::Path,
};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use switchyard_abi::{Config, EventsRate, config_flags, map_names};

use crate::{DatapathError, maps::open_map};

/// The consumer side of the pinned `sy_events` ring buffer.
///
/// Its descriptor ([`AsRawFd`]) polls readable while records wait, so an
/// async owner can wait on it (tokio's `AsyncFd`) instead of polling.
pub struct FlowEventRing {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for FlowEventRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEventRing").finish_non_exhaustive()
    }
}

impl FlowEventRing {
    /// Opens the ring pinned under `bpffs_dir` (see [`crate::Datapath`]).
    pub fn open(bpffs_dir: &Path) -> Result<Self, DatapathError> {
        let name = map_names::EVENTS;
        let ring = RingBuf::try_from(open_map(bpffs_dir, name)?)
            .map_err(|e| DatapathError::map(name, e))?;
        Ok(Self { ring })
    }

    /// Hands every record waiting now to `f` (its bytes, as long as the
    /// program wrote them) and returns how many there were. Each record is
    /// released to the kernel as soon as `f` returns.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }
}

impl AsFd for FlowEventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for FlowEventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Turns flow events on or off for every program using the maps under
/// `bpffs_dir`; it takes effect at the programs' next run.
pub fn set_flow_events(bpffs_dir: &Path, on: bool) -> Result<(), DatapathError> {
    let name = map_names::CONFIG;
    let mut config: Array<MapData, Config> =
        Array::try_from(open_map(bpffs_dir, name)?).map_err(|e| DatapathError::map(name, e))?;
    let mut value = config.get(&0, 0).map_err(|e| DatapathError::map(name, e))?;
    value.flags = if on {
        value.flags & !config_flags::EVENTS_OFF
    } else {
        value.flags | config_flags::EVENTS_OFF
    };
    config
        .set(0, value, 0)
        .map_err(|e| DatapathError::map(name, e))
}

/// Limits the flow events each CPU may emit to `per_sec` a second (a
/// token bucket holding one second's worth; 0: no limit) for every
/// program using the maps under `bpffs_dir`.
pub fn set_flow_event_rate(bpffs_dir: &Path, per_sec: u32) -> Result<(), DatapathError> {
    let name = map_names::CONFIG;
    let mut config: Array<MapData, Config> =
        Array::try_from(open_map(bpffs_dir, name)?).map_err(|e| DatapathError::map(name, e))?;
    let mut value = config.get(&0, 0).map_err(|e| DatapathError::map(name, e))?;
    value.events_per_sec = per_sec;
    config
        .set(0, value, 0)
        .map_err(|e| DatapathError::map(name, e))
}

/// Flow events shed so far because a CPU was over the rate limit, summed
/// over CPUs.
pub fn events_shed(bpffs_dir: &Path) -> Result<u64, DatapathError> {
    let name = map_names::EVENTS_RATE;
    let rate: PerCpuArray<MapData, EventsRate> = PerCpuArray::try_from(open_map(bpffs_dir, name)?)
        .map_err(|e| DatapathError::map(name, e))?;
    let per_cpu = rate.get(&0, 0).map_err(|e| DatapathError::map(name, e))?;
    Ok(per_cpu.iter().map(|r| r.shed).sum())
}

/// Flow events lost so far because the ring was full, summed over CPUs.
pub fn events_lost(bpffs_dir: &Path) -> Result<u64, DatapathError> {
    let name = map_names::EVENTS_LOST;
    let lost: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open_map(bpffs_dir, name)?)
        .map_err(|e| DatapathError::map(name, e))?;
    let per_cpu = lost.get(&0, 0).map_err(|e| DatapathError::map(name, e))?;
    Ok(per_cpu.iter().copied().sum())
}

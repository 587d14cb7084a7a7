//! Steering kube-proxy's health ports to the agent (`bpf/health.h`): the
//! sk_lookup program on the node's network namespace, pinned as
//! `<dir>/links/health-lookup` and adopted like the other links, and
//! [`HealthSockets`], the map of which listening socket serves which port.
//!
//! It is attached with the ingress program (north-south on): the health
//! ports are what external load balancers check.

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd},
    os::unix::fs::MetadataExt,
    path::Path,
};

use aya::{
    maps::{MapData, SockHash},
    programs::{SkLookup, links::FdLink},
};
use switchyard_abi::map_names;

use crate::{
    DatapathError,
    config::LinkAction,
    config::maps_dir,
    links::{LinkTarget, StartGuard, adopt_link, detach_and_unpin, pin_new_link},
    object::load_named,
};

/// The program's function name in `bpf/health.h`.
pub const PROGRAM: &str = "sy_health_lookup";
const PIN: &str = "health-lookup";

/// The network namespace the calling thread is in.
fn own_netns() -> Result<(File, u64), DatapathError> {
    let path = Path::new("/proc/thread-self/ns/net");
    let file = File::open(path).map_err(|e| DatapathError::io("open", path, e))?;
    let ino = file
        .metadata()
        .map_err(|e| DatapathError::io("stat", path, e))?
        .ino();
    Ok((file, ino))
}

fn load(ebpf: &mut aya::Ebpf) -> Result<&mut SkLookup, DatapathError> {
    load_named(ebpf, PROGRAM, SkLookup::load)
}

/// Attaches (or adopts) the steering program on the calling thread's
/// network namespace when `enabled`, else removes its pinned link.
pub(crate) fn ensure(
    ebpf: &mut aya::Ebpf,
    enabled: bool,
    links: &Path,
    guard: &mut StartGuard,
) -> Result<Option<LinkAction>, DatapathError> {
    let pin = links.join(PIN);
    if !enabled {
        detach_and_unpin(&pin);
        return Ok(None);
    }
    let perr = |e| DatapathError::Program {
        program: PROGRAM,
        source: Box::new(e),
    };
    let prog = load(ebpf)?;
    let (netns, ino) = own_netns()?;
    let stale = pin.exists();
    if stale {
        let fd = prog.fd().map_err(perr)?;
        if let Some(action) = adopt_link(&pin, LinkTarget::Netns { ino }, fd.as_fd())? {
            return Ok(Some(action));
        }
    }
    let id = prog.attach(&netns).map_err(perr)?;
    let link = FdLink::from(prog.take_link(id).map_err(perr)?);
    pin_new_link(link, &pin, stale, guard).map(Some)
}

/// The pin of the steering link under `links`.
pub(crate) fn pin_path(links: &Path) -> std::path::PathBuf {
    links.join(PIN)
}

/// Which listening socket serves which health port (the pinned
/// `sy_health_socks`). A socket leaves the map by itself when it closes.
pub struct HealthSockets(SockHash<MapData, u32>);

impl std::fmt::Debug for HealthSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthSockets")
    }
}

impl HealthSockets {
    /// Opens the pinned map of the datapath under `bpffs_dir`.
    pub fn open(bpffs_dir: &Path) -> Result<Self, DatapathError> {
        let name = map_names::HEALTH_SOCKS;
        let data = MapData::from_pin(maps_dir(bpffs_dir).join(name))
            .map_err(|e| DatapathError::map(name, e))?;
        let map = SockHash::try_from(aya::maps::Map::SockHash(data))
            .map_err(|e| DatapathError::map(name, e))?;
        Ok(Self(map))
    }

    /// New connections to `port` go to `listener` from now on.
    pub fn steer(&mut self, port: u16, listener: &impl AsRawFd) -> Result<(), DatapathError> {
        let name = map_names::HEALTH_SOCKS;
        self.0
            .insert(u32::from(port), listener.as_raw_fd(), 0)
            .map_err(|e| DatapathError::map(name, e))
    }

    /// New connections to `port` go to whoever listens on it.
    pub fn release(&mut self, port: u16) -> Result<(), DatapathError> {
        match self.0.remove(&u32::from(port)) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DatapathError::map(map_names::HEALTH_SOCKS, e)),
        }
    }
}

//! The pinned bpf_links every hook of the datapath is attached through: adopting a link
//! an earlier run pinned (kept, or its program swapped atomically), pinning a new one
//! without leaving the hook empty, detaching and unpinning, and undoing what a failed
//! start created.

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;
use tracing::{info, warn};

use crate::{DatapathError, config::LinkAction, sys};

/// Undoes what a failed start created (and only that).
pub(crate) struct StartGuard {
    pub(crate) new_map_pins: Vec<PathBuf>,
    pub(crate) new_link_pins: Vec<PathBuf>,
    /// Interfaces given a `clsact` filter ([`crate::clsact`]).
    pub(crate) new_tc_filters: Vec<String>,
    /// Parents first.
    pub(crate) new_dirs: Vec<PathBuf>,
    pub(crate) armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pin in &self.new_link_pins {
            detach_and_unpin(pin);
        }
        for interface in &self.new_tc_filters {
            crate::clsact::detach(interface);
        }
        for pin in &self.new_map_pins {
            if let Err(e) = std::fs::remove_file(pin) {
                warn!(pin = %pin.display(), error = %e, "rollback: cannot remove map pin");
            }
        }
        for dir in self.new_dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Detaches a pinned link (even if someone else holds it) and removes the
/// pin. Returns whether a pin was there.
pub(crate) fn detach_and_unpin(pin: &Path) -> bool {
    match sys::obj_get(pin) {
        Ok(fd) => {
            if let Err(e) = sys::link_detach(std::os::fd::AsFd::as_fd(&fd)) {
                warn!(pin = %pin.display(), error = %e, "link detach failed; removing the pin");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => warn!(pin = %pin.display(), error = %e, "cannot open pinned link"),
    }
    match std::fs::remove_file(pin) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            warn!(pin = %pin.display(), error = %e, "cannot remove link pin");
            false
        }
    }
}

/// Where a pinned link must be attached to be adopted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LinkTarget {
    /// A cgroup link of `attach_type` on the cgroup with this id.
    Cgroup { id: u64, attach_type: u32 },
    /// A tcx ingress link on the interface with this index.
    TcxIngress { ifindex: u32 },
    /// An sk_lookup link on the network namespace with this inode.
    Netns { ino: u64 },
}

impl LinkTarget {
    fn holds(self, info: &sys::LinkInfo) -> bool {
        let attached = match self {
            LinkTarget::Cgroup { id, attach_type } => {
                info.link_type == sys::BPF_LINK_TYPE_CGROUP
                    && info.cgroup_id == id
                    && info.attach_type == attach_type
            }
            LinkTarget::TcxIngress { ifindex } => {
                info.link_type == sys::BPF_LINK_TYPE_TCX
                    && info.tcx_ifindex == ifindex
                    && info.tcx_attach_type == sys::BPF_TCX_INGRESS
            }
            LinkTarget::Netns { ino } => {
                info.link_type == sys::BPF_LINK_TYPE_NETNS
                    && u64::from(info.tcx_ifindex) == ino
                    && info.tcx_attach_type == sys::BPF_SK_LOOKUP
            }
        };
        attached && info.prog_id != 0
    }
}

/// Adopts the link pinned at `pin` if it is live on `target`: keeps it when
/// it runs `new_prog` already, else swaps the program in atomically.
/// `None`: the pin is defunct or elsewhere, attach anew.
pub(crate) fn adopt_link(
    pin: &Path,
    target: LinkTarget,
    new_prog: BorrowedFd<'_>,
) -> Result<Option<LinkAction>, DatapathError> {
    let link = sys::obj_get(pin).map_err(|e| DatapathError::syscall("BPF_OBJ_GET", e))?;
    let info = sys::link_info(link.as_fd())
        .map_err(|e| DatapathError::syscall("BPF_OBJ_GET_INFO_BY_FD", e))?;
    if !target.holds(&info) {
        info!(pin = %pin.display(), ?info, "pinned link is defunct or elsewhere; re-attaching");
        return Ok(None);
    }
    let new = sys::prog_tag_and_maps(new_prog)
        .map_err(|e| DatapathError::syscall("BPF_OBJ_GET_INFO_BY_FD", e))?;
    // Without CAP_SYS_ADMIN the kernel hands out no program fd by id
    // (EPERM), so the running program cannot be compared: swap it, which
    // is atomic and reads the same pinned maps.
    let old = match sys::prog_fd_by_id(info.prog_id) {
        Ok(fd) => Some(
            sys::prog_tag_and_maps(fd.as_fd())
                .map_err(|e| DatapathError::syscall("BPF_OBJ_GET_INFO_BY_FD", e))?,
        ),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => None,
        Err(e) => return Err(DatapathError::syscall("BPF_PROG_GET_FD_BY_ID", e)),
    };
    // Same instructions on the same (pinned) maps: nothing to do. Equal
    // tags on other maps means the map pins were replaced under a live
    // link: swap so the program reads the pinned maps.
    if old.as_ref() == Some(&new) {
        return Ok(Some(LinkAction::Kept));
    }
    sys::link_update(link.as_fd(), new_prog)
        .map_err(|e| DatapathError::syscall("BPF_LINK_UPDATE", e))?;
    Ok(Some(LinkAction::Replaced))
}

/// Pins a freshly attached `link` at `pin`, retiring a stale link pinned
/// there only now, so the hook is never empty.
pub(crate) fn pin_new_link(
    link: FdLink,
    pin: &Path,
    stale: bool,
    guard: &mut StartGuard,
) -> Result<LinkAction, DatapathError> {
    if stale {
        detach_and_unpin(pin);
    }
    link.pin(pin).map_err(|e| DatapathError::Pin {
        path: pin.to_owned(),
        source: Box::new(e),
    })?;
    guard.new_link_pins.push(pin.to_owned());
    Ok(if stale {
        LinkAction::Reattached
    } else {
        LinkAction::Attached
    })
}

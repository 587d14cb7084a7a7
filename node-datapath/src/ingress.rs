//! The ingress program (`bpf/nodeport.h`) on the node's external
//! interfaces: one tcx ingress link per interface, pinned as
//! `<dir>/links/ingress-<interface>` and adopted on restart like the cgroup
//! links (kept when it runs the same program, swapped atomically when not,
//! re-attached when its interface is gone). Links of interfaces no longer
//! configured are detached. Kernels without tcx get a `clsact` filter
//! instead ([`crate::clsact`]).
//!
//! tcx links coexist with other programs on the interface (a CNI's, the
//! lab's), appended after them; the program passes packets on to the next
//! one, so their order does not matter to it.

use std::{
    ffi::CString,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, links::FdLink, tc::TcAttachOptions};

use crate::{
    DatapathConfig, DatapathError,
    config::LinkAction,
    links::{LinkTarget, StartGuard, adopt_link, detach_and_unpin, pin_new_link},
    object::load_named,
};

/// The program's function name in `bpf/nodeport.h`.
pub use crate::config::INGRESS_PROGRAM as PROGRAM;
const PIN_PREFIX: &str = "ingress-";

/// The pin of the ingress link on `interface`.
pub(crate) fn pin_path(links: &Path, interface: &str) -> PathBuf {
    links.join(format!("{PIN_PREFIX}{interface}"))
}

/// The pinned ingress links under `links`, by interface name.
pub(crate) fn pinned(links: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(links) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let interface = name.strip_prefix(PIN_PREFIX)?.to_owned();
            Some((interface, e.path()))
        })
        .collect()
}

fn ifindex(interface: &str) -> Result<u32, DatapathError> {
    let err = |detail: String| DatapathError::Interface {
        name: interface.to_owned(),
        detail,
    };
    let name = CString::new(interface).map_err(|e| err(e.to_string()))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(err(std::io::Error::last_os_error().to_string())),
        i => Ok(i),
    }
}

/// Loads the ingress program of `ebpf` (the kfuncs must be resolved).
pub(crate) fn load(ebpf: &mut aya::Ebpf) -> Result<&mut SchedClassifier, DatapathError> {
    load_named(ebpf, PROGRAM, SchedClassifier::load)
}

fn attach(prog: &mut SchedClassifier, interface: &str) -> Result<FdLink, DatapathError> {
    let perr = |e| DatapathError::Program {
        program: PROGRAM,
        source: Box::new(e),
    };
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    let id = prog
        .attach_with_options(interface, TcAttachType::Ingress, options)
        .map_err(perr)?;
    FdLink::try_from(prog.take_link(id).map_err(perr)?).map_err(|e| DatapathError::Link {
        program: PROGRAM,
        source: Box::new(e),
    })
}

/// Makes every one of the configured interfaces run the ingress program
/// and detaches it from interfaces not listed (see the module doc).
pub(crate) fn ensure(
    ebpf: &mut aya::Ebpf,
    config: &DatapathConfig,
    links: &Path,
    guard: &mut StartGuard,
) -> Result<Vec<(String, LinkAction)>, DatapathError> {
    let interfaces = &config.ingress_interfaces;
    let clsact = config.tc_attach.uses_clsact();
    let mut actions = Vec::new();
    if !interfaces.is_empty() {
        let prog = load(ebpf)?;
        for interface in interfaces {
            let action = if clsact {
                ensure_filter(prog, interface, guard)?
            } else {
                ensure_one(prog, interface, links, guard)?
            };
            actions.push((interface.clone(), action));
        }
    }
    for (interface, pin) in pinned(links) {
        if clsact || !interfaces.contains(&interface) {
            detach_and_unpin(&pin);
        }
    }
    if clsact {
        let others = crate::clsact::interfaces();
        for interface in others.iter().filter(|i| !interfaces.contains(i)) {
            crate::clsact::detach(interface);
        }
    }
    Ok(actions)
}

fn ensure_filter(
    prog: &mut SchedClassifier,
    interface: &str,
    guard: &mut StartGuard,
) -> Result<LinkAction, DatapathError> {
    let action = crate::clsact::ensure(prog, interface)?;
    if action == LinkAction::Attached {
        guard.new_tc_filters.push(interface.to_owned());
    }
    Ok(action)
}

fn ensure_one(
    prog: &mut SchedClassifier,
    interface: &str,
    links: &Path,
    guard: &mut StartGuard,
) -> Result<LinkAction, DatapathError> {
    let target = LinkTarget::TcxIngress {
        ifindex: ifindex(interface)?,
    };
    let pin = pin_path(links, interface);
    let stale = pin.exists();
    if stale {
        let fd = prog.fd().map_err(|e| DatapathError::Program {
            program: PROGRAM,
            source: Box::new(e),
        })?;
        if let Some(action) = adopt_link(&pin, target, fd.as_fd())? {
            return Ok(action);
        }
    }
    let link = attach(prog, interface)?;
    pin_new_link(link, &pin, stale, guard)
}

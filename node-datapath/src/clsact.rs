//! The ingress program on kernels without tcx (before 6.6): a
//! direct-action `cls_bpf` filter on the interface's `clsact` qdisc.
//!
//! Netlink filters cannot be pinned, but the filter itself holds the
//! program, so it keeps serving after the agent exits. It sits at a fixed
//! priority and handle of its own ([`PRIORITY`], [`HANDLE`]) so that a
//! restart finds it and swaps the program in place (a filter change is
//! atomic for packets), and Off removes it by that address. The program
//! passes with `TC_ACT_UNSPEC`, so filters after it (a CNI's) still run.

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
};

use crate::{
    DatapathError,
    config::{INGRESS_PROGRAM, LinkAction},
};

/// After the kernel's default priority (49152), where a CNI's filters
/// usually sit: those see the packet first.
pub const PRIORITY: u16 = 49408;
/// "SY", then 1.
pub const HANDLE: TcHandle = TcHandle::new(0x5359, 1);

fn program_error(source: ProgramError) -> DatapathError {
    DatapathError::Program {
        program: INGRESS_PROGRAM,
        source: Box::new(source),
    }
}

fn os_error(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::TcError(TcError::NetlinkError(n)) | ProgramError::NetlinkError(n) => {
            n.raw_os_error()
        }
        _ => None,
    }
}

fn our_filter(interface: &str) -> Result<SchedClassifierLink, DatapathError> {
    SchedClassifierLink::attached(interface, TcAttachType::Ingress, PRIORITY, HANDLE, None).map_err(
        |e| DatapathError::Interface {
            name: interface.to_owned(),
            detail: e.to_string(),
        },
    )
}

/// Makes `interface` run `prog` through our filter: added (with the
/// `clsact` qdisc, if missing) or, when a restart finds it, swapped.
pub(crate) fn ensure(
    prog: &mut SchedClassifier,
    interface: &str,
) -> Result<LinkAction, DatapathError> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => {}
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(program_error(ProgramError::TcError(e))),
    }
    let options = TcAttachOptions::Netlink(NlOptions {
        priority: PRIORITY,
        handle: HANDLE,
        classid: None,
    });
    let (id, action) = match prog.attach_with_options(interface, TcAttachType::Ingress, options) {
        Ok(id) => (id, LinkAction::Attached),
        Err(e) if os_error(&e) == Some(libc::EEXIST) => {
            let id = prog
                .attach_to_link(our_filter(interface)?)
                .map_err(program_error)?;
            (id, LinkAction::Replaced)
        }
        Err(e) => return Err(program_error(e)),
    };
    // The link's drop would delete the filter: it must outlive us.
    std::mem::forget(prog.take_link(id).map_err(program_error)?);
    Ok(action)
}

/// Removes our filter from `interface`; whether it was there.
pub(crate) fn detach(interface: &str) -> bool {
    use aya::programs::Link as _;
    our_filter(interface).is_ok_and(|link| link.detach().is_ok())
}

/// This network namespace's interfaces.
pub(crate) fn interfaces() -> Vec<String> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

//! The kernel's run-time statistics of the attached programs: how often
//! each hook ran and the time spent in it (`run_cnt`, `run_time_ns` of
//! `bpf_prog_info`). The kernel counts only while some process holds a
//! `BPF_ENABLE_STATS` descriptor ([`RunTimeStats::enable`]), because the
//! counting itself costs two clock reads per run.

use std::{os::fd::OwnedFd, path::Path, time::Duration};

use crate::{DatapathError, Hook, config::links_dir, sys};

/// Keeps the kernel's BPF run-time accounting on while held.
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    /// Turns the accounting on for every program (until dropped).
    pub fn enable() -> Result<Self, DatapathError> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(|fd| Self { _fd: fd })
            .map_err(|e| DatapathError::syscall("BPF_ENABLE_STATS", e.io_error))
    }
}

/// One hook's counters since its program was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramRunTime {
    /// Runs counted (only while accounting was on).
    pub runs: u64,
    /// Time spent in the program over those runs.
    pub run_time: Duration,
}

impl ProgramRunTime {
    /// Mean time per run between `earlier` and `self`, if the program ran.
    pub fn mean_since(&self, earlier: &ProgramRunTime) -> Option<Duration> {
        let runs = self.runs.checked_sub(earlier.runs).filter(|r| *r > 0)?;
        let time = self.run_time.checked_sub(earlier.run_time)?;
        Some(time / u32::try_from(runs).unwrap_or(u32::MAX))
    }
}

/// The counters of the program behind `hook`'s pinned link under
/// `bpffs_dir`.
pub fn program_run_time(bpffs_dir: &Path, hook: Hook) -> Result<ProgramRunTime, DatapathError> {
    let pin = links_dir(bpffs_dir).join(hook.name());
    link_run_time(&pin, hook.program())
}

/// The counters of the ingress program behind the pinned tcx link on
/// `interface` (`links/ingress-<interface>`) under `bpffs_dir`.
pub fn ingress_run_time(
    bpffs_dir: &Path,
    interface: &str,
) -> Result<ProgramRunTime, DatapathError> {
    let pin = crate::ingress::pin_path(&links_dir(bpffs_dir), interface);
    link_run_time(&pin, crate::ingress::PROGRAM)
}

/// The counters of the program attached by the link pinned at `pin`.
fn link_run_time(pin: &Path, program: &'static str) -> Result<ProgramRunTime, DatapathError> {
    let link = sys::obj_get(pin).map_err(|e| DatapathError::io("open link", pin, e))?;
    let prog_id = sys::link_info(std::os::fd::AsFd::as_fd(&link))
        .map_err(|e| DatapathError::syscall("BPF_OBJ_GET_INFO_BY_FD", e))?
        .prog_id;
    for info in aya::programs::loaded_programs() {
        let info = info.map_err(|e| DatapathError::Program {
            program,
            source: Box::new(e),
        })?;
        if info.id() == prog_id {
            return Ok(ProgramRunTime {
                runs: info.run_count(),
                run_time: info.run_time(),
            });
        }
    }
    Err(DatapathError::io(
        "find the program of link",
        pin,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("program id {prog_id} is not loaded"),
        ),
    ))
}

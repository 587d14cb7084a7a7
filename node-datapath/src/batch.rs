//! Batched map writes for [`crate::PinnedLbMaps`]: an ordered op list is cut
//! into runs of consecutive operations on the same map of the same kind
//! (upserts or deletes), and each run is one `BPF_MAP_UPDATE_BATCH` or
//! `BPF_MAP_DELETE_BATCH` call. The kernel applies a batch's elements in
//! order, one at a time, so a concurrent BPF reader sees exactly the
//! sequence of states the per-op writes would produce: the diff's safety
//! order (backends before the slots that use them, masters after their
//! slots, deletions last) is kept.

use std::{io, ops::Range, os::fd::BorrowedFd};

use switchyard_abi::map_names;
use switchyard_lb::maps::MapOp;

use crate::{DatapathError, sys};

/// Elements per `bpf(2)` call (bounds the kernel's per-call work and our
/// staging buffers).
pub(crate) const MAX_BATCH: usize = 16_384;

/// Which map an operation writes and whether it deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunKind {
    UpsertBackends,
    UpsertRevNats,
    UpsertServices,
    DeleteServices,
    DeleteRevNats,
    DeleteBackends,
}

impl RunKind {
    pub(crate) fn of(op: &MapOp) -> Self {
        match op {
            MapOp::UpsertBackend(..) => Self::UpsertBackends,
            MapOp::UpsertRevNat(..) => Self::UpsertRevNats,
            MapOp::UpsertService(..) => Self::UpsertServices,
            MapOp::DeleteService(..) => Self::DeleteServices,
            MapOp::DeleteRevNat(..) => Self::DeleteRevNats,
            MapOp::DeleteBackend(..) => Self::DeleteBackends,
        }
    }

    pub(crate) fn map_name(self) -> &'static str {
        match self {
            Self::UpsertBackends | Self::DeleteBackends => map_names::BACKENDS,
            Self::UpsertRevNats | Self::DeleteRevNats => map_names::REV_NAT,
            Self::UpsertServices | Self::DeleteServices => map_names::SERVICES,
        }
    }
}

/// Maximal runs of consecutive operations of one [`RunKind`], in order,
/// each at most [`MAX_BATCH`] long.
pub(crate) fn runs(ops: &[MapOp]) -> Vec<(RunKind, Range<usize>)> {
    let mut out: Vec<(RunKind, Range<usize>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let kind = RunKind::of(op);
        match out.last_mut() {
            Some((k, r)) if *k == kind && r.len() < MAX_BATCH => r.end = i + 1,
            _ => out.push((kind, i..i + 1)),
        }
    }
    out
}

/// Whether a batch error means "this kernel/map has no batch support"
/// (`EINVAL`, `EOPNOTSUPP`, or the kernel-internal `ENOTSUPP` = 524).
pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
    )
}

/// How a run failed.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The first call was refused as unsupported; nothing was written.
    Unsupported(io::Error),
    /// `done` operations of the run were applied, then the write failed.
    Failed { done: usize, source: DatapathError },
}

/// Writes one run (all of `ops` are of `kind`) with batch calls.
pub(crate) fn write_run(map: BorrowedFd<'_>, kind: RunKind, ops: &[MapOp]) -> Result<(), RunError> {
    let failed = |done: usize, source: io::Error| RunError::Failed {
        done,
        source: DatapathError::MapBatch {
            map: kind.map_name(),
            source,
        },
    };
    let (done, result) = match kind {
        RunKind::UpsertBackends => {
            let (k, v): (Vec<_>, Vec<_>) = ops
                .iter()
                .filter_map(|op| match op {
                    MapOp::UpsertBackend(k, v) => Some((*k, *v)),
                    _ => None,
                })
                .unzip();
            sys::map_update_batch(map, &k, &v)
        }
        RunKind::UpsertRevNats => {
            let (k, v): (Vec<_>, Vec<_>) = ops
                .iter()
                .filter_map(|op| match op {
                    MapOp::UpsertRevNat(k, v) => Some((*k, *v)),
                    _ => None,
                })
                .unzip();
            sys::map_update_batch(map, &k, &v)
        }
        RunKind::UpsertServices => {
            let (k, v): (Vec<_>, Vec<_>) = ops
                .iter()
                .filter_map(|op| match op {
                    MapOp::UpsertService(k, v) => Some((*k, *v)),
                    _ => None,
                })
                .unzip();
            sys::map_update_batch(map, &k, &v)
        }
        RunKind::DeleteServices => delete_all(map, ops, |op| match op {
            MapOp::DeleteService(k) => Some(*k),
            _ => None,
        }),
        RunKind::DeleteRevNats => delete_all(map, ops, |op| match op {
            MapOp::DeleteRevNat(k) => Some(*k),
            _ => None,
        }),
        RunKind::DeleteBackends => delete_all(map, ops, |op| match op {
            MapOp::DeleteBackend(k) => Some(*k),
            _ => None,
        }),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if done == 0 && unsupported(&e) => Err(RunError::Unsupported(e)),
        Err(e) => Err(failed(done, e)),
    }
}

/// Deletes every key in order; an absent key (`ENOENT` stops the kernel's
/// batch at it) is skipped, as the per-op path does.
fn delete_all<K: Copy>(
    map: BorrowedFd<'_>,
    ops: &[MapOp],
    key: impl Fn(&MapOp) -> Option<K>,
) -> (usize, io::Result<()>) {
    let keys: Vec<K> = ops.iter().filter_map(key).collect();
    let mut start = 0;
    while start < keys.len() {
        let (done, result) = sys::map_delete_batch(map, &keys[start..]);
        match result {
            Ok(()) => return (keys.len(), Ok(())),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => start += done + 1,
            Err(e) => return (start + done, Err(e)),
        }
    }
    (keys.len(), Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_abi::{Backend, RevNat, SvcKey, SvcValue};

    #[test]
    fn runs_split_at_every_change_of_map_or_kind_and_keep_order() {
        let k = SvcKey::default();
        let b = Backend::default();
        let ops = [
            MapOp::UpsertBackend(1, b),
            MapOp::UpsertBackend(2, b),
            MapOp::UpsertRevNat(1, RevNat::default()),
            MapOp::UpsertService(k, SvcValue::default()),
            MapOp::UpsertService(k.with_slot(1), SvcValue::default()),
            MapOp::DeleteService(k.with_slot(2)),
            MapOp::DeleteRevNat(2),
            MapOp::DeleteBackend(3),
            MapOp::UpsertBackend(4, b),
        ];
        let got: Vec<_> = runs(&ops);
        assert_eq!(
            got,
            vec![
                (RunKind::UpsertBackends, 0..2),
                (RunKind::UpsertRevNats, 2..3),
                (RunKind::UpsertServices, 3..5),
                (RunKind::DeleteServices, 5..6),
                (RunKind::DeleteRevNats, 6..7),
                (RunKind::DeleteBackends, 7..8),
                (RunKind::UpsertBackends, 8..9),
            ]
        );
    }

    #[test]
    fn long_runs_are_cut_at_the_batch_limit() {
        let ops = vec![MapOp::DeleteBackend(1); MAX_BATCH * 2 + 1];
        let got: Vec<_> = runs(&ops).into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            got,
            vec![
                0..MAX_BATCH,
                MAX_BATCH..2 * MAX_BATCH,
                2 * MAX_BATCH..2 * MAX_BATCH + 1
            ]
        );
    }
}

//! One full sync, still pure: desired state + current maps → a plan with
//! its counts. The agent goes through [`crate::LbState::plan`]; this is the
//! whole-state diff the datapath benchmark times.

use crate::LbError;
use crate::diff::plan;
use crate::ids::IdAllocator;
use crate::maps::{MapOp, MapsSnapshot};
use crate::model::DesiredState;

/// Counts for the agent's status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Distinct Services (namespace/name) with at least one frontend.
    pub services: usize,
    /// Frontends (master entries).
    pub frontends: usize,
    /// Distinct backends.
    pub backends: usize,
    /// Backend slots over all frontends.
    pub slots: usize,
    /// ClusterIP VIP markers.
    pub vips: usize,
    /// Frontends with no usable endpoint (connections are refused).
    pub frontends_without_backends: usize,
    /// Upsert operations in the plan.
    pub upserts: usize,
    /// Delete operations in the plan.
    pub deletes: usize,
}

/// What one sync will do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Ordered operations to apply with [`crate::maps::LbMaps::apply_all`].
    pub ops: Vec<MapOp>,
    /// Counts describing the desired state and the plan.
    pub stats: SyncStats,
}

/// Plans the operations that bring `snapshot` to `desired`, assigning ids
/// through `ids` (keep the same allocator across syncs).
pub fn plan_sync(
    snapshot: &MapsSnapshot,
    desired: &DesiredState,
    ids: &mut IdAllocator,
) -> Result<SyncPlan, LbError> {
    let (ops, target) = plan(snapshot, desired, ids)?;
    let upserts = ops
        .iter()
        .filter(|op| {
            matches!(
                op,
                MapOp::UpsertBackend(..) | MapOp::UpsertRevNat(..) | MapOp::UpsertService(..)
            )
        })
        .count();
    let stats = SyncStats {
        services: desired.service_count(),
        frontends: desired.frontends.len(),
        backends: target.backends.len(),
        slots: desired.frontends.values().map(|f| f.backends.len()).sum(),
        vips: desired.vips.len(),
        frontends_without_backends: desired
            .frontends
            .values()
            .filter(|f| f.backends.is_empty())
            .count(),
        upserts,
        deletes: ops.len() - upserts,
    };
    Ok(SyncPlan { ops, stats })
}

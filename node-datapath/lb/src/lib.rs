//! Pure load-balancer state for one node (crate `switchyard-lb`).
//!
//! Owns the translation from Kubernetes objects to BPF map contents; does no
//! I/O, spawns nothing and knows nothing of aya, kube or tokio.
//!
//! **The entry is [`LbState`]**: the caller tells it which Services and
//! EndpointSlices changed, hands it their projections on
//! [`LbState::refresh`], and writes the operations [`LbState::plan`] returns
//! through an [`LbMaps`]. Data flows one way:
//!
//! ```text
//! Services + EndpointSlices (projected: view::{ServiceView, SliceView}) + NodeContext
//!   └─ LbState::refresh (per Service: desired::desired_state_of_views) ──▶ DesiredState
//! MapsSnapshot (current maps) + DesiredState + IdAllocator
//!   └─ LbState::plan (diff::diff_dirty, or diff::diff after a relist) ──▶ ordered Vec<MapOp>
//!        └─ maps::LbMaps::apply_all (aya maps in the loader, MirrorMaps in memory)
//! ```
//!
//! The modules below it are public for the tests, the benchmarks and the
//! golden fixtures, which check each step on its own:
//!
//! * [`view`] projects Services and EndpointSlices to what is read, so
//!   caches of them stay small (it imports nothing else of the crate);
//! * [`desired`] implements kube-proxy 1.34's Service/EndpointSlice
//!   semantics ([`desired_state`] is the full computation [`LbState`] equals);
//! * [`ids`] keeps backend and rev-NAT ids stable across syncs and restarts;
//! * [`mod@diff`] orders operations so a concurrent BPF reader never sees a
//!   half-written service ([`mirror::consistent`] states that invariant);
//! * [`incremental`] is [`LbState`]: the desired state kept per Service, so
//!   one change is recomputed and diffed in O(that Service);
//! * [`sync`] is one full diff with its counts ([`plan_sync`]), for the
//!   datapath benchmark, which times a whole sync;
//! * [`mirror`] is the in-memory map implementation (the agent's mirror of
//!   the pinned maps, and the tests' maps); [`render`] prints map contents
//!   for golden tests and debugging.

pub mod capacity;
pub mod desired;
pub mod diff;
mod endpoints;
pub mod ids;
pub mod incremental;
pub mod maps;
pub mod mirror;
pub mod model;
pub mod render;
pub mod sync;
pub mod view;

pub use desired::{
    Desired, ExternalPolicyMode, Finding, FindingKind, NodeContext, Options, desired_state,
    desired_state_of_views,
};
pub use diff::{Dirty, diff, diff_dirty};
pub use ids::IdAllocator;
pub use incremental::{LbState, ServiceId};
pub use maps::{LbMaps, MapOp, MapsSnapshot};
pub use mirror::{Inconsistency, MirrorCapacity, MirrorMaps, consistent};
pub use model::{
    BackendKey, DesiredBackend, DesiredState, Frontend, FrontendState, Proto, Scope, ServicePortRef,
};
pub use sync::{SyncPlan, SyncStats, plan_sync};
pub use view::{EndpointView, ServiceView, SliceView};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// Every backend id in `1..=limit` is in use.
    #[error("backend ids exhausted: all {limit} ids are in use")]
    BackendIdsExhausted { limit: u64 },
    /// Every rev-NAT id in `1..=limit` is in use (one per frontend).
    #[error("rev-NAT ids exhausted: all {limit} ids are in use (one per frontend)")]
    RevNatIdsExhausted { limit: u64 },
    /// A backend of the desired state has no id (ids were not assigned).
    #[error("backend {backend} has no id; assign ids before building the target maps")]
    MissingBackendId { backend: BackendKey },
    /// A frontend of the desired state has no rev-NAT id.
    #[error("frontend {frontend} has no rev-NAT id; assign ids before building the target maps")]
    MissingRevNatId { frontend: Frontend },
    /// A map is full (raised by [`MirrorMaps`]).
    #[error("map {map} is full ({capacity} entries)")]
    MapFull { map: &'static str, capacity: usize },
}

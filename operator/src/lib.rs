//! The switchyard operator.
//!
//! - [`planner`]: the pure core. `(MigrationPlan spec, status, observed
//!   cluster snapshot, now) → (actions, new status)`; no I/O, exhaustively
//!   unit- and property-tested.
//! - The controller (kube-runtime) gathers the snapshot from its caches,
//!   calls the planner, records the status, then applies the actions.
//! - [`web`]: the migration's web view, one page on the metrics port.
//! - [`peer`]: Hubble's Peer API, the nodes a hubble-relay aggregates.
//! - `crdgen` (a binary) writes `crds/` from `switchyard-api`.

pub mod controller;
pub mod error;
pub mod metrics;
pub mod peer;
pub mod planner;
pub mod web;

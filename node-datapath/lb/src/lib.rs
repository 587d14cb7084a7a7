//! Pure load-balancer state for one node.
//!
//! Data flows one way: Kubernetes `Service`s and `EndpointSlice`s (plus the
//! node's name and addresses) → [`desired`] LB state (plain data, one entry
//! per frontend with its ordered backends) → [`diff`] against what is in the
//! maps → an ordered `Vec<MapOp>` → [`maps::LbMaps::apply_all`]. No I/O here.

pub mod maps;

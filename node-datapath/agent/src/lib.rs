//! The switchyard node agent (`switchyard-agent`).
//!
//! - [`probe`]: connectivity probes through the node's datapath.
pub mod probe;

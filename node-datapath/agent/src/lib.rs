//! The switchyard node agent (`switchyard-agent`).
//!
//! It reconciles its node's `NodeDatapath`: the spec (written by the
//! operator) says the mode and carries cleanup and probe requests; the agent
//! acts and writes the status when it changes. Its liveness is its node's
//! Lease, renewed every heartbeat ([`lease`]). Data flows:
//!
//! ```text
//! Services + EndpointSlices (watch, direct API address)
//!   └─ sync::Syncer ── switchyard-lb (pure) ──▶ ordered MapOps ──▶ pinned BPF maps
//! NodeDatapath spec ─▶ agent: mode (Datapath::start / off), cleanup
//!   (switchyard-cleanup), probes (probe) ─▶ NodeDatapath status
//! ```
//!
//! - [`agent`]: the loop (its API inputs: `watch`); [`store`]: compact caches of Services and
//!   EndpointSlices; [`sync`]: Service sync with an in-memory map mirror;
//!   [`ingress`]: the interfaces of the ingress program (north-south) and
//!   the conntrack hooks it needs; [`node_ports`]: the addresses that
//!   serve NodePorts (kube-proxy's `nodePortAddresses`); [`probe`]: connectivity probes;
//!   [`health`]: kube-proxy's health ports once kube-proxy has left;
//!   [`status`]: pure conversions;
//!   [`server`]: `/metrics`, `/healthz`, `/readyz` and `/v1/flows`;
//!   [`flows`]: the datapath's flow events, decoded, their client pod named
//!   ([`flows::pods`]) and kept for `/metrics` and [`observer`], Hubble's
//!   Observer gRPC API over them (and the same flows as JSON lines on
//!   `/v1/flows`, [`observer::http`]).

pub mod agent;
pub mod api_server;
pub mod error;
pub mod flows;
pub mod health;
pub mod ingress;
pub mod kube_proxy;
pub mod lease;
pub mod node_ports;
pub mod observer;
pub mod probe;
pub mod server;
pub mod status;
pub mod store;
pub mod sync;
mod watch;

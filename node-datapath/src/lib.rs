//! The node agent's datapath: the eBPF socket and ingress load balancer.
//!
//! What this crate owns and how data flows:
//!
//! - `bpf/datapath.c` (C, compiled by `build.rs` with clang, embedded) is
//!   one object: `sock_lb.h` holds four cgroup sock_addr programs
//!   (`connect4`, `sendmsg4`, `recvmsg4`, `getpeername4`) that translate
//!   service frontends to backends at the socket layer, and a cgroup sock
//!   program (`sock_release`) that drops a closing socket's rev-NAT entry;
//!   `nodeport.h` holds the tc ingress program that serves NodePort,
//!   ExternalIP and LoadBalancer traffic arriving from outside the node by
//!   creating conntrack NAT entries (kfuncs, resolved by [`mod@kfunc`]).
//!   All use the maps laid out in `bpf/lb.h` (mirrored by
//!   `switchyard-abi`).
//! - [`Datapath::start`] loads the object with aya, pins the maps and one
//!   bpf_link per hook under a bpffs directory, attaches at a cgroup v2
//!   path (and one tcx link per external interface, [`mod@ingress`], plus
//!   the sk_lookup link steering kube-proxy's health ports, [`mod@health`]),
//!   and adopts
//!   what an earlier run pinned (restart without a gap);
//!   [`off`] removes it all.
//! - The sync loop (pure diff in `switchyard-lb`) writes the maps through
//!   [`PinnedLbMaps`], the aya implementation of
//!   [`switchyard_lb::maps::LbMaps`].
//! - [`Datapath::stats`] reads per-CPU counters and map occupancy;
//!   [`metrics::render`] turns them into Prometheus text;
//!   [`Datapath::run_time`] reads the kernel's per-program run time (while
//!   [`RunTimeStats`] keeps the accounting on).
//! - `connect4`/`sendmsg4` report each translation and refusal as a flow
//!   event in a ring buffer; [`FlowEventRing`] reads it, [`set_flow_events`]
//!   switches events on and off (see [`mod@events`]).
//! - [`capabilities::probe`] reports what the node can run.

mod batch;
pub mod capabilities;
mod clsact;
mod config;
pub mod datapath;
mod error;
pub mod events;
pub mod health;
pub mod ingress;
mod kfunc;
mod links;
pub mod maps;
pub mod metrics;
mod object;
pub mod runtime;
mod sys;

pub use datapath::{
    Capacities, DEFAULT_BPFFS_DIR, Datapath, DatapathConfig, Hook, LinkAction, OffReport,
    StartReport, TcAttach, off,
};
pub use error::DatapathError;
pub use events::{FlowEventRing, events_lost, events_shed, set_flow_event_rate, set_flow_events};
pub use health::HealthSockets;
pub use maps::{PinnedLbMaps, read_stats};
pub use metrics::{DatapathStats, MapOccupancy};
pub use runtime::{ProgramRunTime, RunTimeStats};
/// The ABI types the public API takes and returns ([`DatapathStats::get`]
/// takes an `abi::Counter`, [`FlowEventRing`] records are `abi::FlowEvent`s),
/// for users that do not depend on the ABI crate themselves.
pub use switchyard_abi as abi;

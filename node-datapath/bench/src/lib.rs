//! The datapath benchmark (crate `switchyard-bench`).
//!
//! Measures, in one run and side by side, TCP connect latency, new
//! connections per second, a UDP request/response rate and programming time
//! for N Services × 10 endpoints on four datapaths: kube-proxy's iptables
//! shapes (both the nft and the legacy backend), kube-proxy's nftables
//! shapes, switchyard's eBPF socket load balancer, and a direct connect to
//! the backend (the floor). The north-south part does the same for an
//! external client to a NodePort (N NodePort Services; the eBPF datapath's
//! tc ingress program), with the endpoints on the node or behind another.
//!
//! Data flows:
//!
//! ```text
//! model (N Services, addresses, kube-proxy order)
//!   ├─ rules   → iptables-restore / nft -f text (pure)
//!   └─ ebpf    → k8s-openapi objects → switchyard_lb::desired_state →
//!                plan_sync → PinnedLbMaps (timed, in a child process)
//! topo   → fresh namespaces + cgroup per (datapath, N), removed on drop
//! load   → servers and client (child processes of this binary, pinned)
//! stats  → percentiles, medians → results::Row → CSV → BENCHMARKS.md
//! runner → per N: every datapath prepared, measured interleaved, then the
//!          eBPF connect4 program's own time (kernel run-time accounting);
//!          run_facts → facts.json (machine, versions, options, load)
//! ns_runner → north-south: per N and datapath an ns_topo (outside client,
//!          node, second node), rules (rules, rules_nft with node ports)
//!          or the eBPF datapath with its ingress program, measured
//!          interleaved per placement, then the tc program's own time;
//!          report_ns renders it
//! flow_events → the socket LB's flow events: on vs off (a flow_consumer
//!          reading the ring as the agent does), loss at the highest
//!          connection rate, the agent's flow ring memory (flow_memory, a
//!          child process); report_flows renders it
//! ```
//!
//! Pure parts (`model`, `rules`, `rules_nft`, `stats`, `report`,
//! `report_ebpf`, `report_ns`, `report_flows`) are unit-tested; the I/O
//! shell (`topo`, `ns_topo`, `load`, `ebpf`, `runner`, `ns_runner`,
//! `flow_events`, `flow_consumer`, `flow_memory`) is exercised by running
//! the benchmark (`node-datapath/bench/run.sh`, root).

pub mod agent_path;
pub mod ebpf;
pub mod flow_consumer;
pub mod flow_events;
pub mod flow_memory;
pub mod load;
pub mod model;
pub mod ns_runner;
pub mod ns_topo;
pub mod programming;
pub mod report;
pub mod report_ebpf;
pub mod report_flows;
pub mod report_ns;
pub mod results;
pub mod rules;
pub mod rules_nft;
pub mod run_facts;
pub mod runner;
pub mod sink;
pub mod stats;
pub mod topo;

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command exited unsuccessfully.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A child's output did not parse.
    #[error("bad output from {what}: {detail}")]
    BadOutput {
        /// Which child.
        what: String,
        /// Why.
        detail: String,
    },
    /// The eBPF datapath failed.
    #[error("eBPF datapath: {0}")]
    Datapath(#[from] switchyard_node_datapath::DatapathError),
    /// The load-balancer planner failed.
    #[error("lb planner: {0}")]
    Lb(#[from] switchyard_lb::LbError),
    /// An invalid argument.
    #[error("invalid argument: {0}")]
    Arg(String),
}

impl BenchError {
    /// An [`BenchError::Io`] with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

//! Command line, in kubectl's conventions: `--kubeconfig` and `--context`
//! anywhere on the line, `-o table|wide|json|yaml`. There is no `-n`: both
//! resources are cluster-scoped (`observe` names namespaces in its filters,
//! as `hubble observe` does).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::render::Width;

/// Follow and steer switchyard migrations off kube-proxy.
#[derive(Parser, Debug)]
#[command(name = "kubectl switchyard", bin_name = "kubectl switchyard", version)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config,
    /// then the in-cluster configuration).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// A plan's phase and every node's step, how long it has been there and
    /// why it waits; without PLAN, every plan on one line.
    Status {
        /// The MigrationPlan's name.
        plan: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Every node's datapath: requested and active mode, Services
    /// programmed, drops, and when its agent last renewed its Lease.
    Nodes {
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Stop starting new nodes (sets spec.paused); nodes in flight finish
    /// their step.
    Pause { plan: String },
    /// Clear spec.paused so the plan starts new nodes again.
    Resume { plan: String },
    /// Return every node the plan touched to kube-proxy (sets spec.rollback).
    Rollback { plan: String },
    /// Send every failed node back into its migration and resume the plan
    /// (raises spec.failurePolicy.retry by one).
    Retry { plan: String },
    /// The flows the eBPF datapath reported (forwarded and dropped
    /// connections to Services), from every node's agent through the API
    /// server's pod proxy, merged by time; with -f, followed on every node.
    /// Needs `get` on `pods/proxy` (and `list` on `pods`) in the
    /// switchyard-system namespace.
    #[command(
        after_help = "Examples:\n  kubectl switchyard observe --verdict DROPPED\n  kubectl switchyard observe --from-namespace app --to-service app/db -o json\n  kubectl switchyard observe --node node1 --last 20 -f"
    )]
    Observe(ObserveArgs),
}

/// `observe`'s filters and output.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveArgs {
    /// Only flows from pods in this namespace.
    #[arg(long, value_name = "NS")]
    pub from_namespace: Option<String>,
    /// Only flows from this pod ([NS/]NAME; a name is a prefix).
    #[arg(long, value_name = "[NS/]NAME")]
    pub from_pod: Option<String>,
    /// Only flows to Services in this namespace.
    #[arg(long, value_name = "NS")]
    pub to_namespace: Option<String>,
    /// Only flows to this Service ([NS/]NAME; a name is a prefix).
    #[arg(long, value_name = "[NS/]NAME")]
    pub to_service: Option<String>,
    /// Only flows with this verdict.
    #[arg(long, value_enum, ignore_case = true)]
    pub verdict: Option<FlowVerdict>,
    /// Only this node's flows (default: every node's).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The newest N flows (of all nodes together; default: every flow the
    /// agents keep, or none before the new ones with -f).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Keep printing new flows until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// json: Hubble's JSON, one flow a line; compact: one line a flow, as
    /// `hubble observe` prints it; table: columns.
    #[arg(short, long, value_enum, default_value_t = FlowOutput::Compact)]
    pub output: FlowOutput,
}

/// `observe --verdict`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum FlowVerdict {
    Forwarded,
    Dropped,
}

/// `observe -o`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowOutput {
    Json,
    #[default]
    Compact,
    Table,
}

/// `-o`: the tables, or the objects themselves.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

impl Output {
    /// The table layout, for the formats that print one.
    pub fn width(self) -> Option<Width> {
        match self {
            Output::Table => Some(Width::Table),
            Output::Wide => Some(Width::Wide),
            Output::Json | Output::Yaml => None,
        }
    }
}

//! Command line, in kubectl's conventions: `--kubeconfig` and `--context`
//! anywhere on the line, `-o table|wide|json|yaml`. There is no `-n`: both
//! resources are cluster-scoped.

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

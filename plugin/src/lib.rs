//! `kubectl switchyard`: a kubectl plugin for following and steering
//! switchyard migrations. kubectl runs any `kubectl-<name>` on `PATH` as
//! `kubectl <name>`, passing the rest of the line through.
//!
//! - `status [PLAN]`: the plan's phase and every node's step, how long it has
//!   been there and why it waits (every plan on one line without PLAN);
//! - `nodes`: every node's datapath and its agent's liveness Lease;
//! - `pause`, `resume`, `rollback`: the plan's `spec.paused` and
//!   `spec.rollback`, as a merge patch;
//! - `observe`: the datapath's flows from every node's agent, through the
//!   API server's pod proxy ([`observe`]).
//!
//! [`render`] is pure (objects and the time in, text out); [`client`] is the
//! I/O; [`run`] joins them.

pub mod cli;
pub mod client;
pub mod error;
pub mod observe;
pub mod render;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

use crate::cli::{Cli, Command, Output};
use crate::error::Result;

/// Runs one command; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String> {
    // A followed answer may be quiet for longer than any read timeout.
    let streaming = matches!(&cli.command, Command::Observe(a) if a.follow);
    let client =
        client::connect(cli.kubeconfig.as_deref(), cli.context.as_deref(), streaming).await?;
    let now = Timestamp::now();
    match cli.command {
        Command::Status {
            plan: Some(name),
            output,
        } => {
            let mut plan = client::plan(&client, &name).await?;
            match output.width() {
                Some(width) => Ok(render::plan_status(&plan, now, width)),
                None => {
                    hide_managed_fields(&mut plan);
                    encode(&plan, output)
                }
            }
        }
        Command::Status { plan: None, output } => {
            let mut plans = client::plans(&client).await?;
            match output.width() {
                Some(width) => Ok(render::plans_table(&plans, now, width)),
                None => {
                    plans.iter_mut().for_each(hide_managed_fields);
                    encode(&kube_list(&plans)?, output)
                }
            }
        }
        Command::Nodes { output } => {
            let (datapaths, leases) = client::datapaths(&client).await?;
            let rows = render::node_rows(&datapaths, &leases, now);
            match output.width() {
                Some(width) => Ok(render::nodes_table(&rows, width)),
                None => encode(&rows, output),
            }
        }
        Command::Pause { plan } => steer(&client, &plan, Steer::Pause).await,
        Command::Resume { plan } => steer(&client, &plan, Steer::Resume).await,
        Command::Rollback { plan } => steer(&client, &plan, Steer::Rollback).await,
        Command::Retry { plan } => {
            let current = client::plan(&client, &plan).await?;
            let next = current.spec.failure_policy.retry.wrapping_add(1);
            steer(&client, &plan, Steer::Retry(next)).await
        }
        Command::Observe(args) => observe_flows(&client, &args, now).await,
    }
}

/// `observe`: all at once, merged by time; or, with `-f`, printed as they
/// come (returning nothing left to print).
async fn observe_flows(
    client: &kube::Client,
    args: &cli::ObserveArgs,
    started: Timestamp,
) -> Result<String> {
    let agents = observe::fetch::agents(client, args.node.as_deref()).await?;
    tracing::debug!(agents = agents.len(), "asking for flows");
    if args.follow {
        if args.output == cli::FlowOutput::Table {
            let header = observe::table(&[]);
            let _ = observe::fetch::write_out(&header);
        }
        observe::fetch::follow(client, &agents, args, started, |v| {
            observe::line(v, args.output).map_or(Ok(()), |l| observe::fetch::write_out(&l))
        })
        .await?;
        return Ok(String::new());
    }
    let answers = observe::fetch::once(client, &agents, args).await?;
    let merged = observe::merge(answers, args.last);
    for w in merged.iter().filter_map(observe::lost_warning) {
        eprintln!("{w}");
    }
    Ok(match args.output {
        cli::FlowOutput::Table => {
            let rows: Vec<_> = merged
                .iter()
                .filter(|v| v.get("flow").is_some())
                .map(observe::row)
                .collect();
            observe::table(&rows)
        }
        output => merged
            .iter()
            .filter_map(|v| observe::line(v, output))
            .collect(),
    })
}

/// A change of a plan's spec a user makes by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    Pause,
    Resume,
    Rollback,
    /// Retry the failed nodes: `spec.failurePolicy.retry` set to this (one
    /// above what the spec had).
    Retry(u32),
}

impl Steer {
    /// The merge patch: only the one field, so nothing else a GitOps tool
    /// owns in the spec is touched.
    pub fn patch(self) -> serde_json::Value {
        match self {
            Steer::Pause => json!({"spec": {"paused": true}}),
            Steer::Resume => json!({"spec": {"paused": false}}),
            Steer::Rollback => json!({"spec": {"rollback": true}}),
            Steer::Retry(n) => json!({"spec": {"failurePolicy": {"retry": n}}}),
        }
    }

    fn past_tense(self) -> &'static str {
        match self {
            Steer::Pause => "paused",
            Steer::Resume => "resumed",
            Steer::Rollback => "rollback requested",
            Steer::Retry(_) => "retry of the failed nodes requested",
        }
    }
}

async fn steer(client: &kube::Client, name: &str, what: Steer) -> Result<String> {
    client::patch_plan(client, name, &what.patch()).await?;
    tracing::info!(plan = name, ?what, "patched");
    Ok(format!(
        "migrationplan.switchyard.dev/{name} {}\n",
        what.past_tense()
    ))
}

/// kubectl leaves `metadata.managedFields` out of `-o json|yaml` unless
/// asked (`--show-managed-fields`): it is long and says nothing about the
/// migration.
fn hide_managed_fields(plan: &mut switchyard_api::MigrationPlan) {
    plan.metadata.managed_fields = None;
}

/// Several objects as kubectl prints them with `-o json|yaml`.
fn kube_list<T: Serialize>(items: &[T]) -> Result<serde_json::Value> {
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": serde_json::to_value(items)?}))
}

fn encode<T: Serialize>(value: &T, output: Output) -> Result<String> {
    Ok(match output {
        Output::Yaml => serde_yaml::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_patches_touch_one_spec_field() {
        assert_eq!(Steer::Pause.patch()["spec"], json!({"paused": true}));
        assert_eq!(Steer::Resume.patch()["spec"], json!({"paused": false}));
        assert_eq!(Steer::Rollback.patch()["spec"], json!({"rollback": true}));
        assert_eq!(
            Steer::Retry(3).patch()["spec"],
            json!({"failurePolicy": {"retry": 3}})
        );
    }

    #[test]
    fn lists_print_as_kubectl_lists() -> Result<()> {
        let list = kube_list(&[json!({"a": 1})])?;
        assert_eq!(list["kind"], "List");
        let yaml = encode(&list, Output::Yaml)?;
        assert!(yaml.contains("kind: List"), "{yaml}");
        Ok(())
    }
}

//! One node's step machine. Each call advances a node by at most one step;
//! a node that moved gets no action in the same decision, so every action is
//! derived from a step already recorded in the plan's status ("record, then
//! act"). A node that did not move gets the idempotent actions of its step.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::{
    DatapathMode, FailureAction, NodeProgress, NodeStep, Probe, ProbeProtocol, ProbeRequest,
    ServiceRef, StepRecord,
};

use super::Ctx;
use super::actions::{Action, Event};

/// What happened to a node in this decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    Yes,
    No,
}

/// Starts a pending node: records whether it was already cordoned, before
/// anything touches it.
pub fn start(ctx: &Ctx<'_>, p: &mut NodeProgress, events: &mut Vec<Action>) {
    match ctx.snap.nodes.get(&p.name) {
        None => gone(ctx, p, events),
        Some(node) => {
            p.was_cordoned = Some(node.unschedulable);
            enter(ctx, p, NodeStep::Cordon);
            events.push(event(
                Some(&p.name),
                false,
                "MigrationStarted",
                format!(
                    "switchyard plan {} started migrating node {} to the eBPF datapath (wave {})",
                    ctx.plan_name, p.name, p.wave
                ),
            ));
        }
    }
}

/// Puts a node into the rollback sequence (whole-plan rollback).
pub fn begin_rollback(ctx: &Ctx<'_>, p: &mut NodeProgress) {
    enter(ctx, p, NodeStep::RestoreKubeProxy);
}

fn gone(ctx: &Ctx<'_>, p: &mut NodeProgress, events: &mut Vec<Action>) {
    enter(ctx, p, NodeStep::Gone);
    p.message = Some("the Node object was deleted".into());
    events.push(event(
        None,
        true,
        "NodeGone",
        format!("node {} disappeared during the migration", p.name),
    ));
}

fn enter(ctx: &Ctx<'_>, p: &mut NodeProgress, step: NodeStep) {
    if p.step == NodeStep::Pending {
        if step == NodeStep::Cordon {
            p.started_at = Some(Time(ctx.now));
        }
    } else {
        p.history.push(StepRecord {
            step: p.step,
            completed_at: Time(ctx.now),
        });
    }
    if step < NodeStep::Done && step > p.reached {
        p.reached = step;
    }
    p.step = step;
    p.step_started_at = Some(Time(ctx.now));
    p.message = None;
}

/// Empties a finished node's history (the status keeps when it started
/// and finished; thousands of nodes' step lists would approach the API
/// server's object size limit) and returns, for its event, how long each
/// step took: `" after 5.3s: Cordon 0.1s, ActivateDatapath 1.2s, …"`.
/// A history that begins with a terminal step (a migrated node rolled
/// back) times the steps after it.
fn close_history(p: &mut NodeProgress) -> String {
    let history = std::mem::take(&mut p.history);
    let mut start = match history.first() {
        Some(r) if r.step == NodeStep::Cordon => p.started_at.as_ref().map(|t| t.0),
        _ => None,
    };
    let mut parts = Vec::new();
    let mut total_ms = 0;
    for r in &history {
        if let Some(from) = start {
            let ms = r.completed_at.0.as_millisecond() - from.as_millisecond();
            total_ms += ms;
            parts.push(format!("{:?} {}", r.step, secs(ms)));
        }
        start = Some(r.completed_at.0);
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(" after {}: {}", secs(total_ms), parts.join(", "))
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn event(node: Option<&str>, warning: bool, reason: &str, message: String) -> Action {
    Action::Event(Event {
        node: node.map(str::to_string),
        warning,
        reason: reason.into(),
        message,
    })
}

fn fail(ctx: &Ctx<'_>, p: &mut NodeProgress, why: String, out: &mut Vec<Action>) {
    let failed = p.step;
    let message = format!("node {} failed at step {failed:?}: {why}", p.name);
    let next = match ctx.spec.failure_policy.action {
        FailureAction::Pause => NodeStep::Failed,
        FailureAction::Rollback => NodeStep::RestoreKubeProxy,
    };
    enter(ctx, p, next);
    p.failed_step = Some(failed);
    p.failure = Some(message.clone());
    p.message = Some(message.clone());
    out.push(event(Some(&p.name), true, "NodeMigrationFailed", message));
}

/// The probes a node runs in its Verify step (and in the baseline).
pub fn probe_request(ctx: &Ctx<'_>, generation: i64) -> ProbeRequest {
    let v = &ctx.spec.verification;
    let mut probes = Vec::new();
    if v.api_server_probe {
        probes.push(Probe {
            name: "api-server".into(),
            service: ServiceRef {
                namespace: "default".into(),
                name: "kubernetes".into(),
            },
            port: 443,
            protocol: ProbeProtocol::TCP,
            http_path: None,
        });
    }
    if v.dns_probe && ctx.snap.cluster_dns {
        probes.push(Probe {
            name: "cluster-dns".into(),
            service: ServiceRef {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
            },
            port: 53,
            protocol: ProbeProtocol::UDP,
            http_path: None,
        });
    }
    probes.extend(v.probes.iter().cloned());
    ProbeRequest {
        generation,
        probes,
        timeout_seconds: v.timeout_seconds,
        consecutive_successes: v.consecutive_successes,
    }
}

/// Seconds the node has spent in its current step.
fn in_step_secs(ctx: &Ctx<'_>, p: &NodeProgress) -> i64 {
    p.step_started_at
        .as_ref()
        .map_or(0, |t| ctx.now.as_second() - t.0.as_second())
}

/// Advances `p` by at most one step, or emits the actions of its step.
pub fn step(ctx: &Ctx<'_>, p: &mut NodeProgress, out: &mut Vec<Action>) -> Moved {
    let Some(node) = ctx.snap.nodes.get(&p.name) else {
        gone(ctx, p, out);
        return Moved::Yes;
    };
    let name = p.name.clone();
    let dp = ctx.snap.datapaths.get(&name);
    let kp = &ctx.snap.kube_proxy;
    let fresh = dp.is_some_and(|d| d.fresh(ctx.now, super::AGENT_STALE_AFTER_SECS));
    let mut acts = Vec::new();

    // Each arm either returns the next step (the node moves) or records
    // what it waits for and pushes the step's actions.
    let mut waiting = String::new();
    let next: Option<NodeStep> = match p.step {
        NodeStep::Cordon => {
            if node.unschedulable {
                Some(NodeStep::ActivateDatapath)
            } else {
                acts.push(Action::Cordon { node: name.clone() });
                waiting = "waiting for the node to be cordoned".into();
                None
            }
        }
        NodeStep::ActivateDatapath => match dp {
            Some(d) if d.serving() && fresh => Some(NodeStep::RemoveKubeProxy),
            _ => {
                acts.push(Action::SetDatapath {
                    node: name.clone(),
                    mode: DatapathMode::Active,
                    api_server: ctx.api_server.clone(),
                });
                waiting = match dp {
                    None => "waiting for the node's agent to create its NodeDatapath".into(),
                    Some(d) => format!(
                        "waiting for the datapath to be active and programmed (active: {:?}, services {}/{}, agent {})",
                        d.active_mode,
                        d.services_programmed,
                        d.services_seen,
                        if fresh { "reporting" } else { "silent" }
                    ),
                };
                None
            }
        },
        NodeStep::RemoveKubeProxy => {
            let ds_excludes = kp.daemon_set.as_ref().is_none_or(|d| d.excludes_label);
            let serving = dp.is_some_and(|d| d.serving());
            if !serving {
                // Never take kube-proxy away from a node whose datapath is not serving.
                waiting =
                    "holding: the datapath stopped serving; kube-proxy stays until it serves again"
                        .into();
                None
            } else if node.kube_proxy_excluded && ds_excludes && !kp.pods.contains_key(&name) {
                Some(NodeStep::FlushRules)
            } else {
                if !ds_excludes {
                    acts.push(Action::EnsureKubeProxyAffinity);
                }
                if !node.kube_proxy_excluded {
                    acts.push(Action::ExcludeKubeProxy { node: name.clone() });
                }
                waiting = "waiting for the node's kube-proxy pod to go".into();
                None
            }
        }
        NodeStep::FlushRules => {
            let result = dp
                .and_then(|d| d.cleanup.as_ref())
                .filter(|c| c.observed_generation >= p.cleanup_generation);
            match result {
                Some(r) if r.succeeded => Some(NodeStep::Verify),
                Some(r) => {
                    fail(
                        ctx,
                        p,
                        format!(
                            "removing kube-proxy's rules failed: {}",
                            r.message.as_deref().unwrap_or("no detail")
                        ),
                        out,
                    );
                    return Moved::Yes;
                }
                None => {
                    if dp.is_some_and(|d| d.serving()) {
                        acts.push(Action::RequestCleanup {
                            node: name.clone(),
                            generation: p.cleanup_generation,
                        });
                        waiting = format!(
                            "waiting for the agent to remove kube-proxy's rules (request {})",
                            p.cleanup_generation
                        );
                    } else {
                        // Never flush kube-proxy's rules while the datapath is not serving.
                        waiting =
                            "holding: the datapath is not serving; rules are not flushed".into();
                    }
                    None
                }
            }
        }
        NodeStep::Verify => {
            let result = dp
                .and_then(|d| d.probe.as_ref())
                .filter(|r| r.observed_generation >= p.probe_generation);
            let drops = dp.map_or(0, |d| d.drops);
            match result {
                Some(_) if drops > ctx.spec.verification.max_datapath_drops => {
                    fail(
                        ctx,
                        p,
                        format!(
                            "{drops} datapath drops (at most {} tolerated)",
                            ctx.spec.verification.max_datapath_drops
                        ),
                        out,
                    );
                    return Moved::Yes;
                }
                Some(r) if r.succeeded => Some(NodeStep::Uncordon),
                Some(r) => {
                    fail(
                        ctx,
                        p,
                        format!(
                            "verification failed: {}",
                            r.message.as_deref().unwrap_or("a probe failed")
                        ),
                        out,
                    );
                    return Moved::Yes;
                }
                None => {
                    acts.push(Action::RequestProbe {
                        node: name.clone(),
                        request: probe_request(ctx, p.probe_generation),
                    });
                    waiting = format!("waiting for probe results (request {})", p.probe_generation);
                    None
                }
            }
        }
        NodeStep::Uncordon | NodeStep::RollbackUncordon => {
            let ours = p.was_cordoned == Some(false) && p.reached >= NodeStep::Cordon;
            if !ours || !node.unschedulable {
                Some(if p.step == NodeStep::Uncordon {
                    NodeStep::Done
                } else {
                    NodeStep::RolledBack
                })
            } else {
                acts.push(Action::Uncordon { node: name.clone() });
                waiting = "waiting for the node to be uncordoned".into();
                None
            }
        }
        NodeStep::RestoreKubeProxy => {
            if p.reached < NodeStep::RemoveKubeProxy
                || (!node.kube_proxy_excluded && kp.ready_on(&name))
            {
                Some(NodeStep::DeactivateDatapath)
            } else {
                if node.kube_proxy_excluded {
                    acts.push(Action::IncludeKubeProxy { node: name.clone() });
                }
                waiting = "waiting for kube-proxy to run and be ready on the node".into();
                None
            }
        }
        NodeStep::DeactivateDatapath => {
            if p.reached < NodeStep::ActivateDatapath || dp.is_none_or(|d| d.off()) {
                Some(NodeStep::RollbackUncordon)
            } else if p.reached >= NodeStep::RemoveKubeProxy && !kp.ready_on(&name) {
                // Never turn the datapath off while kube-proxy is not serving the node.
                waiting =
                    "holding: kube-proxy is not ready on the node; the datapath stays on".into();
                None
            } else {
                acts.push(Action::SetDatapath {
                    node: name.clone(),
                    mode: DatapathMode::Off,
                    api_server: ctx.api_server.clone(),
                });
                waiting = "waiting for the datapath to turn off".into();
                None
            }
        }
        NodeStep::Pending
        | NodeStep::Done
        | NodeStep::Failed
        | NodeStep::RolledBack
        | NodeStep::Gone => return Moved::No,
    };

    match next {
        Some(step) => {
            let done_forward = step == NodeStep::Done;
            let rolled_back = step == NodeStep::RolledBack;
            if step == NodeStep::FlushRules {
                let seen = dp
                    .and_then(|d| d.cleanup.as_ref())
                    .map_or(0, |c| c.observed_generation);
                p.cleanup_generation = p.cleanup_generation.max(seen) + 1;
            }
            if step == NodeStep::Verify {
                let seen = dp
                    .and_then(|d| d.probe.as_ref())
                    .map_or(0, |r| r.observed_generation);
                p.probe_generation = p.probe_generation.max(seen) + 1;
            }
            enter(ctx, p, step);
            if done_forward {
                let took = close_history(p);
                out.push(event(
                    Some(&name),
                    false,
                    "NodeMigrated",
                    format!(
                        "node {name} now serves Services through the eBPF datapath (plan {}){took}",
                        ctx.plan_name
                    ),
                ));
            }
            if rolled_back {
                let took = close_history(p);
                out.push(event(
                    Some(&name),
                    false,
                    "NodeRolledBack",
                    format!(
                        "node {name} is back on kube-proxy (plan {}){took}",
                        ctx.plan_name
                    ),
                ));
            }
            Moved::Yes
        }
        None => {
            let limit = i64::from(ctx.spec.strategy.step_timeout_seconds);
            let elapsed = in_step_secs(ctx, p);
            if !p.step.is_rollback() && elapsed > limit {
                fail(
                    ctx,
                    p,
                    format!("timed out after {elapsed}s ({waiting})"),
                    out,
                );
                return Moved::Yes;
            }
            p.message = Some(waiting);
            out.extend(acts);
            Moved::No
        }
    }
}

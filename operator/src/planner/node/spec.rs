//! The NodeDatapath spec the planner writes for a node, whole, derived from
//! the node's progress. The agent acts on a request once per generation, so
//! the spec keeps carrying the requests of the steps the node went through:
//! what changes from one write to the next is only what the current step
//! asks for (the mode, the cleanup request or the probe request), or the
//! peer probe request other nodes' Verify makes of this node (`peer`), or
//! kube-proxy's NodePort addresses when its configuration changes.

use switchyard_api::{
    CleanupRequest, DatapathMode, NodeDatapathSpec, NodeProgress, NodeStep, Probe, ProbeProtocol,
    ProbeRequest, ServiceRef,
};

use super::super::{Ctx, RequestOutcome};
use super::steps::Seen;

/// The whole spec of the node `s` looks at, in `mode`.
pub(super) fn datapath_spec(s: &Seen<'_>, mode: DatapathMode) -> NodeDatapathSpec {
    let p = s.p;
    let cleanup = s.dp.and_then(|d| d.cleanup.as_ref());
    let probe = s.dp.and_then(|d| d.probe.as_ref());
    NodeDatapathSpec {
        mode,
        api_server: s.ctx.api_server.clone(),
        cleanup: carries(p, NodeStep::FlushRules, p.cleanup_generation, cleanup).then_some(
            CleanupRequest {
                generation: p.cleanup_generation,
                dry_run: false,
            },
        ),
        probe: carries(p, NodeStep::Verify, p.probe_generation, probe)
            .then(|| probe_request(s.ctx, p.probe_generation)),
        peer_probe: super::peer::request(s.ctx, &p.name),
        node_port_addresses: s.ctx.node_ports.clone(),
    }
}

/// Whether the spec carries the request `step` makes (numbered
/// `generation`, 0 before the node first entered `step`): while the node is
/// in that step and once it passed it. A node that left the step without
/// passing it (it failed there, or the plan is rolled back) keeps the
/// request only if the agent answered it: one that was perhaps never sent
/// must not reach the agent during a rollback (a cleanup would flush the
/// kube-proxy rules just restored).
fn carries(
    p: &NodeProgress,
    step: NodeStep,
    generation: i64,
    answer: Option<&RequestOutcome>,
) -> bool {
    generation > 0
        && (p.step == step
            || p.reached > step
            || answer.is_some_and(|a| a.observed_generation >= generation))
}

/// The probes a node runs in its Verify step (and in the baseline).
fn probe_request(ctx: &Ctx<'_>, generation: i64) -> ProbeRequest {
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

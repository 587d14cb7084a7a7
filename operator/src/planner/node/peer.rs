//! The peer probe of a node's Verify step: another node's agent dials the
//! node's InternalIP at a NodePort and at kube-proxy's health port, as a
//! client outside the node does, so a node is never marked done while
//! traffic from outside it dies there. Only when some Service is reached
//! from outside the nodes (as preflight, which then requires every node to
//! serve them).
//!
//! The peer is chosen when the node enters Verify and recorded in its
//! progress (`verifyPeer`, `peerProbeGeneration`): a node of the plan that
//! is done (its eBPF datapath serving) or still on kube-proxy (pending or
//! rolled back), preferring done ones; neither kind translates a
//! connection to another node's NodePort, so the probe reaches the node
//! itself. The request lives in the peer's own NodeDatapath spec
//! (`spec.peerProbe`), beside the fields its own progress gives, and
//! covers every node in Verify that chose it; its generation is above any
//! the peer's agent saw, and the answer is read back from the peer's
//! status by that generation.

use switchyard_api::{
    AddressProbe, DatapathMode, NodeProgress, NodeStep, PeerProbeRequest, ProbeProtocol,
};

use super::super::Ctx;
use super::super::actions::Action;
use super::spec::datapath_spec;
use super::steps::Seen;

/// kube-proxy's health port (`healthzBindAddress`), answered by the agent
/// once kube-proxy left the node.
pub const PROXY_HEALTH_PORT: i32 = 10256;

/// What the peer probe says about a node in Verify.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PeerCheck {
    /// No peer was available when the node entered Verify.
    Skipped,
    /// Not answered yet: why.
    Waiting(String),
    Passed,
    /// What failed.
    Failed(String),
}

/// The peer for node `x` entering Verify and the generation of the
/// request covering it; else why no node can probe it.
pub(super) fn choose(ctx: &Ctx<'_>, x: &str) -> Result<(String, i64), String> {
    if !needed(ctx) {
        return Err("no Service is reached from outside the nodes".into());
    }
    if ctx
        .snap
        .nodes
        .get(x)
        .and_then(|n| n.internal_ip.as_ref())
        .is_none()
    {
        return Err(format!("node {x} has no InternalIP to probe"));
    }
    let best = ctx
        .nodes
        .iter()
        .filter(|p| p.name != x)
        .filter_map(|p| rank(ctx, p).map(|r| (r, &p.name)))
        .min();
    let Some((_, peer)) = best else {
        return Err(format!(
            "no other node of the plan is done or on kube-proxy with a reporting agent to probe node {x}'s NodePort and health port from"
        ));
    };
    let dp = ctx.snap.datapaths.get(peer);
    let answered = dp
        .and_then(|d| d.peer_probe.as_ref())
        .map_or(0, |r| r.observed_generation);
    let requested = dp.map_or(0, |d| d.peer_probe_requested);
    let recorded = ctx
        .nodes
        .iter()
        .filter(|o| o.verify_peer.as_deref() == Some(peer.as_str()))
        .map(|o| o.peer_probe_generation)
        .max()
        .unwrap_or(0);
    Ok((peer.clone(), answered.max(requested).max(recorded) + 1))
}

/// Whether anything reaches the nodes from outside (a Service with an
/// external frontend): else nothing depends on the ingress program, nor on
/// kube-proxy's health port, and no peer probes them.
pub(super) fn needed(ctx: &Ctx<'_>) -> bool {
    !ctx.snap.external_services.is_empty()
}

/// A usable peer's preference (lower first): done, then on kube-proxy.
/// Only nodes whose spec the planner can write unchanged but for the peer
/// request: their mode as written must be the one their progress gives.
fn rank(ctx: &Ctx<'_>, p: &NodeProgress) -> Option<u8> {
    ctx.snap.nodes.get(&p.name)?;
    let dp = ctx
        .snap
        .datapaths
        .get(&p.name)
        .filter(|d| d.fresh(ctx.now))?;
    match p.step {
        NodeStep::Done if dp.serving() => Some(0),
        NodeStep::Pending | NodeStep::RolledBack
            if dp.off() && ctx.snap.kube_proxy.ready_on(&p.name) =>
        {
            Some(1)
        }
        _ => None,
    }
}

/// The mode a peer's progress gives its datapath (`None`: not a peer kind).
fn peer_mode(step: NodeStep) -> Option<DatapathMode> {
    match step {
        NodeStep::Done => Some(DatapathMode::Active),
        NodeStep::Pending | NodeStep::RolledBack => Some(DatapathMode::Off),
        _ => None,
    }
}

/// The peer probe request the spec of node `peer` carries: the probes of
/// every node in Verify that chose it (as the decision found them), at the
/// highest of their generations. `None` when no node waits for it.
pub(super) fn request(ctx: &Ctx<'_>, peer: &str) -> Option<PeerProbeRequest> {
    let waiting: Vec<&NodeProgress> = ctx
        .nodes
        .iter()
        .filter(|p| p.step == NodeStep::Verify && p.verify_peer.as_deref() == Some(peer))
        .collect();
    let generation = waiting.iter().map(|p| p.peer_probe_generation).max()?;
    let v = &ctx.spec.verification;
    Some(PeerProbeRequest {
        generation,
        targets: waiting.iter().flat_map(|p| targets(ctx, &p.name)).collect(),
        timeout_seconds: v.timeout_seconds,
        consecutive_successes: v.consecutive_successes,
    })
}

/// The whole spec of `peer` (done or on kube-proxy: it writes none of its
/// own meanwhile) with its peer request, as an action.
pub(super) fn action(ctx: &Ctx<'_>, peer: &str) -> Option<Action> {
    let p = ctx.nodes.iter().find(|p| p.name == peer)?;
    let mode = peer_mode(p.step)?;
    let seen = Seen {
        ctx,
        p,
        node: ctx.snap.nodes.get(peer)?,
        dp: ctx.snap.datapaths.get(peer),
    };
    Some(Action::ApplyDatapath {
        node: peer.to_string(),
        spec: datapath_spec(&seen, mode),
    })
}

/// What a peer dials for node `x`: kube-proxy's health port, and a TCP
/// NodePort of an `externalTrafficPolicy: Cluster` Service (one the plan
/// probes if any, so its HTTP path is checked too), at x's InternalIP.
fn targets(ctx: &Ctx<'_>, x: &str) -> Vec<AddressProbe> {
    let Some(ip) = ctx.snap.nodes.get(x).and_then(|n| n.internal_ip.clone()) else {
        return Vec::new();
    };
    let probe = |name: String, port: i32, http_path: Option<String>| AddressProbe {
        name,
        node: x.to_string(),
        address: ip.clone(),
        port,
        protocol: ProbeProtocol::TCP,
        http_path,
    };
    let mut out = vec![probe(
        "healthz".into(),
        PROXY_HEALTH_PORT,
        Some("/healthz".into()),
    )];
    if let Some((service, node_port, path)) = node_port(ctx) {
        out.push(probe(format!("nodeport:{service}"), node_port, path));
    }
    out
}

/// The NodePort a peer probes: of a Service the plan probes (TCP, its
/// port's NodePort, its HTTP path), else the first TCP NodePort of any
/// `externalTrafficPolicy: Cluster` Service (a Local one answers only on
/// nodes with a local endpoint).
fn node_port(ctx: &Ctx<'_>) -> Option<(String, i32, Option<String>)> {
    let cluster = || ctx.snap.external_services.iter().filter(|s| !s.local);
    let tcp = |port: Option<i32>, s: &super::super::ExternalService| {
        s.node_ports
            .iter()
            .find(|np| np.protocol == ProbeProtocol::TCP && port.is_none_or(|p| p == np.port))
            .map(|np| np.node_port)
    };
    let planned = ctx.spec.verification.probes.iter().find_map(|probe| {
        let name = format!("{}/{}", probe.service.namespace, probe.service.name);
        let svc = cluster().find(|s| s.name == name && probe.protocol == ProbeProtocol::TCP)?;
        Some((name, tcp(Some(probe.port), svc)?, probe.http_path.clone()))
    });
    planned.or_else(|| cluster().find_map(|s| Some((s.name.clone(), tcp(None, s)?, None))))
}

/// The peer probe's verdict on node `p` (in Verify).
pub(super) fn check(ctx: &Ctx<'_>, p: &NodeProgress) -> PeerCheck {
    let Some(peer) = p.verify_peer.as_deref() else {
        return PeerCheck::Skipped;
    };
    let generation = p.peer_probe_generation;
    let answer = ctx
        .snap
        .datapaths
        .get(peer)
        .and_then(|d| d.peer_probe.as_ref())
        .filter(|r| r.observed_generation >= generation);
    let waiting = || {
        PeerCheck::Waiting(format!(
            "waiting for node {peer} to probe this node's NodePort and health port from outside (request {generation})"
        ))
    };
    match answer.map(|a| a.nodes.get(&p.name)) {
        None | Some(None) => waiting(),
        Some(Some(None)) => PeerCheck::Passed,
        Some(Some(Some(why))) => PeerCheck::Failed(format!(
            "traffic from outside the node fails, probed from node {peer}: {why}"
        )),
    }
}

//! The peer probe of a node's Verify step: another node's agent dials the
//! node's InternalIP at a NodePort and at kube-proxy's health port, as a
//! client outside the node does, so a node is never marked done while
//! traffic from outside it dies there. Only when some Service is reached
//! from outside the nodes (as preflight, which then requires every node to
//! serve them).
//!
//! Any other node of the plan whose agent reports can be the peer: no node
//! translates a connection to another node's NodePort (neither kube-proxy
//! nor the socket programs match a remote address), so the probe reaches
//! the node itself. Settled nodes are preferred: done, then on kube-proxy,
//! then verifying, then failed. A node in Verify with no peer yet waits for
//! one while another node is on its way to being one, and is verified
//! without it (an event says so) only when none can be: whether a node's
//! ingress is probed does not depend on which node got there first.
//!
//! The peer is recorded in the node's progress (`verifyPeer`,
//! `peerProbeGeneration`). The request lives in the peer's own
//! NodeDatapath spec (`spec.peerProbe`), beside the fields its own progress
//! gives, and covers every node in Verify that chose it; its generation is
//! above any the peer's agent saw, and the answer is read back from the
//! peer's status by that generation.

use switchyard_api::{
    AddressProbe, DatapathMode, NodeProgress, NodeStep, PeerProbeRequest, ProbeProtocol,
};

use super::super::actions::Action;
use super::super::{Ctx, PeerProbeObs};
use super::spec::datapath_spec;
use super::steps::Seen;

/// kube-proxy's health port (`healthzBindAddress`), answered by the agent
/// once kube-proxy left the node.
pub const PROXY_HEALTH_PORT: i32 = 10256;

/// What the peer probe says about a node in Verify.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PeerCheck {
    /// No node can be the peer.
    Skipped,
    /// Not answered yet: why.
    Waiting(String),
    Passed,
    /// What failed.
    Failed(String),
}

/// Who probes a node in Verify.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Choice {
    /// This node, with the generation of the request covering the node.
    Peer(String, i64),
    /// None yet, but a node of the plan is on its way to being one: why.
    Later(String),
    /// None can be: why.
    Never(String),
}

/// The peer for node `x` in Verify.
pub(super) fn choose(ctx: &Ctx<'_>, x: &str) -> Choice {
    if !needed(ctx) {
        return Choice::Never("no Service is reached from outside the nodes".into());
    }
    if ctx
        .snap
        .nodes
        .get(x)
        .and_then(|n| n.internal_ip.as_ref())
        .is_none()
    {
        return Choice::Never(format!("node {x} has no InternalIP to probe"));
    }
    let others = || ctx.nodes.iter().filter(move |p| p.name != x);
    let best = others()
        .filter_map(|p| rank(ctx, p).map(|r| (r, &p.name)))
        .min();
    match best {
        Some((_, peer)) => Choice::Peer(peer.clone(), next_generation(ctx, peer)),
        None if others().any(|p| p.step.in_flight() && ctx.snap.nodes.contains_key(&p.name)) => {
            Choice::Later(format!(
                "waiting for another node of the plan to be able to probe node {x}'s NodePort and health port"
            ))
        }
        None => Choice::Never(format!(
            "no other node of the plan has a reporting agent to probe node {x}'s NodePort and health port from"
        )),
    }
}

/// The generation of a new request of `peer`: above what its agent saw,
/// what its spec carries and what any node recorded for it.
fn next_generation(ctx: &Ctx<'_>, peer: &str) -> i64 {
    let dp = ctx.snap.datapaths.get(peer);
    let answered = dp
        .and_then(|d| d.peer_probe.as_ref())
        .map_or(0, |r| r.observed_generation);
    let requested = dp.map_or(0, |d| d.peer_probe_requested);
    let recorded = ctx
        .nodes
        .iter()
        .filter(|o| o.verify_peer.as_deref() == Some(peer))
        .map(|o| o.peer_probe_generation)
        .max()
        .unwrap_or(0);
    answered.max(requested).max(recorded) + 1
}

/// Whether anything reaches the nodes from outside (a Service with an
/// external frontend): else nothing depends on the ingress program, nor on
/// kube-proxy's health port, and no peer probes them.
pub(super) fn needed(ctx: &Ctx<'_>) -> bool {
    !ctx.snap.external_services.is_empty()
}

/// A usable peer's preference (lower first), for a node with a reporting
/// agent (see [`kind`]).
fn rank(ctx: &Ctx<'_>, p: &NodeProgress) -> Option<u8> {
    let fresh = ctx.snap.datapaths.get(&p.name)?.fresh(ctx.now);
    fresh.then(|| kind(ctx, p)).flatten()
}

/// Whether node `p` is of a kind that can be a peer, and its preference:
/// done, on kube-proxy, verifying (its own probes answered), failed. Only
/// nodes whose spec the planner can write unchanged but for the peer
/// request (see [`peer_mode`]).
fn kind(ctx: &Ctx<'_>, p: &NodeProgress) -> Option<u8> {
    ctx.snap.nodes.get(&p.name)?;
    let dp = ctx.snap.datapaths.get(&p.name)?;
    match p.step {
        NodeStep::Done if dp.serving() => Some(0),
        NodeStep::Pending | NodeStep::RolledBack
            if dp.off() && ctx.snap.kube_proxy.ready_on(&p.name) =>
        {
            Some(1)
        }
        // Once its own probes answered: its spec carries them already, so
        // the peer request is the only change a write makes.
        NodeStep::Verify
            if dp.serving()
                && dp
                    .probe
                    .as_ref()
                    .is_some_and(|r| r.observed_generation >= p.probe_generation) =>
        {
            Some(2)
        }
        NodeStep::Uncordon if dp.serving() => Some(2),
        NodeStep::Failed => Some(3),
        _ => None,
    }
}

/// Whether node `peer` is of a kind that can be a peer (its agent may be
/// silent for now: a request waits for it, as the node in Verify does).
fn usable(ctx: &Ctx<'_>, peer: &str) -> bool {
    ctx.nodes
        .iter()
        .find(|p| p.name == peer)
        .is_some_and(|p| kind(ctx, p).is_some())
}

/// Whether `p` (in Verify) keeps the peer it recorded: one that can still
/// be a peer, or has answered. Else it chooses again (a peer that failed
/// its own verification and is rolled back answers no more).
pub(super) fn kept(ctx: &Ctx<'_>, p: &NodeProgress) -> bool {
    p.verify_peer.as_deref().is_some_and(|peer| {
        usable(ctx, peer) || answer(ctx, peer, p.peer_probe_generation).is_some()
    })
}

/// The answer of `peer`'s agent to a request numbered `generation` or later.
fn answer<'c>(ctx: &'c Ctx<'_>, peer: &str, generation: i64) -> Option<&'c PeerProbeObs> {
    ctx.snap
        .datapaths
        .get(peer)
        .and_then(|d| d.peer_probe.as_ref())
        .filter(|r| r.observed_generation >= generation)
}

/// The mode a peer's spec is written in: the one its progress gives, or,
/// for a failed node (which the plan leaves as it is), the one written.
/// `None`: the node's own step writes its spec (with the request).
fn peer_mode(ctx: &Ctx<'_>, p: &NodeProgress) -> Option<DatapathMode> {
    match p.step {
        NodeStep::Done | NodeStep::Verify | NodeStep::Uncordon => Some(DatapathMode::Active),
        NodeStep::Pending | NodeStep::RolledBack => Some(DatapathMode::Off),
        NodeStep::Failed => ctx.snap.datapaths.get(&p.name).map(|d| d.spec_mode),
        _ => None,
    }
}

/// The peer probe request the spec of node `peer` carries: the probes of
/// every node in Verify that chose it (as the decision found them), at the
/// highest of their generations. `None` when no node waits for it, or
/// the node is no peer kind now (its own migration writes its spec).
pub(super) fn request(ctx: &Ctx<'_>, peer: &str) -> Option<PeerProbeRequest> {
    if !usable(ctx, peer) {
        return None;
    }
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

/// The whole spec of `peer` with its peer request, as an action.
pub(super) fn action(ctx: &Ctx<'_>, peer: &str) -> Option<Action> {
    let p = ctx.nodes.iter().find(|p| p.name == peer)?;
    let mode = peer_mode(ctx, p)?;
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
        return match choose(ctx, &p.name) {
            Choice::Never(_) => PeerCheck::Skipped,
            Choice::Later(why) => PeerCheck::Waiting(why),
            Choice::Peer(peer, _) => PeerCheck::Waiting(format!("asking node {peer} to probe")),
        };
    };
    let generation = p.peer_probe_generation;
    let answer = answer(ctx, peer, generation);
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

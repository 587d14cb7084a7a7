//! Traffic from outside the nodes: preflight names the Services it reaches
//! and the nodes that could not serve them; Verify has a peer probe the
//! node's NodePort and health port.

use switchyard_api::{
    AddressProbe, DatapathMode, FailureAction, NodeStep, Phase, Probe, ProbeProtocol, ServiceRef,
    Severity,
};

use super::sim::Sim;
use super::unit::{spec, until};
use crate::planner::preflight::check;
use crate::planner::{Action, IngressObs};

fn peer_request(actions: &[Action], peer: &str) -> Option<switchyard_api::NodeDatapathSpec> {
    actions.iter().find_map(|a| match a {
        Action::ApplyDatapath { node, spec } if node == peer => Some(spec.clone()),
        _ => None,
    })
}

#[test]
fn preflight_lists_external_services_and_fails_nodes_that_cannot_serve_them() {
    let sim = Sim::new(3, &[], spec(1, 1));
    let targets: Vec<String> = sim.nodes.keys().cloned().collect();
    let mut snap = sim.snapshot();
    let findings = check(&sim.spec, &snap, &targets, sim.ts());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(
        (findings[0].reason.as_str(), findings[0].severity),
        ("ExternalServices", Severity::Info)
    );
    assert!(findings[0].message.contains("web/np (NodePort)"));

    if let Some(d) = snap.datapaths.get_mut("node-01") {
        d.ingress = IngressObs::Unavailable("no interface holds the Node's addresses".into());
    }
    if let Some(d) = snap.datapaths.get_mut("node-02") {
        d.ingress = IngressObs::Unknown;
    }
    let errors: Vec<_> = check(&sim.spec, &snap, &targets, sim.ts())
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|f| f.reason == "IngressUnavailable"));
    assert_eq!(errors[0].object.as_deref(), Some("Node/node-01"));
    assert!(
        errors[0]
            .message
            .contains("no interface holds the Node's addresses")
    );
    assert_eq!(errors[1].object.as_deref(), Some("Node/node-02"));
    assert!(errors[1].message.contains("has not reported"));

    // Without external frontends, nothing needs the ingress program.
    snap.external_services.clear();
    assert!(check(&sim.spec, &snap, &targets, sim.ts()).is_empty());
}

#[test]
fn many_external_services_are_counted_not_all_named() {
    let mut sim = Sim::new(1, &[], spec(1, 1));
    let one = sim.external_services[0].clone();
    sim.external_services = (0..25)
        .map(|i| crate::planner::ExternalService {
            name: format!("web/np-{i:02}"),
            ..one.clone()
        })
        .collect();
    let f = check(
        &sim.spec,
        &sim.snapshot(),
        &["node-00".to_string()],
        sim.ts(),
    );
    assert!(f[0].message.starts_with("25 Services"), "{}", f[0].message);
    assert!(f[0].message.contains("web/np-09 (NodePort) and 15 more"));
    assert!(!f[0].message.contains("np-10"));
}

#[test]
fn a_pending_peer_probes_the_canary_without_its_own_spec_changing() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::Verify);
    let p = sim.progress("node-00");
    assert_eq!(p.verify_peer.as_deref(), Some("node-01"), "first by name");
    let actions = sim.decide().actions;
    let peer = peer_request(&actions, "node-01").expect("the peer's spec is written");
    assert_eq!(peer.mode, DatapathMode::Off, "still on kube-proxy");
    assert!(peer.cleanup.is_none() && peer.probe.is_none());
    let req = peer.peer_probe.expect("peer probe request");
    assert_eq!(req.generation, p.peer_probe_generation);
    let ip = "172.31.0.10".to_string();
    assert_eq!(
        req.targets,
        vec![
            AddressProbe {
                name: "healthz".into(),
                node: "node-00".into(),
                address: ip.clone(),
                port: 10256,
                protocol: ProbeProtocol::TCP,
                http_path: Some("/healthz".into()),
            },
            AddressProbe {
                name: "nodeport:web/np".into(),
                node: "node-00".into(),
                address: ip,
                port: 30080,
                protocol: ProbeProtocol::TCP,
                http_path: None,
            },
        ]
    );
    // Nodes not chosen are left alone.
    assert!(peer_request(&actions, "node-02").is_none());
}

#[test]
fn a_done_peer_is_preferred_and_the_plan_succeeds() {
    let mut sim = Sim::new(3, &[], spec(1, 1));
    until(&mut sim, "node-01", NodeStep::Verify);
    assert_eq!(
        sim.progress("node-01").verify_peer.as_deref(),
        Some("node-00"),
        "node-00 is done; node-02 only on kube-proxy"
    );
    let actions = sim.decide().actions;
    let peer = peer_request(&actions, "node-00").expect("the done peer's spec");
    assert_eq!(peer.mode, DatapathMode::Active);
    assert!(
        peer.cleanup.is_some() && peer.probe.is_some(),
        "a done node keeps its answered requests"
    );
    sim.run(400, |_| None, &|_, _| false);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn dead_ingress_fails_verify_naming_the_peer_and_the_probe() {
    let mut s = spec(1, 1);
    s.failure_policy.action = FailureAction::Rollback;
    let mut sim = Sim::new(2, &[], s);
    if let Some(n) = sim.nodes.get_mut("node-00") {
        n.ingress_dead = true;
    }
    sim.run(400, |_| None, &|_, _| false);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let p = sim.progress("node-00");
    assert_eq!(p.step, NodeStep::RolledBack);
    assert_eq!(p.failed_step, Some(NodeStep::Verify));
    let why = p.failure.as_deref().unwrap_or_default();
    assert!(
        why.contains("probed from node node-01") && why.contains("nodeport of node-00 refused"),
        "{why}"
    );
    assert_ne!(sim.phase(), Phase::Succeeded);
}

#[test]
fn a_stale_answer_does_not_pass() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::Verify);
    let generation = sim.progress("node-00").peer_probe_generation;
    if let Some(n) = sim.nodes.get_mut("node-01") {
        n.agent_alive = false;
        // An answer to an older request, which said node-00 was fine.
        n.peer_obs = Some((generation - 1, [("node-00".to_string(), true)].into()));
    }
    for _ in 0..5 {
        sim.reconcile(None);
        sim.tick(3, &|_| false);
    }
    let p = sim.progress("node-00");
    assert_eq!(p.step, NodeStep::Verify);
    assert!(
        p.message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for node node-01 to probe")),
        "{:?}",
        p.message
    );
}

#[test]
fn a_single_node_is_verified_without_a_peer_and_the_status_says_so() {
    let mut sim = Sim::new(1, &[], spec(1, 1));
    until(&mut sim, "node-00", NodeStep::Verify);
    let p = sim.progress("node-00");
    assert_eq!(p.verify_peer, None);
    sim.reconcile(None);
    let message = sim.progress("node-00").message.clone().unwrap_or_default();
    assert!(
        message.contains("traffic from outside the node is not probed"),
        "{message}"
    );
    sim.run(400, |_| None, &|_, _| false);
    assert_eq!(sim.phase(), Phase::Succeeded);
    let skipped: Vec<_> = sim
        .events
        .iter()
        .filter(|e| e.reason == "PeerProbeSkipped")
        .collect();
    assert_eq!(skipped.len(), 1, "one event says the peer probe is skipped");
    assert!(skipped[0].warning && skipped[0].message.contains("no other node"));
}

#[test]
fn a_node_verifying_beside_a_migrating_one_waits_for_it_as_its_peer() {
    // Both nodes in one wave: node-00 reaches Verify first and has no
    // settled node to ask; it waits for node-01 rather than going unprobed,
    // and its dead ingress is found.
    let mut s = spec(0, 2);
    s.failure_policy.action = FailureAction::Pause;
    let mut sim = Sim::new(2, &[], s);
    if let Some(n) = sim.nodes.get_mut("node-00") {
        n.ingress_dead = true;
    }
    // node-01's agent lags until node-00 is in Verify.
    for _ in 0..100 {
        sim.reconcile(None);
        let step =
            |n: &switchyard_api::NodeProgress| n.name == "node-00" && n.step == NodeStep::Verify;
        if sim.status.nodes.iter().any(step) {
            break;
        }
        sim.tick(3, &|n| n == "node-01");
    }
    assert_ne!(sim.progress("node-01").step, NodeStep::Verify);
    assert_eq!(sim.progress("node-00").verify_peer, None);
    sim.run(400, |_| None, &|_, _| false);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    let p = sim.progress("node-00");
    assert_eq!(
        (p.step, p.verify_peer.as_deref()),
        (NodeStep::Failed, Some("node-01"))
    );
    assert!(sim.events.iter().all(|e| e.reason != "PeerProbeSkipped"));
}

#[test]
fn a_planned_probe_of_a_node_port_service_is_the_one_the_peer_dials() {
    let mut s = spec(1, 1);
    s.verification.probes.push(Probe {
        name: "web".into(),
        service: ServiceRef {
            namespace: "web".into(),
            name: "np".into(),
        },
        port: 80,
        protocol: ProbeProtocol::TCP,
        http_path: Some("/ready".into()),
    });
    let mut sim = Sim::new(2, &[], s);
    let mut other = sim.external_services[0].clone();
    other.name = "aaa/first".into();
    other.node_ports[0].node_port = 31000;
    sim.external_services.insert(0, other);
    until(&mut sim, "node-00", NodeStep::Verify);
    let actions = sim.decide().actions;
    let req = peer_request(&actions, "node-01")
        .and_then(|s| s.peer_probe)
        .expect("peer probe request");
    let np = &req.targets[1];
    assert_eq!(
        (np.name.as_str(), np.port, np.http_path.as_deref()),
        ("nodeport:web/np", 30080, Some("/ready"))
    );
}

#[test]
fn nodes_verifying_together_share_one_request_of_their_peer() {
    // Canary node-00, then node-01 and node-02 in one wave: both choose
    // the done canary, whose spec is written once with both.
    let mut sim = Sim::new(3, &[], spec(1, 2));
    until(&mut sim, "node-00", NodeStep::Done);
    for _ in 0..20 {
        let both = ["node-01", "node-02"]
            .iter()
            .all(|n| sim.progress(n).step == NodeStep::Verify);
        if both {
            break;
        }
        sim.reconcile(None);
        sim.tick(3, &|_| false);
    }
    let actions = sim.decide().actions;
    let writes = actions
        .iter()
        .filter(|a| matches!(a, Action::ApplyDatapath { node, .. } if node == "node-00"))
        .count();
    assert_eq!(writes, 1);
    let req = peer_request(&actions, "node-00")
        .and_then(|s| s.peer_probe)
        .expect("peer probe request");
    let nodes: std::collections::BTreeSet<&str> =
        req.targets.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes, ["node-01", "node-02"].into());
    sim.run(400, |_| None, &|_, _| false);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn without_external_services_no_peer_is_asked_and_no_event_warns() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    sim.external_services.clear();
    until(&mut sim, "node-00", NodeStep::Verify);
    assert_eq!(sim.progress("node-00").verify_peer, None);
    let actions = sim.decide().actions;
    assert!(peer_request(&actions, "node-01").is_none());
    sim.reconcile(None);
    let message = sim.progress("node-00").message.clone().unwrap_or_default();
    assert!(
        message.contains("no Service is reached from outside"),
        "{message}"
    );
    sim.run(400, |_| None, &|_, _| false);
    assert_eq!(sim.phase(), Phase::Succeeded);
    assert!(sim.events.iter().all(|e| e.reason != "PeerProbeSkipped"));
    assert!(sim.written.values().all(|s| s.peer_probe.is_none()));
}

//! Pure conversions for traffic from outside the nodes: the Services it
//! reaches, a Node's InternalIP, what an agent says about its ingress
//! program and its answers to peer probes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::ResourceExt;
use switchyard_api::{NodeDatapathStatus, ProbeProtocol, ProbeResult};

use super::cached::SlimNode;
use crate::planner::{ExternalService, IngressObs, NodePortObs, PeerProbeObs};

/// Drops what the operator never reads from a cached Service: everything
/// but its type, external IPs, traffic policy and ports (which keep their
/// numbers and protocol).
pub fn slim_service(s: &mut Service) {
    s.status = None;
    s.metadata.annotations = None;
    s.metadata.labels = None;
    s.metadata.managed_fields = None;
    s.metadata.owner_references = None;
    s.spec = s.spec.take().map(|spec| ServiceSpec {
        type_: spec.type_,
        external_ips: spec.external_ips,
        external_traffic_policy: spec.external_traffic_policy,
        ports: spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| k8s_openapi::api::core::v1::ServicePort {
                    port: p.port,
                    node_port: p.node_port,
                    protocol: p.protocol,
                    ..Default::default()
                })
                .collect()
        }),
        ..ServiceSpec::default()
    });
}

/// The Services traffic from outside a node reaches (NodePort and
/// LoadBalancer types, externalIPs), sorted by `namespace/name`.
pub fn external_services(services: &[&Service]) -> Vec<ExternalService> {
    let mut out: Vec<ExternalService> = services.iter().filter_map(|s| external(s)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn external(s: &Service) -> Option<ExternalService> {
    let spec = s.spec.as_ref()?;
    let mut kinds = Vec::new();
    match spec.type_.as_deref() {
        Some("NodePort") => kinds.push("NodePort"),
        Some("LoadBalancer") => kinds.push("LoadBalancer"),
        _ => {}
    }
    if spec
        .external_ips
        .as_ref()
        .is_some_and(|ips| !ips.is_empty())
    {
        kinds.push("externalIPs");
    }
    if kinds.is_empty() {
        return None;
    }
    let node_ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => ProbeProtocol::TCP,
                Some("UDP") => ProbeProtocol::UDP,
                Some(_) => return None,
            };
            Some(NodePortObs {
                port: p.port,
                node_port: p.node_port?,
                protocol,
            })
        })
        .collect();
    Some(ExternalService {
        name: format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
        kinds,
        local: spec.external_traffic_policy.as_deref() == Some("Local"),
        node_ports,
    })
}

/// A Node's first IPv4 `InternalIP`.
pub fn internal_ip(n: &SlimNode) -> Option<String> {
    n.addresses()
        .iter()
        .find(|a| a.type_ == "InternalIP" && a.address.parse::<std::net::Ipv4Addr>().is_ok())
        .map(|a| a.address.clone())
}

/// Whether the agent says its node can serve traffic from outside it.
pub fn ingress(st: &NodeDatapathStatus) -> IngressObs {
    let (Some(caps), Some(ingress)) = (&st.capabilities, &st.ingress) else {
        return IngressObs::Unknown;
    };
    if !caps.ingress_loads() {
        let why = if caps.ingress_missing.is_empty() {
            "not reported loadable".to_string()
        } else {
            caps.ingress_missing.join(", ")
        };
        return IngressObs::Unavailable(format!("the ingress program does not load: {why}"));
    }
    match &ingress.unavailable {
        Some(why) => IngressObs::Unavailable(why.clone()),
        None if ingress.interfaces.is_empty() => {
            IngressObs::Unavailable("no interface to run the ingress program on".into())
        }
        None => IngressObs::Ready,
    }
}

/// A peer's answer, per probed node: `None` when every probe of it passed.
pub fn peer_probe(r: &ProbeResult) -> PeerProbeObs {
    let mut nodes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for o in &r.results {
        let Some(node) = &o.node else { continue };
        let entry = nodes.entry(node.clone()).or_default();
        if o.passed {
            continue;
        }
        let failure = format!(
            "probe {:?} to {} failed ({} ok, {} failed{})",
            o.name,
            o.target,
            o.successes,
            o.failures,
            o.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        *entry = Some(match entry.take() {
            Some(before) => format!("{before}; {failure}"),
            None => failure,
        });
    }
    PeerProbeObs {
        observed_generation: r.observed_generation,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cached::SlimNodeStatus;
    use k8s_openapi::api::core::v1::{NodeAddress, ServicePort};
    use switchyard_api::{Capabilities, INGRESS_ATTACH_TYPE, IngressStatus, ProbeOutcome};

    fn service(name: &str, type_: &str, ips: &[&str], local: bool) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("web".into());
        s.metadata.labels = Some([("app".to_string(), name.to_string())].into());
        s.spec = Some(ServiceSpec {
            type_: Some(type_.into()),
            cluster_ip: Some("10.96.0.10".into()),
            external_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
            external_traffic_policy: Some(if local { "Local" } else { "Cluster" }.into()),
            ports: Some(vec![
                ServicePort {
                    port: 80,
                    node_port: Some(30080),
                    name: Some("http".into()),
                    ..Default::default()
                },
                ServicePort {
                    port: 53,
                    node_port: Some(30053),
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                ServicePort {
                    port: 9,
                    protocol: Some("SCTP".into()),
                    node_port: Some(30009),
                    ..Default::default()
                },
            ]),
            ..ServiceSpec::default()
        });
        s
    }

    #[test]
    fn external_frontends_are_nodeports_load_balancers_and_external_ips() {
        let lb = service("lb", "LoadBalancer", &[], true);
        let plain = service("plain", "ClusterIP", &[], false);
        let eip = service("eip", "ClusterIP", &["203.0.113.7"], false);
        let mut np = service("np", "NodePort", &[], false);
        let full = external_services(&[&lb, &plain, &eip, &np]);
        slim_service(&mut np);
        assert!(np.metadata.labels.is_none());
        assert_eq!(
            external_services(&[&np])[0],
            full[2],
            "a slimmed Service reads the same"
        );
        let names: Vec<&str> = full.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web/eip", "web/lb", "web/np"]);
        assert_eq!(full[0].kinds, ["externalIPs"]);
        assert!(full[1].local && !full[2].local);
        assert_eq!(
            full[2].node_ports,
            [
                NodePortObs {
                    port: 80,
                    node_port: 30080,
                    protocol: ProbeProtocol::TCP
                },
                NodePortObs {
                    port: 53,
                    node_port: 30053,
                    protocol: ProbeProtocol::UDP
                },
            ],
            "SCTP is not probed"
        );
    }

    #[test]
    fn internal_ip_is_the_first_ipv4_internal_address() {
        let addr = |t: &str, a: &str| NodeAddress {
            type_: t.into(),
            address: a.into(),
        };
        let mut n = SlimNode::named("n1");
        assert_eq!(internal_ip(&n), None);
        n.status = Some(SlimNodeStatus {
            addresses: Some(vec![
                addr("Hostname", "n1"),
                addr("InternalIP", "fd00::1"),
                addr("InternalIP", "172.31.255.11"),
            ]),
        });
        assert_eq!(internal_ip(&n).as_deref(), Some("172.31.255.11"));
    }

    #[test]
    fn ingress_needs_a_loadable_program_and_an_interface() {
        let mut st = NodeDatapathStatus::default();
        assert_eq!(ingress(&st), IngressObs::Unknown);
        st.capabilities = Some(Capabilities {
            ingress_missing: vec!["kfuncs bpf_skb_ct_alloc".into()],
            ..Capabilities::default()
        });
        st.ingress = Some(IngressStatus {
            interfaces: vec!["eth0".into()],
            ..IngressStatus::default()
        });
        assert!(
            matches!(ingress(&st), IngressObs::Unavailable(w) if w.contains("bpf_skb_ct_alloc"))
        );
        if let Some(c) = st.capabilities.as_mut() {
            c.attach_types = vec![INGRESS_ATTACH_TYPE.into()];
        }
        assert_eq!(ingress(&st), IngressObs::Ready);
        st.ingress = Some(IngressStatus::default());
        assert!(matches!(ingress(&st), IngressObs::Unavailable(w) if w.contains("no interface")));
        st.ingress = Some(IngressStatus {
            unavailable: Some("no interface holds the Node's addresses".into()),
            ..IngressStatus::default()
        });
        assert_eq!(
            ingress(&st),
            IngressObs::Unavailable("no interface holds the Node's addresses".into())
        );
    }

    #[test]
    fn peer_answers_are_read_per_probed_node() {
        let outcome = |node: &str, name: &str, passed: bool| ProbeOutcome {
            name: name.into(),
            node: Some(node.into()),
            target: "172.31.255.12:30080/TCP".into(),
            passed,
            failures: u32::from(!passed),
            last_error: (!passed).then(|| "connection refused".into()),
            ..ProbeOutcome::default()
        };
        let r = ProbeResult {
            observed_generation: 4,
            passed: false,
            results: vec![
                outcome("a", "healthz", true),
                outcome("a", "nodeport:web/np", true),
                outcome("b", "healthz", true),
                outcome("b", "nodeport:web/np", false),
            ],
            completed_at: None,
        };
        let p = peer_probe(&r);
        assert_eq!(p.observed_generation, 4);
        assert_eq!(p.nodes["a"], None);
        let b = p.nodes["b"].as_deref().unwrap_or_default();
        assert!(
            b.contains("nodeport:web/np") && b.contains("connection refused"),
            "{b}"
        );
    }
}

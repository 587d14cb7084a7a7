//! Behaviour of `desired_state` beyond the golden fixtures: input order
//! independence, limits, and the duplicate rules.

// Test code: helpers outside #[test] fns unwrap too (clippy.toml covers only those).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;

use common::{mk_node, mk_service, mk_slice};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use switchyard_lb::desired::MAX_BACKENDS_PER_FRONTEND;
use switchyard_lb::{FindingKind, Frontend, NodeContext, Options, Proto, desired_state};

fn service(name: &str, ip: &str) -> Service {
    mk_service("ns", name, ip)
}

fn slice(name: &str, svc: &str, endpoints: serde_json::Value) -> EndpointSlice {
    mk_slice("ns", name, svc, endpoints)
}

fn node() -> NodeContext {
    mk_node("node-a", Ipv4Addr::new(192, 168, 1, 10))
}

fn fe(ip: [u8; 4]) -> Frontend {
    Frontend::new(Ipv4Addr::from(ip), 80, Proto::Tcp)
}

#[test]
fn result_does_not_depend_on_input_order() {
    let svcs = vec![service("a", "10.96.0.1"), service("b", "10.96.0.2")];
    let slices = vec![
        slice(
            "a-1",
            "a",
            json!([{"addresses": ["10.244.0.3"]}, {"addresses": ["10.244.0.1"]}]),
        ),
        slice("a-2", "a", json!([{"addresses": ["10.244.0.2"]}])),
        slice("b-1", "b", json!([{"addresses": ["10.244.1.1"]}])),
    ];
    let one = desired_state(&svcs, &slices, &node(), &Options::default());
    let svcs_rev: Vec<_> = svcs.iter().rev().cloned().collect();
    let slices_rev: Vec<_> = slices.iter().rev().cloned().collect();
    let two = desired_state(&svcs_rev, &slices_rev, &node(), &Options::default());
    assert_eq!(one, two);
    let ips: Vec<_> = one.state.frontends[&fe([10, 96, 0, 1])]
        .backends
        .iter()
        .map(|b| b.key.ip.octets()[3])
        .collect();
    assert_eq!(ips, vec![1, 2, 3], "backends ordered by address");
}

#[test]
fn duplicate_endpoint_prefers_the_local_copy() {
    // The same address in two slices, once claimed by this node: with
    // internalTrafficPolicy Local it must count as local.
    let mut svc = service("a", "10.96.0.1");
    svc.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
    let slices = vec![
        slice(
            "a-1",
            "a",
            json!([{"addresses": ["10.244.0.1"], "nodeName": "node-b"}]),
        ),
        slice(
            "a-2",
            "a",
            json!([{"addresses": ["10.244.0.1"], "nodeName": "node-a"}]),
        ),
    ];
    for order in [slices.clone(), slices.iter().rev().cloned().collect()] {
        let d = desired_state([&svc], &order, &node(), &Options::default());
        assert_eq!(d.state.frontends[&fe([10, 96, 0, 1])].backends.len(), 1);
    }
}

#[test]
fn too_many_endpoints_are_truncated_and_reported() {
    let n = MAX_BACKENDS_PER_FRONTEND + 5;
    let mut slices = Vec::new();
    for chunk in 0..=(n / 1000) {
        let eps: Vec<_> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| {
                let ip = Ipv4Addr::from(0x0af4_0000u32 + u32::try_from(i).unwrap());
                json!({"addresses": [ip.to_string()]})
            })
            .collect();
        slices.push(slice(&format!("a-{chunk}"), "a", json!(eps)));
    }
    let svc = service("a", "10.96.0.1");
    let d = desired_state([&svc], &slices, &node(), &Options::default());
    let st = &d.state.frontends[&fe([10, 96, 0, 1])];
    assert_eq!(st.backends.len(), MAX_BACKENDS_PER_FRONTEND);
    assert!(
        d.findings
            .iter()
            .any(|f| matches!(f.kind, FindingKind::TooManyBackends { count, .. } if count == n)),
        "{:?}",
        d.findings
    );
}

#[test]
fn slices_with_foreign_labels_or_types_are_ignored() {
    let svc = service("a", "10.96.0.1");
    let mut fqdn = slice("a-f", "a", json!([{"addresses": ["10.244.0.9"]}]));
    fqdn.address_type = "FQDN".into();
    let mut other_proxy = slice("a-o", "a", json!([{"addresses": ["10.244.0.8"]}]));
    other_proxy.metadata.labels.as_mut().unwrap().insert(
        "service.kubernetes.io/service-proxy-name".into(),
        "x".into(),
    );
    let garbage = slice(
        "a-g",
        "a",
        json!([{"addresses": ["not-an-ip"]}, {"addresses": []}]),
    );
    let d = desired_state(
        [&svc],
        &[fqdn, other_proxy, garbage],
        &node(),
        &Options::default(),
    );
    assert!(d.state.frontends[&fe([10, 96, 0, 1])].backends.is_empty());
}

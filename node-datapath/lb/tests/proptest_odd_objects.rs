//! Bad input never hurts: Services and EndpointSlices with every
//! combination of fields the API server may hand over — odd addresses,
//! ports at and past their limits, unknown types, protocols and policies,
//! fields missing — never panic the desired-state computation, and what it
//! programs is always well-formed (the rest is left out or reported).

mod common;

use std::net::Ipv4Addr;

use common::mk_node;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_lb::{Options, desired_state};

fn odd_ip() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("10.96.0.10")),
        Just(json!("10.244.1.7")),
        Just(json!("172.31.255.11")),
        Just(json!("0.0.0.0")),
        Just(json!("255.255.255.255")),
        Just(json!("127.0.0.1")),
        Just(json!("None")),
        Just(json!("")),
        Just(json!("fd00::10")),
        Just(json!("999.1.1.1")),
        Just(json!("10.96.0.10/32")),
        "[ -~]{0,12}".prop_map(Value::from),
    ]
}

fn odd_port() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(80)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(65535)),
        Just(json!(65536)),
        Just(json!(-1)),
        any::<i32>().prop_map(Value::from),
    ]
}

fn one_of(words: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::sample::select(words).prop_map(|w| if w == "-" { Value::Null } else { json!(w) })
}

fn service_port() -> impl Strategy<Value = Value> {
    (
        odd_port(),
        one_of(&["TCP", "UDP", "SCTP", "", "ICMP", "-"]),
        prop_oneof![Just(Value::Null), odd_port()],
        prop_oneof![
            Just(Value::Null),
            odd_port(),
            Just(json!("http")),
            Just(json!(""))
        ],
        one_of(&["p", "q", "", "-"]),
    )
        .prop_map(|(port, protocol, node_port, target, name)| {
            json!({"port": port, "protocol": protocol, "nodePort": node_port,
                   "targetPort": target, "name": name})
        })
}

fn service() -> impl Strategy<Value = (Value, Value)> {
    (
        (
            one_of(&[
                "ClusterIP",
                "NodePort",
                "LoadBalancer",
                "ExternalName",
                "Weird",
                "-",
            ]),
            odd_ip(),
            prop::collection::vec(odd_ip(), 0..3),
            prop::collection::vec(service_port(), 0..3),
            prop::collection::vec(odd_ip(), 0..2),
        ),
        (
            one_of(&["Local", "Cluster", "x", "-"]),
            one_of(&["Local", "Cluster", "x", "-"]),
            one_of(&["ClientIP", "None", "x", "-"]),
            prop_oneof![Just(Value::Null), any::<i32>().prop_map(Value::from)],
            prop::collection::vec(odd_ip(), 0..2),
            prop::collection::vec("[ -~]{0,20}", 0..2),
        ),
    )
        .prop_map(
            |((kind, ip, ips, ports, external), (etp, itp, aff, timeout, lb, ranges))| {
                let spec = json!({"type": kind, "clusterIP": ip, "clusterIPs": ips,
                "ports": ports, "externalIPs": external,
                "externalTrafficPolicy": etp, "internalTrafficPolicy": itp,
                "sessionAffinity": aff,
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
                "loadBalancerSourceRanges": ranges});
                let ingress: Vec<Value> = lb.into_iter().map(|ip| json!({"ip": ip})).collect();
                (spec, json!({"loadBalancer": {"ingress": ingress}}))
            },
        )
}

fn slice() -> impl Strategy<Value = Value> {
    let endpoint = (
        prop::collection::vec(odd_ip(), 0..3),
        one_of(&["true", "false", "-"]),
        one_of(&["true", "false", "-"]),
        one_of(&["true", "false", "-"]),
        one_of(&["node1", "node2", "", "-"]),
    )
        .prop_map(|(addresses, ready, serving, terminating, node)| {
            let flag = |v: Value| {
                v.as_str()
                    .map(|s| s == "true")
                    .map_or(Value::Null, Value::from)
            };
            json!({"addresses": addresses, "nodeName": node, "conditions": {
                "ready": flag(ready), "serving": flag(serving), "terminating": flag(terminating)}})
        });
    (
        one_of(&["IPv4", "IPv6", "FQDN", "x"]),
        one_of(&["s0", "s1", "", "-"]),
        prop::collection::vec(endpoint, 0..4),
        prop::collection::vec(
            (odd_port(), one_of(&["TCP", "UDP", "SCTP", "-"]), one_of(&["p", "q", "", "-"])),
            0..3,
        ),
    )
        .prop_map(|(family, service, endpoints, ports)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(port, protocol, name)| json!({"port": port, "protocol": protocol, "name": name}))
                .collect();
            json!({"addressType": family, "service": service, "endpoints": endpoints, "ports": ports})
        })
}

/// A Service from the generated JSON; `None` when the API types refuse it.
fn to_service(i: usize, spec: &Value, status: &Value) -> Option<Service> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i}"), "namespace": "ns"},
        "spec": spec, "status": status,
    }))
    .ok()
}

/// An EndpointSlice from the generated JSON; `None` when the API types
/// themselves refuse it (a value out of their range).
fn to_slice(i: usize, v: &Value) -> Option<EndpointSlice> {
    let mut labels = json!({});
    if let Some(s) = v["service"].as_str() {
        labels["kubernetes.io/service-name"] = json!(s);
    }
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("e{i}"), "namespace": "ns", "labels": labels},
        "addressType": v["addressType"], "ports": v["ports"], "endpoints": v["endpoints"],
    }))
    .ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn odd_services_and_slices_never_panic_and_program_only_valid_entries(
        services in prop::collection::vec(service(), 0..4),
        slices in prop::collection::vec(slice(), 0..4),
    ) {
        // Values the API types refuse never reach the agent (its watch
        // fails to decode them); the rest must all be handled.
        let services: Vec<_> = services
            .iter()
            .enumerate()
            .filter_map(|(i, (spec, status))| to_service(i, spec, status))
            .collect();
        let slices: Vec<_> = slices.iter().enumerate().filter_map(|(i, s)| to_slice(i, s)).collect();
        let node = mk_node("node1", Ipv4Addr::new(172, 31, 255, 11));
        let d = desired_state(&services, &slices, &node, &Options::default());
        for (fe, state) in &d.state.frontends {
            prop_assert!(fe.port != 0, "{fe:?}");
            prop_assert!(!fe.ip.is_unspecified(), "{fe:?}");
            for b in &state.backends {
                prop_assert!(b.key.port != 0 && !b.key.ip.is_unspecified(), "{b:?} of {fe:?}");
            }
        }
        // The same objects in another order give the same state.
        let mut rev_services = services.clone();
        rev_services.reverse();
        let again = desired_state(&rev_services, slices.iter().rev(), &node, &Options::default());
        prop_assert_eq!(again.state, d.state);
    }
}

//! Property test of the incremental path: after every change of a random
//! sequence of Service and EndpointSlice adds, updates, relabels and
//! deletes, `LbState` equals `desired_state` over all objects (state and
//! findings), and the maps written from its incremental plans equal the
//! full target (computed from the objects, the incremental side
//! reads their projections, as the agent caches them): a full diff of them finds nothing to do, and they stay
//! consistent after every single operation.

// Test code: helpers outside #[test] fns unwrap too (clippy.toml covers only those).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::{mk_node, mk_service_with, mk_slice_with};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::json;
use switchyard_lb::diff::target_maps;
use switchyard_lb::{
    IdAllocator, LbMaps, LbState, MirrorMaps, NodeContext, Options, ServiceView, SliceView,
    consistent, desired_state, diff,
};

/// A Service: ClusterIP from a small pool (so Services collide on
/// frontends), TCP 80 and/or UDP 53, optionally NodePort, affinity,
/// `internalTrafficPolicy: Local`, and optionally a LoadBalancer (with a
/// NodePort) whose IP comes from a pool of two, with
/// `externalTrafficPolicy: Local` and `loadBalancerSourceRanges` at random.
#[derive(Clone, Debug)]
struct SvcSpec {
    ip: u8,
    tcp: bool,
    udp: bool,
    node_port: Option<u16>,
    affinity: bool,
    local: bool,
    lb: Option<LbSpec>,
}

#[derive(Clone, Debug)]
struct LbSpec {
    ip: u8,
    external_local: bool,
    ranges: Vec<&'static str>,
}

const RANGES: [&str; 4] = ["10.0.0.0/8", "192.168.7.9/24", "fd00::/8", "0.0.0.0/0"];

fn arb_lb() -> impl Strategy<Value = LbSpec> {
    (
        1u8..=2,
        any::<bool>(),
        prop::sample::subsequence(RANGES.to_vec(), 0..=3),
    )
        .prop_map(|(ip, external_local, ranges)| LbSpec {
            ip,
            external_local,
            ranges,
        })
}

/// An EndpointSlice: owning Service, endpoints (address, ready,
/// terminating, on this node).
#[derive(Clone, Debug)]
struct SliceSpec {
    service: u8,
    endpoints: Vec<(u8, bool, bool, bool)>,
}

#[derive(Clone, Debug)]
enum Change {
    PutService(u8, SvcSpec),
    DeleteService(u8),
    PutSlice(u8, SliceSpec),
    DeleteSlice(u8),
    /// A watch restarted: the state is rebuilt from every object.
    Relist,
}

fn arb_svc() -> impl Strategy<Value = SvcSpec> {
    (
        1u8..=4,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(prop_oneof![Just(30080u16), Just(30081)]),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(arb_lb()),
    )
        .prop_map(|(ip, tcp, udp, node_port, affinity, local, lb)| SvcSpec {
            ip,
            tcp,
            udp: udp || !tcp,
            node_port: node_port.or(lb.as_ref().map(|_| 30082)),
            affinity,
            local,
            lb,
        })
}

fn arb_slice() -> impl Strategy<Value = SliceSpec> {
    (
        0u8..5,
        prop::collection::vec((1u8..=8, any::<bool>(), any::<bool>(), any::<bool>()), 0..5),
    )
        .prop_map(|(service, endpoints)| SliceSpec { service, endpoints })
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0u8..5, arb_svc()).prop_map(|(i, s)| Change::PutService(i, s)),
        1 => (0u8..5).prop_map(Change::DeleteService),
        4 => (0u8..7, arb_slice()).prop_map(|(i, s)| Change::PutSlice(i, s)),
        1 => (0u8..7).prop_map(Change::DeleteSlice),
        1 => Just(Change::Relist),
    ]
}

fn service(i: u8, s: &SvcSpec) -> Service {
    let mut ports = Vec::new();
    if s.tcp {
        ports.push(json!({"name": "http", "port": 80, "protocol": "TCP", "nodePort": s.node_port}));
    }
    if s.udp {
        ports.push(json!({"name": "dns", "port": 53, "protocol": "UDP", "nodePort": s.node_port}));
    }
    let mut spec = json!({
        "selector": {"app": "x"},
        "type": if s.node_port.is_some() { "NodePort" } else { "ClusterIP" },
        "clusterIP": format!("10.96.0.{}", s.ip),
        "ports": ports,
    });
    if s.affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    if s.local {
        spec["internalTrafficPolicy"] = json!("Local");
    }
    let mut status = json!({});
    if let Some(lb) = &s.lb {
        spec["type"] = json!("LoadBalancer");
        spec["loadBalancerSourceRanges"] = json!(lb.ranges);
        if lb.external_local {
            spec["externalTrafficPolicy"] = json!("Local");
        }
        let ip = format!("198.51.100.{}", lb.ip);
        status = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    mk_service_with(
        json!({"name": format!("s{i}"), "namespace": "ns",
               "labels": {"app": "x"}, "annotations": {"note": "y"}}),
        spec,
        Some(status),
    )
}

fn slice(i: u8, s: &SliceSpec) -> EndpointSlice {
    let endpoints: Vec<_> = s
        .endpoints
        .iter()
        .map(|(a, ready, terminating, here)| {
            json!({
                "addresses": [format!("10.244.0.{a}")],
                "conditions": {"ready": ready, "serving": true, "terminating": terminating},
                "nodeName": if *here { "node-a" } else { "node-b" },
            })
        })
        .collect();
    mk_slice_with(
        json!({"name": format!("e{i}"), "namespace": "ns",
               "labels": {"kubernetes.io/service-name": format!("s{}", s.service),
                          "endpointslice.kubernetes.io/managed-by": "m"}}),
        json!([{"name": "http", "port": 8080, "protocol": "TCP"},
               {"name": "dns", "port": 5353, "protocol": "UDP"}]),
        json!(endpoints),
    )
}

fn node() -> NodeContext {
    mk_node("node-a", Ipv4Addr::new(192, 168, 1, 10))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_equals_full_recompute(changes in prop::collection::vec(arb_change(), 1..40)) {
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut lb = LbState::new(node(), Options::default());
        let mut maps = MirrorMaps::new();
        let mut ids = IdAllocator::new();
        for change in &changes {
            match change {
                Change::PutService(i, s) => {
                    services.insert(format!("s{i}"), service(*i, s));
                    lb.service_touched("ns", &format!("s{i}"));
                }
                Change::DeleteService(i) => {
                    services.remove(&format!("s{i}"));
                    lb.service_touched("ns", &format!("s{i}"));
                }
                Change::PutSlice(i, s) => {
                    let obj = slice(*i, s);
                    let owner = LbState::slice_service(&obj).map(str::to_string);
                    slices.insert(format!("e{i}"), obj);
                    lb.slice_touched("ns", &format!("e{i}"), owner.as_deref());
                }
                Change::DeleteSlice(i) => {
                    slices.remove(&format!("e{i}"));
                    lb.slice_touched("ns", &format!("e{i}"), None);
                }
                Change::Relist => lb.reset(
                    services.keys().map(|n| ("ns", n.as_str())),
                    slices
                        .iter()
                        .map(|(n, s)| ("ns", n.as_str(), LbState::slice_service(s))),
                ),
            }
            lb.refresh(
                // What the agent's caches hold: projections.
                |_, name| services.get(name).map(|s| Box::new(ServiceView::from(s))),
                |_, name| slices.get(name).map(|s| Box::new(SliceView::from(s))),
            );
            let full = desired_state(services.values(), slices.values(), &node(), &Options::default());
            prop_assert_eq!(lb.state(), &full.state);
            prop_assert_eq!(lb.findings(), full.findings);

            let ops = lb.plan(maps.contents(), &mut ids).unwrap();
            for op in &ops {
                maps.apply(op).unwrap();
                if let Err(e) = consistent(maps.contents()) {
                    return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
                }
            }
            prop_assert_eq!(maps.contents(), &target_maps(&full.state, &ids).unwrap());
            let mut ids_full = ids.clone();
            prop_assert!(diff(maps.contents(), &full.state, &mut ids_full).unwrap().is_empty());
        }
    }
}

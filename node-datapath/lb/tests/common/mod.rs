//! Shared test helpers: loading YAML fixtures into typed Kubernetes objects, and the
//! `mk_*` builders of the Services, EndpointSlices and node the tests construct in code.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_lb::{ExternalPolicyMode, NodeContext, Options};

/// Node annotation selecting [`ExternalPolicyMode::Strict`] in a fixture.
pub const STRICT_ANNOTATION: &str = "lb.switchyard.dev/external-traffic-policy-mode";

/// The inputs of one fixture.
#[derive(Debug, Default)]
pub struct Fixture {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub node: NodeContext,
    pub options: Options,
}

/// Parses a multi-document YAML of real Kubernetes objects: one `Node`
/// (name, `topology.kubernetes.io/zone` label, IPv4 InternalIP/ExternalIP
/// addresses, and the optional [`STRICT_ANNOTATION`]: `Strict`), any number
/// of `Service`s and `discovery.k8s.io/v1` `EndpointSlice`s.
pub fn load(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap();
    let mut fx = Fixture::default();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "Service" => fx.services.push(serde_yaml::from_value(value).unwrap()),
            "EndpointSlice" => fx.slices.push(serde_yaml::from_value(value).unwrap()),
            "Node" => {
                let node: k8s_openapi::api::core::v1::Node = serde_yaml::from_value(value).unwrap();
                fx.node.name = node.metadata.name.clone().unwrap();
                fx.node.zone = node
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("topology.kubernetes.io/zone").cloned());
                let strict = node
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(STRICT_ANNOTATION))
                    .is_some_and(|v| v == "Strict");
                if strict {
                    fx.options.external_policy = ExternalPolicyMode::Strict;
                }
                for a in node.status.and_then(|s| s.addresses).unwrap_or_default() {
                    if matches!(a.type_.as_str(), "InternalIP" | "ExternalIP")
                        && let Ok(ip) = a.address.parse::<Ipv4Addr>()
                    {
                        fx.node.addresses.push(ip);
                    }
                }
            }
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
    assert!(
        !fx.node.name.is_empty(),
        "{}: no Node document",
        path.display()
    );
    fx
}

/// The node the tests run on: `name` with one address.
pub fn mk_node(name: &str, address: Ipv4Addr) -> NodeContext {
    NodeContext {
        name: name.into(),
        addresses: vec![address],
        zone: None,
    }
}

/// A ClusterIP Service `namespace/name` with one port, `http` 80/TCP.
pub fn mk_service(namespace: &str, name: &str, cluster_ip: &str) -> Service {
    mk_service_with(
        json!({"name": name, "namespace": namespace}),
        json!({"clusterIP": cluster_ip,
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        None,
    )
}

/// A Service from its metadata, spec and (optional) status as JSON.
pub fn mk_service_with(metadata: Value, spec: Value, status: Option<Value>) -> Service {
    let mut object = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata,
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).unwrap()
}

/// An IPv4 EndpointSlice `namespace/name` of Service `service` with one port,
/// `http` 8080/TCP, and the given endpoints (JSON array).
pub fn mk_slice(namespace: &str, name: &str, service: &str, endpoints: Value) -> EndpointSlice {
    mk_slice_with(
        json!({"name": name, "namespace": namespace,
               "labels": {"kubernetes.io/service-name": service}}),
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        endpoints,
    )
}

/// An IPv4 EndpointSlice from its metadata, ports and endpoints as JSON.
pub fn mk_slice_with(metadata: Value, ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

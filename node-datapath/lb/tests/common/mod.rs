//! Shared test helpers: loading YAML fixtures into typed Kubernetes objects.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
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

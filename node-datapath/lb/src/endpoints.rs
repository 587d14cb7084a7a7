//! EndpointSlice merging and endpoint selection, as kube-proxy 1.34 does it
//! (`endpointslicecache.go` and `CategorizeEndpoints` in `topology.go`).
//!
//! Slices of one Service are merged per Service port, matched by port name
//! and protocol; only the first address of an endpoint counts; duplicates
//! (same address and port) collapse, preferring the copy on this node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::view::{EndpointView, SliceView};

/// One endpoint of one Service port, after merging slices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub is_local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone_hints: Vec<String>,
    pub node_hints: Vec<String>,
}

impl Endpoint {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Which endpoints a frontend may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// All usable endpoints in the cluster (topology hints honoured).
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// Topology inputs for hint-based filtering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Topology<'a> {
    pub node_name: &'a str,
    pub zone: Option<&'a str>,
    /// The `PreferSameTrafficDistribution` feature gate (node hints).
    pub node_hints_enabled: bool,
}

/// Slices of one Service (already filtered to its namespace and name).
#[derive(Debug, Default)]
pub(crate) struct ServiceSlices<'a> {
    pub slices: Vec<&'a SliceView>,
}

impl ServiceSlices<'_> {
    /// Merged endpoints of the Service port named `port_name` with protocol
    /// `proto` (kube-proxy's `ServicePortName` match), keyed by
    /// `(ip, port)`, so the result is deduplicated and ordered.
    pub fn endpoints_for(&self, port_name: &str, proto: &str, node: &str) -> Vec<Endpoint> {
        let mut set: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
        for slice in &self.slices {
            for sp in &slice.ports {
                // A nil name is ignored by kube-proxy; unnamed ports are "".
                let Some(name) = sp.name.as_deref() else {
                    continue;
                };
                if name != port_name || &*sp.protocol != proto {
                    continue;
                }
                let Some(port) = sp
                    .port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let e = convert(ep, port, node);
                    let key = (e.ip, e.port);
                    if !set.contains_key(&key) || e.is_local {
                        set.insert(key, e);
                    }
                }
            }
        }
        set.into_values().collect()
    }
}

fn convert(ep: &EndpointView, port: u16, node: &str) -> Endpoint {
    let names = |v: Option<&[Box<str>]>| -> Vec<String> {
        v.into_iter().flatten().map(|s| s.to_string()).collect()
    };
    let hints = ep.hints.as_deref();
    Endpoint {
        ip: ep.ip,
        port,
        is_local: !node.is_empty() && ep.node_name.as_deref() == Some(node),
        ready: ep.ready,
        serving: ep.serving,
        terminating: ep.terminating,
        zone_hints: names(hints.map(|h| &*h.zones)),
        node_hints: names(hints.map(|h| &*h.nodes)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopologyMode {
    None,
    SameNode,
    SameZone,
}

fn topology_mode(eps: &[Endpoint], topo: &Topology<'_>) -> TopologyMode {
    let ready: Vec<&Endpoint> = eps.iter().filter(|e| e.ready).collect();
    if ready.is_empty() {
        return TopologyMode::None;
    }
    let has = |hints: &[String], want: &str| hints.iter().any(|h| h == want);
    if topo.node_hints_enabled
        && ready.iter().all(|e| !e.node_hints.is_empty())
        && ready.iter().any(|e| has(&e.node_hints, topo.node_name))
    {
        return TopologyMode::SameNode;
    }
    let zone = topo.zone.unwrap_or("");
    if ready.iter().all(|e| !e.zone_hints.is_empty())
        && ready.iter().any(|e| has(&e.zone_hints, zone))
    {
        return TopologyMode::SameZone;
    }
    TopologyMode::None
}

fn available(e: &Endpoint, mode: TopologyMode, topo: &Topology<'_>) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => e.node_hints.iter().any(|h| h == topo.node_name),
        TopologyMode::SameZone => e.zone_hints.iter().any(|h| Some(h.as_str()) == topo.zone),
    }
}

/// The usable endpoints for a policy: ready ones (for Cluster, within the
/// topology hints if they apply); if there are none, the serving-and-
/// terminating ones. Order is preserved (by address, then port).
pub(crate) fn select(eps: &[Endpoint], policy: Policy, topo: &Topology<'_>) -> Vec<Endpoint> {
    let pick = |pred: &dyn Fn(&Endpoint) -> bool| -> Vec<Endpoint> {
        eps.iter().filter(|e| pred(e)).cloned().collect()
    };
    match policy {
        Policy::Cluster => {
            let mode = topology_mode(eps, topo);
            let ready = pick(&|e| e.ready && available(e, mode, topo));
            if !ready.is_empty() {
                return ready;
            }
            pick(&|e| e.serving_terminating())
        }
        Policy::Local => {
            let ready = pick(&|e| e.is_local && e.ready);
            if !ready.is_empty() {
                return ready;
            }
            pick(&|e| e.is_local && e.serving_terminating())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: [u8; 4], local: bool, ready: bool, term: bool, zones: &[&str]) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port: 80,
            is_local: local,
            ready,
            serving: true,
            terminating: term,
            zone_hints: zones.iter().map(|s| s.to_string()).collect(),
            node_hints: vec![],
        }
    }

    const TOPO: Topology<'static> = Topology {
        node_name: "n1",
        zone: Some("a"),
        node_hints_enabled: true,
    };

    #[test]
    fn terminating_fallback_is_independent_for_cluster_and_local() {
        let eps = vec![
            ep([10, 0, 0, 1], false, true, false, &[]),
            ep([10, 0, 0, 2], true, false, true, &[]),
        ];
        let c: Vec<_> = select(&eps, Policy::Cluster, &TOPO)
            .iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(c, vec![Ipv4Addr::new(10, 0, 0, 1)]);
        let l: Vec<_> = select(&eps, Policy::Local, &TOPO)
            .iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(l, vec![Ipv4Addr::new(10, 0, 0, 2)]);
    }

    #[test]
    fn zone_hints_apply_only_when_every_ready_endpoint_has_one() {
        let mut eps = vec![
            ep([10, 0, 0, 1], false, true, false, &["a"]),
            ep([10, 0, 0, 2], false, true, false, &["b"]),
        ];
        assert_eq!(select(&eps, Policy::Cluster, &TOPO).len(), 1);
        eps.push(ep([10, 0, 0, 3], false, true, false, &[]));
        assert_eq!(select(&eps, Policy::Cluster, &TOPO).len(), 3);
        // No endpoint hinted for our zone: hints ignored.
        let other = Topology {
            zone: Some("c"),
            ..TOPO
        };
        assert_eq!(select(&eps[..2], Policy::Cluster, &other).len(), 2);
    }
}

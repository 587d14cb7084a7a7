//! Services + EndpointSlices → the desired LB state of one node.
//!
//! Semantics follow kube-proxy 1.34 (service change tracker, endpoint slice
//! cache, `CategorizeEndpoints`, the iptables/nftables proxiers):
//!
//! * skipped: `type: ExternalName`, headless (`clusterIP: None`) and unset
//!   ClusterIPs, Services labelled `service.kubernetes.io/service-proxy-name`;
//! * frontends per TCP/UDP Service port: the IPv4 ClusterIP, the NodePort on
//!   each node address, every IPv4 ExternalIP and every IPv4 LoadBalancer
//!   ingress IP in VIP mode (`ipMode: Proxy` ingress is not programmed);
//! * endpoints: ready ones, else serving-and-terminating ones; the ClusterIP
//!   frontend honours `internalTrafficPolicy: Local` (LOCAL_ONLY);
//! * `externalTrafficPolicy: Local`: kube-proxy sends traffic that originates
//!   on the node (host processes, and pods) to external frontends to the
//!   *cluster-wide* endpoints ("short-circuit pod/local traffic"), and the
//!   socket LB only ever sees such traffic, so by default external frontends
//!   use cluster endpoints, and clients outside the node (the ingress
//!   program) get a second, [`Scope::Ingress`] entry of the frontend with the
//!   local endpoints only (LOCAL_ONLY; the node-scope master carries
//!   INGRESS_SCOPE). [`ExternalPolicyMode::Strict`] restricts the node-scope
//!   entry to local endpoints too (LOCAL_ONLY, no second entry);
//! * `sessionAffinity: ClientIP` sets AFFINITY with `timeoutSeconds`
//!   (default 10800) on every frontend of the Service;
//! * a ClusterIP with at least one TCP/UDP port gets a VIP marker (other
//!   ports on it are refused, as kube-proxy's nftables mode does);
//! * topology hints are honoured for cluster-wide endpoints as
//!   `CategorizeEndpoints` does (node hints, then zone hints, each only when
//!   every ready endpoint carries one and one matches this node/zone);
//! * backends are ordered by address, then port; two Service ports claiming
//!   the same frontend: the first by namespace/name wins, the other is
//!   reported.
//!
//! What the datapath cannot serve is reported as a [`Finding`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use switchyard_abi::{SOURCE_RANGES_MAX, svc_flags};

use crate::endpoints::{Policy, ServiceSlices, Topology, select};
use crate::model::{
    BackendKey, DesiredBackend, DesiredState, Frontend, FrontendState, Proto, Scope, ServicePortRef,
};
pub use crate::view::DEFAULT_AFFINITY_TIMEOUT;
use crate::view::{PortView, ServiceView, SliceView};

/// The most slots one frontend can hold (`sy_svc_value.count` is a `u16`).
pub const MAX_BACKENDS_PER_FRONTEND: usize = u16::MAX as usize;

/// The node the state is computed for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// `metadata.name` of the Node (matched against endpoints' `nodeName`).
    pub name: String,
    /// Addresses that serve NodePorts (the caller decides, e.g. the node's
    /// InternalIP/ExternalIP addresses; include 127.0.0.1 to serve
    /// localhost NodePorts as kube-proxy's iptables mode does).
    pub addresses: Vec<Ipv4Addr>,
    /// The node's `topology.kubernetes.io/zone` label, for zone hints.
    pub zone: Option<String>,
}

/// How `externalTrafficPolicy: Local` applies to node-originated traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExternalPolicyMode {
    /// kube-proxy's behaviour: traffic from this node to an external
    /// frontend uses cluster-wide endpoints.
    #[default]
    ShortCircuitLocalClients,
    /// External frontends of `externalTrafficPolicy: Local` Services use only
    /// this node's endpoints (LOCAL_ONLY).
    Strict,
}

/// Knobs of the computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// See [`ExternalPolicyMode`].
    pub external_policy: ExternalPolicyMode,
    /// The `PreferSameTrafficDistribution` feature gate (on by default in
    /// 1.34): honour `hints.forNodes`.
    pub node_hints: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            external_policy: ExternalPolicyMode::default(),
            node_hints: true,
        }
    }
}

/// Something in the inputs the datapath does not serve (for preflight).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `namespace/name` of the Service.
    pub service: String,
    /// What is unsupported.
    pub kind: FindingKind,
}

/// The kinds of [`Finding`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FindingKind {
    /// An SCTP port (not served; kube-proxy serves it).
    SctpPort { port: i32 },
    /// A port whose protocol is not TCP, UDP or SCTP.
    UnknownProtocol { port: i32, protocol: String },
    /// A port number outside 1..=65535.
    InvalidPort { port: i32 },
    /// Only IPv6 ClusterIPs: the Service is not served.
    Ipv6Only,
    /// A dual-stack Service: only its IPv4 family is served.
    Ipv6FamilyIgnored,
    /// The ClusterIP does not parse as an IP address.
    InvalidClusterIp { value: String },
    /// More endpoints than slots; the frontend keeps the first 65535.
    TooManyBackends { frontend: Frontend, count: usize },
    /// Another Service port already owns this frontend; this one is dropped.
    FrontendConflict {
        frontend: Frontend,
        owner: ServicePortRef,
    },
    /// More `loadBalancerSourceRanges` than the datapath enforces; the
    /// LoadBalancer IPs admit clients from the first ones only.
    TooManySourceRanges { count: usize },
    /// `loadBalancerSourceRanges` are enforced for clients outside the
    /// node only: a client on the node connecting to the LoadBalancer IP is
    /// not filtered (the socket programs do not know its source address).
    SourceRangesNotForNodeClients,
    /// The node's Services need more frontends or service-map entries than
    /// the maps hold (all of them, counted); this Service is past the limit.
    OverCapacity {
        frontends: usize,
        service_entries: usize,
        limits: crate::capacity::Limits,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.service)?;
        match &self.kind {
            FindingKind::SctpPort { port } => write!(f, "SCTP port {port} is not supported"),
            FindingKind::UnknownProtocol { port, protocol } => {
                write!(f, "port {port} has unknown protocol {protocol:?}")
            }
            FindingKind::InvalidPort { port } => write!(f, "invalid port {port}"),
            FindingKind::Ipv6Only => f.write_str("IPv6-only Service is not supported"),
            FindingKind::Ipv6FamilyIgnored => {
                f.write_str("dual-stack Service: the IPv6 family is not served")
            }
            FindingKind::InvalidClusterIp { value } => write!(f, "invalid clusterIP {value:?}"),
            FindingKind::TooManyBackends { frontend, count } => write!(
                f,
                "{frontend} has {count} endpoints, only {MAX_BACKENDS_PER_FRONTEND} are served"
            ),
            FindingKind::FrontendConflict { frontend, owner } => {
                write!(f, "frontend {frontend} is already served for {owner}")
            }
            FindingKind::SourceRangesNotForNodeClients => f.write_str(
                "loadBalancerSourceRanges are not enforced for clients on the node itself",
            ),
            FindingKind::OverCapacity {
                frontends,
                service_entries,
                limits,
            } => write!(
                f,
                "does not fit the datapath's maps: the node's Services need {frontends} frontends \
                 ({} fit) and {service_entries} service-map entries ({} fit)",
                limits.frontends, limits.service_entries
            ),
            FindingKind::TooManySourceRanges { count } => write!(
                f,
                "{count} loadBalancerSourceRanges, only the first {SOURCE_RANGES_MAX} are enforced"
            ),
        }
    }
}

/// The result of [`desired_state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// What the maps should hold.
    pub state: DesiredState,
    /// What is not served, sorted.
    pub findings: Vec<Finding>,
}

/// Computes the desired LB state of `node` from all Services and
/// EndpointSlices (any order; the result does not depend on it). The
/// objects are projected ([`ServiceView`], [`SliceView`]) first.
pub fn desired_state<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeContext,
    opts: &Options,
) -> Desired {
    let services: Vec<ServiceView> = services.into_iter().map(ServiceView::from).collect();
    let slices: Vec<SliceView> = slices.into_iter().map(SliceView::from).collect();
    desired_state_of_views(&services, &slices, node, opts)
}

/// [`desired_state`] of projected Services and EndpointSlices.
pub fn desired_state_of_views<'a>(
    services: impl IntoIterator<Item = &'a ServiceView>,
    slices: impl IntoIterator<Item = &'a SliceView>,
    node: &NodeContext,
    opts: &Options,
) -> Desired {
    let mut by_service: BTreeMap<(&str, &str), ServiceSlices<'a>> = BTreeMap::new();
    for slice in slices {
        if slice.skipped {
            continue;
        }
        let (Some(ns), Some(svc)) = (slice.namespace.as_deref(), slice.service.as_deref()) else {
            continue;
        };
        if svc.is_empty() {
            continue;
        }
        by_service.entry((ns, svc)).or_default().slices.push(slice);
    }

    let mut services: Vec<&ServiceView> = services.into_iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let mut b = Builder {
        node,
        opts,
        out: Desired::default(),
    };
    let empty = ServiceSlices::default();
    for svc in services {
        if svc.name.is_empty() {
            continue;
        }
        let (ns, name) = (&*svc.namespace, &*svc.name);
        let slices = by_service.get(&(ns, name)).unwrap_or(&empty);
        b.service(svc, ns, name, slices);
    }
    b.out.findings.sort();
    b.out.findings.dedup();
    b.out
}

struct Builder<'n> {
    node: &'n NodeContext,
    opts: &'n Options,
    out: Desired,
}

/// What a Service port shares with all its frontends.
struct PortCtx {
    svc_ref: ServicePortRef,
    proto: Proto,
    affinity: Option<u32>,
    /// `loadBalancerSourceRanges` (for LoadBalancer frontends).
    source_ranges: Option<Box<[(Ipv4Addr, u8)]>>,
    endpoints: Vec<crate::endpoints::Endpoint>,
}

impl Builder<'_> {
    fn finding(&mut self, ns: &str, name: &str, kind: FindingKind) {
        self.out.findings.push(Finding {
            service: format!("{ns}/{name}"),
            kind,
        });
    }

    fn service(&mut self, svc: &ServiceView, ns: &str, name: &str, slices: &ServiceSlices<'_>) {
        if svc.skipped {
            return;
        }
        let Some(cluster_ip) = self.cluster_ip(svc, ns, name) else {
            return;
        };
        if let Some(ranges) = svc
            .source_ranges
            .as_ref()
            .filter(|_| !svc.lb_ips.is_empty())
        {
            self.source_range_findings(ns, name, ranges.len());
        }
        let mut any_port = false;
        for sp in &svc.ports {
            any_port |= self.service_port(svc, sp, cluster_ip, slices);
        }
        if any_port {
            self.out.state.vips.insert(cluster_ip);
        }
    }

    /// What the datapath does not enforce of `count` source ranges.
    fn source_range_findings(&mut self, ns: &str, name: &str, count: usize) {
        self.finding(ns, name, FindingKind::SourceRangesNotForNodeClients);
        if count > SOURCE_RANGES_MAX {
            self.finding(ns, name, FindingKind::TooManySourceRanges { count });
        }
    }

    /// The frontends of one Service port; false if the port is not served.
    fn service_port(
        &mut self,
        svc: &ServiceView,
        sp: &PortView,
        cluster_ip: Ipv4Addr,
        slices: &ServiceSlices<'_>,
    ) -> bool {
        let (ns, name) = (&*svc.namespace, &*svc.name);
        let proto_name = &*sp.protocol;
        let proto = match proto_name {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            "SCTP" => {
                self.finding(ns, name, FindingKind::SctpPort { port: sp.port });
                return false;
            }
            other => {
                let kind = FindingKind::UnknownProtocol {
                    port: sp.port,
                    protocol: other.to_string(),
                };
                self.finding(ns, name, kind);
                return false;
            }
        };
        let Some(port) = u16::try_from(sp.port).ok().filter(|p| *p != 0) else {
            self.finding(ns, name, FindingKind::InvalidPort { port: sp.port });
            return false;
        };
        let port_name = sp.name.clone();
        let ctx = PortCtx {
            endpoints: slices.endpoints_for(&port_name, proto_name, &self.node.name),
            svc_ref: ServicePortRef {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port_name,
            },
            proto,
            affinity: svc.affinity,
            source_ranges: svc.source_ranges.clone(),
        };
        let internal = if svc.internal_local {
            Policy::Local
        } else {
            Policy::Cluster
        };
        let chosen = self.select(&ctx, internal);
        let fe = Frontend::new(cluster_ip, port, proto);
        self.frontend(&ctx, fe, svc_flags::CLUSTER_IP, internal, &chosen);
        self.external_frontends(svc, sp, &ctx, port, (internal, &chosen));
        true
    }

    /// (address, port, kind) of every NodePort, ExternalIP and LoadBalancer
    /// frontend of one Service port.
    fn external_addresses(
        &self,
        svc: &ServiceView,
        sp: &PortView,
        port: u16,
    ) -> Vec<(Ipv4Addr, u16, u8)> {
        let node_port = sp
            .node_port
            .filter(|_| svc.has_node_ports)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        let mut fes: Vec<(Ipv4Addr, u16, u8)> = Vec::new();
        if let Some(np) = node_port {
            let mut addrs = self.node.addresses.clone();
            addrs.sort_unstable();
            addrs.dedup();
            fes.extend(addrs.into_iter().map(|a| (a, np, svc_flags::NODEPORT)));
        }
        fes.extend(
            svc.external_ips
                .iter()
                .map(|ip| (*ip, port, svc_flags::EXTERNAL_IP)),
        );
        fes.extend(
            svc.lb_ips
                .iter()
                .map(|ip| (*ip, port, svc_flags::LOADBALANCER)),
        );
        fes
    }

    /// NodePort, ExternalIP and LoadBalancer frontends of one Service port.
    /// `internal` is the ClusterIP's policy and backends (reused when the
    /// external policy selects the same).
    fn external_frontends(
        &mut self,
        svc: &ServiceView,
        sp: &PortView,
        ctx: &PortCtx,
        port: u16,
        internal: (Policy, &[DesiredBackend]),
    ) {
        let fes = self.external_addresses(svc, sp, port);
        if fes.is_empty() {
            return;
        }
        let external_local = svc.has_node_ports && svc.external_local;
        let strict = self.opts.external_policy == ExternalPolicyMode::Strict;
        let external = if external_local && strict {
            Policy::Local
        } else {
            Policy::Cluster
        };
        let chosen = if external == internal.0 {
            internal.1.to_vec()
        } else {
            self.select(ctx, external)
        };
        // kube-proxy sends node-originated traffic of an eTP=Local Service
        // to cluster-wide endpoints but external clients only to local
        // ones: the latter get their own (ingress-scope) entries.
        let ingress = (external_local && !strict).then(|| self.select(ctx, Policy::Local));
        for (ip, p, kind) in fes {
            let fe = Frontend::new(ip, p, ctx.proto);
            let Some(local) = &ingress else {
                self.frontend(ctx, fe, kind, external, &chosen);
                continue;
            };
            let flags = kind | svc_flags::INGRESS_SCOPE;
            if self.frontend(ctx, fe, flags, external, &chosen) {
                let fe = fe.in_scope(Scope::Ingress);
                self.frontend(ctx, fe, kind, Policy::Local, local);
            }
        }
    }

    /// The Service's IPv4 ClusterIP, or `None` (with a finding where the
    /// Service is skipped for a reason other than being headless/unset).
    fn cluster_ip(&mut self, svc: &ServiceView, ns: &str, name: &str) -> Option<Ipv4Addr> {
        let primary = &*svc.cluster_ip;
        if primary.is_empty() || primary == "None" {
            return None;
        }
        let mut all: Vec<&str> = svc.cluster_ips.iter().map(|s| &**s).collect();
        if all.is_empty() {
            all.push(primary);
        }
        let mut v4 = None;
        let mut v6 = false;
        for s in &all {
            // A ClusterIP comes from the Service CIDR: an unspecified,
            // loopback, multicast or broadcast one is as invalid as text.
            let special = |a: &Ipv4Addr| {
                a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
            };
            match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if special(&a) => {
                    let kind = FindingKind::InvalidClusterIp {
                        value: (*s).to_string(),
                    };
                    self.finding(ns, name, kind);
                }
                Ok(IpAddr::V4(a)) if v4.is_none() => v4 = Some(a),
                Ok(IpAddr::V4(_)) => {}
                Ok(IpAddr::V6(_)) => v6 = true,
                Err(_) => {
                    let kind = FindingKind::InvalidClusterIp {
                        value: (*s).to_string(),
                    };
                    self.finding(ns, name, kind);
                }
            }
        }
        match (v4, v6) {
            (Some(a), true) => {
                self.finding(ns, name, FindingKind::Ipv6FamilyIgnored);
                Some(a)
            }
            (Some(a), false) => Some(a),
            (None, true) => {
                self.finding(ns, name, FindingKind::Ipv6Only);
                None
            }
            (None, false) => None,
        }
    }

    /// The backends a policy selects for this Service port, in slot order.
    fn select(&self, ctx: &PortCtx, policy: Policy) -> Vec<DesiredBackend> {
        let topo = Topology {
            node_name: &self.node.name,
            zone: self.node.zone.as_deref(),
            node_hints_enabled: self.opts.node_hints,
        };
        select(&ctx.endpoints, policy, &topo)
            .iter()
            .map(|e| DesiredBackend {
                key: BackendKey {
                    ip: e.ip,
                    port: e.port,
                    proto: ctx.proto,
                },
                terminating: !e.ready && e.terminating,
            })
            .collect()
    }

    /// Inserts frontend `fe` with `flags` (its kind plus extras) and the
    /// chosen backends; false (and a finding) if another Service port
    /// owns it already.
    fn frontend(
        &mut self,
        ctx: &PortCtx,
        fe: Frontend,
        flags: u8,
        policy: Policy,
        chosen: &[DesiredBackend],
    ) -> bool {
        let (ns, name) = (&ctx.svc_ref.namespace, &ctx.svc_ref.name);
        if let Some(owner) = self.out.state.frontends.get(&fe) {
            let finding = FindingKind::FrontendConflict {
                frontend: fe,
                owner: owner.service.clone(),
            };
            self.finding(ns, name, finding);
            return false;
        }
        if chosen.len() > MAX_BACKENDS_PER_FRONTEND {
            let finding = FindingKind::TooManyBackends {
                frontend: fe,
                count: chosen.len(),
            };
            self.finding(ns, name, finding);
        }
        let backends = chosen[..chosen.len().min(MAX_BACKENDS_PER_FRONTEND)].to_vec();
        let mut flags = flags;
        if ctx.affinity.is_some() {
            flags |= svc_flags::AFFINITY;
        }
        if policy == Policy::Local {
            flags |= svc_flags::LOCAL_ONLY;
        }
        // kube-proxy filters LoadBalancer IPs only; the ranges are checked
        // before an external client's scope is chosen.
        let ranges = ctx
            .source_ranges
            .as_ref()
            .filter(|_| flags & svc_flags::LOADBALANCER != 0 && fe.scope == Scope::Node);
        if ranges.is_some() {
            flags |= svc_flags::SOURCE_RANGES;
        }
        let source_ranges = ranges.map_or_else(Vec::new, |r| {
            r.iter().take(SOURCE_RANGES_MAX).copied().collect()
        });
        let state = FrontendState {
            flags,
            affinity_timeout: ctx.affinity.unwrap_or(0),
            backends,
            source_ranges,
            service: ctx.svc_ref.clone(),
        };
        self.out.state.frontends.insert(fe, state);
        true
    }
}

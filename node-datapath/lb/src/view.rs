//! Compact projections of Services and EndpointSlices: exactly what
//! [`crate::desired`] reads, nothing else. A cache of projections holds a
//! fraction of what the k8s-openapi objects take (an `Endpoint` alone is
//! 352 bytes inline); convert each object at arrival with
//! [`ServiceView::from`] / [`SliceView::from`] and drop it.
//!
//! The bottom of the crate's imports: it reads only the API objects, and
//! [`crate::desired`] and the endpoint selection read it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

/// The EndpointSlice label naming the owning Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Services (and their slices) with this label belong to another proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Slices of headless Services carry this label; kube-proxy ignores them.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// One Service port as the Service declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortView {
    /// `name` ("" when unset; shared with the frontends' [`crate::ServicePortRef`]).
    pub name: Arc<str>,
    /// `protocol` (default `TCP`).
    pub protocol: Box<str>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// What [`crate::desired`] reads of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// `metadata.namespace` (default `default`; shared with the
    /// frontends' [`crate::ServicePortRef`], as is `name`).
    pub namespace: Arc<str>,
    /// `metadata.name` ("" when unset: such a Service is skipped).
    pub name: Arc<str>,
    /// Not served by this proxy: a service-proxy-name label, no spec, or
    /// `type: ExternalName`.
    pub skipped: bool,
    /// `type` is NodePort or LoadBalancer.
    pub has_node_ports: bool,
    /// `spec.clusterIP` ("" when unset).
    pub cluster_ip: Box<str>,
    /// `spec.clusterIPs`.
    pub cluster_ips: Box<[Box<str>]>,
    /// `sessionAffinity: ClientIP`: its timeout.
    pub affinity: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// IPv4 `externalIPs`, sorted and deduplicated.
    pub external_ips: Box<[Ipv4Addr]>,
    /// IPv4 LoadBalancer ingress IPs in VIP mode, sorted and deduplicated.
    pub lb_ips: Box<[Ipv4Addr]>,
    /// `loadBalancerSourceRanges`, when set: its IPv4 networks (masked,
    /// sorted, deduplicated; empty when it lists only IPv6 ones, which then
    /// admits no IPv4 client). `None`: every source is admitted.
    pub source_ranges: Option<Box<[(Ipv4Addr, u8)]>>,
    /// `healthCheckNodePort` (externalTrafficPolicy: Local Services).
    pub health_check_node_port: Option<u16>,
    pub ports: Box<[PortView]>,
}

/// One port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePortView {
    /// `name` (`None`: ignored, as kube-proxy does).
    pub name: Option<Box<str>>,
    /// `protocol` (default `TCP`).
    pub protocol: Box<str>,
    pub port: Option<i32>,
}

/// Topology hints of one endpoint (rare: boxed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintsView {
    pub zones: Box<[Box<str>]>,
    pub nodes: Box<[Box<str>]>,
}

/// One endpoint whose first address is IPv4 (others are never used).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub ip: Ipv4Addr,
    /// Conditions with their API defaults applied.
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<Box<str>>,
    /// `None` when the endpoint has no hints at all.
    pub hints: Option<Box<HintsView>>,
}

/// What [`crate::desired`] reads of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceView {
    pub namespace: Option<Box<str>>,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<Box<str>>,
    /// Not IPv4, headless, or another proxy's.
    pub skipped: bool,
    pub ports: Box<[SlicePortView]>,
    pub endpoints: Box<[EndpointView]>,
}

fn boxed(s: &str) -> Box<str> {
    s.into()
}

/// Whether `ip` may be a Service's external address or an endpoint: not
/// unspecified, loopback, multicast or broadcast (the API server refuses
/// those in `externalIPs` and EndpointSlices; a LoadBalancer status is
/// written by whatever controller runs, so they are left out here too).
fn usable(ip: &Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

/// The usable IPv4 addresses among `items`, deduplicated and sorted.
fn v4_list<'a>(items: impl Iterator<Item = &'a String>) -> Box<[Ipv4Addr]> {
    let mut v: Vec<Ipv4Addr> = items
        .filter_map(|s| s.parse().ok())
        .filter(usable)
        .collect();
    v.sort_unstable();
    v.dedup();
    v.into()
}

/// The IPv4 networks among CIDR strings (host bits cleared), sorted and
/// deduplicated; other entries (IPv6, unparsable) are left out.
pub fn v4_networks(cidrs: &[String]) -> Box<[(Ipv4Addr, u8)]> {
    let mut v: Vec<(Ipv4Addr, u8)> = cidrs
        .iter()
        .filter_map(|c| {
            let (addr, len) = c.trim().split_once('/')?;
            let (addr, len): (Ipv4Addr, u8) = (addr.parse().ok()?, len.parse().ok()?);
            let host_bits = 32u32.checked_sub(u32::from(len))?;
            let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
            Some((Ipv4Addr::from(u32::from(addr) & mask), len))
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v.into()
}

impl From<&Service> for ServiceView {
    fn from(svc: &Service) -> Self {
        let m = &svc.metadata;
        let proxy_label = m
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME));
        let spec = svc.spec.clone().unwrap_or_default();
        let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let lb_ips = v4_list(
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter(|i| matches!(i.ip_mode.as_deref(), None | Some("VIP")))
                .filter_map(|i| i.ip.as_ref()),
        );
        Self {
            namespace: m.namespace.as_deref().unwrap_or("default").into(),
            name: m.name.as_deref().unwrap_or_default().into(),
            skipped: proxy_label || svc.spec.is_none() || svc_type == "ExternalName",
            has_node_ports: matches!(svc_type, "NodePort" | "LoadBalancer"),
            cluster_ip: boxed(spec.cluster_ip.as_deref().unwrap_or_default()),
            cluster_ips: spec
                .cluster_ips
                .iter()
                .flatten()
                .map(|s| boxed(s))
                .collect(),
            affinity,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            external_ips: v4_list(spec.external_ips.iter().flatten()),
            lb_ips,
            source_ranges: spec
                .load_balancer_source_ranges
                .as_ref()
                .filter(|r| !r.is_empty())
                .map(|r| v4_networks(r)),
            health_check_node_port: spec
                .health_check_node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0),
            ports: spec.ports.iter().flatten().map(port_view).collect(),
        }
    }
}

fn port_view(p: &k8s_openapi::api::core::v1::ServicePort) -> PortView {
    PortView {
        name: p.name.as_deref().unwrap_or_default().into(),
        protocol: boxed(p.protocol.as_deref().unwrap_or("TCP")),
        port: p.port,
        node_port: p.node_port,
    }
}

fn endpoint(ep: &Endpoint) -> Option<EndpointView> {
    // Consumers must use only the first address (EndpointSlice API).
    let ip: Ipv4Addr = ep.addresses.first()?.parse().ok().filter(usable)?;
    let cond = ep.conditions.as_ref();
    let hints = ep.hints.as_ref();
    let zones: Box<[Box<str>]> = hints
        .and_then(|h| h.for_zones.as_ref())
        .into_iter()
        .flatten()
        .map(|z| boxed(&z.name))
        .collect();
    let nodes: Box<[Box<str>]> = hints
        .and_then(|h| h.for_nodes.as_ref())
        .into_iter()
        .flatten()
        .map(|n| boxed(&n.name))
        .collect();
    Some(EndpointView {
        ip,
        ready: cond.and_then(|c| c.ready).unwrap_or(true),
        serving: cond.and_then(|c| c.serving).unwrap_or(true),
        terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
        node_name: ep.node_name.as_deref().map(boxed),
        hints: (!zones.is_empty() || !nodes.is_empty())
            .then(|| Box::new(HintsView { zones, nodes })),
    })
}

impl From<&EndpointSlice> for SliceView {
    fn from(slice: &EndpointSlice) -> Self {
        let labels = slice.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k));
        Self {
            namespace: slice.metadata.namespace.as_deref().map(boxed),
            service: label(LABEL_SERVICE_NAME).map(|s| boxed(s)),
            skipped: slice.address_type != "IPv4"
                || label(LABEL_SERVICE_PROXY_NAME).is_some()
                || label(LABEL_HEADLESS).is_some(),
            ports: slice
                .ports
                .iter()
                .flatten()
                .map(|p| SlicePortView {
                    name: p.name.as_deref().map(boxed),
                    protocol: boxed(p.protocol.as_deref().unwrap_or("TCP")),
                    port: p.port,
                })
                .collect(),
            endpoints: slice.endpoints.iter().filter_map(endpoint).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointHints, ForZone};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn source_ranges_keep_ipv4_networks_masked_sorted_once() {
        let cidrs: Vec<String> = [
            " 10.1.2.3/8",
            "192.168.7.9/24",
            "fd00::/8",
            "10.0.0.0/8",
            "x/3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ip = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
        assert_eq!(
            &*v4_networks(&cidrs),
            [(ip(10, 0, 0, 0), 8), (ip(192, 168, 7, 0), 24)]
        );
        assert_eq!(
            &*v4_networks(&["0.0.0.0/0".to_string()]),
            [(ip(0, 0, 0, 0), 0)]
        );
        // IPv6 ranges only: set, but no IPv4 client is admitted.
        assert!(v4_networks(&["fd00::/8".to_string()]).is_empty());
        assert!(v4_networks(&["10.0.0.0/33".to_string()]).is_empty());
    }

    #[test]
    fn slice_view_keeps_first_ipv4_address_and_defaulted_conditions() {
        let ep = |addrs: &[&str], cond: Option<EndpointConditions>| Endpoint {
            addresses: addrs.iter().map(|a| a.to_string()).collect(),
            conditions: cond,
            ..Endpoint::default()
        };
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                labels: Some([(LABEL_SERVICE_NAME.to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![
                ep(&["10.0.0.1", "10.0.0.9"], None),
                ep(&["fd00::1"], None),
                ep(&[], None),
                Endpoint {
                    hints: Some(EndpointHints {
                        for_zones: Some(vec![ForZone { name: "z1".into() }]),
                        for_nodes: None,
                    }),
                    ..ep(
                        &["10.0.0.2"],
                        Some(EndpointConditions {
                            ready: Some(false),
                            serving: Some(true),
                            terminating: Some(true),
                        }),
                    )
                },
            ],
            ..EndpointSlice::default()
        };
        let v = SliceView::from(&slice);
        assert_eq!(v.service.as_deref(), Some("web"));
        assert!(!v.skipped);
        let got: Vec<(Ipv4Addr, bool, bool, bool, bool)> = v
            .endpoints
            .iter()
            .map(|e| (e.ip, e.ready, e.serving, e.terminating, e.hints.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Ipv4Addr::new(10, 0, 0, 1), true, true, false, false),
                (Ipv4Addr::new(10, 0, 0, 2), false, true, true, true),
            ]
        );
        let ipv6 = EndpointSlice {
            address_type: "IPv6".into(),
            ..slice
        };
        assert!(SliceView::from(&ipv6).skipped);
    }

    #[test]
    fn service_view_skips_external_name_and_other_proxies() {
        use k8s_openapi::api::core::v1::ServiceSpec;
        let svc = |type_: &str, label: bool| Service {
            metadata: ObjectMeta {
                name: Some("s".into()),
                labels: label
                    .then(|| [(LABEL_SERVICE_PROXY_NAME.to_string(), "x".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert!(ServiceView::from(&svc("ExternalName", false)).skipped);
        assert!(ServiceView::from(&svc("ClusterIP", true)).skipped);
        let np = ServiceView::from(&svc("NodePort", false));
        assert!(!np.skipped && np.has_node_ports);
        assert_eq!(&*np.namespace, "default");
    }
}

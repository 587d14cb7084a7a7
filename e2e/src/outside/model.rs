//! The lab LoadBalancer's pure core: which Services it serves and how they
//! are health-checked, the IP pool, the rise/fall counting of health checks
//! and the router's route for each LoadBalancer IP.
//!
//! It behaves like a cloud provider's service controller (or MetalLB in
//! layer-3 mode): Services of `type: LoadBalancer` without a
//! `loadBalancerClass` get an IP from the pool; nodes labelled
//! `node.kubernetes.io/exclude-from-external-load-balancers` never receive
//! traffic; the others are health-checked, `externalTrafficPolicy: Local`
//! Services on their `healthCheckNodePort`, all others on kube-proxy's
//! `:10256/healthz`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, Service};

use crate::topology::LB_POOL;

/// The label that keeps a node out of every external load balancer.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// kube-proxy's health port (`/healthz`, `/livez`).
pub const PROXY_HEALTH_PORT: u16 = 10256;
/// Consecutive failed checks that take a node out.
pub const FALL: usize = 3;
/// Consecutive passed checks that put a node (back) in.
pub const RISE: u32 = 2;

/// A Service the LoadBalancer serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbService {
    /// `namespace/name`.
    pub key: String,
    /// The first IPv4 address in `status.loadBalancer.ingress`, if any.
    pub ip: Option<Ipv4Addr>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Port health-checked on every node: `healthCheckNodePort` for
    /// eTP=Local, kube-proxy's 10256 otherwise.
    pub health_port: u16,
}

impl LbService {
    /// The Service as the LoadBalancer sees it, `None` if it is not one it
    /// serves (another type, another `loadBalancerClass`, being deleted, or
    /// eTP=Local without a `healthCheckNodePort` yet).
    pub fn from_service(svc: &Service) -> Option<Self> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() != Some("LoadBalancer")
            || spec.load_balancer_class.is_some()
            || svc.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let health_port = if local {
            u16::try_from(spec.health_check_node_port?).ok()?
        } else {
            PROXY_HEALTH_PORT
        };
        let ip = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .find_map(|i| i.ip.as_deref()?.parse().ok());
        Some(Self {
            key: format!(
                "{}/{}",
                svc.metadata.namespace.as_deref()?,
                svc.metadata.name.as_deref()?
            ),
            ip,
            local,
            health_port,
        })
    }
}

/// A node the LoadBalancer may send to: not excluded, with an IPv4
/// InternalIP. Returns its name and address.
pub fn eligible_node(node: &Node) -> Option<(String, Ipv4Addr)> {
    let excluded = node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL));
    if excluded || node.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())?;
    Some((node.metadata.name.clone()?, ip))
}

/// The lowest pool address (`.1`–`.254`) not in `used`.
pub fn allocate(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let [a, b, c, _] = LB_POOL.octets();
    (1..=254)
        .map(|h| Ipv4Addr::new(a, b, c, h))
        .find(|ip| !used.contains(ip))
}

/// A change of a node's place in a Service's rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Passed [`RISE`] checks in a row: receives traffic (again).
    PutIn,
    /// Failed [`FALL`] checks in a row while in rotation: taken out; the
    /// failures seen, oldest first.
    TakeOut(Vec<String>),
}

/// One node's health as one Service's checks see it. A node starts out of
/// rotation, as a new target of a cloud load balancer does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    in_rotation: bool,
    passed: u32,
    failures: Vec<String>,
}

impl Health {
    /// Whether the node receives this Service's traffic.
    pub fn in_rotation(&self) -> bool {
        self.in_rotation
    }

    /// Counts one check's result; returns the change it causes, if any.
    pub fn observe(&mut self, result: Result<(), String>) -> Option<Change> {
        match result {
            Ok(()) => {
                self.failures.clear();
                self.passed = self.passed.saturating_add(1);
                (!self.in_rotation && self.passed >= RISE).then(|| {
                    self.in_rotation = true;
                    Change::PutIn
                })
            }
            Err(e) => {
                self.passed = 0;
                self.failures.push(e);
                if self.failures.len() > FALL {
                    self.failures.remove(0);
                }
                (self.in_rotation && self.failures.len() >= FALL).then(|| {
                    self.in_rotation = false;
                    Change::TakeOut(std::mem::take(&mut self.failures))
                })
            }
        }
    }
}

/// The `ip route` arguments that make the router send `ip` to `nexthops`
/// (ECMP over all of them), or answer "unreachable" when there is none.
pub fn route_args(ip: Ipv4Addr, nexthops: &[Ipv4Addr]) -> String {
    if nexthops.is_empty() {
        return format!("route replace unreachable {ip}/32");
    }
    let hops: Vec<String> = nexthops
        .iter()
        .map(|h| format!("nexthop via {h}"))
        .collect();
    format!("route replace {ip}/32 {}", hops.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn serves_load_balancers_of_no_class_with_the_right_health_port() {
        let local = svc(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31999},
            "status": {"loadBalancer": {"ingress": [{"hostname": "x"}, {"ip": "172.29.0.7"}]}}}));
        assert_eq!(
            LbService::from_service(&local),
            Some(LbService {
                key: "default/web".into(),
                ip: Some(Ipv4Addr::new(172, 29, 0, 7)),
                local: true,
                health_port: 31999
            })
        );
        let cluster = svc(json!({"metadata": {"name": "c", "namespace": "a"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}}));
        let c = LbService::from_service(&cluster).unwrap();
        assert_eq!((c.ip, c.health_port, c.local), (None, 10256, false));
        for other in [
            json!({"type": "NodePort"}),
            json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/other"}),
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
        ] {
            let s = svc(json!({"metadata": {"name": "n", "namespace": "a"}, "spec": other}));
            assert_eq!(LbService::from_service(&s), None, "{other}");
        }
    }

    #[test]
    fn excluded_nodes_are_not_eligible() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "node1", "labels": labels},
                "status": {"addresses": [{"type": "Hostname", "address": "node1"},
                                         {"type": "InternalIP", "address": "172.31.255.11"}]}}))
            .unwrap()
        };
        assert_eq!(
            eligible_node(&node(json!({}))),
            Some(("node1".into(), Ipv4Addr::new(172, 31, 255, 11)))
        );
        assert_eq!(eligible_node(&node(json!({EXCLUDE_LABEL: ""}))), None);
    }

    #[test]
    fn allocates_the_lowest_free_pool_address() {
        let mut used = BTreeSet::new();
        assert_eq!(allocate(&used), Some(Ipv4Addr::new(172, 29, 0, 1)));
        used.insert(Ipv4Addr::new(172, 29, 0, 1));
        used.insert(Ipv4Addr::new(172, 29, 0, 3));
        assert_eq!(allocate(&used), Some(Ipv4Addr::new(172, 29, 0, 2)));
        let full: BTreeSet<_> = (1..=254).map(|h| Ipv4Addr::new(172, 29, 0, h)).collect();
        assert_eq!(allocate(&full), None);
    }

    #[test]
    fn two_passes_put_a_node_in_and_three_failures_take_it_out() {
        let mut h = Health::default();
        assert_eq!(
            h.observe(Err("refused".into())),
            None,
            "never in: no take-out"
        );
        assert_eq!(h.observe(Ok(())), None);
        assert_eq!(h.observe(Ok(())), Some(Change::PutIn));
        assert!(h.in_rotation());
        assert_eq!(h.observe(Err("a".into())), None);
        assert_eq!(h.observe(Err("b".into())), None);
        assert_eq!(h.observe(Ok(())), None, "a pass resets the failures");
        assert_eq!(h.observe(Err("c".into())), None);
        assert_eq!(h.observe(Err("d".into())), None);
        assert_eq!(
            h.observe(Err("e".into())),
            Some(Change::TakeOut(vec!["c".into(), "d".into(), "e".into()]))
        );
        assert!(!h.in_rotation());
        assert_eq!(h.observe(Err("f".into())), None, "out already");
        assert_eq!(h.observe(Ok(())), None);
        assert_eq!(h.observe(Ok(())), Some(Change::PutIn));
    }

    #[test]
    fn routes_spread_over_every_nexthop_or_are_unreachable() {
        let ip = Ipv4Addr::new(172, 29, 0, 1);
        let hops = [
            Ipv4Addr::new(172, 31, 255, 11),
            Ipv4Addr::new(172, 31, 255, 13),
        ];
        assert_eq!(
            route_args(ip, &hops),
            "route replace 172.29.0.1/32 nexthop via 172.31.255.11 nexthop via 172.31.255.13"
        );
        assert_eq!(
            route_args(ip, &[]),
            "route replace unreachable 172.29.0.1/32"
        );
    }
}

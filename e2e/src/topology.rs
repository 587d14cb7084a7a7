//! The address plan (pure): which addresses and names the control plane,
//! nodes and pods get. Everything lives inside network namespaces the lab
//! creates; nothing here is ever configured in the root namespace.
//!
//! - underlay `172.31.255.0/24` on the bridge `sybr0` inside the
//!   control-plane namespace; the API server advertises `172.31.255.1`,
//!   node *i* (1-based) is `172.31.255.(10+i)`;
//! - pod CIDR `10.244.0.0/16`, node *i* owns `10.244.i.0/24` with its pod
//!   bridge `cbr0` at `.1`;
//! - service CIDR `10.96.0.0/16`, the `kubernetes` Service is `10.96.0.1`;
//! - the outside of the cluster: a router namespace on the underlay at
//!   `172.31.255.254` and an external client namespace on `172.30.0.0/24`
//!   (router `.1`, client `.10`) behind it; LoadBalancer IPs come from
//!   `172.29.0.0/24` and are routed by the router to the nodes.

use std::net::Ipv4Addr;

/// Underlay network prefix length.
pub const UNDERLAY_PREFIX: u8 = 24;
/// The control-plane address on the underlay (API server advertise address).
pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 1);
/// Cluster-wide pod CIDR.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// Service CIDR.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// ClusterIP of the `kubernetes` Service.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The API server's secure port.
pub const API_PORT: u16 = 6443;
/// Bridge name inside the control-plane namespace.
pub const UNDERLAY_BRIDGE: &str = "sybr0";
/// Pod bridge name inside each node namespace.
pub const POD_BRIDGE: &str = "cbr0";
/// Most nodes a cluster may have (addresses and CIDRs are derived from it).
pub const MAX_NODES: usize = 200;
/// The external router's address on the underlay (above every node's).
pub const ROUTER_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 254);
/// The external clients' subnet (behind the router, outside the cluster).
pub const CLIENT_NET: &str = "172.30.0.0/24";
/// The router's address on the external clients' subnet.
pub const ROUTER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
/// The external client's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
/// Prefix length of the external clients' subnet.
pub const CLIENT_PREFIX: u8 = 24;
/// The LoadBalancer IP pool, a /24: `.1`–`.254` are handed out.
pub const LB_POOL: Ipv4Addr = Ipv4Addr::new(172, 29, 0, 0);

/// One node's addresses and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// 1-based index.
    pub index: usize,
    /// Node object name.
    pub name: String,
    /// Network namespace name.
    pub netns: String,
    /// Address on the underlay.
    pub ip: Ipv4Addr,
    /// The node's pod CIDR base (`10.244.i.0`), /24.
    pub pod_net: Ipv4Addr,
    /// Gateway (pod bridge address, `10.244.i.1`).
    pub pod_gateway: Ipv4Addr,
    /// Name of the veth end inside the control-plane namespace.
    pub cp_veth: String,
}

impl NodePlan {
    /// Node `i` (1-based) of cluster `cluster`.
    fn numbered(cluster: &str, i: usize) -> Self {
        NodePlan {
            index: i,
            name: format!("node{i}"),
            netns: format!("{cluster}-n{i}"),
            ip: Ipv4Addr::new(172, 31, 255, 10 + i as u8),
            pod_net: Ipv4Addr::new(10, 244, i as u8, 0),
            pod_gateway: Ipv4Addr::new(10, 244, i as u8, 1),
            cp_veth: format!("vn{i}"),
        }
    }

    /// The pod CIDR as text.
    pub fn pod_cidr(&self) -> String {
        format!("{}/24", self.pod_net)
    }
}

/// The whole cluster's plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Cluster name (prefix of every namespace name).
    pub name: String,
    /// The control-plane network namespace.
    pub cp_netns: String,
    /// The external router's network namespace (exists when the cluster
    /// was started with its outside).
    pub router_netns: String,
    /// The external client's network namespace (idem).
    pub client_netns: String,
    /// The nodes.
    pub nodes: Vec<NodePlan>,
}

impl Plan {
    /// Plans a cluster named `name` with `n` nodes named `<name>-worker<i>`
    /// (or `node<i>` when `short_names`).
    pub fn new(name: &str, n: usize) -> Self {
        let nodes = (1..=n.min(MAX_NODES))
            .map(|i| NodePlan::numbered(name, i))
            .collect();
        Self {
            name: name.to_string(),
            cp_netns: format!("{name}-cp"),
            router_netns: format!("{name}-rt"),
            client_netns: format!("{name}-ext"),
            nodes,
        }
    }

    /// Plans one more node (the next index), for a node joining the
    /// running cluster; `None` at [`MAX_NODES`].
    pub fn add_node(&mut self) -> Option<NodePlan> {
        let next = self.nodes.iter().map(|n| n.index).max().unwrap_or(0) + 1;
        if next > MAX_NODES {
            return None;
        }
        let node = NodePlan::numbered(&self.name, next);
        self.nodes.push(node.clone());
        Some(node)
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The URL nodes and pods use to reach the API server directly.
    pub fn api_url(&self) -> String {
        format!("https://{CONTROL_PLANE_IP}:{API_PORT}")
    }
}

/// Hands out pod addresses from a node's /24 (`.2`–`.254`), reusing freed
/// ones last.
#[derive(Debug, Clone)]
pub struct PodIpAllocator {
    base: Ipv4Addr,
    used: [bool; 256],
    next: usize,
}

impl PodIpAllocator {
    /// An allocator over `base/24`.
    pub fn new(base: Ipv4Addr) -> Self {
        Self {
            base,
            used: [false; 256],
            next: 2,
        }
    }

    /// The next free address, or `None` when all 253 are taken.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        for k in 0..253 {
            let host = 2 + (self.next - 2 + k) % 253;
            if !self.used[host] {
                self.used[host] = true;
                self.next = if host == 254 { 2 } else { host + 1 };
                let o = self.base.octets();
                return Some(Ipv4Addr::new(o[0], o[1], o[2], host as u8));
            }
        }
        None
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        let o = ip.octets();
        if o[..3] == self.base.octets()[..3] {
            self.used[o[3] as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_distinct_addresses_and_cidrs() {
        let p = Plan::new("sy1a", 3);
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[0].ip, Ipv4Addr::new(172, 31, 255, 11));
        assert_eq!(p.nodes[2].pod_cidr(), "10.244.3.0/24");
        assert_eq!(p.nodes[1].netns, "sy1a-n2");
        assert_eq!(p.router_netns, "sy1a-rt");
        let last = Plan::new("x", MAX_NODES);
        assert!(last.nodes.iter().all(|n| n.ip < ROUTER_UNDERLAY_IP));
        assert_eq!(p.node("node2").map(|n| n.index), Some(2));
        assert!(p.nodes.iter().all(|n| n.cp_veth.len() <= 15));
    }

    #[test]
    fn a_joining_node_gets_the_next_index_and_its_own_addresses() {
        let mut p = Plan::new("t", 2);
        let n = p.add_node().unwrap();
        assert_eq!((n.index, n.name.as_str()), (3, "node3"));
        assert_eq!(p.nodes.len(), 3);
        let others: Vec<_> = p.nodes[..2].iter().map(|o| (o.ip, o.pod_net)).collect();
        assert!(!others.contains(&(n.ip, n.pod_net)));
        let mut full = Plan::new("t", MAX_NODES);
        assert!(full.add_node().is_none());
    }

    #[test]
    fn allocator_skips_used_and_reuses_released() {
        let mut a = PodIpAllocator::new(Ipv4Addr::new(10, 244, 1, 0));
        let first = a.allocate().unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 244, 1, 2));
        let all: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(all.len(), 252);
        assert!(a.allocate().is_none());
        a.release(Ipv4Addr::new(10, 244, 1, 77));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 244, 1, 77)));
    }
}

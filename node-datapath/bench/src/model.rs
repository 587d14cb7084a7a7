//! The benchmark's synthetic cluster: N Services × 10 endpoints, their
//! addresses, names and kube-proxy order. Pure and deterministic.
//!
//! Address plan (only inside the benchmark's own network namespaces):
//!
//! ```text
//! pod (client)        10.244.0.2       node side 10.244.0.1
//! Service i VIP       10.96.0.0 + i + 1            (inside 10.96.0.0/12)
//! endpoint (i, slot)  10.(200+slot).hi.lo with hi.lo = i + 1
//!                     served by backend netns `slot` through an AnyIP
//!                     route (`local 10.(200+slot).0.0/16 dev lo`)
//! cluster CIDR        10.192.0.0/10 (pod + backends: kube-proxy's
//!                     "local traffic" detector, so no masquerading)
//! ```
//!
//! North-south scenarios ([`Scenario::north_south`]) make every Service
//! `type: NodePort` (`externalTrafficPolicy: Cluster`), Service i on node
//! port [`NODE_PORT_BASE`] + i for TCP and UDP (a cluster with
//! `--service-node-port-range` widened to hold them), served on the node's
//! address [`NODE_IP`] (see [`crate::ns_topo`]).

use std::net::Ipv4Addr;

/// The datapaths, in measurement order (direct first: it is the baseline).
pub const DATAPATHS: [&str; 5] = [
    "direct",
    "iptables-nft",
    "iptables-legacy",
    "nftables",
    "ebpf",
];

/// Endpoints per Service.
pub const ENDPOINTS: usize = 10;
/// The Services' namespace.
pub const NAMESPACE: &str = "bench";
/// TCP Service port and its endpoint port.
pub const TCP_PORT: u16 = 80;
/// TCP endpoint (target) port.
pub const TCP_TARGET_PORT: u16 = 8080;
/// UDP Service port (only on the measured Services).
pub const UDP_PORT: u16 = 53;
/// UDP endpoint (target) port.
pub const UDP_TARGET_PORT: u16 = 5353;
/// kube-proxy's `--cluster-cidr` (local-traffic detector).
pub const CLUSTER_CIDR: &str = "10.192.0.0/10";
/// The Service CIDR.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The client pod's address.
pub const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
/// The node's address on the pod veth.
pub const NODE_POD_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The most Services the address plan holds (a /16 per endpoint slot).
pub const MAX_SERVICES: usize = 65_000;
/// Node port of Service 0 in north-south scenarios.
pub const NODE_PORT_BASE: u16 = 20_000;
/// The most NodePort Services (node ports stay below 65 000).
pub const MAX_NODE_PORT_SERVICES: usize = 45_000;
/// The node's address on its external interface (NodePorts are served
/// here; kube-proxy nftables mode's `nodeport-ips`).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
/// The outside client's address (the node's external network).
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 2);

/// Which Service a measurement targets, in kube-proxy's rule order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The first Service rule in `KUBE-SERVICES`.
    First,
    /// A pseudo-random one (fixed per N).
    Random,
    /// The last Service rule.
    Last,
}

impl Target {
    /// All targets, in report order.
    pub const ALL: [Target; 3] = [Target::First, Target::Random, Target::Last];

    /// Lower-case name used in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Target::First => "first",
            Target::Random => "random",
            Target::Last => "last",
        }
    }

    /// Parses [`Target::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// One Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// Port name (`http` or `dns`).
    pub name: &'static str,
    /// `tcp` or `udp` (kube-proxy's lower-case protocol).
    pub proto: &'static str,
    /// Service port.
    pub port: u16,
    /// Endpoint port.
    pub target_port: u16,
}

const HTTP: PortSpec = PortSpec {
    name: "http",
    proto: "tcp",
    port: TCP_PORT,
    target_port: TCP_TARGET_PORT,
};
const DNS: PortSpec = PortSpec {
    name: "dns",
    proto: "udp",
    port: UDP_PORT,
    target_port: UDP_TARGET_PORT,
};

/// N Services × [`ENDPOINTS`] endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Number of Services.
    pub services: usize,
    /// Every Service is `type: NodePort` (north-south), else `ClusterIP`.
    pub node_ports: bool,
}

/// splitmix64: a tiny deterministic mixer (no RNG dependency needed).
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Scenario {
    /// A scenario with `services` Services (1..=[`MAX_SERVICES`]).
    pub fn new(services: usize) -> Option<Self> {
        (1..=MAX_SERVICES).contains(&services).then_some(Self {
            services,
            node_ports: false,
        })
    }

    /// A north-south scenario: `services` NodePort Services
    /// (1..=[`MAX_NODE_PORT_SERVICES`]).
    pub fn north_south(services: usize) -> Option<Self> {
        (1..=MAX_NODE_PORT_SERVICES)
            .contains(&services)
            .then_some(Self {
                services,
                node_ports: true,
            })
    }

    /// The node port of Service `i` (TCP and UDP), in north-south scenarios.
    pub fn node_port(&self, i: usize) -> Option<u16> {
        let i = u16::try_from(i).ok().filter(|_| self.node_ports)?;
        NODE_PORT_BASE.checked_add(i)
    }

    /// Index (= position in kube-proxy's order) of the target Service.
    pub fn target_index(&self, t: Target) -> usize {
        match t {
            Target::First => 0,
            Target::Last => self.services - 1,
            Target::Random => (mix64(self.services as u64) % self.services as u64) as usize,
        }
    }

    /// Whether Service `i` is a measured one (it also gets a UDP port).
    pub fn is_target(&self, i: usize) -> bool {
        Target::ALL.iter().any(|t| self.target_index(*t) == i)
    }

    /// The ports of Service `i`: `http` TCP 80→8080, and on measured
    /// Services also `dns` UDP 53→5353 (written before `http`, so the last
    /// Service's TCP rule is the very last Service rule).
    pub fn ports(&self, i: usize) -> Vec<PortSpec> {
        if self.is_target(i) {
            vec![DNS, HTTP]
        } else {
            vec![HTTP]
        }
    }
}

/// The Service's name (`svc-00042`).
pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

/// kube-proxy's `ServicePortName.String()`: `namespace/name:port`.
pub fn service_port_name(i: usize, port: &PortSpec) -> String {
    format!("{NAMESPACE}/{}:{}", service_name(i), port.name)
}

/// The ClusterIP of Service `i`.
pub fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1)
}

/// The address of endpoint `slot` of Service `i`.
pub fn endpoint(i: usize, slot: usize) -> Ipv4Addr {
    let host = (i + 1) as u32;
    Ipv4Addr::new(10, 200 + slot as u8, (host >> 8) as u8, (host & 0xff) as u8)
}

/// The AnyIP prefix served by backend namespace `slot`.
pub fn slot_prefix(slot: usize) -> String {
    format!("10.{}.0.0/16", 200 + slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_inside_their_ranges() {
        let n = 40_000;
        let mut seen = std::collections::HashSet::new();
        for i in [0, 1, 254, 255, 256, n - 1] {
            let v = vip(i);
            assert_eq!(v.octets()[..2], [10, 96]);
            assert!(seen.insert(v));
            for s in 0..ENDPOINTS {
                let e = endpoint(i, s);
                assert_eq!(e.octets()[1], 200 + s as u8);
                assert_ne!(&e.octets()[2..], &[0, 0], "network address used");
                assert!(seen.insert(e), "{e} twice");
            }
        }
    }

    #[test]
    fn targets_are_in_range_and_first_last_are_the_ends() {
        for n in [1, 2, 1000, 40_000] {
            let s = Scenario::new(n).unwrap();
            assert_eq!(s.target_index(Target::First), 0);
            assert_eq!(s.target_index(Target::Last), n - 1);
            assert!(s.target_index(Target::Random) < n);
            assert!(s.is_target(n - 1));
            assert_eq!(s.ports(n - 1).last().unwrap().proto, "tcp");
        }
        assert!(Scenario::new(0).is_none());
        assert!(Scenario::new(MAX_SERVICES + 1).is_none());
    }

    #[test]
    fn node_ports_only_in_north_south_scenarios_and_distinct() {
        assert_eq!(Scenario::new(10).unwrap().node_port(3), None);
        let sc = Scenario::north_south(MAX_NODE_PORT_SERVICES).unwrap();
        assert_eq!(sc.node_port(0), Some(NODE_PORT_BASE));
        let last = sc.node_port(MAX_NODE_PORT_SERVICES - 1).unwrap();
        assert_eq!(
            usize::from(last - NODE_PORT_BASE),
            MAX_NODE_PORT_SERVICES - 1
        );
        assert!(last < 65_000);
        assert!(Scenario::north_south(MAX_NODE_PORT_SERVICES + 1).is_none());
        assert!(Scenario::north_south(0).is_none());
    }
}

//! The north-south topology of one datapath and N: a [`Topo`] (node
//! namespace, ten local backend namespaces, the cgroup and pin directory)
//! plus a client outside the node and a second node with ten more backend
//! namespaces behind it. Removed on drop (also on panic).
//!
//! ```text
//! outside netns  eth0 172.31.0.2 ──veth── node netns ext0 172.31.0.1 (NODE_IP:
//! (the external client)                   NodePorts, the ingress interface)
//!                                           │ vbK 10.250.K.1 ── local backend K
//!                                           │ und0 172.30.0.1
//!                                      ──veth── node2 netns und0 172.30.0.2
//!                                                 vbK 10.251.K.1 ── remote backend K
//! ```
//!
//! Every backend namespace serves its endpoint slot's /16 (AnyIP route).
//! The [`Placement`] decides where the node routes the endpoints' /16s: to
//! its own backends (pods on this node) or to node2 (pods behind another
//! node); the rules, the maps and the servers stay as they are.

use std::path::PathBuf;

use switchyard_testkit::netns::NetNs;

use crate::{
    BenchError,
    model::{ENDPOINTS, NODE_IP, OUTSIDE_IP, slot_prefix},
    topo::{Topo, run},
};

/// The node's external interface (runs the ingress program).
pub const EXTERNAL_IF: &str = "ext0";
const NODE_UNDERLAY: &str = "172.30.0.1";
const NODE2_UNDERLAY: &str = "172.30.0.2";

/// Where a Service's endpoints run, as seen from the node the client
/// connects to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Pods on the node itself.
    Local,
    /// Pods behind another node (one more forwarding hop).
    Remote,
}

impl Placement {
    /// Both, in measurement order.
    pub const ALL: [Placement; 2] = [Placement::Local, Placement::Remote];

    /// The name used as the CSV target.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Local => "local",
            Placement::Remote => "remote",
        }
    }

    /// The node's next hop for endpoint slot `k`'s /16.
    pub fn next_hop(self, k: usize) -> String {
        match self {
            Placement::Local => format!("10.250.{k}.2"),
            Placement::Remote => NODE2_UNDERLAY.to_string(),
        }
    }
}

/// One north-south topology; see the module doc.
#[derive(Debug)]
pub struct NsTopo {
    /// Deleted on drop (fields drop in order), before the underlying [`Topo`].
    created: Vec<NetNs>,
    /// The node, its local backends, cgroup and pin directory.
    pub topo: Topo,
    /// The external client's namespace.
    pub outside_ns: String,
    /// The second node's namespace.
    pub node2_ns: String,
    /// Backend namespaces behind node2, one per endpoint slot.
    pub remote_ns: Vec<String>,
}

fn ip_in(ns: &str, args: &[&str]) -> Result<(), BenchError> {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a).map(drop)
}

fn sysctl(ns: &str, setting: &str) -> Result<(), BenchError> {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]).map(drop)
}

fn veth(a: (&str, &str), b: (&str, &str)) -> Result<(), BenchError> {
    run(
        "ip",
        &[
            "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
        ],
    )
    .map(drop)
}

impl NsTopo {
    /// Creates everything, endpoints placed [`Placement::Local`].
    pub fn new() -> Result<Self, BenchError> {
        let topo = Topo::new()?;
        let id = topo.id.clone();
        let mut t = NsTopo {
            outside_ns: format!("{id}-out"),
            node2_ns: format!("{id}-node2"),
            remote_ns: (0..ENDPOINTS).map(|k| format!("{id}-r{k}")).collect(),
            topo,
            created: Vec::new(),
        };
        t.build_outside()?;
        t.build_node2()?;
        for k in 0..ENDPOINTS {
            t.build_remote_backend(k)?;
        }
        Ok(t)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), BenchError> {
        self.created.push(crate::topo::add_netns(ns)?);
        ip_in(ns, &["link", "set", "lo", "up"])
    }

    fn build_outside(&mut self) -> Result<(), BenchError> {
        let (out, node) = (self.outside_ns.clone(), self.topo.node_ns.clone());
        self.add_ns(&out)?;
        veth((&node, EXTERNAL_IF), (&out, "eth0"))?;
        let (node_cidr, out_cidr) = (format!("{NODE_IP}/24"), format!("{OUTSIDE_IP}/24"));
        ip_in(&node, &["addr", "add", &node_cidr, "dev", EXTERNAL_IF])?;
        ip_in(&node, &["link", "set", EXTERNAL_IF, "up"])?;
        ip_in(&out, &["addr", "add", &out_cidr, "dev", "eth0"])?;
        ip_in(&out, &["link", "set", "eth0", "up"])?;
        ip_in(
            &out,
            &["route", "add", "default", "via", &NODE_IP.to_string()],
        )?;
        // Many short connections to one address: a wide ephemeral range.
        sysctl(&out, "net.ipv4.ip_local_port_range=1024 65535")
    }

    fn build_node2(&mut self) -> Result<(), BenchError> {
        let (node, node2) = (self.topo.node_ns.clone(), self.node2_ns.clone());
        self.add_ns(&node2)?;
        sysctl(&node2, "net.ipv4.ip_forward=1")?;
        veth((&node, "und0"), (&node2, "und0"))?;
        ip_in(
            &node,
            &["addr", "add", &format!("{NODE_UNDERLAY}/24"), "dev", "und0"],
        )?;
        ip_in(&node, &["link", "set", "und0", "up"])?;
        ip_in(
            &node2,
            &[
                "addr",
                "add",
                &format!("{NODE2_UNDERLAY}/24"),
                "dev",
                "und0",
            ],
        )?;
        ip_in(&node2, &["link", "set", "und0", "up"])?;
        ip_in(&node2, &["route", "add", "default", "via", NODE_UNDERLAY])
    }

    fn build_remote_backend(&mut self, k: usize) -> Result<(), BenchError> {
        let (node2, ns) = (self.node2_ns.clone(), self.remote_ns[k].clone());
        self.add_ns(&ns)?;
        let vb = format!("vb{k}");
        veth((&node2, &vb), (&ns, "eth0"))?;
        let (n_ip, b_ip) = (format!("10.251.{k}.1"), format!("10.251.{k}.2"));
        let prefix = slot_prefix(k);
        ip_in(&node2, &["addr", "add", &format!("{n_ip}/24"), "dev", &vb])?;
        ip_in(&node2, &["link", "set", &vb, "up"])?;
        ip_in(&node2, &["route", "add", &prefix, "via", &b_ip])?;
        ip_in(&ns, &["addr", "add", &format!("{b_ip}/24"), "dev", "eth0"])?;
        ip_in(&ns, &["link", "set", "eth0", "up"])?;
        ip_in(&ns, &["route", "add", "default", "via", &n_ip])?;
        ip_in(&ns, &["route", "add", "local", &prefix, "dev", "lo"])
    }

    /// Routes the endpoints' /16s of the node to `placement`'s backends.
    pub fn place(&self, placement: Placement) -> Result<(), BenchError> {
        for k in 0..ENDPOINTS {
            let hop = placement.next_hop(k);
            let prefix = slot_prefix(k);
            ip_in(
                &self.topo.node_ns,
                &["route", "replace", &prefix, "via", &hop],
            )?;
        }
        Ok(())
    }

    /// Every backend namespace, local then remote.
    pub fn backend_namespaces(&self) -> Vec<String> {
        let local = self.topo.backend_ns.iter();
        local.chain(&self.remote_ns).cloned().collect()
    }

    /// `/run/netns/<outside>`.
    pub fn outside_path(&self) -> PathBuf {
        Topo::ns_path(&self.outside_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_route_the_slots_to_the_node_or_to_node2() {
        assert_eq!(Placement::Local.next_hop(3), "10.250.3.2");
        assert_eq!(Placement::Remote.next_hop(3), NODE2_UNDERLAY);
        assert_eq!(Placement::ALL.map(Placement::name), ["local", "remote"]);
    }
}

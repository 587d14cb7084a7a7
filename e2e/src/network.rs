//! Builds the lab's networks from a [`Plan`]: the control-plane namespace
//! with the underlay bridge, one namespace per node (veth to the bridge, a
//! pod bridge, routes to every other node's pod CIDR), per-pod
//! namespaces behind a node's pod bridge, and the outside of the cluster
//! (an external router on the underlay and an external client behind it).

use std::net::Ipv4Addr;

use crate::error::Result;
use crate::sys::{ip, netns_add, netns_del, netns_list, netns_sysctl};
use crate::topology::{
    CLIENT_IP, CLIENT_NET, CLIENT_PREFIX, CONTROL_PLANE_IP, NodePlan, POD_BRIDGE, Plan,
    ROUTER_CLIENT_IP, ROUTER_UNDERLAY_IP, UNDERLAY_BRIDGE, UNDERLAY_PREFIX,
};

/// A fixed, locally administered MAC for the bridge of node `index` (0: the
/// underlay bridge). A Linux bridge without an assigned address takes the
/// lowest address of its ports and changes it whenever a port comes or goes;
/// pods keep the old gateway MAC in their neighbour cache and their routed
/// traffic (every request to another node, and to a ClusterIP through
/// kube-proxy) is black-holed until the entry is re-validated (seconds to
/// tens of seconds). Pod churn on a node (an operator restarted 20 times)
/// then looked like a datapath loss. A lab artifact: CNI bridges and real
/// node NICs do not change address when pods come and go.
fn bridge_mac(index: usize) -> String {
    format!(
        "02:73:79:00:{:02x}:{:02x}",
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// Creates the control-plane namespace and its underlay bridge.
pub fn create_control_plane(plan: &Plan) -> Result<()> {
    let cp = &plan.cp_netns;
    netns_add(cp)?;
    ip(&format!(
        "-n {cp} link add {UNDERLAY_BRIDGE} address {} type bridge",
        bridge_mac(0)
    ))?;
    ip(&format!(
        "-n {cp} addr add {CONTROL_PLANE_IP}/{UNDERLAY_PREFIX} dev {UNDERLAY_BRIDGE}"
    ))?;
    ip(&format!("-n {cp} link set {UNDERLAY_BRIDGE} up"))?;
    netns_sysctl(cp, "net.ipv4.ip_forward", "1")?;
    Ok(())
}

/// Creates one node's namespace, wires it to the underlay and sets up its
/// pod bridge and routes.
pub fn create_node(plan: &Plan, node: &NodePlan) -> Result<()> {
    let (cp, ns) = (&plan.cp_netns, &node.netns);
    netns_add(ns)?;
    ip(&format!(
        "-n {cp} link add {} type veth peer name eth0 netns {ns}",
        node.cp_veth
    ))?;
    ip(&format!(
        "-n {cp} link set {} master {UNDERLAY_BRIDGE} up",
        node.cp_veth
    ))?;
    ip(&format!(
        "-n {ns} addr add {}/{UNDERLAY_PREFIX} dev eth0",
        node.ip
    ))?;
    ip(&format!("-n {ns} link set eth0 up"))?;
    ip(&format!("-n {ns} route add default via {CONTROL_PLANE_IP}"))?;
    ip(&format!(
        "-n {ns} link add {POD_BRIDGE} address {} type bridge",
        bridge_mac(node.index)
    ))?;
    ip(&format!(
        "-n {ns} addr add {}/24 dev {POD_BRIDGE}",
        node.pod_gateway
    ))?;
    ip(&format!("-n {ns} link set {POD_BRIDGE} up"))?;
    netns_sysctl(ns, "net.ipv4.ip_forward", "1")?;
    for other in plan.nodes.iter().filter(|o| o.index != node.index) {
        ip(&format!(
            "-n {ns} route add {} via {}",
            other.pod_cidr(),
            other.ip
        ))?;
    }
    ip(&format!(
        "-n {cp} route add {} via {}",
        node.pod_cidr(),
        node.ip
    ))?;
    Ok(())
}

/// Wires a node that joins the running cluster (already in `plan`): its
/// own namespace as [`create_node`] does, a route to its pod CIDR on every
/// other node, and, with the outside, its route back to the clients.
pub fn join_node(plan: &Plan, node: &NodePlan, with_outside: bool) -> Result<()> {
    create_node(plan, node)?;
    for other in plan.nodes.iter().filter(|o| o.index != node.index) {
        ip(&format!(
            "-n {} route add {} via {}",
            other.netns,
            node.pod_cidr(),
            node.ip
        ))?;
    }
    if with_outside {
        ip(&format!(
            "-n {} route add {CLIENT_NET} via {ROUTER_UNDERLAY_IP}",
            node.netns
        ))?;
    }
    Ok(())
}

/// Unwires a node that leaves the running cluster (no longer in `plan`):
/// the routes to its pod CIDR on every other node and in the control plane,
/// its pods' namespaces (the runtime names them `<cluster>-n<index>p<seq>`),
/// then its own (its end of the underlay veth goes with it).
pub fn leave_node(plan: &Plan, node: &NodePlan) -> Result<()> {
    let cidr = node.pod_cidr();
    for ns in plan.nodes.iter().map(|o| &o.netns).chain([&plan.cp_netns]) {
        ip(&format!("-n {ns} route del {cidr} via {}", node.ip))?;
    }
    for pod_ns in netns_list(&format!("{}-n{}p", plan.name, node.index)) {
        netns_del(&pod_ns);
    }
    netns_del(&node.netns);
    Ok(())
}

/// Name of the router's veth end inside the control-plane namespace.
const ROUTER_CP_VETH: &str = "vrt";

/// Creates the outside of the cluster: a router namespace with a leg on the
/// underlay bridge and one on the external clients' subnet, and the
/// external client namespace behind it. The router forwards without NAT,
/// so packets reach a node's `eth0` with the client's own source address;
/// every node routes the clients' subnet back through the router. L4 ECMP
/// hashing spreads the flows to a LoadBalancer IP over its nodes as a
/// cloud load balancer does.
pub fn create_outside(plan: &Plan) -> Result<()> {
    let (cp, rt, ext) = (&plan.cp_netns, &plan.router_netns, &plan.client_netns);
    netns_add(rt)?;
    netns_add(ext)?;
    ip(&format!(
        "-n {cp} link add {ROUTER_CP_VETH} type veth peer name eth0 netns {rt}"
    ))?;
    ip(&format!(
        "-n {cp} link set {ROUTER_CP_VETH} master {UNDERLAY_BRIDGE} up"
    ))?;
    ip(&format!(
        "-n {rt} addr add {ROUTER_UNDERLAY_IP}/{UNDERLAY_PREFIX} dev eth0"
    ))?;
    ip(&format!("-n {rt} link set eth0 up"))?;
    ip(&format!(
        "-n {rt} link add ext0 type veth peer name eth0 netns {ext}"
    ))?;
    ip(&format!(
        "-n {rt} addr add {ROUTER_CLIENT_IP}/{CLIENT_PREFIX} dev ext0"
    ))?;
    ip(&format!("-n {rt} link set ext0 up"))?;
    ip(&format!(
        "-n {ext} addr add {CLIENT_IP}/{CLIENT_PREFIX} dev eth0"
    ))?;
    ip(&format!("-n {ext} link set eth0 up"))?;
    ip(&format!(
        "-n {ext} route add default via {ROUTER_CLIENT_IP}"
    ))?;
    netns_sysctl(rt, "net.ipv4.ip_forward", "1")?;
    netns_sysctl(rt, "net.ipv4.fib_multipath_hash_policy", "1")?;
    // Replies to a LoadBalancer IP come back from whichever node served
    // them; loose or strict source validation is the network's business,
    // not the lab's.
    netns_sysctl(rt, "net.ipv4.conf.all.rp_filter", "0")?;
    netns_sysctl(rt, "net.ipv4.conf.eth0.rp_filter", "0")?;
    for n in &plan.nodes {
        ip(&format!(
            "-n {} route add {CLIENT_NET} via {ROUTER_UNDERLAY_IP}",
            n.netns
        ))?;
    }
    Ok(())
}

/// Creates a pod's namespace `pod_ns` behind `node`'s pod bridge with
/// address `pod_ip`; `veth` names the node-side end (unique per node).
pub fn create_pod(node: &NodePlan, pod_ns: &str, veth: &str, pod_ip: Ipv4Addr) -> Result<()> {
    let ns = &node.netns;
    netns_add(pod_ns)?;
    ip(&format!(
        "-n {ns} link add {veth} type veth peer name eth0 netns {pod_ns}"
    ))?;
    ip(&format!("-n {ns} link set {veth} master {POD_BRIDGE} up"))?;
    ip(&format!("-n {pod_ns} addr add {pod_ip}/24 dev eth0"))?;
    ip(&format!("-n {pod_ns} link set eth0 up"))?;
    ip(&format!(
        "-n {pod_ns} route add default via {}",
        node.pod_gateway
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_macs_are_unicast_locally_administered_and_distinct() {
        let macs: Vec<String> = (0..300).map(bridge_mac).collect();
        assert_eq!(macs[0], "02:73:79:00:00:00");
        assert_eq!(macs[258], "02:73:79:00:01:02");
        let first = u8::from_str_radix(&macs[1][..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "unicast, locally administered");
        let unique: std::collections::BTreeSet<&String> = macs.iter().collect();
        assert_eq!(unique.len(), macs.len());
    }
}

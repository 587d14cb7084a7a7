//! Builds the lab's networks from a [`Plan`]: the control-plane namespace
//! with the underlay bridge, one namespace per node (veth to the bridge, a
//! pod bridge, routes to every other node's pod CIDR), and per-pod
//! namespaces behind a node's pod bridge.

use std::net::Ipv4Addr;

use crate::error::Result;
use crate::sys::{ip, netns_add, netns_sysctl};
use crate::topology::{
    CONTROL_PLANE_IP, NodePlan, POD_BRIDGE, Plan, UNDERLAY_BRIDGE, UNDERLAY_PREFIX,
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

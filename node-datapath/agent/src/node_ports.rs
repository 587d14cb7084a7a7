//! Where the node serves NodePorts: kube-proxy's `nodePortAddresses` and
//! localhost NodePorts (resolved for its mode by the operator, carried in
//! the NodeDatapath spec), matched against this node's addresses the way
//! kube-proxy matches them.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use switchyard_api::NodePortAddresses;
use switchyard_lb::view::v4_networks;

/// `nodePortAddresses`' special value: the node's primary address only.
const PRIMARY: &str = "primary";

/// The Node's IPv4 addresses in kube-proxy's order: its InternalIPs, then
/// its ExternalIPs. The first is the node's primary address.
pub fn node_ips(node: &Node) -> Vec<Ipv4Addr> {
    let addresses: Vec<_> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .collect();
    let mut out: Vec<Ipv4Addr> = ["InternalIP", "ExternalIP"]
        .into_iter()
        .flat_map(|t| addresses.iter().filter(move |a| a.type_ == t))
        .filter_map(|a| a.address.parse().ok())
        .collect();
    dedup_in_order(&mut out);
    out
}

/// The addresses that serve NodePorts on this node: for `setting` absent,
/// the Node's addresses (`node_ips`); for `primary`, the first of them;
/// otherwise the `local` (interface) addresses inside the setting's IPv4
/// CIDRs (every non-loopback one when it has none, as kube-proxy's
/// "match all" does); plus `127.0.0.1` when it serves localhost NodePorts.
pub fn resolve(
    setting: Option<&NodePortAddresses>,
    node_ips: &[Ipv4Addr],
    local: &[(String, Ipv4Addr)],
) -> Vec<Ipv4Addr> {
    let Some(setting) = setting else {
        return node_ips.to_vec();
    };
    let mut out: Vec<Ipv4Addr> = if setting.cidrs.iter().any(|c| c == PRIMARY) {
        node_ips.iter().take(1).copied().collect()
    } else {
        let nets = v4_networks(&setting.cidrs);
        local
            .iter()
            .map(|(_, a)| *a)
            .filter(|a| !a.is_loopback())
            .filter(|a| nets.is_empty() || nets.iter().any(|(n, len)| within(*a, *n, *len)))
            .collect()
    };
    if setting.localhost {
        out.push(Ipv4Addr::LOCALHOST);
    }
    dedup_in_order(&mut out);
    out
}

fn within(addr: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(addr) & mask == u32::from(net)
}

fn dedup_in_order(v: &mut Vec<Ipv4Addr>) {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|a| {
        let first = !seen.contains(a);
        seen.push(*a);
        first
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    const INTERNAL: Ipv4Addr = Ipv4Addr::new(172, 31, 255, 11);
    const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    const BRIDGE: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

    fn local() -> Vec<(String, Ipv4Addr)> {
        [
            ("lo", Ipv4Addr::LOCALHOST),
            ("eth0", INTERNAL),
            ("cni0", BRIDGE),
        ]
        .into_iter()
        .map(|(n, a)| (n.to_string(), a))
        .collect()
    }

    fn setting(cidrs: &[&str], localhost: bool) -> NodePortAddresses {
        NodePortAddresses {
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            localhost,
        }
    }

    #[test]
    fn node_ips_put_internal_addresses_first_as_kube_proxy_does() {
        let addr = |t: &str, a: &str| NodeAddress {
            type_: t.into(),
            address: a.into(),
        };
        let node = Node {
            status: Some(NodeStatus {
                addresses: Some(vec![
                    addr("ExternalIP", "203.0.113.9"),
                    addr("Hostname", "n1"),
                    addr("InternalIP", "fd00::11"),
                    addr("InternalIP", "172.31.255.11"),
                ]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        assert_eq!(node_ips(&node), [INTERNAL, EXTERNAL]);
    }

    #[test]
    fn each_setting_selects_the_addresses_kube_proxy_serves() {
        let ips = [INTERNAL, EXTERNAL];
        let r = |s: Option<NodePortAddresses>| resolve(s.as_ref(), &ips, &local());
        assert_eq!(
            r(None),
            [INTERNAL, EXTERNAL],
            "absent: the Node's addresses"
        );
        // iptables mode's default: every local address, and localhost.
        assert_eq!(
            r(Some(setting(&[], true))),
            [INTERNAL, BRIDGE, Ipv4Addr::LOCALHOST]
        );
        assert_eq!(r(Some(setting(&["fd00::/8"], false))), [INTERNAL, BRIDGE]);
        assert_eq!(r(Some(setting(&["10.244.0.0/16"], false))), [BRIDGE]);
        assert_eq!(
            r(Some(setting(&["172.31.0.0/16", "10.0.0.0/8"], false))),
            [INTERNAL, BRIDGE]
        );
        assert!(r(Some(setting(&["192.0.2.0/24"], false))).is_empty());
        // nftables mode's default: the primary address only.
        assert_eq!(r(Some(setting(&["primary"], false))), [INTERNAL]);
        assert!(resolve(Some(&setting(&["primary"], false)), &[], &local()).is_empty());
    }
}

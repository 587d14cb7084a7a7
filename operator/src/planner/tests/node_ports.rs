//! Where nodes serve NodePorts: kube-proxy's `nodePortAddresses` and
//! localhost NodePorts, resolved for its mode, carried in every
//! NodeDatapath spec, and kept once its ConfigMap is gone.

use switchyard_api::{NodePortAddresses, NodeStep};

use super::sim::Sim;
use super::unit::{datapath_spec, spec, until};
use crate::planner::preflight::node_port_addresses;
use crate::planner::{ConfigMapObs, Snapshot};

fn resolved(mode: &str, cidrs: &[&str], localhost: Option<bool>) -> NodePortAddresses {
    let mut snap = Snapshot::default();
    snap.kube_proxy.config_map = Some(ConfigMapObs {
        mode: Some(mode.into()),
        node_port_addresses: cidrs.iter().map(|c| c.to_string()).collect(),
        localhost_node_ports: localhost,
    });
    node_port_addresses(&snap).expect("a ConfigMap with a config")
}

fn np(cidrs: &[&str], localhost: bool) -> NodePortAddresses {
    NodePortAddresses {
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        localhost,
    }
}

#[test]
fn kube_proxy_settings_resolve_as_kube_proxy_resolves_them() {
    // iptables mode: every local address, and 127.0.0.1 unless turned off
    // or no CIDR covers the loopback network.
    assert_eq!(resolved("", &[], None), np(&[], true));
    assert_eq!(resolved("iptables", &[], Some(false)), np(&[], false));
    let lan = ["10.0.0.0/8"];
    assert_eq!(resolved("iptables", &lan, None), np(&lan, false));
    let with_lo = ["10.0.0.0/8", "127.0.0.1/32"];
    assert_eq!(resolved("iptables", &with_lo, None), np(&with_lo, true));
    // No IPv4 CIDR means every IPv4 address, loopback included.
    assert_eq!(
        resolved("iptables", &["fd00::/8"], None),
        np(&["fd00::/8"], true)
    );
    assert_eq!(
        resolved("iptables", &["primary"], None),
        np(&["primary"], false)
    );
    // nftables mode: the primary address by default, never localhost.
    assert_eq!(resolved("nftables", &[], None), np(&["primary"], false));
    assert_eq!(
        resolved("nftables", &["0.0.0.0/0"], None),
        np(&["0.0.0.0/0"], false)
    );
    // A ConfigMap without a config says nothing.
    let mut snap = Snapshot::default();
    snap.kube_proxy.config_map = Some(ConfigMapObs::default());
    assert_eq!(node_port_addresses(&snap), None);
}

#[test]
fn specs_carry_the_node_port_addresses_also_after_the_config_map_is_gone() {
    let mut sim = Sim::new(2, &[], spec(1, 1));
    let a = until(&mut sim, "node-00", NodeStep::ActivateDatapath);
    let first = datapath_spec(&a, "node-00").node_port_addresses;
    assert_eq!(
        first,
        Some(np(&[], true)),
        "the simulated kube-proxy runs iptables mode"
    );
    until(&mut sim, "node-00", NodeStep::RemoveKubeProxy);
    sim.cm = false;
    let a = until(&mut sim, "node-01", NodeStep::ActivateDatapath);
    assert_eq!(datapath_spec(&a, "node-01").node_port_addresses, first);
    assert_eq!(sim.status.kube_proxy_node_ports, first);
}

//! Where the node serves NodePorts, kept in step with kube-proxy's
//! configuration (the spec) and with the node's addresses as they change.

use tracing::{info, warn};

use super::State;

impl State {
    /// Serves NodePorts where kube-proxy's configuration says: on the
    /// node's addresses as they are now, so addresses added or removed since
    /// the last look are followed (kube-proxy's iptables mode matches local
    /// addresses as they are). The ingress program's interfaces are those
    /// holding the Node's or a NodePort address; when they change while the
    /// datapath runs, it is started again (adopting what is attached).
    pub(super) async fn refresh_node_ports(&mut self) {
        let local = crate::ingress::local_addresses().unwrap_or_else(|e| {
            warn!(error = %e, "cannot list the node's addresses");
            Vec::new()
        });
        let addresses =
            crate::node_ports::resolve(self.node_ports.as_ref(), &self.node_ips, &local);
        let mut holders = self.node_ips.clone();
        holders.extend(&addresses);
        let ingress = match &self.cfg.ingress_interfaces {
            Some(configured) => configured.clone(),
            None => crate::ingress::interfaces_of(&holders, &local),
        };
        if self.syncer.set_node_port_addresses(addresses.clone()) {
            info!(?addresses, setting = ?self.node_ports, "NodePort addresses");
            if self.datapath.is_some() {
                self.sync();
            }
        }
        if ingress != self.ingress {
            info!(interfaces = ?ingress, "north-south: ingress interfaces");
            self.ingress = ingress;
            if self.datapath.take().is_some() {
                self.activate().await;
            }
        }
    }
}

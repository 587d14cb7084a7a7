//! Service sync: Services + EndpointSlices (from reflector stores) → the
//! pure LB state (`switchyard-lb`) → ordered writes to the pinned maps.
//! An in-memory mirror of the maps avoids reading them back on every sync.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use switchyard_api::SyncStatus;
use switchyard_lb::{
    FakeMaps, IdAllocator, LbMaps, NodeContext, Options, desired_state, plan_sync,
};
use switchyard_node_datapath::PinnedLbMaps;

use crate::error::{Error, Result};

/// The node's NodePort addresses: its IPv4 InternalIP and ExternalIP.
pub fn node_context(node: &Node) -> NodeContext {
    let addresses: Vec<Ipv4Addr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("topology.kubernetes.io/zone").cloned());
    NodeContext {
        name: node.metadata.name.clone().unwrap_or_default(),
        addresses,
        zone,
    }
}

/// Keeps the maps equal to the desired state.
#[derive(Debug)]
pub struct Syncer {
    node: NodeContext,
    ids: IdAllocator,
    /// What the maps hold (after adoption, kept up to date by every write).
    mirror: Option<FakeMaps>,
    pub status: SyncStatus,
    /// The ClusterIPs of the last computed desired state.
    pub vips: Vec<Ipv4Addr>,
}

impl Syncer {
    pub fn new(node: NodeContext) -> Self {
        Self {
            node,
            ids: IdAllocator::new(),
            mirror: None,
            status: SyncStatus::default(),
            vips: Vec::new(),
        }
    }

    /// Adopts the maps under `bpffs_dir` (restart: ids stay stable).
    pub fn adopt(&mut self, bpffs_dir: &Path) -> Result<()> {
        let maps = PinnedLbMaps::open(bpffs_dir)?;
        let snapshot = maps.snapshot()?;
        self.ids = IdAllocator::from_snapshot(&snapshot);
        self.mirror = Some(FakeMaps::from_snapshot(snapshot));
        Ok(())
    }

    /// The datapath went off: nothing is programmed any more.
    pub fn detach(&mut self) {
        self.mirror = None;
        self.ids = IdAllocator::new();
        self.status.services_programmed = 0;
        self.status.backends_programmed = 0;
        self.status.frontends_programmed = 0;
        self.refresh_progress();
    }

    fn refresh_progress(&mut self) {
        self.status.progress = format!(
            "{}/{}",
            self.status.services_programmed, self.status.services_seen
        );
    }

    /// Computes the desired state and, when the datapath is attached,
    /// writes the difference to the maps.
    pub fn sync(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
        bpffs_dir: &Path,
    ) -> Result<()> {
        let started = Instant::now();
        let services = services.state();
        let slices = slices.state();
        let desired = desired_state(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            &self.node,
            &Options::default(),
        );
        self.status.services_seen = desired.state.service_count() as u32;
        self.vips = desired.state.vips.iter().copied().collect();
        self.status.unsupported = desired.findings.iter().map(ToString::to_string).collect();
        if let Some(mirror) = self.mirror.as_mut() {
            let plan = plan_sync(mirror.contents(), &desired.state, &mut self.ids)?;
            if !plan.ops.is_empty() {
                let mut maps = PinnedLbMaps::open(bpffs_dir)?;
                let result = maps.apply_all(&plan.ops);
                // Mirror exactly what reached the kernel, also on failure.
                let applied = match &result {
                    Ok(()) => plan.ops.len(),
                    Err((n, _)) => *n,
                };
                for op in &plan.ops[..applied] {
                    let _ = mirror.apply(op);
                }
                if let Err((applied, source)) = result {
                    self.refresh_progress();
                    return Err(Error::MapWrite { applied, source });
                }
            }
            self.status.services_programmed = plan.stats.services as u32;
            self.status.backends_programmed = plan.stats.backends as u32;
            self.status.frontends_programmed = plan.stats.frontends as u32;
            self.status.last_sync_time = Some(Time(Timestamp::now()));
            self.status.last_sync_millis = started.elapsed().as_millis() as u64;
            tracing::debug!(
                ops = plan.ops.len(),
                services = plan.stats.services,
                "maps synced"
            );
        }
        self.refresh_progress();
        Ok(())
    }

    /// The ClusterIP of `namespace/name`, from the store.
    pub fn cluster_ip(services: &Store<Service>, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        services
            .state()
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata.name.as_deref() == Some(name)
            })
            .and_then(|s| s.spec.as_ref()?.cluster_ip.as_ref()?.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn node_context_takes_ipv4_internal_and_external_addresses() {
        let addr = |t: &str, a: &str| NodeAddress {
            type_: t.into(),
            address: a.into(),
        };
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![
                    addr("InternalIP", "172.31.255.11"),
                    addr("InternalIP", "fd00::11"),
                    addr("Hostname", "n1"),
                    addr("ExternalIP", "203.0.113.9"),
                ]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        let ctx = node_context(&node);
        assert_eq!(ctx.name, "n1");
        assert_eq!(
            ctx.addresses,
            vec![
                Ipv4Addr::new(172, 31, 255, 11),
                Ipv4Addr::new(203, 0, 113, 9)
            ]
        );
    }
}

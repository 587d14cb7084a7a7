//! Service sync: Services + EndpointSlices (projected, from [`crate::store`]) → the
//! pure LB state (`switchyard-lb`) → ordered writes to the pinned maps.
//! An in-memory mirror of the maps avoids reading them back on every sync.
//!
//! Incremental: the watch tasks record which objects they touched
//! ([`Touched`], shared through [`Pending`]); a sync recomputes only those
//! Services ([`LbState`]) and writes only their keys. A relist, the first
//! sync and the first sync after adoption or a failed write take the full
//! path.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use switchyard_api::SyncStatus;
use switchyard_lb::{
    IdAllocator, LbMaps, LbState, MirrorMaps, NodeContext, Options, ServiceView, SliceView,
};
use switchyard_node_datapath::PinnedLbMaps;

use crate::error::{Error, Result};
use crate::store::{Applied, Key, Services, Slices};

/// The node's name, zone and default NodePort addresses (its IPv4
/// InternalIP and ExternalIP: [`crate::node_ports::node_ips`]).
pub fn node_context(node: &Node) -> NodeContext {
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("topology.kubernetes.io/zone").cloned());
    NodeContext {
        name: node.metadata.name.clone().unwrap_or_default(),
        addresses: crate::node_ports::node_ips(node),
        zone,
    }
}

/// One object a watch applied or deleted, or a completed relist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// Service `namespace/name` changed or was deleted.
    Service { namespace: String, name: String },
    /// EndpointSlice `namespace/name` changed (`service`: its service-name
    /// label) or was deleted (`service: None`).
    Slice {
        namespace: String,
        name: String,
        service: Option<String>,
    },
    /// A watch restarted and its store was replaced: recompute everything.
    Relisted,
}

impl Touched {
    /// The record of an applied or deleted Service.
    pub fn service(key: &Key) -> Self {
        Self::Service {
            namespace: key.0.to_string(),
            name: key.1.to_string(),
        }
    }

    /// The record of an applied (`Some`) or deleted (`None`) EndpointSlice.
    pub fn slice(key: &Key, slice: Option<&SliceView>) -> Self {
        Self::Slice {
            namespace: key.0.to_string(),
            name: key.1.to_string(),
            service: slice.and_then(|s| s.service.as_deref()).map(str::to_string),
        }
    }
}

impl Touched {
    /// The record of a Service store change (`None`: nothing visible yet).
    pub fn of_service(applied: &Applied<ServiceView>) -> Option<Self> {
        match applied {
            Applied::Changed(k, _) | Applied::Deleted(k) => Some(Self::service(k)),
            Applied::Relisted => Some(Self::Relisted),
            Applied::Buffered => None,
        }
    }

    /// The record of an EndpointSlice store change.
    pub fn of_slice(applied: &Applied<SliceView>) -> Option<Self> {
        match applied {
            Applied::Changed(k, v) => Some(Self::slice(k, Some(v))),
            Applied::Deleted(k) => Some(Self::slice(k, None)),
            Applied::Relisted => Some(Self::Relisted),
            Applied::Buffered => None,
        }
    }
}

/// What the watch tasks touched since the last sync.
pub type Pending = Arc<Mutex<Vec<Touched>>>;

/// Keeps the maps equal to the desired state.
#[derive(Debug)]
pub struct Syncer {
    /// The node the state is computed for.
    node: NodeContext,
    lb: LbState,
    /// The LB state was built from the stores (false: rebuild at next sync).
    indexed: bool,
    /// The next plan must diff everything (after adoption or a failed write).
    full_diff: bool,
    ids: IdAllocator,
    /// What the maps hold (after adoption, kept up to date by every write).
    mirror: Option<MirrorMaps>,
    /// The pinned maps, opened at adoption.
    maps: Option<PinnedLbMaps>,
    pub status: SyncStatus,
    /// The ClusterIPs of the last computed desired state.
    pub vips: Vec<Ipv4Addr>,
    /// Map operations the last sync wrote.
    pub last_ops: usize,
}

impl Syncer {
    pub fn new(node: NodeContext) -> Self {
        Self {
            lb: LbState::new(node.clone(), Options::default()),
            node,
            indexed: false,
            full_diff: true,
            ids: IdAllocator::new(),
            mirror: None,
            maps: None,
            status: SyncStatus::default(),
            vips: Vec::new(),
            last_ops: 0,
        }
    }

    /// Serves NodePorts on `addresses` from the next sync on (every
    /// Service recomputed, the maps diffed whole). Returns whether they
    /// changed.
    pub fn set_node_port_addresses(&mut self, addresses: Vec<Ipv4Addr>) -> bool {
        if self.node.addresses == addresses {
            return false;
        }
        self.node.addresses = addresses;
        self.lb = LbState::new(self.node.clone(), Options::default());
        self.indexed = false;
        self.full_diff = true;
        true
    }

    /// The addresses NodePorts are served on.
    pub fn node_port_addresses(&self) -> &[Ipv4Addr] {
        &self.node.addresses
    }

    /// The desired state of the last sync.
    /// The Service addresses of the desired state: every frontend address
    /// that is not one of the node's own (`node_ips`, loopback), i.e.
    /// ClusterIPs, external and LoadBalancer IPs.
    pub fn service_ips(&self, node_ips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let ips: std::collections::BTreeSet<Ipv4Addr> = self
            .lb
            .state()
            .frontends
            .keys()
            .map(|f| f.ip)
            .filter(|ip| !ip.is_loopback() && !node_ips.contains(ip))
            .collect();
        ips.into_iter().collect()
    }

    pub fn state(&self) -> &switchyard_lb::DesiredState {
        self.lb.state()
    }

    /// Adopts the maps under `bpffs_dir` (restart: ids stay stable).
    pub fn adopt(&mut self, bpffs_dir: &Path) -> Result<()> {
        let maps = PinnedLbMaps::open(bpffs_dir)?;
        let snapshot = maps.snapshot()?;
        self.ids = IdAllocator::from_snapshot(&snapshot);
        self.mirror = Some(MirrorMaps::from_snapshot(snapshot));
        self.maps = Some(maps);
        self.full_diff = true;
        Ok(())
    }

    /// The datapath went off: nothing is programmed any more.
    pub fn detach(&mut self) {
        self.mirror = None;
        self.maps = None;
        self.lb.mark_all_dirty();
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

    /// Recomputes the Services `touched` names (everything on the first
    /// sync or after a relist) and, when the datapath is attached, writes
    /// the difference to the maps.
    pub fn sync(
        &mut self,
        services: &Services,
        slices: &Slices,
        touched: Vec<Touched>,
    ) -> Result<()> {
        let started = Instant::now();
        self.index(services, slices, &touched);
        self.lb.refresh(
            |ns, name| services.get(ns, name),
            |ns, name| slices.get(ns, name),
        );
        self.status.services_seen = self.lb.service_count() as u32;
        if self.lb.vips_changed() {
            self.vips = self.lb.state().vips.iter().copied().collect();
        }
        self.status.unsupported = self.lb.findings().iter().map(ToString::to_string).collect();
        self.write_maps(started)?;
        self.refresh_progress();
        Ok(())
    }

    /// Re-indexes every object on the first sync or after a relist; otherwise marks the
    /// `touched` Services dirty.
    fn index(&mut self, services: &Services, slices: &Slices, touched: &[Touched]) {
        if !self.indexed || touched.contains(&Touched::Relisted) {
            let (svcs, sls) = (services.read(), slices.read());
            self.lb.reset(
                svcs.iter().map(|((ns, name), _)| (&**ns, &**name)),
                sls.iter()
                    .map(|((ns, name), s)| (&**ns, &**name, s.service.as_deref())),
            );
            self.indexed = true;
        } else {
            for t in touched {
                match t {
                    Touched::Service { namespace, name } => {
                        self.lb.service_touched(namespace, name)
                    }
                    Touched::Slice {
                        namespace,
                        name,
                        service,
                    } => self.lb.slice_touched(namespace, name, service.as_deref()),
                    Touched::Relisted => {}
                }
            }
        }
    }

    /// When the datapath is attached, writes the planned difference to the maps and
    /// mirrors what reached the kernel; a failed write makes the next sync a full diff.
    fn write_maps(&mut self, started: Instant) -> Result<()> {
        let (Some(mirror), Some(maps)) = (self.mirror.as_mut(), self.maps.as_mut()) else {
            return Ok(());
        };
        if self.full_diff {
            self.lb.mark_all_dirty();
        }
        let full = self.lb.all_dirty();
        let ops = self.lb.plan(mirror.contents(), &mut self.ids)?;
        if !ops.is_empty() {
            let result = maps.apply_all(&ops);
            // Mirror exactly what reached the kernel, also on failure.
            let applied = match &result {
                Ok(()) => ops.len(),
                Err((n, _)) => *n,
            };
            for op in &ops[..applied] {
                let _ = mirror.apply(op);
            }
            if let Err((applied, source)) = result {
                self.full_diff = true;
                self.refresh_progress();
                return Err(Error::MapWrite { applied, source });
            }
        }
        self.full_diff = false;
        self.last_ops = ops.len();
        if full {
            drop(ops);
            switchyard_daemon::release_freed_memory();
        }
        self.status.services_programmed = self.status.services_seen;
        self.status.backends_programmed = self.ids.backend_count() as u32;
        self.status.frontends_programmed = self.lb.state().frontends.len() as u32;
        self.status.last_sync_time = Some(Time(Timestamp::now()));
        self.status.last_sync_millis = started.elapsed().as_millis() as u64;
        tracing::debug!(
            ops = self.last_ops,
            services = self.status.services_seen,
            "maps synced"
        );
        Ok(())
    }

    /// The ClusterIP of `namespace/name`, from the store.
    pub fn cluster_ip(services: &Services, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        services.get(namespace, name)?.cluster_ip.parse().ok()
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

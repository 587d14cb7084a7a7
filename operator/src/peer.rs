//! Hubble's Peer API: the nodes whose Observer API a hubble-relay can
//! aggregate, from the operator's caches. A node is a peer while its agent
//! serves the Observer API beyond the node's loopback (it reports the port
//! in its NodeDatapath status); its address is the Node's InternalIP.
//!
//! The operator serves it rather than each agent (as Cilium's agents do)
//! because it already caches every Node and NodeDatapath: an agent would
//! need a cluster-wide watch of its own for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt, future};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use switchyard_api::NodeDatapath;
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::controller::cached::SlimNode;
use crate::controller::external::internal_ip;

/// The generated types and service of `proto/peer/peer.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("peer");
}

use proto::peer_server::{Peer, PeerServer};
use proto::{ChangeNotification, ChangeNotificationType, NotifyRequest};

/// How long a change waits for the ones that follow it before the peers
/// are counted again.
const RECOUNT_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// The peers: node name → `host:port` of its Observer API.
pub type Peers = BTreeMap<String, String>;

/// The peers among `nodes` and their `datapaths` (pure).
pub fn peers<'a>(
    nodes: impl IntoIterator<Item = &'a SlimNode>,
    datapaths: impl IntoIterator<Item = &'a NodeDatapath>,
) -> Peers {
    let ports: BTreeMap<String, u16> = datapaths
        .into_iter()
        .filter_map(|d| Some((d.name_any(), d.status.as_ref()?.observer_port?)))
        .collect();
    nodes
        .into_iter()
        .filter_map(|n| {
            let port = ports.get(&n.name_any())?;
            Some((n.name_any(), format!("{}:{port}", internal_ip(n)?)))
        })
        .collect()
}

fn note(name: &str, address: &str, kind: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: name.to_string(),
        address: address.to_string(),
        r#type: kind as i32,
        tls: None,
    }
}

/// What a client that knows `old` is told so that it knows `new` (pure):
/// the peers gone, then those added or moved, by name.
pub fn changes(old: &Peers, new: &Peers) -> Vec<ChangeNotification> {
    let gone = old
        .iter()
        .filter(|(name, _)| !new.contains_key(*name))
        .map(|(name, addr)| note(name, addr, ChangeNotificationType::PeerDeleted));
    let came = new.iter().filter_map(|(name, addr)| match old.get(name) {
        None => Some(note(name, addr, ChangeNotificationType::PeerAdded)),
        Some(was) if was != addr => Some(note(name, addr, ChangeNotificationType::PeerUpdated)),
        Some(_) => None,
    });
    gone.chain(came).collect()
}

/// The Peer service over the current peers.
#[derive(Debug, Clone)]
pub struct PeerService {
    peers: watch::Receiver<Peers>,
}

type Notifications = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    type NotifyStream = Notifications;

    async fn notify(
        &self,
        _: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        // The current peers first (each PEER_ADDED), then each change.
        let stream = WatchStream::new(self.peers.clone())
            .scan(Peers::new(), |known, now| {
                let out = changes(known, &now);
                *known = now;
                future::ready(Some(futures::stream::iter(out.into_iter().map(Ok))))
            })
            .flatten();
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves the Peer API on `addr` from the caches, recounting the peers
/// [`RECOUNT_AFTER`] after `changed` is signalled (a Node or NodeDatapath
/// event): once for the events of that while.
pub fn spawn(
    addr: SocketAddr,
    nodes: Store<SlimNode>,
    datapaths: Store<NodeDatapath>,
    changed: Arc<Notify>,
) {
    let (tx, rx) = watch::channel(Peers::new());
    tokio::spawn(async move {
        loop {
            let now = peers(
                nodes.state().iter().map(|n| n.as_ref()),
                datapaths.state().iter().map(|d| d.as_ref()),
            );
            // Followers hear of a change only, not of every event.
            tx.send_if_modified(|p| {
                let changed = *p != now;
                if changed {
                    *p = now;
                }
                changed
            });
            changed.notified().await;
            // A wave writes each of its Nodes and NodeDatapaths several
            // times: one recount after the burst instead of one per write.
            tokio::time::sleep(RECOUNT_AFTER).await;
        }
    });
    tokio::spawn(async move {
        let service = PeerServer::new(PeerService { peers: rx });
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve(addr)
            .await;
        if let Err(e) = served {
            tracing::error!(%addr, error = %e, "the Peer API stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cached::SlimNodeStatus;
    use k8s_openapi::api::core::v1::NodeAddress;
    use switchyard_api::NodeDatapathStatus;

    fn node(name: &str, ip: &str) -> SlimNode {
        SlimNode {
            status: Some(SlimNodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
            }),
            ..SlimNode::named(name)
        }
    }

    fn datapath(name: &str, port: Option<u16>) -> NodeDatapath {
        let mut d = NodeDatapath::new(name, Default::default());
        d.status = Some(NodeDatapathStatus {
            observer_port: port,
            ..NodeDatapathStatus::default()
        });
        d
    }

    #[test]
    fn a_peer_is_a_node_whose_agent_serves_beyond_loopback() {
        let nodes = [
            node("a", "10.0.0.1"),
            node("b", "10.0.0.2"),
            node("c", "10.0.0.3"),
        ];
        let dps = [
            datapath("a", Some(4244)),
            datapath("b", None),
            datapath("gone", Some(1)),
        ];
        let got = peers(&nodes, &dps);
        assert_eq!(got, Peers::from([("a".into(), "10.0.0.1:4244".into())]));
    }

    #[test]
    fn changes_say_what_was_deleted_added_and_moved() {
        let old = Peers::from([
            ("a".into(), "10.0.0.1:4244".into()),
            ("b".into(), "10.0.0.2:4244".into()),
            ("c".into(), "10.0.0.3:4244".into()),
        ]);
        let new = Peers::from([
            ("a".into(), "10.0.0.1:4244".into()),
            ("c".into(), "10.0.0.9:4244".into()),
            ("d".into(), "10.0.0.4:4244".into()),
        ]);
        let got: Vec<_> = changes(&old, &new)
            .into_iter()
            .map(|c| (c.name, c.address, c.r#type))
            .collect();
        use ChangeNotificationType::*;
        assert_eq!(
            got,
            [
                ("b".into(), "10.0.0.2:4244".into(), PeerDeleted as i32),
                ("c".into(), "10.0.0.9:4244".into(), PeerUpdated as i32),
                ("d".into(), "10.0.0.4:4244".into(), PeerAdded as i32),
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }

    #[tokio::test]
    async fn notify_sends_every_peer_then_each_change() {
        let (tx, rx) = watch::channel(Peers::from([("a".into(), "10.0.0.1:4244".into())]));
        let service = PeerService { peers: rx };
        let mut stream = service
            .notify(Request::new(NotifyRequest {}))
            .await
            .expect("a stream")
            .into_inner();
        let first = stream.next().await.expect("a peer").expect("no error");
        assert_eq!(
            (first.name.as_str(), first.r#type),
            ("a", ChangeNotificationType::PeerAdded as i32)
        );
        tx.send_replace(Peers::new());
        let next = stream.next().await.expect("a change").expect("no error");
        assert_eq!(
            (next.name.as_str(), next.r#type),
            ("a", ChangeNotificationType::PeerDeleted as i32)
        );
    }
}

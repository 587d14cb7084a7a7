//! The node runtime, standing in for the kubelet: one watcher per node on
//! the pods bound to it; each pod gets a task (see [`pod`]) that builds its
//! network namespace, files and processes, reports status and tears it all
//! down on deletion; [`supervise`] keeps its containers running and
//! their status true; [`security`] reads a container's `securityContext`
//! and [`confine`] applies it between fork and exec.

pub mod confine;
pub mod images;
pub mod oci;
pub mod pod;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod status;
mod supervise;
pub mod unpack;
pub mod volumes;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::binaries::Binaries;
use crate::sys::Cgroup;
use crate::topology::{NodePlan, PodIpAllocator};
use images::ImageTable;

/// Where a running pod lives on its node (for exec and requests).
#[derive(Debug, Clone)]
pub struct PodRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Node name.
    pub node: String,
    /// The pod's network namespace (the node's for hostNetwork pods).
    pub netns: PathBuf,
    /// The pod's cgroup.
    pub cgroup: PathBuf,
    /// Pod IP.
    pub ip: Ipv4Addr,
}

/// Every pod the runtimes run, keyed by `namespace/name`.
pub type PodRegistry = Arc<Mutex<HashMap<String, PodRecord>>>;

/// What every pod task on a node shares.
pub struct NodeShared {
    /// API client.
    pub client: kube::Client,
    /// The cluster name (prefix of namespace names).
    pub cluster: String,
    /// The node.
    pub node: NodePlan,
    /// Program paths.
    pub bins: Binaries,
    /// Image table.
    pub images: ImageTable,
    /// Per-pod directories live here.
    pub pods_dir: PathBuf,
    /// The node's cgroup; pods get children.
    pub cgroup: Cgroup,
    /// Pod IPs.
    pub ips: Mutex<PodIpAllocator>,
    /// Counter for pod namespace and veth names.
    pub seq: AtomicU32,
    /// Running pods.
    pub registry: PodRegistry,
    /// The cluster's state directory.
    pub state: PathBuf,
    /// Host paths as seen from this node.
    pub view: volumes::NodeView,
}

impl NodeShared {
    /// The file listing host paths created as mount points (removed at
    /// teardown).
    pub fn mountpoints_file(&self) -> PathBuf {
        self.state.join("mountpoints")
    }
}

impl std::fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeShared")
            .field("cluster", &self.cluster)
            .field("node", &self.node.name)
            .finish_non_exhaustive()
    }
}

/// A pod object update delivered to its task; `gone` once deleted.
#[derive(Debug, Clone)]
pub struct PodUpdate {
    /// The latest object.
    pub pod: Pod,
    /// The object has been removed from the API.
    pub gone: bool,
}

/// Runs the node's runtime until the task is aborted.
pub async fn run_node(shared: Arc<NodeShared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node.name));
    let mut tasks: HashMap<String, watch::Sender<PodUpdate>> = HashMap::new();
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let (pod, gone) = match ev {
            Ok(Event::Apply(p) | Event::InitApply(p)) => (p, false),
            Ok(Event::Delete(p)) => (p, true),
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(node = %shared.node.name, error = %e, "pod watch");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let update = PodUpdate { pod, gone };
        match tasks.get(&uid) {
            Some(tx) => {
                let _ = tx.send(update);
            }
            None if !gone => {
                let (tx, rx) = watch::channel(update);
                tokio::spawn(pod::run(shared.clone(), rx));
                tasks.insert(uid.clone(), tx);
            }
            None => {}
        }
        if gone {
            tasks.remove(&uid);
        }
    }
}

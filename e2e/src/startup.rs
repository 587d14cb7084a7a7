//! The steps of [`Cluster::start`](crate::Cluster::start), each on its
//! own: claim the name and state, create the networks, start the API
//! server, spawn the node runtimes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::task::JoinHandle;

use crate::addons;
use crate::binaries::Binaries;
use crate::cluster::{ClusterConfig, blocking, client_from};
use crate::control_plane::ControlPlane;
use crate::error::{Error, Result};
use crate::forward::{self, Forwarder};
use crate::pki::Pki;
use crate::runtime::images::ImageTable;
use crate::runtime::volumes::NodeView;
use crate::runtime::{self, NodeShared, PodRegistry};
use crate::sys::{self, Cgroup, Placement};
use crate::teardown::{cleanup_stale, owner, teardown_by_name};
use crate::topology::{API_PORT, CONTROL_PLANE_IP, NodePlan, Plan, PodIpAllocator};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Checks `cfg`, readies the host, removes what killed runs left behind
/// and claims the cluster's name and state directory (refusing one a live
/// process owns). Returns the binaries, the name and the state directory.
pub(crate) async fn claim(cfg: &ClusterConfig) -> Result<(Binaries, String, PathBuf)> {
    if cfg.nodes > crate::topology::MAX_NODES || (cfg.nodes == 0 && cfg.kube_proxy) {
        return Err(Error::Config(format!(
            "nodes must be 1..={} (0 only without kube-proxy)",
            crate::topology::MAX_NODES
        )));
    }
    let root = cfg.state_root.clone();
    blocking(move || {
        cleanup_stale(&root);
        Ok(())
    })
    .await?;
    blocking(crate::binaries::ensure_host_setup).await?;
    let bins = blocking(Binaries::locate).await?;
    let name = cfg.name.clone().unwrap_or_else(|| {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        format!(
            "syl{}{}",
            std::process::id(),
            (b'a' + (n % 26) as u8) as char
        )
    });
    let state = cfg.state_root.join(&name);
    if let Some(pid) = owner(&state).filter(|p| sys::pid_alive(*p)) {
        return Err(Error::AlreadyRunning { name, pid });
    }
    teardown_by_name(&name, &state);
    std::fs::create_dir_all(&state).map_err(Error::io("creating", &state))?;
    std::fs::write(state.join("owner"), std::process::id().to_string())
        .map_err(Error::io("writing", &state))?;
    Ok((bins, name, state))
}

/// The control plane's, every node's and (if asked) the outside network.
pub(crate) async fn create_networks(plan: &Plan, with_outside: bool) -> Result<()> {
    let plan = plan.clone();
    blocking(move || {
        crate::network::create_control_plane(&plan)?;
        plan.nodes
            .iter()
            .try_for_each(|n| crate::network::create_node(&plan, n))?;
        if with_outside {
            crate::network::create_outside(&plan)?;
        }
        Ok(())
    })
    .await
}

/// A running API: the control plane, the forwarder to it from the root
/// namespace, the admin kubeconfig and a client through it.
pub(crate) struct ApiServer {
    /// When the API server's readiness wait began (the cluster's start time
    /// in its log line).
    pub(crate) started: Instant,
    pub(crate) control_plane: ControlPlane,
    pub(crate) forwarder: Forwarder,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) client: kube::Client,
}

impl ApiServer {
    /// Starts etcd and the API server, waits until it answers, starts the
    /// controllers and registers the nodes.
    pub(crate) async fn start(
        cfg: &ClusterConfig,
        bins: &Binaries,
        pki: &Pki,
        state: &Path,
        plan: &Plan,
        cgroup: &Cgroup,
    ) -> Result<ApiServer> {
        let cp_place = Placement {
            netns: Some(sys::netns_path(&plan.cp_netns)),
            cgroup: Some(cgroup.child("control-plane")?.path),
            ..Default::default()
        };
        let mut extra = if cfg.rbac_audit {
            crate::audit::records::apiserver_args(state)?
        } else {
            Vec::new()
        };
        extra.extend_from_slice(&cfg.apiserver_extra_args);
        let mut cp = ControlPlane::start_storage_and_api(bins, pki, state, &cp_place, &extra)?;
        let fwd = forward::start(
            cfg.api_listen,
            &sys::netns_path(&plan.cp_netns),
            SocketAddr::from((CONTROL_PLANE_IP, API_PORT)),
        )
        .await?;
        let kubeconfig = state.join("admin.kubeconfig");
        // The matching kubectl, next to the kubeconfig.
        let _ = std::os::unix::fs::symlink(bins.k8s("kubectl"), state.join("kubectl"));
        pki.write_kubeconfig("admin", &format!("https://{}", fwd.local), &kubeconfig)?;
        let client = client_from(&kubeconfig).await?;
        let started = Instant::now();
        crate::control_plane::wait_ready(&client, &mut cp).await?;
        tracing::info!(
            secs = started.elapsed().as_secs_f32(),
            "kube-apiserver ready"
        );
        cp.start_controllers(bins, pki, state, &cp_place)?;
        for n in &plan.nodes {
            addons::register_node(&client, n, &[]).await?;
        }
        Ok(ApiServer {
            started,
            control_plane: cp,
            forwarder: fwd,
            kubeconfig,
            client,
        })
    }
}

/// Where the node runtimes keep each pod's directory (`<pod uid>/`).
pub(crate) fn pods_dir(state: &Path) -> PathBuf {
    state.join("pods")
}

/// What every node's pod runtime shares, kept to start the runtime of a
/// node that joins later.
#[derive(Clone)]
pub(crate) struct RuntimeEnv {
    client: kube::Client,
    cluster: String,
    bins: Binaries,
    images: ImageTable,
    pods_dir: PathBuf,
    registry: PodRegistry,
    state: PathBuf,
    cgroup: Cgroup,
    cgroup_root: PathBuf,
    /// The cluster's bpffs directory, where the host has one.
    bpffs: Option<PathBuf>,
}

impl RuntimeEnv {
    pub(crate) fn new(
        cfg: &ClusterConfig,
        bins: &Binaries,
        client: &kube::Client,
        state: &Path,
        plan: &Plan,
        cgroup: &Cgroup,
    ) -> Result<Self> {
        let pods_dir = pods_dir(state);
        std::fs::create_dir_all(&pods_dir).map_err(Error::io("creating", &pods_dir))?;
        Ok(Self {
            client: client.clone(),
            cluster: plan.name.clone(),
            bins: bins.clone(),
            images: cfg
                .images
                .clone()
                .unwrap_or_else(|| ImageTable::with_defaults(&bins.project_bin)),
            pods_dir,
            registry: PodRegistry::default(),
            state: state.to_path_buf(),
            cgroup: cgroup.clone(),
            cgroup_root: sys::cgroup2_root()?,
            bpffs: sys::bpffs_root().map(|b| b.join("switchyard-lab").join(&plan.name)),
        })
    }

    /// The pods every runtime started.
    pub(crate) fn registry(&self) -> PodRegistry {
        self.registry.clone()
    }

    /// Kills every process of node `n`'s pods (its runtime task must be
    /// stopped first, or it restarts them), forgets them, and removes its
    /// cgroup and its bpffs directory (what its agent pinned goes with the
    /// machine).
    pub(crate) fn stop(&self, n: &NodePlan) {
        Cgroup::destroy(&self.cgroup.path.join(&n.name));
        if let Ok(mut r) = self.registry.lock() {
            r.retain(|_, pod| pod.node != n.name);
        }
        if let Some(b) = &self.bpffs {
            let d = b.join(&n.name);
            if let Err(e) = std::fs::remove_dir_all(&d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %d.display(), error = %e, "removing a node's bpffs directory");
            }
        }
    }

    /// Spawns node `n`'s pod runtime, in its own cgroup, with its own bpffs
    /// directory where the host has one.
    pub(crate) fn spawn(&self, n: &NodePlan) -> Result<JoinHandle<()>> {
        let node_cgroup = self.cgroup.child(&n.name)?;
        let node_bpffs = match &self.bpffs {
            Some(b) => {
                let d = b.join(&n.name);
                std::fs::create_dir_all(&d).map_err(Error::io("creating", &d))?;
                Some(d)
            }
            None => None,
        };
        let view = NodeView {
            cgroup_root: self.cgroup_root.clone(),
            node_cgroup: node_cgroup.path.clone(),
            node_bpffs,
        };
        let shared = Arc::new(NodeShared {
            client: self.client.clone(),
            cluster: self.cluster.clone(),
            node: n.clone(),
            bins: self.bins.clone(),
            images: self.images.clone(),
            pods_dir: self.pods_dir.clone(),
            cgroup: node_cgroup,
            ips: Mutex::new(PodIpAllocator::new(n.pod_net)),
            seq: AtomicU32::new(0),
            registry: self.registry.clone(),
            state: self.state.clone(),
            view,
        });
        Ok(tokio::spawn(runtime::run_node(shared)))
    }
}

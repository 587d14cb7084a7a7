//! The test and CLI facing API: start a cluster, get a client, run commands
//! and requests from nodes and pods, read kube-proxy's rules, tear down.
//!
//! A cluster named `syl<pid><letter>` (or the CLI's `lab`) owns: `/dev/shm/switchyard-lab/<name>` (state,
//! certs, logs, etcd data; tmpfs, no mounts of its own), the cgroup
//! `<cgroup2>/switchyard-lab/<name>` (every process it starts), the network
//! namespaces `<name>-*`, and host directories it had to create as mount
//! points (listed in its state dir). Teardown removes all of it, on drop too;
//! [`cleanup_stale`] removes what a killed run left behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ServiceAccount, Taint};
use kube::api::Api;
use tokio::task::JoinHandle;

use crate::addons::{self, ProxyMode};
use crate::binaries::Binaries;
use crate::control_plane::ControlPlane;
use crate::error::{Error, Result};
use crate::forward::Forwarder;
use crate::outside::Outside;
use crate::pki::Pki;
use crate::request;
use crate::runtime::PodRecord;
use crate::runtime::images::ImageTable;
use crate::startup;
use crate::sys::{self, Cgroup, Placement};
use crate::teardown::{lab_cgroup_root, teardown_by_name};
use crate::topology::{self, MAX_NODES, NodePlan, Plan};

/// Default directory holding every cluster's state.
pub const STATE_ROOT: &str = "/dev/shm/switchyard-lab";

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Number of nodes (1..=200; 0 for a control plane only, without
    /// kube-proxy).
    pub nodes: usize,
    /// kube-proxy mode.
    pub proxy_mode: ProxyMode,
    /// Cluster name; default `sy<pid><letter>` (unique per process).
    pub name: Option<String>,
    /// Root-namespace address of the API forwarder (port 0: any free port).
    pub api_listen: SocketAddr,
    /// Where state directories live.
    pub state_root: PathBuf,
    /// Image table; default [`ImageTable::with_defaults`].
    pub images: Option<ImageTable>,
    /// Install kube-proxy (DaemonSet etc.) and wait for it on every node.
    pub kube_proxy: bool,
    /// Extra kube-apiserver flags (for instance an audit policy).
    pub apiserver_extra_args: Vec<String>,
    /// Also model the outside of the cluster: an external router and
    /// client, and the lab's LoadBalancer implementation (see
    /// [`crate::outside`]).
    pub outside: bool,
    /// Log the switchyard identities' requests (the API server's audit
    /// log) and, at teardown, record them for the RBAC check
    /// (`switchyard-rbac-check`) and fail on a request RBAC refused.
    /// On by default (every e2e scenario); the tools built on the lab turn
    /// it off.
    pub rbac_audit: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            proxy_mode: ProxyMode::Iptables,
            name: None,
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_root: PathBuf::from(STATE_ROOT),
            images: None,
            kube_proxy: true,
            apiserver_extra_args: Vec::new(),
            outside: false,
            rbac_audit: true,
        }
    }
}

/// A running local cluster. Dropping it tears it down.
pub struct Cluster {
    plan: Plan,
    state: PathBuf,
    cgroup: Cgroup,
    control_plane: Option<ControlPlane>,
    forwarder: Option<Forwarder>,
    client: kube::Client,
    kubeconfig: PathBuf,
    /// What the node runtimes share (the pods they run among it).
    env: startup::RuntimeEnv,
    runtimes: Vec<JoinHandle<()>>,
    bins: Binaries,
    outside: Option<Outside>,
    rbac_audit: bool,
    torn_down: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.plan.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
}

/// Polls `check` every 200 ms until it returns `Some`, failing after
/// `timeout` with `what` in the message ([`switchyard_testkit::wait_for_async`]
/// with this crate's error).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    Ok(switchyard_testkit::wait_for_async(what, timeout, check).await?)
}

/// Waits (up to 60 s) until every item `totals` reads has a `count` at least `n` above
/// that item's count now (items compared in order): traffic that covers what just
/// happened and the time after it.
pub async fn wait_for_growth<T>(
    what: &str,
    n: u64,
    totals: impl Fn() -> Result<Vec<T>>,
    count: impl Fn(&T) -> u64,
) -> Result<()> {
    let before = totals()?;
    wait_for(what, Duration::from_secs(60), || async {
        let now = totals().ok()?;
        now.iter()
            .zip(&before)
            .all(|(a, b)| count(a) >= count(b) + n)
            .then_some(())
    })
    .await
}

impl Cluster {
    /// Starts a cluster: builds the binaries if the cache is cold, creates
    /// the namespaces, control plane and nodes, installs kube-proxy and
    /// waits until every node runs it.
    pub async fn start(cfg: ClusterConfig) -> Result<Self> {
        let (bins, name, state) = startup::claim(&cfg).await?;
        let cgroup = Cgroup::create(lab_cgroup_root()?.join(&name))?;
        let plan = Plan::new(&name, cfg.nodes);
        // From here on, a failure tears down what exists.
        let mut partial = Partial {
            name: name.clone(),
            state: state.clone(),
            armed: true,
        };
        let pki_dir = state.join("pki");
        let pki = blocking(move || Pki::generate(&pki_dir)).await?;
        startup::create_networks(&plan, cfg.outside).await?;
        let api = startup::ApiServer::start(&cfg, &bins, &pki, &state, &plan, &cgroup).await?;
        let started = api.started;
        let env = startup::RuntimeEnv::new(&cfg, &bins, &api.client, &state, &plan, &cgroup)?;
        let runtimes = plan
            .nodes
            .iter()
            .map(|n| env.spawn(n))
            .collect::<Result<Vec<_>>>()?;
        let outside = if cfg.outside {
            let cg = cgroup.child("outside")?;
            Some(Outside::start(&plan, api.client.clone(), cg, &state)?)
        } else {
            None
        };
        let cluster = Cluster {
            plan,
            state,
            cgroup,
            control_plane: Some(api.control_plane),
            forwarder: Some(api.forwarder),
            client: api.client,
            kubeconfig: api.kubeconfig,
            env,
            runtimes,
            bins,
            outside,
            rbac_audit: cfg.rbac_audit,
            torn_down: false,
        };
        partial.armed = false;
        cluster.wait_default_service_account().await?;
        if cfg.kube_proxy {
            for obj in addons::kube_proxy_objects(&cluster.plan, cfg.proxy_mode) {
                addons::apply(&cluster.client, &obj).await?;
            }
            cluster.wait_kube_proxy().await?;
        }
        tracing::info!(name = %cluster.plan.name, secs = started.elapsed().as_secs_f32(), "cluster ready");
        Ok(cluster)
    }

    /// Adds a node to the running cluster, as a new machine joins one: its
    /// namespace and routes, its Node registered with `taints` (kubelet's
    /// `--register-with-taints`) and its pod runtime. DaemonSets start
    /// their pods there (kube-proxy while it exists, switchyard's agent).
    pub async fn add_node(&mut self, taints: &[Taint]) -> Result<NodePlan> {
        let node = self
            .plan
            .add_node()
            .ok_or_else(|| Error::Config(format!("a cluster has at most {MAX_NODES} nodes")))?;
        let (plan, n, outside) = (self.plan.clone(), node.clone(), self.outside.is_some());
        blocking(move || crate::network::join_node(&plan, &n, outside)).await?;
        addons::register_node(&self.client, &node, taints).await?;
        self.runtimes.push(self.env.spawn(&node)?);
        tracing::info!(cluster = %self.plan.name, node = %node.name, "node joined");
        Ok(node)
    }

    /// Removes node `name` as a machine leaves a cluster: its runtime and
    /// every process of its pods stop, the other nodes' routes to its pods
    /// and its namespace go, and its Node is deleted (as the cloud's node
    /// controller does for a terminated instance; the pod garbage collector
    /// then deletes the pods bound to it). A node added later may get the
    /// same name again, as a replaced machine does.
    pub async fn remove_node(&mut self, name: &str) -> Result<()> {
        let i = self
            .plan
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| Error::NotFound(format!("node {name} in cluster {}", self.plan.name)))?;
        let node = self.plan.nodes.remove(i);
        self.runtimes.remove(i).abort();
        let (env, n) = (self.env.clone(), node.clone());
        blocking(move || {
            env.stop(&n);
            Ok(())
        })
        .await?;
        let (plan, n) = (self.plan.clone(), node.clone());
        blocking(move || crate::network::leave_node(&plan, &n)).await?;
        addons::deregister_node(&self.client, &node).await?;
        tracing::info!(cluster = %self.plan.name, node = %node.name, "node left");
        Ok(())
    }

    /// A client with cluster-admin rights (through the root-namespace
    /// forwarder).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The admin kubeconfig (use with `kubectl --kubeconfig`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The address plan (node names, IPs, namespaces).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The outside of the cluster (external client, router, LoadBalancer),
    /// if it was started with [`ClusterConfig::outside`].
    pub fn outside(&self) -> Result<&Outside> {
        self.outside.as_ref().ok_or_else(|| {
            Error::NotFound("the cluster's outside (start it with ClusterConfig::outside)".into())
        })
    }

    /// The pid of a running control-plane program (`kube-apiserver`, …).
    pub fn control_plane_pid(&self, program: &str) -> Option<i32> {
        self.control_plane
            .as_ref()?
            .processes
            .iter()
            .find(|p| p.name == program)
            .map(|p| p.pid())
            .filter(|p| *p > 0)
    }

    /// The state directory (logs under `logs/`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Program paths in use.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// Fails if a control-plane process died.
    pub fn check_control_plane(&mut self) -> Result<()> {
        self.control_plane
            .as_mut()
            .map_or(Ok(()), ControlPlane::check)
    }

    /// The running pod `namespace/name` as placed by the runtime.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<PodRecord> {
        self.env
            .registry()
            .lock()
            .ok()
            .and_then(|r| r.get(&format!("{namespace}/{name}")).cloned())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "pod {namespace}/{name} is not running on a lab node"
                ))
            })
    }

    /// The control plane's network namespace (etcd, the API server).
    pub fn control_plane_netns(&self) -> PathBuf {
        sys::netns_path(&self.plan.cp_netns)
    }

    /// Where a program of the control plane's side runs: its network
    /// namespace, in the child cgroup `name` of the cluster's.
    pub fn control_plane_placement(&self, name: &str) -> Result<Placement> {
        Ok(Placement {
            netns: Some(self.control_plane_netns()),
            cgroup: Some(self.cgroup.child(name)?.path),
            ..Default::default()
        })
    }

    /// A second address of the API server, `CONTROL_PLANE_IP:port`, served
    /// by a forwarder in the control plane's namespace: one of several API
    /// server endpoints, which dies with its connections when dropped.
    pub async fn api_server_alias(&self, port: u16) -> Result<Forwarder> {
        let netns = sys::netns_path(&self.plan.cp_netns);
        let api = SocketAddr::from((topology::CONTROL_PLANE_IP, topology::API_PORT));
        let alias = SocketAddr::from((topology::CONTROL_PLANE_IP, port));
        crate::forward::start_in(&netns, alias, &netns, api).await
    }

    /// Forwards a free `127.0.0.1` port here to `127.0.0.1:port` inside
    /// `node`'s network namespace (a node-local server, such as an agent's
    /// Observer API); stops when dropped.
    pub async fn forward_to_node_loopback(&self, node: &str, port: u16) -> Result<Forwarder> {
        let here = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let there = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        crate::forward::start(here, &self.node_netns(node)?, there).await
    }

    fn node_netns(&self, node: &str) -> Result<PathBuf> {
        let n = self
            .plan
            .node(node)
            .ok_or_else(|| Error::NotFound(format!("node {node}")))?;
        Ok(sys::netns_path(&n.netns))
    }

    /// Runs a command in a node's network namespace; returns its output.
    pub async fn exec_on_node(&self, node: &str, argv: &[&str]) -> Result<std::process::Output> {
        let place = Placement {
            netns: Some(self.node_netns(node)?),
            cgroup: Some(self.cgroup.path.join(node)),
            ..Default::default()
        };
        exec(&place, argv).await
    }

    /// Runs a command in a pod's network namespace and cgroup.
    pub async fn exec_in_pod(
        &self,
        namespace: &str,
        name: &str,
        argv: &[&str],
    ) -> Result<std::process::Output> {
        let pod = self.pod(namespace, name)?;
        let place = Placement {
            netns: Some(pod.netns),
            cgroup: Some(pod.cgroup),
            ..Default::default()
        };
        exec(&place, argv).await
    }

    /// `iptables-save -t <table>` on a node.
    pub async fn iptables_save(&self, node: &str, table: &str) -> Result<String> {
        stdout(
            self.exec_on_node(node, &["iptables-save", "-t", table])
                .await?,
        )
    }

    /// `nft list ruleset` on a node.
    pub async fn nft_ruleset(&self, node: &str) -> Result<String> {
        stdout(self.exec_on_node(node, &["nft", "list", "ruleset"]).await?)
    }

    /// HTTP GET `http://ip:port/path` from inside a pod.
    pub async fn http_get_from_pod(
        &self,
        namespace: &str,
        name: &str,
        ip: Ipv4Addr,
        port: u16,
        path: &str,
    ) -> Result<request::HttpResponse> {
        request::http_get(
            self.pod(namespace, name)?.netns,
            SocketAddr::from((ip, port)),
            path.to_string(),
        )
        .await
    }

    /// HTTP GET from a node's network namespace.
    pub async fn http_get_from_node(
        &self,
        node: &str,
        ip: Ipv4Addr,
        port: u16,
        path: &str,
    ) -> Result<request::HttpResponse> {
        request::http_get(
            self.node_netns(node)?,
            SocketAddr::from((ip, port)),
            path.to_string(),
        )
        .await
    }

    /// Sends one UDP datagram from inside a pod and returns the reply.
    pub async fn udp_from_pod(
        &self,
        namespace: &str,
        name: &str,
        ip: Ipv4Addr,
        port: u16,
        payload: &str,
    ) -> Result<String> {
        request::udp_exchange(
            self.pod(namespace, name)?.netns,
            SocketAddr::from((ip, port)),
            payload.to_string(),
        )
        .await
    }

    async fn wait_default_service_account(&self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        wait_for(
            "the `default` ServiceAccount (kube-controller-manager)",
            Duration::from_secs(60),
            || {
                let api = api.clone();
                async move { api.get_opt("default").await.ok().flatten() }
            },
        )
        .await?;
        Ok(())
    }

    async fn wait_kube_proxy(&self) -> Result<()> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), "kube-system");
        let want = self.plan.nodes.len() as i32;
        wait_for(
            &format!("kube-proxy ready on {want} nodes"),
            Duration::from_secs(90),
            || {
                let api = api.clone();
                async move {
                    let ds = api.get_opt("kube-proxy").await.ok().flatten()?;
                    let s = ds.status?;
                    (s.number_ready == want && s.desired_number_scheduled == want).then_some(())
                }
            },
        )
        .await
    }

    /// Tears everything down now (also done on drop).
    pub fn teardown(mut self) {
        self.teardown_inner();
    }

    fn teardown_inner(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for t in &self.runtimes {
            t.abort();
        }
        self.outside.take();
        self.forwarder.take();
        self.control_plane.take();
        let forbidden = self.record_requests();
        crate::teardown::keep_logs(&self.plan.name, &self.state);
        teardown_by_name(&self.plan.name, &self.state);
        if !forbidden.is_empty() && !std::thread::panicking() {
            panic!(
                "RBAC refused {} request(s) of switchyard's identities (config/rbac):\n{}",
                forbidden.len(),
                forbidden.join("\n")
            );
        }
    }

    /// With `rbac_audit`: records the switchyard identities' requests from
    /// the audit log (the API server has stopped: the log is complete) and
    /// returns the refused ones.
    fn record_requests(&self) -> Vec<String> {
        if !self.rbac_audit {
            return Vec::new();
        }
        match crate::audit::records::record(&self.state, &self.plan.name) {
            Ok(reqs) => reqs
                .iter()
                .filter(|r| r.forbidden())
                .map(ToString::to_string)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "recording the audit log");
                Vec::new()
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown_inner();
    }
}

/// Tears down a half-started cluster if `start` fails.
struct Partial {
    name: String,
    state: PathBuf,
    armed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            teardown_by_name(&self.name, &self.state);
        }
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

async fn exec(place: &Placement, argv: &[&str]) -> Result<std::process::Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Config("empty command".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null());
    sys::place(&mut cmd, place)?;
    cmd.output().await.map_err(Error::io("running", *program))
}

fn stdout(out: std::process::Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: "command in namespace".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

//! switchyard-e2e: a local real Kubernetes cluster without Docker, and the
//! end-to-end tests that run on it.
//!
//! What it owns and how data flows:
//!
//! - [`binaries`]: `e2e/hack/build-k8s.sh` builds etcd, kube-apiserver,
//!   kube-controller-manager, kube-scheduler, kube-proxy and kubectl from the
//!   committed `e2e/tools` Go module into a per-version cache; this crate
//!   only locates them.
//! - [`topology`] (pure) plans names and addresses; [`network`] creates the
//!   control-plane namespace (underlay bridge, API server address), one
//!   namespace per node and one per pod; [`sys`] wraps netns, cgroups and
//!   process placement.
//! - [`pki`] makes certificates; [`control_plane`] runs the upstream
//!   programs inside the control-plane namespace; [`forward`] exposes the
//!   API server on `127.0.0.1` in the root namespace.
//! - [`addons`] registers Node objects and installs kube-proxy as kubeadm
//!   does; [`runtime`] is the kubelet stand-in that turns the pods bound to
//!   each node into processes (image → program table in
//!   [`runtime::images`]) and reports their status.
//! - [`outside`]: the outside of the cluster (external router and client
//!   namespaces, the lab's LoadBalancer implementation, external load and
//!   long-lived flows as plain processes); [`ingress`] deploys the
//!   north-south workload it sends to.
//! - [`teardown`] removes a cluster by name (also a killed run's).
//! - [`scenario`]: building blocks of the migration scenarios (switchyard
//!   installed from `config/`, workload, load, `MigrationPlan`).
//!   The control-plane benchmarks built on this lab (operator at scale,
//!   kube-proxy's own sync) are the `switchyard-scale-bench` crate in
//!   `e2e/scale`.
//! - [`cluster::Cluster`] ties it together for tests and the
//!   `switchyard-lab` command; [`request`] sends HTTP/UDP from inside pods
//!   and nodes; [`identity`] acts as a pod's ServiceAccount with the token
//!   the runtime minted for it.
//! - [`prometheus`]: a real Prometheus server beside the control plane,
//!   scraping the switchyard pods with the shipped scrape job and rules.
//! - [`relay`]: the real hubble-relay beside the control plane,
//!   aggregating the agents' Observer APIs through the operator's Peer API.
//! - [`browser`]: a headless Chromium driven over the DevTools protocol,
//!   reaching the cluster through `kubectl proxy`.
//!
//! All traffic stays on loopback or inside namespaces the lab creates.

pub mod addons;
pub mod audit;
pub mod binaries;
pub mod browser;
pub mod cluster;
pub mod control_plane;
pub mod error;
pub mod forward;
pub mod identity;
pub mod ingress;
pub mod load;
pub mod network;
pub mod node_requests;
pub mod outside;
pub mod pki;
pub mod prometheus;
pub mod relay;
pub mod request;
pub mod runtime;
pub mod scenario;
mod startup;
pub mod sys;
pub mod teardown;
pub mod topology;

pub use addons::ProxyMode;

/// Whether the running test must skip: the lab cluster needs root (it
/// creates network namespaces, cgroups and BPF programs). Prints why.
pub fn skip_unless_root() -> bool {
    switchyard_testkit::skip_unless_root("the lab cluster: network namespaces, cgroups, BPF")
}
pub use cluster::{Cluster, ClusterConfig, wait_for};
pub use error::{Error, Result};
pub use request::HttpResponse;
pub use runtime::images::{ImageProgram, ImageTable};

/// Logs to stderr (stdout stays for a tool's results) with `RUST_LOG`, else
/// `default`, as the filter.
pub fn init_stderr_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs `work` until it ends or the process gets SIGINT or SIGTERM; then
/// `work` is dropped, and with it any [`Cluster`] it holds (which tears the
/// cluster down), and `None` is returned. For long tools (`make bench-*`):
/// an interrupted run leaves no lab cluster (and no kube-proxy) behind.
pub async fn until_interrupted<F: std::future::Future>(work: F) -> Option<F::Output> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return Some(work.await);
    };
    tokio::select! {
        out = work => Some(out),
        _ = int.recv() => None,
        _ = term.recv() => None,
    }
}

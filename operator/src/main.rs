//! `switchyard-operator`: runs the MigrationPlan controller with leader
//! election, metrics and health endpoints, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_operator::controller::{self, Settings, leader::LeaderLease};
use switchyard_operator::metrics::Metrics;
use tokio::sync::watch;
use tracing::info;

/// The switchyard operator: migrates nodes off kube-proxy as MigrationPlans say.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Namespace of the operator (kube-proxy backups and the leader Lease live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "switchyard-system")]
    namespace: String,
    /// Namespace of kube-proxy's DaemonSet and pods (watched for changes).
    #[arg(long, default_value = "kube-system")]
    kube_proxy_namespace: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of Hubble's Peer API (gRPC, plaintext) for hubble-relay: the
    /// nodes whose agents serve their Observer API beyond loopback. Empty
    /// disables it. Served by the leader.
    #[arg(long, default_value = "0.0.0.0:4244")]
    peer_addr: String,
    /// Name of the leader-election Lease; empty disables leader election.
    #[arg(long, default_value = "switchyard-operator")]
    leader_lease: String,
    /// Identity in the Lease (defaults to the pod name, else the hostname and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Log format: `text`, or `json` (one object a line) for log pipelines.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "text")]
    log_format: switchyard_daemon::LogFormat,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    switchyard_daemon::init_logging(args.log_format);
    switchyard_daemon::exit_code("switchyard-operator", run(args).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let peer_addr = match args.peer_addr.as_str() {
        "" => None,
        a => Some(
            a.parse()
                .map_err(|e| anyhow::anyhow!("--peer-addr {a:?}: {e}"))?,
        ),
    };
    let client = kube_client().await?;
    controller::check_crds(&client).await?;
    let metrics = Arc::new(Metrics::default());
    let server = tokio::spawn(switchyard_daemon::serve(args.metrics_addr, metrics.clone()));

    let stop_rx = stop_on_signal();
    let lease = leader_lease(&args, &client);
    if let Some(lease) = &lease {
        tokio::select! {
            r = lease.acquire() => r?,
            _ = stopped(&stop_rx) => return Ok(()),
        }
    }

    let settings = Settings {
        namespace: args.namespace,
        kube_proxy_namespace: args.kube_proxy_namespace,
        peer_addr,
    };
    let stop = stopped(&stop_rx);
    let result = match &lease {
        Some(lease) => tokio::select! {
            r = controller::run(client, settings, metrics, stop) => r.map_err(anyhow::Error::from),
            e = lease.hold() => Err(e.into()),
        },
        None => controller::run(client, settings, metrics, stop)
            .await
            .map_err(anyhow::Error::from),
    };
    if let Some(lease) = &lease {
        lease.release().await;
    }
    server.abort();
    result
}

/// The cluster's client, with bounded reads and writes as a safety net: a
/// connection that stops answering fails and is replaced instead of hanging the
/// controller. (Connections kube-proxy had DNATed survive its cleanup: see
/// switchyard_cleanup::nft::NAT_KEEPALIVE_TABLE.) Watches are closed by the server
/// before the read timeout (see the controller's watcher config).
async fn kube_client() -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    config.read_timeout = Some(Duration::from_secs(60));
    config.write_timeout = Some(Duration::from_secs(30));
    Ok(kube::Client::try_from(config)?)
}

/// A flag that turns true on SIGTERM or Ctrl-C.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        switchyard_daemon::shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Completes once `stop` is true.
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The leader lease, unless `--leader-lease` is empty; the identity defaults to
/// host name and process id.
fn leader_lease(args: &Args, client: &kube::Client) -> Option<LeaderLease> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    (!args.leader_lease.is_empty()).then(|| {
        LeaderLease::new(
            client.clone(),
            &args.namespace,
            &args.leader_lease,
            &identity,
            Duration::from_secs(args.lease_seconds),
        )
    })
}

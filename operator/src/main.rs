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
    /// Name of the leader-election Lease; empty disables leader election.
    #[arg(long, default_value = "switchyard-operator")]
    leader_lease: String,
    /// Identity in the Lease (defaults to the pod name, else the hostname and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    switchyard_daemon::init_logging();
    switchyard_daemon::exit_code("switchyard-operator", run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Bounded reads and writes, a safety net: a connection that stops
    // answering fails and is replaced instead of hanging the controller.
    // (Connections kube-proxy had DNATed survive its cleanup: see
    // switchyard_cleanup::nft::NAT_KEEPALIVE_TABLE.) Watches are closed by the
    // server before the read timeout (see the controller's watcher config).
    let mut config = kube::Config::infer().await?;
    config.read_timeout = Some(Duration::from_secs(60));
    config.write_timeout = Some(Duration::from_secs(30));
    let client = kube::Client::try_from(config)?;
    controller::check_crds(&client).await?;
    let metrics = Arc::new(Metrics::default());
    let server = tokio::spawn(switchyard_daemon::serve(args.metrics_addr, metrics.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        switchyard_daemon::shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease = (!args.leader_lease.is_empty()).then(|| {
        LeaderLease::new(
            client.clone(),
            &args.namespace,
            &args.leader_lease,
            &identity,
            Duration::from_secs(args.lease_seconds),
        )
    });
    if let Some(lease) = &lease {
        tokio::select! {
            r = lease.acquire() => r?,
            _ = stopped => return Ok(()),
        }
    }

    let settings = Settings {
        namespace: args.namespace,
        kube_proxy_namespace: args.kube_proxy_namespace,
    };
    let mut rx = stop_rx.clone();
    let stop = async move {
        let _ = rx.wait_for(|s| *s).await;
    };
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

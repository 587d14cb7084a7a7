//! `switchyard-agent`: the per-node agent binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_agent::agent::{self, AgentConfig};
use switchyard_agent::api_server::Learned;
use switchyard_agent::error::Error;
use switchyard_agent::flows::reader::FlowHub;
use switchyard_agent::observer::FlowObserver;
use switchyard_agent::server::Shared;
use tokio::sync::watch;
use tracing::info;

/// The switchyard node agent: serves Services through the eBPF datapath as
/// its node's NodeDatapath says.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// API server address (`host:port`) to dial directly, e.g. a node-local
    /// proxy; default: the endpoints in --api-endpoints-file, then the
    /// in-cluster environment (the ClusterIP, while kube-proxy serves it).
    #[arg(long, env = "SWITCHYARD_API_SERVER")]
    api_server: Option<String>,
    /// The API server's endpoints (`host:port` one a line), the ConfigMap
    /// switchyard-api-endpoints the operator keeps current, mounted.
    #[arg(long, default_value = switchyard_agent::api_server::ENDPOINTS_FILE)]
    api_endpoints_file: PathBuf,
    /// cgroup v2 directory the socket programs attach to.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// bpffs directory for the pins.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9964")]
    metrics_addr: SocketAddr,
    /// Interfaces where NodePort/ExternalIP/LoadBalancer traffic arrives
    /// (comma-separated); default: those holding the Node's addresses.
    #[arg(long, env = "SWITCHYARD_INGRESS_INTERFACES", value_delimiter = ',')]
    ingress_interfaces: Option<Vec<String>>,
    /// Seconds between heartbeats: renewals of the node's Lease (the status
    /// is written only when it changes).
    #[arg(long, default_value_t = 10)]
    heartbeat_seconds: u64,
    /// Whether the socket programs report each translated or refused
    /// connection as a flow event (`--flow-events=false`: they do not;
    /// their counters are the same either way).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    flow_events: bool,
    /// Flow events each CPU may emit a second; those over it are counted
    /// (`switchyard_datapath_flow_events_lost_total{where="rate_limit"}`),
    /// not reported. 0: no limit.
    #[arg(long, default_value_t = switchyard_agent::flows::DEFAULT_EVENTS_PER_CPU)]
    flow_events_per_cpu: u32,
    /// Flows the agent keeps in memory (the oldest go first).
    #[arg(long, default_value_t = switchyard_agent::flows::DEFAULT_MAX_FLOWS)]
    flows_max: usize,
    /// Address of the Observer gRPC API (Hubble's) over the flows;
    /// plaintext, so loopback unless trusted clients need it from afar
    /// (hubble-relay: e.g. `0.0.0.0:4244`; the port is then reported in the
    /// NodeDatapath status for the operator's Peer API).
    #[arg(long, env = "SWITCHYARD_OBSERVER_ADDR", default_value = switchyard_agent::observer::DEFAULT_ADDR)]
    observer_addr: SocketAddr,
    /// Log format: `text`, or `json` (one object a line) for log pipelines.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", default_value = "text")]
    log_format: switchyard_daemon::LogFormat,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    switchyard_daemon::init_logging(args.log_format);
    switchyard_daemon::exit_code("switchyard-agent", run(args).await)
}

async fn client(
    api_server: Option<&str>,
    endpoints_file: &Path,
    learned: Learned,
) -> Result<kube::Client, Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    // A dead connection fails within a minute instead of hanging the agent.
    config.read_timeout = Some(Duration::from_secs(60));
    config.write_timeout = Some(Duration::from_secs(30));
    config.connect_timeout = Some(Duration::from_secs(5));
    switchyard_agent::api_server::connect(&config, api_server, endpoints_file, learned, 6).await
}

async fn run(args: Args) -> Result<(), Error> {
    let learned = Learned::default();
    let client = client(
        args.api_server.as_deref(),
        &args.api_endpoints_file,
        learned.clone(),
    )
    .await?;
    let flows = Arc::new(
        FlowHub::new(args.flows_max, args.flow_events).with_rate_limit(args.flow_events_per_cpu),
    );
    flows.pods(|p| p.set_root(args.cgroup_root.clone()));
    let pods = tokio::spawn(switchyard_agent::flows::pods::watch(
        client.clone(),
        args.node.clone(),
        flows.clone(),
    ));
    let shared = Arc::new(Shared::with_flows(flows.clone(), &args.node));
    let server = tokio::spawn(switchyard_daemon::serve(args.metrics_addr, shared.clone()));
    let observer = FlowObserver::new(flows.clone(), &args.node);
    let observer = tokio::spawn(switchyard_agent::observer::serve(
        args.observer_addr,
        observer,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = shared.clone();
    tokio::spawn(async move {
        switchyard_daemon::shutdown_signal().await;
        info!("shutting down");
        stopping
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = stop_tx.send(true);
    });
    let cfg = AgentConfig {
        bpffs_dir: args.bpffs.join("switchyard").join(&args.node),
        cgroup: args.cgroup_root,
        node: args.node,
        heartbeat: Duration::from_secs(args.heartbeat_seconds.max(1)),
        debounce: Duration::from_millis(50),
        ingress_interfaces: args.ingress_interfaces,
        flows: Some(flows),
        api_endpoints: Some(learned),
        observer_port: switchyard_agent::observer::reachable_port(args.observer_addr),
    };
    let result = agent::run(client, cfg, shared, stop_rx).await;
    server.abort();
    observer.abort();
    pods.abort();
    result
}

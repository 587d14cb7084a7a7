//! The real hubble-relay (built from Cilium's Go module with the hubble
//! CLI) in the lab, as a cluster would run it: beside the control plane,
//! asking the operator's Peer API for the nodes and dialling each node's
//! Observer API, plaintext both ways (`--disable-client-tls`,
//! `--disable-server-tls`). Reached from the root namespace through a
//! forwarder, as a person reaches a relay with `kubectl port-forward`.

use std::net::{Ipv4Addr, SocketAddr};

use crate::cluster::Cluster;
use crate::control_plane::Process;
use crate::error::Result;
use crate::forward::{self, Forwarder};

/// Where the relay listens, inside the control-plane namespace.
const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4245);
/// Its gRPC health service, beside it.
const HEALTH: &str = "127.0.0.1:4246";

/// A running hubble-relay; killed (and its forwarder stopped) when dropped.
#[derive(Debug)]
pub struct HubbleRelay {
    process: Process,
    forwarder: Forwarder,
}

impl HubbleRelay {
    /// Starts the relay for `cluster` with the Peer API at `peer_service`
    /// (`host:port`); returns once its forwarder listens.
    pub async fn start(cluster: &Cluster, peer_service: &str) -> Result<Self> {
        let program = crate::binaries::build_hubble()?.join("hubble-relay");
        let args = [
            "serve".to_string(),
            format!("--peer-service={peer_service}"),
            format!("--listen-address={LISTEN}"),
            format!("--health-listen-address={HEALTH}"),
            "--disable-client-tls".into(),
            "--disable-server-tls".into(),
            "--gops=false".into(),
        ];
        let placement = cluster.control_plane_placement("hubble-relay")?;
        let log = cluster.state_dir().join("logs/hubble-relay.log");
        let process = Process::spawn(&program, &args, &placement, log)?;
        let here = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let forwarder = forward::start(here, &cluster.control_plane_netns(), LISTEN).await?;
        Ok(Self { process, forwarder })
    }

    /// The relay's address for a client in the root namespace
    /// (`hubble --server`).
    pub fn server(&self) -> String {
        self.forwarder.local.to_string()
    }

    /// Fails, naming its log, if the relay has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }
}

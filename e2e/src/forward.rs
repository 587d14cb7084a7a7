//! A TCP forwarder from `127.0.0.1:<port>` in the root namespace to an
//! address inside a lab namespace. Connections to the target are made by a
//! thread that joined the target namespace (a socket keeps the namespace it
//! was created in), then bytes are copied both ways by tokio.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

type ConnectReply = oneshot::Sender<std::io::Result<std::net::TcpStream>>;

/// A running forwarder; stops when dropped.
#[derive(Debug)]
pub struct Forwarder {
    /// The address it listens on.
    pub local: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts forwarding `listen` (port 0 picks a free port) to `target` inside
/// the network namespace at `netns`.
pub async fn start(listen: SocketAddr, netns: &Path, target: SocketAddr) -> Result<Forwarder> {
    let tx = connector(netns, target)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(Error::io("binding forwarder", netns))?;
    serve(listener, tx, netns)
}

/// Starts forwarding `listen`, bound inside the namespace at
/// `listen_netns`, to `target` inside `netns`: a second address for a
/// server, which dies with all its connections when the forwarder is
/// dropped.
pub async fn start_in(
    listen_netns: &Path,
    listen: SocketAddr,
    netns: &Path,
    target: SocketAddr,
) -> Result<Forwarder> {
    let tx = connector(netns, target)?;
    let bound = crate::sys::in_netns(listen_netns, move || {
        let l = std::net::TcpListener::bind(listen)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })?
    .map_err(Error::io("binding forwarder", listen_netns))?;
    let listener =
        TcpListener::from_std(bound).map_err(Error::io("binding forwarder", listen_netns))?;
    serve(listener, tx, listen_netns)
}

/// A thread inside `netns` that connects to `target` on request.
fn connector(netns: &Path, target: SocketAddr) -> Result<mpsc::Sender<ConnectReply>> {
    let file = std::fs::File::open(netns).map_err(Error::io("opening netns", netns))?;
    let (tx, rx) = mpsc::channel::<ConnectReply>();
    std::thread::Builder::new()
        .name("lab-connector".into())
        .spawn(move || {
            if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                tracing::error!(error = %e, "forwarder cannot enter the namespace");
                return;
            }
            // Ends when every sender (the accept loop) is gone.
            while let Ok(reply) = rx.recv() {
                let _ = reply.send(std::net::TcpStream::connect_timeout(
                    &target,
                    Duration::from_secs(5),
                ));
            }
        })
        .map_err(Error::io("spawning connector thread", netns))?;
    Ok(tx)
}

/// Accepts on `listener` and copies each connection to one the connector
/// makes. The connections live in the accept task's set: dropping the
/// forwarder closes them all.
fn serve(listener: TcpListener, tx: mpsc::Sender<ConnectReply>, at: &Path) -> Result<Forwarder> {
    let local = listener
        .local_addr()
        .map_err(Error::io("forwarder address", at))?;
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            while connections.try_join_next().is_some() {}
            connections.spawn(forward_one(inbound, tx.clone()));
        }
    });
    Ok(Forwarder {
        local,
        accepted,
        task,
    })
}

async fn forward_one(mut inbound: tokio::net::TcpStream, tx: mpsc::Sender<ConnectReply>) {
    let (reply, answer) = oneshot::channel();
    if tx.send(reply).is_err() {
        return;
    }
    let outbound = match answer.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "forwarder connect failed");
            return;
        }
        Err(_) => return,
    };
    if outbound.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut outbound) = tokio::net::TcpStream::from_std(outbound) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

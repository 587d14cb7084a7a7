//! A TCP forwarder from `127.0.0.1:<port>` in the root namespace to an
//! address inside a lab namespace. Connections to the target are made by a
//! thread that joined the target namespace (a socket keeps the namespace it
//! was created in), then bytes are copied both ways by tokio.

use std::net::SocketAddr;
use std::path::Path;
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
    /// The root-namespace address it listens on.
    pub local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts forwarding `listen` (port 0 picks a free port) to `target` inside
/// the network namespace at `netns`.
pub async fn start(listen: SocketAddr, netns: &Path, target: SocketAddr) -> Result<Forwarder> {
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
    let listener = TcpListener::bind(listen)
        .await
        .map_err(Error::io("binding forwarder", netns))?;
    let local = listener
        .local_addr()
        .map_err(Error::io("forwarder address", netns))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
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
            });
        }
    });
    Ok(Forwarder { local, task })
}

//! The program behind the lab's web server images. Serves every `--tcp`
//! port with `HTTP/1.1 200` and a body naming the pod (its hostname, which
//! the lab runtime sets to the pod name), and echoes every `--udp` datagram
//! prefixed with the pod name: `<pod>: <payload>`.

use std::net::SocketAddr;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Debug, Parser)]
struct Args {
    /// TCP ports to serve HTTP on.
    #[arg(long = "tcp")]
    tcp: Vec<u16>,
    /// UDP ports to echo on.
    #[arg(long = "udp")]
    udp: Vec<u16>,
}

fn pod_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let name = pod_name();
    let mut tasks = Vec::new();
    for port in args.tcp {
        let l = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { continue };
                let name = name.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut got = Vec::new();
                    // Read the request head (or whatever arrives before EOF).
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() > 65536 {
                            break;
                        }
                    }
                    let body = format!("{name}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        }));
    }
    for port in args.udp {
        let sock = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 65536];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let reply = format!("{name}: {}", String::from_utf8_lossy(&buf[..n]));
                let _ = sock.send_to(reply.as_bytes(), peer).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

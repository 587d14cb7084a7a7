//! The program behind the lab's web server images. Serves every `--tcp`
//! port with `HTTP/1.1 200` and a body naming the pod (its hostname, which
//! the lab runtime sets to the pod name), and echoes every `--udp` datagram
//! prefixed with the pod name: `<pod>: <payload>`.
//!
//! Every response carries `X-Client-Address: <ip>:<port>`, the client's
//! address as the server saw it; `GET /source` answers with that address
//! as the body instead (does the datapath preserve the client's IP?).
//! Connections are kept alive as HTTP/1.1 wants (many requests on one
//! connection) unless the client asks to close or speaks HTTP/1.0 without
//! keep-alive.

use std::net::SocketAddr;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

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

/// What a request head asks for: the path, and whether the connection
/// stays open after the response.
fn parse_head(head: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let path = parts.nth(1).unwrap_or("/").to_string();
    let http11 = parts.next() == Some("http/1.1");
    let header = |v: &str| {
        text.lines()
            .skip(1)
            .any(|l| l.replace(' ', "") == format!("connection:{v}"))
    };
    let keep = if http11 {
        !header("close")
    } else {
        header("keep-alive")
    };
    (path, keep)
}

fn response(name: &str, peer: SocketAddr, path: &str, keep: bool) -> String {
    let body = if path.split('?').next() == Some("/source") {
        format!("{peer}\n")
    } else {
        format!("{name}\n")
    };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Client-Address: {peer}\r\nConnection: {}\r\n\r\n{body}",
        body.len(),
        if keep { "keep-alive" } else { "close" }
    )
}

/// Serves one connection: a response per request head; the first request
/// is answered even if the client half-closes before its head is complete
/// (a bare TCP probe).
async fn serve(mut s: TcpStream, peer: SocketAddr, name: String) {
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let mut first = true;
    loop {
        let mut eof = false;
        let end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(i + 4);
            }
            if got.len() > 65536 {
                break None;
            }
            match s.read(&mut buf).await {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => {
                    eof = true;
                    break None;
                }
            }
        };
        if end.is_none() && !first {
            return;
        }
        let head: Vec<u8> = got.drain(..end.unwrap_or(got.len())).collect();
        let (path, keep) = parse_head(&head);
        let keep = keep && !eof && end.is_some();
        if s.write_all(response(&name, peer, &path, keep).as_bytes())
            .await
            .is_err()
            || !keep
        {
            let _ = s.shutdown().await;
            return;
        }
        first = false;
    }
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
                let Ok((s, peer)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(serve(s, peer, name.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_http11_alive_unless_asked_to_close() {
        assert_eq!(
            parse_head(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("/x".into(), true)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
            ("/".into(), false)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"),
            ("/".into(), false)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"),
            ("/".into(), true)
        );
        assert_eq!(parse_head(b""), ("/".into(), false));
    }

    #[test]
    fn source_answers_with_the_peer_address() {
        let peer = SocketAddr::from(([172, 30, 0, 10], 40000));
        let r = response("web-1", peer, "/source?x=1", false);
        assert!(r.ends_with("\r\n\r\n172.30.0.10:40000\n"), "{r}");
        assert!(r.contains("X-Client-Address: 172.30.0.10:40000\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        let r = response("web-1", peer, "/", true);
        assert!(r.ends_with("\r\n\r\nweb-1\n"), "{r}");
    }
}

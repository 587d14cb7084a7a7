//! Connectivity probes: connect to Services through the node's own datapath
//! (the agent runs in the node's cgroup, so its sockets are translated like
//! any pod's) and report results with latencies; and peer probes: other
//! nodes' addresses dialled directly (their NodePorts and health port), as
//! a client outside them does, for the operator's Verify of those nodes.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use switchyard_api::{PeerProbeRequest, ProbeOutcome, ProbeProtocol, ProbeResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// One probe, resolved to an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddrV4,
    pub protocol: ProbeProtocol,
    /// TCP: send `GET <path>` and require a 2xx or 3xx status.
    pub http_path: Option<String>,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// Pause after a failed attempt (at most the attempt timeout): a port
/// being taken over (the health port kube-proxy just released) gets a
/// moment, instead of every attempt failing within microseconds.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Runs `target` until `needed` consecutive attempts succeed, giving up
/// after `needed * 3` attempts (at least 3).
pub async fn run(target: &Target, needed: u32, timeout: Duration) -> ProbeOutcome {
    let max_attempts = (needed * 3).max(3);
    let mut out = ProbeOutcome {
        name: target.name.clone(),
        target: format!("{}/{:?}", target.addr, target.protocol),
        ..ProbeOutcome::default()
    };
    let mut latencies = Vec::new();
    let mut streak = 0;
    for _ in 0..max_attempts {
        let start = Instant::now();
        let result = tokio::time::timeout(timeout, attempt(target))
            .await
            .unwrap_or(Err(AttemptError::Timeout(timeout)));
        match result {
            Ok(()) => {
                latencies.push(start.elapsed().as_micros() as u64);
                out.successes += 1;
                streak += 1;
                if streak >= needed {
                    out.passed = true;
                    break;
                }
            }
            Err(e) => {
                out.failures += 1;
                streak = 0;
                out.last_error = Some(e.to_string());
                tokio::time::sleep(RETRY_PAUSE.min(timeout)).await;
            }
        }
    }
    latencies.sort_unstable();
    out.latency_p50_micros = latencies.get(latencies.len() / 2).copied().unwrap_or(0);
    out.latency_max_micros = latencies.last().copied().unwrap_or(0);
    out
}

/// Runs every target of a peer probe request at once; each outcome names
/// the node it probed. An address that does not parse fails its probe.
pub async fn run_peer(req: PeerProbeRequest) -> ProbeResult {
    let timeout = Duration::from_secs(u64::from(req.timeout_seconds));
    let needed = req.consecutive_successes;
    let runs = req.targets.iter().map(|t| async move {
        let mut out = match t.address.parse() {
            Ok(ip) => {
                let target = Target {
                    name: t.name.clone(),
                    addr: SocketAddrV4::new(ip, t.port as u16),
                    protocol: t.protocol,
                    http_path: t.http_path.clone(),
                };
                run(&target, needed, timeout).await
            }
            Err(e) => ProbeOutcome {
                name: t.name.clone(),
                target: format!("{}:{}/{:?}", t.address, t.port, t.protocol),
                failures: 1,
                last_error: Some(format!("address {:?}: {e}", t.address)),
                ..ProbeOutcome::default()
            },
        };
        out.node = Some(t.node.clone());
        out
    });
    let results = futures::future::join_all(runs).await;
    ProbeResult {
        observed_generation: req.generation,
        passed: results.iter().all(|r| r.passed),
        results,
        completed_at: Some(Time(Timestamp::now())),
    }
}

async fn attempt(t: &Target) -> Result<(), AttemptError> {
    match (t.protocol, &t.http_path) {
        (ProbeProtocol::TCP, None) => {
            TcpStream::connect(t.addr).await?;
            Ok(())
        }
        (ProbeProtocol::TCP, Some(path)) => http_get(t.addr, path).await,
        (ProbeProtocol::UDP, _) if t.addr.port() == 53 => dns(t.addr).await,
        (ProbeProtocol::UDP, _) => udp_echo(t.addr).await,
    }
}

async fn http_get(addr: SocketAddrV4, path: &str) -> Result<(), AttemptError> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: switchyard-probe\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let code = parse_status(&buf[..n])?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(AttemptError::HttpStatus(code))
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Result<u16, AttemptError> {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(AttemptError::Malformed(format!(
            "not an HTTP status line: {text:?}"
        ))),
    }
}

async fn udp_echo(addr: SocketAddrV4) -> Result<(), AttemptError> {
    let sock = UdpSocket::bind("0.0.0.0:0").await?;
    sock.connect(addr).await?;
    sock.send(b"switchyard-probe").await?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).await?;
    if n == 0 {
        return Err(AttemptError::Malformed("empty UDP reply".into()));
    }
    Ok(())
}

/// A DNS A query for `kubernetes.default.svc.cluster.local` with `id`.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    for label in ["kubernetes", "default", "svc", "cluster", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

async fn dns(addr: SocketAddrV4) -> Result<(), AttemptError> {
    let id = (std::process::id() as u16) ^ 0x5359;
    let sock = UdpSocket::bind("0.0.0.0:0").await?;
    sock.connect(addr).await?;
    sock.send(&dns_query(id)).await?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).await?;
    // Any answer to our query (even NXDOMAIN) proves the path works.
    if n >= 4 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 {
        Ok(())
    } else {
        Err(AttemptError::Malformed(
            "not a DNS response to our query".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n").unwrap(), 204);
        assert_eq!(parse_status(b"HTTP/1.0 503 x").unwrap(), 503);
        assert!(parse_status(b"SSH-2.0-OpenSSH").is_err());
    }

    #[test]
    fn dns_query_shape() {
        let q = dns_query(0xabcd);
        assert_eq!(&q[..2], &[0xab, 0xcd]);
        assert_eq!(q.len(), 12 + 1 + 10 + 1 + 7 + 1 + 3 + 1 + 7 + 1 + 5 + 1 + 4);
        assert_eq!(&q[q.len() - 4..], &[0, 1, 0, 1]);
    }

    async fn local_http(status: &'static str) -> SocketAddrV4 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_needs_consecutive_successes_and_a_good_status() {
        let ok = Target {
            name: "ok".into(),
            addr: local_http("200 OK").await,
            protocol: ProbeProtocol::TCP,
            http_path: Some("/".into()),
        };
        let r = run(&ok, 3, Duration::from_secs(2)).await;
        assert!(r.passed, "{r:?}");
        assert_eq!((r.successes, r.failures), (3, 0));
        assert!(r.latency_max_micros >= r.latency_p50_micros && r.latency_p50_micros > 0);

        let bad = Target {
            name: "bad".into(),
            addr: local_http("500 Internal Server Error").await,
            ..ok
        };
        let r = run(&bad, 2, Duration::from_secs(2)).await;
        assert!(!r.passed);
        assert_eq!((r.successes, r.failures), (0, 6));
        assert_eq!(r.last_error.as_deref(), Some("HTTP status 500"));
    }

    #[tokio::test]
    async fn refused_tcp_and_silent_udp_fail() {
        // A port nobody listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Target {
            name: "closed".into(),
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            protocol: ProbeProtocol::TCP,
            http_path: None,
        };
        let r = run(&t, 1, Duration::from_secs(1)).await;
        assert!(!r.passed && r.failures == 3, "{r:?}");
        assert!(r.last_error.unwrap().contains("refused"));

        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = silent.local_addr().unwrap() else {
            unreachable!()
        };
        let t = Target {
            name: "udp".into(),
            addr,
            protocol: ProbeProtocol::UDP,
            http_path: None,
        };
        let r = run(&t, 1, Duration::from_millis(100)).await;
        assert!(!r.passed);
        assert!(r.last_error.unwrap().contains("timed out"));
    }

    #[tokio::test]
    async fn peer_probes_name_their_node_and_fail_on_their_own() {
        let up = local_http("200 OK").await;
        let down = local_http("503 Service Unavailable").await;
        let probe = |node: &str, addr: &SocketAddrV4| switchyard_api::AddressProbe {
            name: "healthz".into(),
            node: node.into(),
            address: addr.ip().to_string(),
            port: i32::from(addr.port()),
            protocol: ProbeProtocol::TCP,
            http_path: Some("/healthz".into()),
        };
        let mut bad_address = probe("c", &up);
        bad_address.address = "node-c".into();
        let r = run_peer(PeerProbeRequest {
            generation: 7,
            targets: vec![probe("a", &up), probe("b", &down), bad_address],
            timeout_seconds: 1,
            consecutive_successes: 2,
        })
        .await;
        assert_eq!(r.observed_generation, 7);
        assert!(!r.passed);
        let by_node: Vec<(Option<&str>, bool)> = r
            .results
            .iter()
            .map(|o| (o.node.as_deref(), o.passed))
            .collect();
        assert_eq!(
            by_node,
            [(Some("a"), true), (Some("b"), false), (Some("c"), false)]
        );
        assert_eq!(r.results[1].last_error.as_deref(), Some("HTTP status 503"));
        assert!(
            r.results[2]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("node-c")
        );
    }

    #[tokio::test]
    async fn udp_echo_passes() {
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = echo.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let t = Target {
            name: "udp".into(),
            addr,
            protocol: ProbeProtocol::UDP,
            http_path: None,
        };
        let r = run(&t, 2, Duration::from_secs(1)).await;
        assert!(r.passed, "{r:?}");
    }
}

//! `switchyard-flows`: long-lived flows for the north-south scenarios.
//!
//! Each `--tcp` target gets ONE connection carrying an HTTP/1.1 request
//! (keep-alive) every `--interval-ms`; each `--udp` target gets one socket
//! (one source port) sending a datagram every `--interval-ms`. Every answer
//! names the backend pod that sent it. A message without an answer within
//! `--timeout-ms` is lost; a broken TCP connection is reopened (and
//! counted) so the report also shows what came after. Totals are written
//! as JSON to `--out` (atomically, every 200 ms) until the file
//! `<out>.stop` appears or SIGTERM arrives, then once more, final.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Parser)]
struct Args {
    /// TCP targets (`IP:PORT`, HTTP).
    #[arg(long = "tcp")]
    tcp: Vec<SocketAddr>,
    /// UDP targets (`IP:PORT`, echo).
    #[arg(long = "udp")]
    udp: Vec<SocketAddr>,
    /// Time between two messages of a flow, milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// A message not answered within this time is lost, milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Where to write the JSON totals.
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(Debug, Default, Serialize, Clone)]
struct Flow {
    target: String,
    sent: u64,
    answered: u64,
    lost: u64,
    /// Connections (TCP) or sockets (UDP) opened: 1 while the flow is the
    /// one it started as.
    connections: u64,
    /// Every backend that answered, in order of its first answer.
    backends: Vec<String>,
    /// Answers from another backend than the answer before.
    backend_changes: u64,
    /// Milliseconds since the epoch of the first and last lost message.
    first_loss_ms: Option<u128>,
    last_loss_ms: Option<u128>,
    /// The last few errors, newest last.
    errors: Vec<String>,
}

impl Flow {
    fn answered(&mut self, backend: &str) {
        self.answered += 1;
        if self.backends.last().is_some_and(|b| b != backend) {
            self.backend_changes += 1;
        }
        if !self.backends.iter().any(|b| b == backend) {
            self.backends.push(backend.to_string());
        }
    }

    fn lost(&mut self, seq: u64, e: String) {
        self.lost += 1;
        let at = now_ms();
        self.first_loss_ms.get_or_insert(at);
        self.last_loss_ms = Some(at);
        self.errors.push(format!("{at}: message {seq}: {e}"));
        if self.errors.len() > 20 {
            self.errors.remove(0);
        }
    }
}

type Shared = Arc<Mutex<Vec<Flow>>>;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn with_flow(flows: &Shared, i: usize, f: impl FnOnce(&mut Flow)) {
    if let Ok(mut all) = flows.lock()
        && let Some(flow) = all.get_mut(i)
    {
        f(flow);
    }
}

/// One HTTP/1.1 request on an open connection; returns the answering pod
/// and whether the server keeps the connection open.
async fn exchange(
    c: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    seq: u64,
) -> Result<(String, bool), String> {
    let req = format!("GET /?seq={seq} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    c.get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let (mut status, mut len, mut keep) = (String::new(), 0usize, true);
    let mut line = String::new();
    loop {
        line.clear();
        let n = c
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the peer".into());
        }
        let lower = line.trim().to_ascii_lowercase();
        if status.is_empty() {
            status = lower;
        } else if lower.is_empty() {
            break;
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            len = v
                .trim()
                .parse()
                .map_err(|_| format!("bad header {line:?}"))?;
        } else if lower == "connection: close" {
            keep = false;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body)
        .await
        .map_err(|e| format!("read body: {e}"))?;
    if !status.starts_with("http/1.1 200") {
        return Err(format!("bad status {status:?}"));
    }
    Ok((String::from_utf8_lossy(&body).trim().to_string(), keep))
}

async fn tcp_flow(i: usize, addr: SocketAddr, flows: Shared, every: Duration, wait: Duration) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 1.. {
        tick.tick().await;
        with_flow(&flows, i, |f| f.sent += 1);
        let result = tokio::time::timeout(wait, async {
            let c = match &mut conn {
                Some(c) => c,
                None => {
                    let s = TcpStream::connect(addr)
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    with_flow(&flows, i, |f| f.connections += 1);
                    conn.insert(BufReader::new(s))
                }
            };
            exchange(c, addr, seq).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {wait:?}")));
        match result {
            Ok((backend, keep)) => {
                with_flow(&flows, i, |f| f.answered(&backend));
                if !keep {
                    conn = None;
                }
            }
            Err(e) => {
                with_flow(&flows, i, |f| f.lost(seq, e));
                conn = None;
            }
        }
    }
}

async fn udp_flow(i: usize, addr: SocketAddr, flows: Shared, every: Duration, wait: Duration) {
    let sock = match UdpSocket::bind("0.0.0.0:0").await {
        Ok(s) if s.connect(addr).await.is_ok() => s,
        _ => return with_flow(&flows, i, |f| f.lost(0, "cannot open the socket".into())),
    };
    with_flow(&flows, i, |f| f.connections = 1);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; 1500];
    for seq in 1u64.. {
        tick.tick().await;
        let msg = format!("seq {seq}");
        with_flow(&flows, i, |f| f.sent += 1);
        let result = tokio::time::timeout(wait, async {
            sock.send(msg.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            // Late answers to earlier (already lost) messages are skipped.
            loop {
                let n = sock
                    .recv(&mut buf)
                    .await
                    .map_err(|e| format!("recv: {e}"))?;
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some((pod, echoed)) = text.split_once(": ")
                    && echoed == msg
                {
                    return Ok(pod.to_string());
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {wait:?}")));
        match result {
            Ok(backend) => with_flow(&flows, i, |f| f.answered(&backend)),
            Err(e) => with_flow(&flows, i, |f| f.lost(seq, e)),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    started_ms: u128,
    running: bool,
    flows: &'a [Flow],
}

fn write(out: &std::path::Path, flows: &Shared, started_ms: u128, running: bool) {
    let Ok(f) = flows.lock() else { return };
    let report = Report {
        started_ms,
        running,
        flows: &f,
    };
    let Ok(text) = serde_json::to_string_pretty(&report) else {
        return;
    };
    let tmp = out.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, out);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let started_ms = now_ms();
    let every = Duration::from_millis(args.interval_ms.max(1));
    let wait = Duration::from_millis(args.timeout_ms);
    let targets: Vec<(bool, SocketAddr)> = (args.tcp.iter().map(|a| (true, *a)))
        .chain(args.udp.iter().map(|a| (false, *a)))
        .collect();
    let flows: Shared = Arc::new(Mutex::new(
        targets
            .iter()
            .map(|(tcp, a)| Flow {
                target: format!("{}://{a}", if *tcp { "tcp" } else { "udp" }),
                ..Flow::default()
            })
            .collect(),
    ));
    for (i, (tcp, addr)) in targets.into_iter().enumerate() {
        if tcp {
            tokio::spawn(tcp_flow(i, addr, flows.clone(), every, wait));
        } else {
            tokio::spawn(udp_flow(i, addr, flows.clone(), every, wait));
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let stop_file = args.out.with_extension("stop");
    let mut report = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = report.tick() => {
                if stop_file.exists() {
                    break;
                }
                write(&args.out, &flows, started_ms, true);
            }
            _ = term.recv() => break,
        }
    }
    write(&args.out, &flows, started_ms, false);
    Ok(())
}

//! `switchyard-loadgen`: steady client traffic to Services, counting every
//! failed request, for the migration end-to-end tests and the demo.
//!
//! Each target gets `--rate` requests per second, each on a NEW socket (so
//! every request crosses the service datapath afresh): TCP targets do an
//! HTTP GET and need a 200; UDP targets send a datagram and need a reply.
//! Totals are written as JSON to `--out` (atomically, every 200 ms) until
//! the file `<out>.stop` appears or SIGTERM arrives, then once more, final.
//! Runs as a pod of image `switchyard/loadgen`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Parser)]
struct Args {
    /// Targets: `tcp://IP:PORT` (HTTP GET /) or `udp://IP:PORT` (echo).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Requests per second per target.
    #[arg(long, default_value_t = 25)]
    rate: u32,
    /// Timeout of one request, milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Where to write the JSON totals.
    #[arg(long)]
    out: std::path::PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
}

#[derive(Debug, Default, Serialize, Clone)]
struct Totals {
    target: String,
    ok: u64,
    failed: u64,
    /// Milliseconds since the epoch of the first and last failure.
    first_failure_ms: Option<u128>,
    last_failure_ms: Option<u128>,
    /// The last few errors, newest last.
    errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    pod: String,
    /// When this process started (ms since the epoch): a restarted
    /// generator starts its totals from zero, and this tells.
    started_ms: u128,
    running: bool,
    targets: &'a [Totals],
}

fn parse(t: &str) -> Result<(Kind, SocketAddr), String> {
    let (kind, rest) = if let Some(r) = t.strip_prefix("tcp://") {
        (Kind::Tcp, r)
    } else if let Some(r) = t.strip_prefix("udp://") {
        (Kind::Udp, r)
    } else {
        return Err(format!("target {t:?} must start with tcp:// or udp://"));
    };
    let addr = rest.parse().map_err(|e| format!("target {t:?}: {e}"))?;
    Ok((kind, addr))
}

async fn tcp(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    s.read_to_end(&mut head)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "bad reply: {:?}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        ))
    }
}

async fn udp(addr: SocketAddr) -> Result<(), String> {
    let s = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    s.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.send(b"loadgen").await.map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).await.map_err(|e| format!("recv: {e}"))?;
    if n == 0 {
        Err("empty reply".into())
    } else {
        Ok(())
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn write(out: &std::path::Path, totals: &Mutex<Vec<Totals>>, started_ms: u128, running: bool) {
    let Ok(t) = totals.lock() else { return };
    let report = Report {
        pod: std::env::var("POD_NAME").unwrap_or_default(),
        started_ms,
        running,
        targets: &t,
    };
    let Ok(text) = serde_json::to_string_pretty(&report) else {
        return;
    };
    let tmp = out.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, out);
    }
}

/// What every request of a generator shares: the totals, the count of
/// requests in flight and the request timeout.
#[derive(Clone)]
struct Load {
    totals: Arc<Mutex<Vec<Totals>>>,
    in_flight: Arc<AtomicUsize>,
    timeout: Duration,
}

/// Sends a request of `kind` to `addr` every `period`, each in its own task
/// (a slow one does not lower the rate), counted in target `i`'s totals.
async fn generate(i: usize, kind: Kind, addr: SocketAddr, period: Duration, load: Load) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let load = load.clone();
        load.in_flight.fetch_add(1, Ordering::SeqCst);
        // Requests run concurrently so a slow one does not lower the rate.
        tokio::spawn(async move {
            let started = Instant::now();
            let timeout = load.timeout;
            let r = match tokio::time::timeout(timeout, async {
                match kind {
                    Kind::Tcp => tcp(addr).await,
                    Kind::Udp => udp(addr).await,
                }
            })
            .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {timeout:?}")),
            };
            if let Ok(mut t) = load.totals.lock() {
                record(&mut t[i], r, started);
            }
            load.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Counts one request's outcome (the last 20 errors kept, with when and
/// after how long).
fn record(t: &mut Totals, r: Result<(), String>, started: Instant) {
    match r {
        Ok(()) => t.ok += 1,
        Err(e) => {
            t.failed += 1;
            let at = now_ms();
            t.first_failure_ms.get_or_insert(at);
            t.last_failure_ms = Some(at);
            t.errors
                .push(format!("{at}: {e} (after {:?})", started.elapsed()));
            if t.errors.len() > 20 {
                t.errors.remove(0);
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let started_ms = now_ms();
    let targets: Vec<(Kind, SocketAddr)> = args
        .targets
        .iter()
        .map(|t| parse(t))
        .collect::<Result<_, _>>()?;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let totals = Arc::new(Mutex::new(
        args.targets
            .iter()
            .map(|t| Totals {
                target: t.clone(),
                ..Totals::default()
            })
            .collect::<Vec<_>>(),
    ));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let timeout = Duration::from_millis(args.timeout_ms);
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    for (i, (kind, addr)) in targets.into_iter().enumerate() {
        let load = Load {
            totals: totals.clone(),
            in_flight: in_flight.clone(),
            timeout,
        };
        tokio::spawn(generate(i, kind, addr, period, load));
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
                write(&args.out, &totals, started_ms, true);
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Wait (bounded by the request timeout) for requests in flight, then
    // write the final totals.
    let deadline = Instant::now() + timeout + Duration::from_millis(100);
    while in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    write(&args.out, &totals, started_ms, false);
    Ok(())
}

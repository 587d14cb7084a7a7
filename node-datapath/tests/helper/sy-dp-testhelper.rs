//! Test helper for the privileged datapath tests (not part of the agent).
//!
//! Both roles enter their network namespace (and the client its cgroup)
//! first thing, while the process is still single-threaded:
//!
//! ```text
//! sy-dp-testhelper serve  --netns /run/netns/X --name b1 --listen 10.1.1.2:8080
//!     [--tell-source true] [--hold true] [--reply-size N]
//!     TCP: answers each connection with "b1\n" and closes (with --hold:
//!     answers each message with "b1\n" until the client closes); UDP:
//!     echoes "b1\n" to each datagram's sender. With --tell-source the
//!     reply is "b1@<source address seen>"; --reply-size pads TCP replies
//!     with N more bytes (a second line). Prints "ready" once bound.
//! sy-dp-testhelper client --netns /run/netns/N [--cgroup /sys/fs/cgroup/.../t]
//!     --mode tcp|tcp-from-<port>|udp-connect|udp-sendto|udp-fragmented|tcp-hold|udp-hold
//!            |udp-sendto-hold
//!     --target 10.96.0.10:80
//!     [--count N] [--stop-file PATH] [--timeout-ms T] [--interval-ms I]
//!     Prints "running" after the first attempt, then one JSON summary line.
//!     The hold modes keep one socket for every request (a long-lived flow;
//!     udp-sendto-hold's is unconnected and names the target each time);
//!     tcp-from-<port> connects from that local port; udp-fragmented sends
//!     a datagram larger than an Ethernet link (the kernel fragments it).
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

fn usage(msg: &str) -> ExitCode {
    eprintln!("sy-dp-testhelper: {msg}");
    ExitCode::from(2)
}

/// `--key value` pairs after the subcommand.
fn flags(args: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {k}"))?;
        let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        out.insert(key.to_owned(), v.clone());
    }
    Ok(out)
}

fn enter_netns(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    // SAFETY: setns on a valid namespace fd; the process is single-threaded here.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn enter_cgroup(dir: &str) -> Result<(), String> {
    let procs = Path::new(dir).join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("write {}: {e}", procs.display()))
}

fn serve(f: &BTreeMap<String, String>) -> Result<(), String> {
    let name = f.get("name").ok_or("--name missing")?.clone();
    let listen: SocketAddr = f
        .get("listen")
        .ok_or("--listen missing")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    if let Some(ns) = f.get("netns") {
        enter_netns(ns)?;
    }
    let tcp = TcpListener::bind(listen).map_err(|e| format!("bind tcp {listen}: {e}"))?;
    let udp = UdpSocket::bind(listen).map_err(|e| format!("bind udp {listen}: {e}"))?;
    let tell = f.get("tell-source").is_some_and(|v| v == "true");
    let hold = f.get("hold").is_some_and(|v| v == "true");
    let reply = move |from: SocketAddr| match tell {
        true => format!("{name}@{}\n", from.ip()),
        false => format!("{name}\n"),
    };
    let udp_reply = reply.clone();
    // TCP replies padded to --reply-size bytes after the name's line.
    let size: usize = f
        .get("reply-size")
        .map_or(Ok(0), |v| v.parse())
        .map_err(|e| format!("--reply-size: {e}"))?;
    let padding = vec![b'.'; size];
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(udp_reply(from).as_bytes(), from);
        }
    });
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    for conn in tcp.incoming() {
        match conn {
            Ok(s) if hold => {
                let reply = reply.clone();
                std::thread::spawn(move || answer_each(s, reply));
            }
            Ok(mut s) => {
                if let Ok(from) = s.peer_addr() {
                    let _ = s.write_all(reply(from).as_bytes());
                    let _ = s.write_all(&padding);
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// Answers each message of a long-lived TCP client until it closes.
fn answer_each(mut s: TcpStream, reply: impl Fn(SocketAddr) -> String) {
    let Ok(from) = s.peer_addr() else { return };
    let mut buf = [0u8; 512];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(reply(from).as_bytes()).is_err() {
            return;
        }
    }
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::ETIMEDOUT) | Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => "TIMEOUT".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(n) => format!("errno{n}"),
        None => format!("{:?}", e.kind()),
    }
}

/// The socket a hold mode keeps across requests.
#[derive(Default)]
struct Held {
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
}

/// One request on the long-lived socket of a hold mode (opened at the
/// first request, and again after a failure).
fn attempt_held(
    mode: &str,
    target: SocketAddr,
    timeout: Duration,
    held: &mut Held,
) -> std::io::Result<(String, String)> {
    let mut buf = [0u8; 512];
    let n = if mode == "tcp-hold" {
        if held.tcp.is_none() {
            let s = TcpStream::connect_timeout(&target, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            held.tcp = Some(s);
        }
        let s = held
            .tcp
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no socket"))?;
        let r = s.write_all(b"ping").and_then(|()| s.read(&mut buf));
        if !matches!(r, Ok(n) if n > 0) {
            held.tcp = None;
        }
        r?
    } else {
        if held.udp.is_none() {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(timeout))?;
            if mode == "udp-hold" {
                s.connect(target)?;
            }
            held.udp = Some(s);
        }
        let s = held
            .udp
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no socket"))?;
        if mode == "udp-hold" {
            s.send(b"ping")?;
        } else {
            s.send_to(b"ping", target)?;
        }
        s.recv(&mut buf)?
    };
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let name = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    Ok((name, target.to_string()))
}

/// A TCP connection to `target` from local port `port`.
fn connect_from(port: u16, target: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(t) = target else {
        return Err(std::io::Error::other("IPv4 targets only"));
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns (the
    // TcpStream closes it on every path).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sin(std::net::Ipv4Addr::UNSPECIFIED, port);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sin(*t.ip(), t.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// A datagram three Ethernet frames long.
const FRAGMENTED_DATAGRAM: usize = 4000;

/// One request; returns (backend name, peer address the socket reports).
fn attempt(mode: &str, target: SocketAddr, timeout: Duration) -> std::io::Result<(String, String)> {
    let mut buf = [0u8; 512];
    if let Some(port) = mode.strip_prefix("tcp-from-") {
        let port = port.parse().map_err(std::io::Error::other)?;
        let mut s = connect_from(port, target)?;
        s.set_read_timeout(Some(timeout))?;
        let mut name = String::new();
        s.read_to_string(&mut name)?;
        return Ok((name.trim().to_owned(), target.to_string()));
    }
    match mode {
        "tcp" => {
            let mut s = TcpStream::connect_timeout(&target, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            let peer = s.peer_addr()?;
            let mut name = String::new();
            s.read_to_string(&mut name)?;
            let first = name.lines().next().unwrap_or_default();
            Ok((first.trim().to_owned(), peer.to_string()))
        }
        "udp-connect" | "udp-fragmented" => {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(timeout))?;
            s.connect(target)?;
            match mode {
                "udp-fragmented" => s.send(&[b'.'; FRAGMENTED_DATAGRAM])?,
                _ => s.send(b"ping")?,
            };
            let n = s.recv(&mut buf)?;
            let peer = s.peer_addr()?;
            Ok((
                String::from_utf8_lossy(&buf[..n]).trim().to_owned(),
                peer.to_string(),
            ))
        }
        "udp-sendto" => {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(timeout))?;
            s.send_to(b"ping", target)?;
            let (n, from) = s.recv_from(&mut buf)?;
            Ok((
                String::from_utf8_lossy(&buf[..n]).trim().to_owned(),
                from.to_string(),
            ))
        }
        other => Err(std::io::Error::other(format!("unknown mode {other}"))),
    }
}

/// The client's options.
struct ClientArgs {
    mode: String,
    target: SocketAddr,
    /// Requests to make; 0: until the stop file exists.
    count: u64,
    timeout: Duration,
    stop_file: Option<String>,
    /// Pause between requests.
    interval: Duration,
}

fn client_args(f: &BTreeMap<String, String>) -> Result<ClientArgs, String> {
    let mode = f.get("mode").ok_or("--mode missing")?.clone();
    let target: SocketAddr = f
        .get("target")
        .ok_or("--target missing")?
        .parse()
        .map_err(|e| format!("--target: {e}"))?;
    let count: u64 = f
        .get("count")
        .map_or(Ok(0), |c| c.parse())
        .map_err(|e| format!("--count: {e}"))?;
    let timeout = Duration::from_millis(
        f.get("timeout-ms")
            .map_or(Ok(2000), |c| c.parse())
            .map_err(|e| format!("--timeout-ms: {e}"))?,
    );
    let stop_file = f.get("stop-file").cloned();
    let interval = Duration::from_millis(
        f.get("interval-ms")
            .map_or(Ok(0), |c| c.parse())
            .map_err(|e| format!("--interval-ms: {e}"))?,
    );
    if count == 0 && stop_file.is_none() {
        return Err("need --count or --stop-file".into());
    }
    Ok(ClientArgs {
        mode,
        target,
        count,
        timeout,
        stop_file,
        interval,
    })
}

/// What the client's requests met: answers per backend, errors per errno, the
/// peers getpeername/recvfrom named, the changes of backend, and timings.
#[derive(Default)]
struct Tally {
    ok: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    peers: BTreeSet<String>,
    sequence: Vec<String>,
    max_us: u128,
    max_err_us: u128,
    total_us: u128,
    n: u64,
}

impl Tally {
    fn record(&mut self, r: std::io::Result<(String, String)>, us: u128) {
        self.total_us += us;
        self.max_us = self.max_us.max(us);
        match r {
            Ok((name, peer)) => {
                *self.ok.entry(name.clone()).or_default() += 1;
                self.peers.insert(peer);
                if self.sequence.last() != Some(&name) {
                    self.sequence.push(name);
                }
            }
            Err(e) => {
                self.max_err_us = self.max_err_us.max(us);
                *self.errors.entry(errno_name(&e)).or_default() += 1;
                self.sequence.push(format!("!{}", errno_name(&e)));
            }
        }
        self.n += 1;
    }

    fn summary(mut self, started: Instant) -> serde_json::Value {
        // Keep the sequence bounded: it only records changes of backend.
        self.sequence.truncate(10_000);
        serde_json::json!({
            "iterations": self.n,
            "ok": self.ok,
            "errors": self.errors,
            "peers": self.peers,
            "max_us": self.max_us as u64,
            "max_err_us": self.max_err_us as u64,
            "total_us": self.total_us as u64,
            "elapsed_us": started.elapsed().as_micros() as u64,
            "sequence": self.sequence,
        })
    }
}

fn client(f: &BTreeMap<String, String>) -> Result<(), String> {
    let args = client_args(f)?;
    let mut held = Held::default();
    if let Some(cg) = f.get("cgroup") {
        enter_cgroup(cg)?;
    }
    if let Some(ns) = f.get("netns") {
        enter_netns(ns)?;
    }
    let mut tally = Tally::default();
    let started = Instant::now();
    loop {
        if args.count > 0 && tally.n >= args.count {
            break;
        }
        if let Some(p) = &args.stop_file
            && Path::new(p).exists()
        {
            break;
        }
        if tally.n > 0 {
            std::thread::sleep(args.interval);
        }
        let t = Instant::now();
        let r = match args.mode.as_str() {
            "tcp-hold" | "udp-hold" | "udp-sendto-hold" => {
                attempt_held(&args.mode, args.target, args.timeout, &mut held)
            }
            _ => attempt(&args.mode, args.target, args.timeout),
        };
        tally.record(r, t.elapsed().as_micros());
        if tally.n == 1 {
            println!("running");
            let _ = std::io::stdout().flush();
        }
    }
    println!("{}", tally.summary(started));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage("expected serve or client");
    };
    let f = match flags(rest) {
        Ok(f) => f,
        Err(e) => return usage(&e),
    };
    let r = match cmd.as_str() {
        "serve" => serve(&f),
        "client" => client(&f),
        other => return usage(&format!("unknown command {other}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sy-dp-testhelper: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The load generators, run as child processes of the benchmark binary
//! (`switchyard-bench serve|client …`) so each can enter its own network
//! namespace, cgroup and CPU:
//!
//! * [`serve`]: in a backend namespace, a TCP listener on `0.0.0.0:8080`
//!   that accepts and closes, and a UDP echo on `0.0.0.0:5353` that replies
//!   from the address the request was sent to (`IP_PKTINFO`, needed with the
//!   AnyIP route: the namespace serves a whole /16);
//! * [`client_latency`]: `connect()` latency, one connection at a time
//!   (socket → timed connect → close with `SO_LINGER {1, 0}`, i.e. RST, so
//!   no TIME_WAIT exhausts ports or conntrack); targets are used round-robin;
//! * [`client_rate`]: connections per second (connect + RST close) from 1 or
//!   more threads for a fixed time;
//! * [`client_udp`]: request/response rate of one unconnected UDP socket
//!   (`sendto` the targets round-robin, `recvfrom` the reply, which must come from the
//!   target address, i.e. reverse translation worked).

use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    SockaddrIn, accept, bind, connect, listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike as _};
use serde::{Deserialize, Serialize};

use crate::{BenchError, stats};

/// Enters the network namespace at `netns` (a `/run/netns/…` path).
pub fn enter_netns(netns: &Path) -> Result<(), BenchError> {
    let f = std::fs::File::open(netns)
        .map_err(|e| BenchError::io(format!("open {}", netns.display()), e))?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| BenchError::io("setns", e.into()))
}

/// Moves this process into the cgroup v2 directory `cgroup`.
pub fn enter_cgroup(cgroup: &Path) -> Result<(), BenchError> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| BenchError::io(format!("write {}", procs.display()), e))
}

/// Pins the calling thread to `cpu`.
pub fn pin_cpu(cpu: usize) -> Result<(), BenchError> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .map_err(|e| BenchError::io("cpuset", e.into()))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| BenchError::io("sched_setaffinity", e.into()))
}

fn errno(what: &str) -> impl FnOnce(nix::Error) -> BenchError + '_ {
    move |e| BenchError::io(what, e.into())
}

/// Serves TCP (accept + close) on `tcp_port` and UDP echo on `udp_port`
/// until killed. Prints `ready` once both sockets are bound.
pub fn serve(tcp_port: u16, udp_port: u16) -> Result<(), BenchError> {
    let any = |p| SockaddrIn::from(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, p));
    let listener = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(errno("socket"))?;
    setsockopt(&listener, sockopt::ReuseAddr, &true).map_err(errno("SO_REUSEADDR"))?;
    bind(listener.as_raw_fd(), &any(tcp_port)).map_err(errno("bind tcp"))?;
    listen(&listener, Backlog::MAXCONN).map_err(errno("listen"))?;

    let udp = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(errno("socket udp"))?;
    setsockopt(&udp, sockopt::Ipv4PacketInfo, &true).map_err(errno("IP_PKTINFO"))?;
    bind(udp.as_raw_fd(), &any(udp_port)).map_err(errno("bind udp"))?;
    std::thread::spawn(move || udp_echo(udp));
    println!("ready");
    loop {
        match accept(listener.as_raw_fd()) {
            // SAFETY: accept returned a new descriptor that we own.
            Ok(fd) => drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
            Err(nix::Error::EINTR | nix::Error::ECONNABORTED) => {}
            Err(e) => return Err(BenchError::io("accept", e.into())),
        }
    }
}

fn udp_echo(sock: OwnedFd) {
    let mut buf = [0u8; 512];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    loop {
        let (len, from, dst) = {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let Ok(msg) = recvmsg::<SockaddrIn>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) else {
                continue;
            };
            let mut dst = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::Ipv4PacketInfo(pi) = c {
                        dst = Some(pi.ipi_addr);
                    }
                }
            }
            (msg.bytes, msg.address, dst)
        };
        let (Some(from), Some(dst)) = (from, dst) else {
            continue;
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: dst,
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let iov = [std::io::IoSlice::new(&buf[..len])];
        let _ = sendmsg(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::Ipv4PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&from),
        );
    }
}

/// Connects of the warm-up after which a client whose every connect failed
/// gives up (a broken datapath fails the run instead of hanging it).
const WARMUP_PROBE: usize = 5;

/// One connect + RST close; returns the connect() duration.
fn connect_once(target: &SockaddrIn) -> Result<Duration, nix::Error> {
    let s = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(
        &s,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    // A connect nobody answers fails after 1 s (EINPROGRESS) instead of
    // the kernel's ~2 min of SYN retries.
    setsockopt(&s, sockopt::SendTimeout, &TimeVal::seconds(1))?;
    let t0 = Instant::now();
    connect(s.as_raw_fd(), target)?;
    let d = t0.elapsed();
    drop(s);
    Ok(d)
}

/// Result of [`client_latency`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyResult {
    /// The percentiles of the measured connects.
    pub summary: stats::LatencySummary,
    /// Failed connects (excluded from the percentiles).
    pub errors: u64,
}

/// Measures `connect()` latency: up to `warmup` unmeasured connects (at
/// most 0.5 s, at least 50), then
/// `count` measured ones, reduced (not below `min_count`) so that the
/// measured part takes about `budget` at the warm-up's mean cost.
pub fn client_latency(
    targets: &[SocketAddrV4],
    warmup: usize,
    count: usize,
    min_count: usize,
    budget: Duration,
) -> Result<LatencyResult, BenchError> {
    let targets: Vec<SockaddrIn> = targets.iter().map(|t| SockaddrIn::from(*t)).collect();
    if targets.is_empty() {
        return Err(BenchError::Arg("no targets".into()));
    }
    let mut errors = 0u64;
    let t0 = Instant::now();
    // Warm up for `warmup` connects or half a second, whichever ends first.
    let mut warmed = 0usize;
    while warmed < warmup.max(1) && (warmed < 50 || t0.elapsed() < Duration::from_millis(500)) {
        if connect_once(&targets[warmed % targets.len()]).is_err() {
            errors += 1;
        }
        warmed += 1;
        if warmed == WARMUP_PROBE && errors == warmed as u64 {
            return Err(BenchError::BadOutput {
                what: "latency client".into(),
                detail: format!(
                    "the first {WARMUP_PROBE} connects to {} failed: the datapath does not serve it",
                    targets[0]
                ),
            });
        }
    }
    let per = t0.elapsed().as_secs_f64() / warmed as f64;
    let fit = (budget.as_secs_f64() / per.max(1e-9)) as usize;
    let count = count.min(fit.max(min_count));
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        match connect_once(&targets[i % targets.len()]) {
            Ok(d) => samples.push(d.as_nanos() as u64),
            Err(_) => errors += 1,
        }
    }
    let summary = stats::summarize(&mut samples).ok_or_else(|| BenchError::BadOutput {
        what: "latency client".into(),
        detail: format!("every connect failed ({errors} errors)"),
    })?;
    Ok(LatencyResult { summary, errors })
}

/// Result of [`client_rate`] and [`client_udp`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateResult {
    /// Completed operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Measured seconds.
    pub secs: f64,
    /// ops / secs.
    pub per_s: f64,
}

/// Connections per second from `threads` threads (thread i on CPU
/// `cpus[i % cpus.len()]`) for `duration`.
pub fn client_rate(
    targets: &[SocketAddrV4],
    threads: usize,
    cpus: &[usize],
    duration: Duration,
) -> Result<RateResult, BenchError> {
    let targets: Vec<SockaddrIn> = targets.iter().map(|t| SockaddrIn::from(*t)).collect();
    let start = Instant::now();
    let results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let targets = &targets;
                let cpu = cpus.get(t % cpus.len().max(1)).copied();
                s.spawn(move || {
                    if let Some(c) = cpu {
                        let _ = pin_cpu(c);
                    }
                    let (mut ok, mut err) = (0u64, 0u64);
                    let mut i = t;
                    while start.elapsed() < duration {
                        match connect_once(&targets[i % targets.len()]) {
                            Ok(_) => ok += 1,
                            Err(_) => err += 1,
                        }
                        i += 1;
                    }
                    (ok, err)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let ops = results.iter().map(|r| r.0).sum::<u64>();
    Ok(RateResult {
        ops,
        errors: results.iter().map(|r| r.1).sum(),
        secs,
        per_s: ops as f64 / secs,
    })
}

/// UDP request/response rate of one unconnected socket for `duration`,
/// sending to `targets` round-robin; a reply counts only if it comes from
/// the address the request was sent to.
pub fn client_udp(targets: &[SocketAddrV4], duration: Duration) -> Result<RateResult, BenchError> {
    if targets.is_empty() {
        return Err(BenchError::Arg("no targets".into()));
    }
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| BenchError::io("bind udp client", e))?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| BenchError::io("SO_RCVTIMEO", e))?;
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < duration {
        let target = targets[i % targets.len()];
        i += 1;
        if sock.send_to(b"ping", target).is_err() {
            errors += 1;
            continue;
        }
        match sock.recv_from(&mut buf) {
            Ok((_, std::net::SocketAddr::V4(from))) if from == target => ops += 1,
            _ => errors += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(RateResult {
        ops,
        errors,
        secs,
        per_s: ops as f64 / secs,
    })
}

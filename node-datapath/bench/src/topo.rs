//! The network topology of one measurement, created fresh per (datapath, N)
//! and removed on drop (also on panic):
//!
//! ```text
//! pod netns  eth0 10.244.0.2 ──veth── node netns  10.244.0.1 (ip_forward=1,
//! (client, in a dedicated cgroup v2)               kube-proxy rules here)
//!                                      │ vbK 10.250.K.1
//!                                 ──veth── backend netns K (K = 0..9)
//!                                           eth0 10.250.K.2, AnyIP route
//!                                           local 10.(200+K).0.0/16 dev lo,
//!                                           one TCP+UDP server on 0.0.0.0
//! ```

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use switchyard_testkit::netns::NetNs;
use tracing::{info, warn};

use crate::{
    BenchError,
    model::{ENDPOINTS, NODE_POD_GW, POD_IP, slot_prefix},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, returning its stdout; fails on a non-zero exit.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, BenchError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| BenchError::io(format!("spawn {cmd}"), e))?;
    if !out.status.success() {
        return Err(BenchError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with `input` on stdin and returns its wall time (spawn to
/// exit, input written from memory).
pub fn run_timed_stdin(cmd: &str, args: &[&str], input: &str) -> Result<Duration, BenchError> {
    let t0 = Instant::now();
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io(format!("spawn {cmd}"), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| BenchError::io(format!("write stdin of {cmd}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| BenchError::io(format!("wait {cmd}"), e))?;
    let elapsed = t0.elapsed();
    if !out.status.success() {
        return Err(BenchError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(2000)
                .collect(),
        });
    }
    Ok(elapsed)
}

/// The cgroup v2 mount point (from /proc/self/mounts).
pub fn cgroup2_mount() -> Result<PathBuf, BenchError> {
    mount_of("cgroup2").ok_or_else(|| {
        BenchError::Arg("no cgroup2 mount: run e2e/hack/host-setup.sh (as root)".into())
    })
}

/// The bpffs mount point.
pub fn bpffs_mount() -> Result<PathBuf, BenchError> {
    mount_of("bpf")
        .ok_or_else(|| BenchError::Arg("no bpffs mount: run e2e/hack/host-setup.sh".into()))
}

fn mount_of(fstype: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == fstype).then(|| PathBuf::from(f[1]))
    })
}

/// The process id in a name this benchmark gives (`syb<pid>-<seq>-…`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("syb")?.split('-').next()?.parse().ok()
}

/// Removes what killed benchmark runs left behind, by name (`syb<pid>-…`
/// of a process that no longer exists): their servers and clients, their
/// datapath pins (which detaches the programs), network namespaces and
/// cgroups. Runs of live processes are not touched.
pub fn sweep_stale() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut removed = 0usize;
    // Children of a killed run: `switchyard-bench serve|client --netns /run/netns/syb<pid>-…`.
    for pid in names(Path::new("/proc")) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let orphan = args
            .windows(2)
            .any(|w| w[0] == "--netns" && w[1].strip_prefix("/run/netns/").is_some_and(&dead));
        if orphan && let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill(2) has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            removed += 1;
        }
    }
    if let Ok(bpffs) = bpffs_mount() {
        for name in names(&bpffs).into_iter().filter(|n| dead(n)) {
            let dir = bpffs.join(&name);
            if let Err(e) = switchyard_node_datapath::off(&dir) {
                warn!(dir = %dir.display(), error = %e, "sweep: datapath off");
            }
            removed += 1;
        }
    }
    for ns in names(Path::new("/run/netns"))
        .into_iter()
        .filter(|n| dead(n))
    {
        if let Err(e) = run("ip", &["netns", "del", &ns]) {
            warn!(ns, error = %e, "sweep: netns del");
        }
        removed += 1;
    }
    if let Ok(cg) = cgroup2_mount() {
        for name in names(&cg).into_iter().filter(|n| dead(n)) {
            if let Err(e) = std::fs::remove_dir(cg.join(&name)) {
                warn!(cgroup = name, error = %e, "sweep: rmdir cgroup");
            }
            removed += 1;
        }
    }
    if removed > 0 {
        info!(removed, "removed what killed benchmark runs left behind");
    }
}

/// A bare network namespace, deleted on drop (for timing rule loads away
/// from the measured topology).
#[derive(Debug)]
pub struct ScratchNs {
    /// Its name.
    pub name: String,
    _guard: NetNs,
}

impl ScratchNs {
    /// Creates a fresh namespace with a unique name.
    pub fn new() -> Result<Self, BenchError> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("syb{}-{n}-scratch", std::process::id());
        let guard = add_netns(&name)?;
        Ok(Self {
            name,
            _guard: guard,
        })
    }

    /// Runs `cmd args` inside it with `input` on stdin; returns the wall time.
    pub fn exec_timed(
        &self,
        cmd: &str,
        args: &[&str],
        input: &str,
    ) -> Result<Duration, BenchError> {
        let mut a = vec!["netns", "exec", self.name.as_str(), cmd];
        a.extend_from_slice(args);
        run_timed_stdin("ip", &a, input)
    }
}

/// Creates the network namespace `name`, deleted when the guard drops.
pub(crate) fn add_netns(name: &str) -> Result<NetNs, BenchError> {
    NetNs::add(name).map_err(|source| BenchError::Io {
        what: format!("create network namespace {name}"),
        source,
    })
}

/// One fresh topology; see the module doc. Removed on drop.
#[derive(Debug)]
pub struct Topo {
    /// Unique prefix of every name.
    pub id: String,
    /// The client's namespace.
    pub pod_ns: String,
    /// The node's namespace (rules are loaded here).
    pub node_ns: String,
    /// Backend namespaces, one per endpoint slot.
    pub backend_ns: Vec<String>,
    /// The client's cgroup (eBPF programs attach here).
    pub cgroup: PathBuf,
    /// A bpffs pin directory reserved for this topology.
    pub bpffs_dir: PathBuf,
    /// Deleted after `Drop::drop` (the datapath is off by then).
    created: Vec<NetNs>,
    cgroup_created: bool,
}

impl Topo {
    /// Creates namespaces, links, routes and the cgroup.
    pub fn new() -> Result<Self, BenchError> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("syb{}-{n}", std::process::id());
        let mut t = Topo {
            pod_ns: format!("{id}-pod"),
            node_ns: format!("{id}-node"),
            backend_ns: (0..ENDPOINTS).map(|k| format!("{id}-b{k}")).collect(),
            cgroup: cgroup2_mount()?.join(format!("{id}-client")),
            bpffs_dir: bpffs_mount()?.join(format!("{id}-bench")),
            id,
            created: Vec::new(),
            cgroup_created: false,
        };
        t.build()?;
        Ok(t)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), BenchError> {
        self.created.push(add_netns(ns)?);
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> Result<(), BenchError> {
        let (pod, node) = (self.pod_ns.clone(), self.node_ns.clone());
        self.add_ns(&node)?;
        self.add_ns(&pod)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        wire_pod(&node, &pod)?;
        for k in 0..ENDPOINTS {
            self.add_backend(k, &node)?;
        }
        std::fs::create_dir(&self.cgroup)
            .map_err(|e| BenchError::io(format!("mkdir {}", self.cgroup.display()), e))?;
        self.cgroup_created = true;
        Ok(())
    }

    /// Backend `k`'s namespace, wired to `node` by a veth pair (10.250.k.2 there,
    /// 10.250.k.1 on the node), its slot's prefix routed to it and local there.
    fn add_backend(&mut self, k: usize, node: &str) -> Result<(), BenchError> {
        let ns = self.backend_ns[k].clone();
        self.add_ns(&ns)?;
        let vb = format!("vb{k}");
        run(
            "ip",
            &[
                "link", "add", &vb, "netns", node, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        )?;
        let (n_ip, b_ip) = (format!("10.250.{k}.1"), format!("10.250.{k}.2"));
        let prefix = slot_prefix(k);
        let n_cidr = format!("{n_ip}/24");
        let b_cidr = format!("{b_ip}/24");
        let steps: [(&str, Vec<&str>); 7] = [
            (node, vec!["addr", "add", &n_cidr, "dev", &vb]),
            (node, vec!["link", "set", &vb, "up"]),
            (node, vec!["route", "add", &prefix, "via", &b_ip]),
            (&ns, vec!["addr", "add", &b_cidr, "dev", "eth0"]),
            (&ns, vec!["link", "set", "eth0", "up"]),
            (&ns, vec!["route", "add", "default", "via", &n_ip]),
            (&ns, vec!["route", "add", "local", &prefix, "dev", "lo"]),
        ];
        for (nsn, a) in steps {
            let mut args: Vec<&str> = vec!["-n", nsn];
            args.extend(a);
            run("ip", &args)?;
        }
        Ok(())
    }

    /// `/run/netns/<name>`.
    pub fn ns_path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }

    /// Runs `cmd args` inside the node namespace with `input` on stdin,
    /// returning the wall time.
    pub fn node_exec_timed(
        &self,
        cmd: &str,
        args: &[&str],
        input: &str,
    ) -> Result<Duration, BenchError> {
        let mut a = vec!["netns", "exec", self.node_ns.as_str(), cmd];
        a.extend_from_slice(args);
        run_timed_stdin("ip", &a, input)
    }

    /// Runs `cmd args` inside the node namespace.
    pub fn node_exec(&self, cmd: &str, args: &[&str]) -> Result<String, BenchError> {
        let mut a = vec!["netns", "exec", self.node_ns.as_str(), cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        if self.bpffs_dir.exists()
            && let Err(e) = switchyard_node_datapath::off(&self.bpffs_dir)
        {
            warn!(dir = %self.bpffs_dir.display(), error = %e, "cleanup: datapath off");
        }
        if self.cgroup_created {
            // Clients have exited by now; poll briefly for the kernel to
            // notice (an exiting task leaves its cgroup asynchronously).
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&self.cgroup) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        warn!(cgroup = %self.cgroup.display(), error = %e, "cleanup: rmdir cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// The pod namespace wired to `node` by a veth pair: `POD_IP` there with the node's
/// `NODE_POD_GW` as its default route, and a wide ephemeral port range.
fn wire_pod(node: &str, pod: &str) -> Result<(), BenchError> {
    run(
        "ip",
        &[
            "link", "add", "vpod", "netns", node, "type", "veth", "peer", "name", "eth0", "netns",
            pod,
        ],
    )?;
    let gw = format!("{NODE_POD_GW}/24");
    let pod_ip = format!("{POD_IP}/24");
    let gw_s = NODE_POD_GW.to_string();
    let batch_node = [
        vec!["addr", "add", gw.as_str(), "dev", "vpod"],
        vec!["link", "set", "vpod", "up"],
    ];
    for a in &batch_node {
        let mut args = vec!["-n", node];
        args.extend(a.iter().copied());
        run("ip", &args)?;
    }
    for a in [
        vec!["addr", "add", pod_ip.as_str(), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec!["route", "add", "default", "via", gw_s.as_str()],
    ] {
        let mut args = vec!["-n", pod];
        args.extend(a);
        run("ip", &args)?;
    }
    // A wide ephemeral range: many short connections to few addresses.
    run(
        "ip",
        &[
            "netns",
            "exec",
            pod,
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65535",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_read_from_the_benchmark_names_only() {
        assert_eq!(owner_pid("syb23061-15-pod"), Some(23061));
        assert_eq!(owner_pid("syb23061-8-scratch"), Some(23061));
        assert_eq!(owner_pid("syb42-0-bench"), Some(42));
        assert_eq!(owner_pid("syl16728a-n1"), None, "a lab cluster's namespace");
        assert_eq!(owner_pid("sybx-1-pod"), None);
        assert_eq!(owner_pid("switchyard"), None);
    }
}

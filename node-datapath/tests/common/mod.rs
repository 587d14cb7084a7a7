//! A simulated node for the privileged datapath tests: a "node" network
//! namespace with its own cgroup v2 subtree and bpffs pin directory, and
//! backend namespaces wired to it by veth pairs. Everything is removed on
//! drop (also on panic). Clients and servers are `sy-dp-testhelper`
//! processes that enter their namespace/cgroup themselves.

#![allow(dead_code, clippy::unwrap_used)] // test support code

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

mod ops;
mod outside;
#[allow(unused_imports)] // each test binary uses its own subset
pub use ops::Svc;
#[allow(unused_imports)]
pub use outside::{
    KEEPALIVE, NODE_EXTERNAL_IP, NODE_PORT, OUTSIDE_CLIENT_IP, Outside, in_netns, nft, nodeport,
    program_nodeport, start_with_ingress, telling_source_lab,
};

use switchyard_abi::{Counter, IPPROTO_TCP};
use switchyard_lb::maps::LbMaps;
use switchyard_node_datapath::{
    Capacities, Datapath, DatapathConfig, DatapathError, LinkAction, TcAttach, capabilities,
};
use switchyard_testkit::netns::NetNs;

/// The ClusterIP the tests program.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The datapath a start returned. On error, panics with the error's
/// message: `unwrap` prints the Debug form, which for a verifier rejection
/// is the whole log and buries the cause.
#[track_caller]
pub fn started(r: Result<Datapath, DatapathError>) -> Datapath {
    r.unwrap_or_else(|e| panic!("datapath start failed: {e}"))
}

/// One counter of the running datapath, summed over CPUs.
pub fn counter(dp: &Datapath, c: Counter) -> u64 {
    dp.stats().unwrap().get(c)
}

/// Waits until `c` has grown by at least `by` from `from`.
pub fn wait_counter(dp: &Datapath, c: Counter, from: u64, by: u64) -> u64 {
    wait_for(
        &format!("counter {c:?} to grow by {by} from {from}"),
        Duration::from_secs(20),
        || {
            let v = counter(dp, c);
            (v >= from + by).then_some(v)
        },
    )
}

static SEQ: AtomicU32 = AtomicU32::new(0);

const HELPER: &str = env!("CARGO_BIN_EXE_sy-dp-testhelper");

/// Why this host cannot run the privileged tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !switchyard_testkit::is_root() {
        return Some("not root".into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if capabilities::mount_of(&mounts, "cgroup2").is_none() {
        return Some("no cgroup2 mount (run e2e/hack/host-setup.sh)".into());
    }
    if capabilities::mount_of(&mounts, "bpf").is_none() {
        return Some("no bpffs mount (run e2e/hack/host-setup.sh)".into());
    }
    None
}

/// Returns early from a test, with a printed reason, where the host lacks
/// what the privileged tests need.
#[macro_export]
macro_rules! require_privileged {
    () => {
        if let Some(reason) = common::skip_reason() {
            switchyard_testkit::skip(
                &switchyard_testkit::current_test(),
                &format!("the privileged datapath tests need root, cgroup2 and bpffs: {reason}"),
            );
            return;
        }
    };
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub use switchyard_testkit::wait_for;

/// A backend server process.
pub struct Server {
    pub name: String,
    pub addr: Ipv4Addr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sy-dp-testhelper serve` with `args`; returns once it is bound.
fn spawn_server(args: &[&str]) -> Child {
    let mut child = Command::new(HELPER)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "server {args:?} did not start");
    child
}

/// Runs a prepared helper client for `count` requests; its JSON summary.
pub fn run_client(mut cmd: Command, count: u32) -> serde_json::Value {
    let out = cmd.args(["--count", &count.to_string()]).output().unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// Whether the start that gave `dp` did `action` to every link.
pub fn every_link(dp: &Datapath, action: LinkAction) -> bool {
    dp.report().links.iter().all(|(_, a)| *a == action)
}

/// A running looping client.
pub struct LoopingClient {
    child: Option<Child>,
    stdout: BufReader<ChildStdout>,
    stop_file: PathBuf,
}

impl LoopingClient {
    /// Spawns the client `cmd` with a fresh stop file (named after `prefix`) and
    /// returns once it reports its first request.
    pub fn start(mut cmd: Command, prefix: &str, what: &str) -> LoopingClient {
        let stop_file =
            std::env::temp_dir().join(format!("{prefix}-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        let mut child = cmd
            .args(["--stop-file", stop_file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "running", "{what} did not start");
        LoopingClient {
            child: Some(child),
            stdout,
            stop_file,
        }
    }

    /// Stops the loop and returns the summary.
    pub fn stop(mut self) -> serde_json::Value {
        std::fs::write(&self.stop_file, b"stop").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut child = self.child.take().unwrap();
        let status = child.wait().unwrap();
        let _ = std::fs::remove_file(&self.stop_file);
        assert!(status.success(), "client failed: {status}, output {line}");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for LoopingClient {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.stop_file);
    }
}

/// One simulated node: netns + cgroup + pin dir, plus backend netns.
pub struct Lab {
    pub id: String,
    pub node_ns: String,
    pub cgroup: PathBuf,
    pub bpffs_dir: PathBuf,
    /// The node's and the backends' namespaces, deleted after `Drop::drop`.
    namespaces: Vec<NetNs>,
    servers: Vec<Server>,
}

impl Lab {
    /// A node with `backends` backend namespaces; backend i (1-based) has
    /// address 10.1.i.2 and the node side 10.1.i.1.
    pub fn new(backends: u8) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("sy{}-{n}", std::process::id());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let cg2 = capabilities::mount_of(&mounts, "cgroup2").unwrap();
        let bpffs = capabilities::mount_of(&mounts, "bpf").unwrap();
        let mut lab = Lab {
            node_ns: format!("{id}-node"),
            cgroup: Path::new(&cg2).join(format!("{id}-test")),
            bpffs_dir: Path::new(&bpffs).join(format!("{id}-test")),
            id,
            namespaces: Vec::new(),
            servers: Vec::new(),
        };
        lab.namespaces.push(NetNs::add(&lab.node_ns).unwrap());
        run("ip", &["-n", &lab.node_ns, "link", "set", "lo", "up"]);
        std::fs::create_dir(&lab.cgroup).unwrap();
        for i in 1..=backends {
            lab.add_backend(i);
        }
        lab
    }

    /// Backend `i`'s namespace, wired to the node by a veth pair: 10.1.i.2 there,
    /// 10.1.i.1 on the node side, which is its default route.
    fn add_backend(&mut self, i: u8) {
        let ns = format!("{}-b{i}", self.id);
        self.namespaces.push(NetNs::add(&ns).unwrap());
        let vn = format!("vb{i}");
        run(
            "ip",
            &[
                "link",
                "add",
                &vn,
                "netns",
                &self.node_ns,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &self.node_ns,
                "addr",
                "add",
                &format!("10.1.{i}.1/24"),
                "dev",
                &vn,
            ],
        );
        run("ip", &["-n", &self.node_ns, "link", "set", &vn, "up"]);
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.1.{i}.2/24"),
                "dev",
                "eth0",
            ],
        );
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.1.{i}.1"),
            ],
        );
    }

    /// Starts the datapath on this node with [`Lab::config`].
    #[track_caller]
    pub fn start(&self) -> Datapath {
        started(Datapath::start(&self.config()))
    }

    /// A datapath config for this node with small maps.
    pub fn config(&self) -> DatapathConfig {
        DatapathConfig {
            bpffs_dir: self.bpffs_dir.clone(),
            cgroup: self.cgroup.clone(),
            capacities: Capacities {
                services: 1024,
                backends: 1024,
                rev_nat: 256,
                sock_rev_nat: 4096,
                affinity: 256,
                events_ring: 65_536,
            },
            ingress_interfaces: Vec::new(),
            tc_attach: TcAttach::Auto,
        }
    }

    pub fn backend_addr(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, i, 2)
    }

    /// Starts a TCP+UDP server named `b{i}` in backend namespace i on `port`.
    pub fn serve(&mut self, i: u8, port: u16) -> String {
        self.serve_with(i, port, &[])
    }

    /// [`Lab::serve`] with extra server flags (`--tell-source true`, `--hold true`).
    pub fn serve_with(&mut self, i: u8, port: u16, extra: &[&str]) -> String {
        let name = format!("b{i}");
        let addr = Self::backend_addr(i);
        let ns = format!("/run/netns/{}-b{i}", self.id);
        let listen = format!("{addr}:{port}");
        let mut args = vec!["--netns", &ns, "--name", &name, "--listen", &listen];
        args.extend(extra);
        let child = spawn_server(&args);
        self.servers.push(Server {
            name: name.clone(),
            addr,
            child,
        });
        name
    }

    fn client_cmd(&self, mode: &str, target: &str) -> Command {
        let mut c = Command::new(HELPER);
        c.args([
            "client",
            "--netns",
            &format!("/run/netns/{}", self.node_ns),
            "--cgroup",
            self.cgroup.to_str().unwrap(),
            "--mode",
            mode,
            "--target",
            target,
            "--timeout-ms",
            "2000",
        ]);
        c
    }

    /// Runs `count` requests from a client in the node's netns and cgroup.
    pub fn client(&self, mode: &str, target: &str, count: u32) -> serde_json::Value {
        run_client(self.client_cmd(mode, target), count)
    }

    /// Starts a client that loops until stopped; returns once it has made
    /// its first request.
    pub fn looping_client(&self, mode: &str, target: &str) -> LoopingClient {
        LoopingClient::start(
            self.client_cmd(mode, target),
            &format!("{}-stop", self.id),
            "looping client",
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.servers.clear();
        if let Err(e) = switchyard_node_datapath::off(&self.bpffs_dir) {
            eprintln!("lab cleanup: off {}: {e}", self.bpffs_dir.display());
        }
        // Clients have exited; the cgroup is empty.
        if let Err(e) = std::fs::remove_dir(&self.cgroup) {
            eprintln!("lab cleanup: rmdir {}: {e}", self.cgroup.display());
        }
    }
}

/// `summary["ok"][name]` as a number (0 when absent).
pub fn ok_count(summary: &serde_json::Value, name: &str) -> u64 {
    summary["ok"][name].as_u64().unwrap_or(0)
}

/// Total successful requests.
pub fn ok_total(summary: &serde_json::Value) -> u64 {
    summary["ok"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// Total failed requests.
pub fn err_total(summary: &serde_json::Value) -> u64 {
    summary["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// A test build of the BPF object (see build.rs), in 8-byte aligned
/// storage as aya expects. Returns the storage; use [`object_bytes`].
pub fn test_object(name: &str) -> (Vec<u64>, usize) {
    let path = format!(
        "{}/{name}",
        switchyard_node_datapath::datapath::TEST_OBJECT_DIR
    );
    let data = std::fs::read(&path).unwrap();
    let mut words = vec![0u64; data.len().div_ceil(8)];
    for (i, chunk) in data.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        words[i] = u64::from_ne_bytes(w);
    }
    (words, data.len())
}

/// The bytes of a [`test_object`].
pub fn object_bytes(obj: &(Vec<u64>, usize)) -> &[u8] {
    // SAFETY: the vector holds at least `obj.1` initialised bytes.
    unsafe { std::slice::from_raw_parts(obj.0.as_ptr().cast::<u8>(), obj.1) }
}

/// The test VIP `10.96.0.10:80/TCP` served by backend 1 on port 8080
/// (rev-NAT index 1, no affinity).
pub fn serve_vip_on_backend_1(dp: &Datapath) {
    dp.lb_maps()
        .unwrap()
        .apply_all(
            &Svc::new(VIP, 80, IPPROTO_TCP)
                .rev_nat(1)
                .backends(&[(1, Lab::backend_addr(1), 8080)])
                .cluster_ip_ops(),
        )
        .unwrap();
}

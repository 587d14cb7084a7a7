//! `switchyard-lab`: the local cluster for people.
//!
//! `up` starts a supervisor (`up --foreground`, detached) that owns the
//! cluster and waits for `down`; `status`, `exec` and `down` find it through
//! its state directory (`/dev/shm/switchyard-lab/<name>`).

use std::io::{BufRead, BufReader, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use switchyard_e2e::cluster::{STATE_ROOT, client_from};
use switchyard_e2e::sys::{self, Placement};
use switchyard_e2e::teardown::{cleanup_stale, teardown_by_name};
use switchyard_e2e::topology::Plan;
use switchyard_e2e::{Cluster, ClusterConfig, Error, ProxyMode, Result, node_requests};

#[derive(Debug, Parser)]
#[command(about = "A local real Kubernetes cluster without Docker")]
struct Cli {
    /// Cluster name (its network namespaces are `<name>-*`).
    #[arg(long, global = true, default_value = "lab")]
    name: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build (first time) and start a cluster, then return.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// kube-proxy mode: iptables or nftables.
        #[arg(long, default_value = "iptables")]
        proxy_mode: String,
        /// Root-namespace port of the API server forwarder on 127.0.0.1.
        #[arg(long, default_value_t = 16443)]
        port: u16,
        /// Run the supervisor in this process (used by `up` itself).
        #[arg(long, hide = true)]
        foreground: bool,
    },
    /// Show whether the cluster runs, its kubeconfig, nodes and pods.
    Status,
    /// Run a command in a node's, a pod's or the external client's network
    /// namespace and cgroup.
    Exec {
        /// Node name (node1, node2, …).
        #[arg(long, conflicts_with = "pod")]
        node: Option<String>,
        /// The external client outside the cluster (behind the router).
        #[arg(long, conflicts_with_all = ["node", "pod"])]
        external: bool,
        /// Pod as NAMESPACE/NAME.
        #[arg(long)]
        pod: Option<String>,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop the cluster and remove everything it created (and what runs
    /// whose process died left behind).
    Down,
    /// Grow or shrink the running cluster.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Add a node, as a new machine joins a cluster; prints its name.
    Add {
        /// A taint it registers with, `KEY[=VALUE]:EFFECT` (kubelet's
        /// `--register-with-taints`); repeatable. A cluster off kube-proxy
        /// wants `switchyard.dev/datapath-not-ready:NoSchedule`.
        #[arg(long = "taint", value_parser = switchyard_e2e::node_requests::parse_taint)]
        taints: Vec<k8s_openapi::api::core::v1::Taint>,
    },
    /// Remove a node, as its machine leaves the cluster: its pods stop, its
    /// network goes and its Node is deleted.
    Remove {
        /// Node name (node1, node2, …).
        node: String,
    },
}

fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

fn supervisor_pid(name: &str) -> Option<i32> {
    let pid = std::fs::read_to_string(state_dir(name).join("owner"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    sys::pid_alive(pid).then_some(pid)
}

fn log_path(name: &str) -> PathBuf {
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join(".cache/switchyard")
        .join(format!("lab-{name}.log"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let foreground = matches!(
        cli.cmd,
        Cmd::Up {
            foreground: true,
            ..
        }
    );
    switchyard_e2e::init_stderr_logging(if foreground { "info" } else { "warn" });
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let name = cli.name.clone();
    match cli.cmd {
        Cmd::Up {
            nodes,
            proxy_mode,
            port,
            foreground,
        } => {
            let mode: ProxyMode = proxy_mode.parse()?;
            if let Some(pid) = supervisor_pid(&name) {
                println!("A lab cluster named {name} is already running (supervisor pid {pid}).");
                println!(
                    "Use it: export KUBECONFIG={}",
                    state_dir(&name).join("admin.kubeconfig").display()
                );
                println!("Or stop it first: switchyard-lab down");
                return Ok(ExitCode::FAILURE);
            }
            if foreground {
                supervise(&name, nodes, mode, port).await
            } else {
                up_detached(&name, nodes, &proxy_mode, port)
            }
        }
        Cmd::Status => status(&name).await,
        Cmd::Exec {
            node,
            external,
            pod,
            command,
        } => {
            let node = if external {
                Some(EXTERNAL.to_string())
            } else {
                node
            };
            exec(&name, node, pod, command).await
        }
        Cmd::Down => down(&name),
        Cmd::Node {
            cmd: NodeCmd::Add { taints },
        } => node_request(&name, &node_requests::Request::Add { taints }),
        Cmd::Node {
            cmd: NodeCmd::Remove { node },
        } => node_request(&name, &node_requests::Request::Remove { node }),
    }
}

/// Asks the cluster's supervisor to add or remove a node and waits for the
/// node's name.
fn node_request(name: &str, request: &node_requests::Request) -> Result<ExitCode> {
    let Some(pid) = supervisor_pid(name) else {
        println!("No lab cluster named {name} is running: switchyard-lab up");
        return Ok(ExitCode::FAILURE);
    };
    let answer = node_requests::submit(&state_dir(name), request)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| Error::Config(format!("waking the supervisor (pid {pid}): {e}")))?;
    let node = node_requests::wait_answer(&answer, Duration::from_secs(120))?;
    println!("{node}");
    Ok(ExitCode::SUCCESS)
}

async fn supervise(name: &str, nodes: usize, mode: ProxyMode, port: u16) -> Result<ExitCode> {
    let cfg = ClusterConfig {
        nodes,
        proxy_mode: mode,
        name: Some(name.to_string()),
        api_listen: SocketAddr::from(([127, 0, 0, 1], port)),
        outside: true,
        rbac_audit: false,
        ..Default::default()
    };
    let started = Instant::now();
    let cluster = Cluster::start(cfg).await?;
    let ready = cluster.state_dir().join("ready");
    std::fs::write(&ready, format!("{:.1}\n", started.elapsed().as_secs_f64()))
        .map_err(Error::io("writing", &ready))?;
    eprintln!(
        "switchyard-lab: cluster {name} ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut cluster = cluster;
    let signal = |kind| {
        tokio::signal::unix::signal(kind).map_err(Error::io("installing signal handler", "signal"))
    };
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut wake = signal(tokio::signal::unix::SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = wake.recv() => node_requests::serve(&mut cluster).await,
        }
    }
    eprintln!("switchyard-lab: tearing down {name}");
    cluster.teardown();
    Ok(ExitCode::SUCCESS)
}

fn up_detached(name: &str, nodes: usize, mode: &str, port: u16) -> Result<ExitCode> {
    let log = log_path(name);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    let mut child = spawn_supervisor(name, nodes, mode, port, &log)?;
    eprintln!(
        "switchyard-lab: starting cluster {name} ({nodes} nodes, kube-proxy {mode}); log: {}",
        log.display()
    );
    if !follow_until_ready(name, &log, &mut child)? {
        return Ok(ExitCode::FAILURE);
    }
    print_usage(name);
    Ok(ExitCode::SUCCESS)
}

/// Starts `switchyard-lab up --foreground` in a session of its own (it outlives this
/// command), its output to `log`.
fn spawn_supervisor(
    name: &str,
    nodes: usize,
    mode: &str,
    port: u16,
    log: &Path,
) -> Result<std::process::Child> {
    let out = std::fs::File::create(log).map_err(Error::io("creating", log))?;
    let err = out.try_clone().map_err(Error::io("cloning", log))?;
    let exe = std::env::current_exe().map_err(Error::io("locating", "switchyard-lab"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--name",
        name,
        "up",
        "--foreground",
        "--nodes",
        &nodes.to_string(),
        "--proxy-mode",
        mode,
    ])
    .args(["--port", &port.to_string()])
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(err);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from
    // the terminal's session so it outlives this command.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(Error::io("starting supervisor", log))?;
    Ok(child)
}

/// Shows the supervisor's log as it grows until the cluster is ready (true) or the
/// supervisor exits (false).
fn follow_until_ready(name: &str, log: &Path, child: &mut std::process::Child) -> Result<bool> {
    let ready = state_dir(name).join("ready");
    let mut reader = BufReader::new(std::fs::File::open(log).map_err(Error::io("opening", log))?);
    let mut pos = 0;
    loop {
        // Show progress: new log lines.
        let _ = reader.seek(std::io::SeekFrom::Start(pos));
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                pos += line.len() as u64;
                eprint!("  | {line}");
            }
            line.clear();
        }
        if ready.exists() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "switchyard-lab: the supervisor exited ({status}); see {}",
                log.display()
            );
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(true)
}

/// How to reach the cluster that is up.
fn print_usage(name: &str) {
    let kc = state_dir(name).join("admin.kubeconfig");
    println!("Cluster {name} is up.");
    println!("  export KUBECONFIG={}", kc.display());
    println!(
        "  {} get nodes -o wide   # kubectl {}",
        state_dir(name).join("kubectl").display(),
        switchyard_e2e::binaries::K8S_VERSION
    );
    println!("  switchyard-lab exec --node node1 -- iptables -t nat -L KUBE-SERVICES -n");
    println!(
        "  switchyard-lab exec --external -- curl -s http://<LoadBalancer IP or node IP:NodePort>/"
    );
    println!(
        "  switchyard-lab node add --taint switchyard.dev/datapath-not-ready:NoSchedule   # a machine joins"
    );
    println!("  switchyard-lab node remove node4   # its machine leaves");
    println!("  switchyard-lab down");
}

async fn status(name: &str) -> Result<ExitCode> {
    let Some(pid) = supervisor_pid(name) else {
        println!("No lab cluster named {name} is running.");
        return Ok(ExitCode::FAILURE);
    };
    let state = state_dir(name);
    let kc = state.join("admin.kubeconfig");
    println!(
        "Cluster {name}: supervisor pid {pid}, {}",
        if state.join("ready").exists() {
            "ready"
        } else {
            "starting"
        }
    );
    println!("  KUBECONFIG={}", kc.display());
    if let Ok(client) = client_from(&kc).await {
        use k8s_openapi::api::core::v1::{Node, Pod};
        let nodes = kube::Api::<Node>::all(client.clone())
            .list(&Default::default())
            .await?;
        let pods = kube::Api::<Pod>::all(client)
            .list(&Default::default())
            .await?;
        println!(
            "  nodes: {}",
            nodes
                .items
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for p in pods.items {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            println!(
                "  pod {}/{} {phase} {node} {ip}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn exec(
    name: &str,
    node: Option<String>,
    pod: Option<String>,
    command: Vec<String>,
) -> Result<ExitCode> {
    if supervisor_pid(name).is_none() {
        return Err(Error::NotFound(format!(
            "lab cluster {name} (run `switchyard-lab up`)"
        )));
    }
    let state = state_dir(name);
    let cg = sys::cgroup2_root()?.join("switchyard-lab").join(name);
    let placement = match (node, pod) {
        (Some(node), None) if node == EXTERNAL => Placement {
            netns: Some(sys::netns_path(&Plan::new(name, 0).client_netns)),
            cgroup: Some(cg.join("outside")),
            ..Default::default()
        },
        (Some(node), None) => {
            let plan = Plan::new(name, crate_max_nodes());
            let n = plan
                .node(&node)
                .filter(|n| sys::netns_path(&n.netns).exists());
            let n = n.ok_or_else(|| Error::NotFound(format!("node {node}")))?;
            Placement {
                netns: Some(sys::netns_path(&n.netns)),
                cgroup: Some(cg.join(&node)),
                ..Default::default()
            }
        }
        (None, Some(pod)) => {
            let (ns, pname) = pod.split_once('/').unwrap_or(("default", pod.as_str()));
            let rec = state.join("pods").join(format!("{ns}_{pname}"));
            let text = std::fs::read_to_string(&rec)
                .map_err(|_| Error::NotFound(format!("pod {ns}/{pname}")))?;
            let mut lines = text.lines();
            let netns = lines.next().map(PathBuf::from);
            let cgroup = lines.next().map(PathBuf::from);
            Placement {
                netns,
                cgroup,
                ..Default::default()
            }
        }
        _ => return Err(Error::Config("give exactly one of --node or --pod".into())),
    };
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Error::Config("empty command".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    sys::place(&mut cmd, &placement)?;
    let status = cmd.status().await.map_err(Error::io("running", program))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// `exec --external`: the external client's namespace.
const EXTERNAL: &str = "<external>";

fn crate_max_nodes() -> usize {
    switchyard_e2e::topology::MAX_NODES
}

fn down(name: &str) -> Result<ExitCode> {
    let state = state_dir(name);
    match supervisor_pid(name) {
        Some(pid) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while sys::pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            teardown_by_name(name, &state);
            println!("Cluster {name} stopped.");
        }
        None => {
            teardown_by_name(name, &state);
            println!("No lab cluster named {name} was running; removed any leftovers.");
        }
    }
    // Also what killed benchmarks and tests left (clusters whose owner died).
    cleanup_stale(Path::new(STATE_ROOT));
    Ok(ExitCode::SUCCESS)
}

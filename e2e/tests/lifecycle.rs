//! The lab itself: the node runtime's truthfulness (unknown images,
//! restarts, deletion) and teardown leaving nothing behind, also after a
//! killed run.

#![allow(clippy::unwrap_used)] // helpers of tests, not only #[test] fns

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use switchyard_e2e::sys;
use switchyard_e2e::{Cluster, ClusterConfig, skip_unless_root, wait_for};

/// One cluster at a time per test binary (cargo runs binaries one by one).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pod_json(name: &str, image: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}]}]}})
}

async fn pod_where(api: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    wait_for(
        &format!("pod {name}: {what}"),
        Duration::from_secs(30),
        || async { api.get_opt(name).await.ok().flatten().filter(|p| f(p)) },
    )
    .await
    .unwrap()
}

fn container_status(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_reports_unknown_images_restarts_crashes_and_deletes_pods() {
    let _g = SERIAL.lock().await;
    if skip_unless_root() {
        return;
    }
    let c = Cluster::start(ClusterConfig {
        nodes: 1,
        kube_proxy: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    switchyard_e2e::addons::apply(&c.client(), &pod_json("unknown", "busybox:1.36"))
        .await
        .unwrap();
    switchyard_e2e::addons::apply(&c.client(), &pod_json("web", "nginx"))
        .await
        .unwrap();

    let bad = pod_where(&api, "unknown", "waiting with reason UnknownImage", |p| {
        container_status(p)
            .and_then(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .as_deref()
            == Some("UnknownImage")
    })
    .await;
    assert_eq!(
        bad.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    let ready = |p: &Pod| container_status(p).is_some_and(|s| s.ready);
    let web = pod_where(&api, "web", "ready", ready).await;
    let ip: std::net::Ipv4Addr = web
        .status
        .as_ref()
        .unwrap()
        .pod_ip
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    let r = c.http_get_from_node("node1", ip, 80, "/").await.unwrap();
    assert_eq!((r.status, r.body.trim()), (200, "web"));

    // Crash the container: the runtime restarts it and counts the restart.
    let id = container_status(&web)
        .unwrap()
        .container_id
        .clone()
        .unwrap();
    let pid: i32 = id.trim_start_matches("switchyard-lab://").parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = pod_where(&api, "web", "restartCount 1 and ready again", |p| {
        container_status(p).is_some_and(|s| s.restart_count == 1 && s.ready)
    })
    .await;
    let last = container_status(&restarted)
        .unwrap()
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 137);
    assert_eq!(
        c.http_get_from_node("node1", ip, 80, "/")
            .await
            .unwrap()
            .status,
        200
    );

    // Deletion stops the process, frees the namespace and removes the pod.
    let netns = c.pod("default", "web").unwrap().netns;
    api.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for(
        "pod web gone from the API",
        Duration::from_secs(30),
        || async {
            api.get_opt("web")
                .await
                .ok()
                .filter(Option::is_none)
                .map(|_| ())
        },
    )
    .await
    .unwrap();
    wait_for(
        "pod web's network namespace removed",
        Duration::from_secs(10),
        || async { (!netns.exists()).then_some(()) },
    )
    .await
    .unwrap();
    assert!(c.pod("default", "web").is_err());
}

/// Everything a cluster owns, as seen from outside.
fn footprint(name: &str, state: &Path) -> Vec<String> {
    let mut found: Vec<String> = sys::netns_list(&format!("{name}-"))
        .into_iter()
        .map(|n| format!("netns {n}"))
        .collect();
    let cg = sys::cgroup2_root()
        .unwrap()
        .join("switchyard-lab")
        .join(name);
    if cg.exists() {
        found.push(format!("cgroup {}", cg.display()));
    }
    if state.exists() {
        found.push(format!("state {}", state.display()));
    }
    let bpf = Path::new("/sys/fs/bpf/switchyard-lab").join(name);
    if bpf.exists() {
        found.push(format!("bpffs dir {}", bpf.display()));
    }
    found
}

fn cgroup_pids(name: &str) -> Vec<i32> {
    let cg = sys::cgroup2_root()
        .unwrap()
        .join("switchyard-lab")
        .join(name);
    sys::Cgroup { path: cg }.pids_recursive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_leaves_nothing_behind_also_after_a_killed_run() {
    let _g = SERIAL.lock().await;
    if skip_unless_root() {
        return;
    }
    let watched: Vec<PathBuf> = ["/var/run/secrets", "/var/lib/kube-proxy"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let existed: Vec<bool> = watched.iter().map(|p| p.exists()).collect();

    // A supervisor killed with SIGKILL leaves its whole cluster behind.
    let stale = format!("syk{}", std::process::id());
    let mut sup = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-lab"))
        .args([
            "--name",
            &stale,
            "up",
            "--foreground",
            "--nodes",
            "1",
            "--port",
            "0",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stale_state = Path::new(switchyard_e2e::cluster::STATE_ROOT).join(&stale);
    wait_for(
        "the supervisor's cluster to be ready",
        Duration::from_secs(120),
        || async { stale_state.join("ready").exists().then_some(()) },
    )
    .await
    .unwrap();
    let stale_pids = cgroup_pids(&stale);
    assert!(
        stale_pids.len() >= 5,
        "control plane and kube-proxy running: {stale_pids:?}"
    );
    sup.kill().unwrap();
    sup.wait().unwrap();
    assert!(!footprint(&stale, &stale_state).is_empty());

    // The next start cleans that up, and its own teardown is complete.
    let c = Cluster::start(ClusterConfig {
        nodes: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        footprint(&stale, &stale_state),
        Vec::<String>::new(),
        "leftovers of the killed run"
    );
    assert!(
        stale_pids.iter().all(|p| !sys::pid_alive(*p)),
        "killed run's processes still alive"
    );
    switchyard_e2e::addons::apply(&c.client(), &pod_json("web", "nginx"))
        .await
        .unwrap();
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    pod_where(&api, "web", "ready", |p| {
        container_status(p).is_some_and(|s| s.ready)
    })
    .await;
    let (name, state) = (c.name().to_string(), c.state_dir().to_path_buf());
    let pids = cgroup_pids(&name);
    assert!(
        pids.len() >= 7,
        "control plane, 2 kube-proxies and the pod: {pids:?}"
    );
    assert!(
        sys::netns_list(&format!("{name}-")).len() >= 4,
        "cp, 2 nodes, 1 pod"
    );
    c.teardown();

    assert_eq!(footprint(&name, &state), Vec::<String>::new());
    wait_for(
        "every cluster process to exit",
        Duration::from_secs(10),
        || async { pids.iter().all(|p| !sys::pid_alive(*p)).then_some(()) },
    )
    .await
    .unwrap();
    for (p, e) in watched.iter().zip(existed) {
        // A lab started meanwhile by another test process may use the mount
        // point: teardown hands it over to that cluster instead.
        assert!(
            p.exists() == e || handed_over(p),
            "mount point {} left behind",
            p.display()
        );
    }
}

/// Whether another live lab cluster lists `p` among the mount points it
/// will remove.
fn handed_over(p: &Path) -> bool {
    std::fs::read_dir(switchyard_e2e::cluster::STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|state| switchyard_e2e::teardown::owner(state).is_some_and(sys::pid_alive))
        .filter_map(|state| std::fs::read_to_string(state.join("mountpoints")).ok())
        .any(|m| m.lines().any(|l| Path::new(l) == p))
}

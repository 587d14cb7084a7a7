//! End-to-end acceptance tests on the local real cluster (root; CI runs as
//! root). Clusters are started one at a time (a process-wide lock), each
//! with its own names, and torn down by `Drop` also when a test panics.

#![allow(clippy::unwrap_used)] // helpers of tests, not only #[test] fns

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use serde_json::json;
use switchyard_e2e::{Cluster, ClusterConfig, ProxyMode, skip_unless_root, wait_for};

/// One cluster at a time per test binary (cargo runs binaries one by one).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(nodes: usize, mode: ProxyMode) -> Cluster {
    let started = std::time::Instant::now();
    let c = Cluster::start(ClusterConfig {
        nodes,
        proxy_mode: mode,
        ..Default::default()
    })
    .await
    .unwrap();
    eprintln!(
        "cluster {} with {nodes} nodes ready in {:.1} s",
        c.name(),
        started.elapsed().as_secs_f64()
    );
    c
}

async fn apply(c: &Cluster, obj: serde_json::Value) {
    switchyard_e2e::addons::apply(&c.client(), &obj)
        .await
        .unwrap();
}

/// The nginx demo: Service (TCP 80 + UDP 5353) and a 2-replica Deployment
/// spread over two nodes, plus a client pod pinned to the third node.
async fn deploy_demo(c: &Cluster) {
    apply(c, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"selector": {"app": "nginx"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
            {"name": "echo", "port": 5353, "targetPort": 5353, "protocol": "UDP"}]}}))
    .await;
    apply(c, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
          "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "nginx"}}, "topologyKey": "kubernetes.io/hostname"}]},
              "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node1", "node2"]}]}]}}},
            "containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [
                {"containerPort": 80}, {"containerPort": 5353, "protocol": "UDP"}]}]}}}}))
    .await;
    apply(c, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "node3"},
                 "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "ports": [{"containerPort": 8080}]}]}}))
    .await;
}

async fn running_pods(c: &Cluster, selector: &str, want: usize) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(c.client(), "default");
    let lp = ListParams::default().labels(selector);
    wait_for(
        &format!("{want} ready pods matching {selector}"),
        Duration::from_secs(60),
        || {
            let (api, lp) = (api.clone(), lp.clone());
            async move {
                let pods = api.list(&lp).await.ok()?.items;
                let ready = pods
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().is_some_and(|s| {
                            s.phase.as_deref() == Some("Running")
                                && s.conditions
                                    .iter()
                                    .flatten()
                                    .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                    })
                    .count();
                (ready == want && pods.len() == want).then_some(pods)
            }
        },
    )
    .await
    .unwrap()
}

async fn cluster_ip(c: &Cluster, name: &str) -> Ipv4Addr {
    let svc = Api::<Service>::namespaced(c.client(), "default")
        .get(name)
        .await
        .unwrap();
    svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap()
}

async fn kubectl(c: &Cluster, args: &[&str]) -> String {
    let out = tokio::process::Command::new(c.binaries().k8s("kubectl"))
        .arg(format!("--kubeconfig={}", c.kubeconfig().display()))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GETs the ClusterIP from the client pod until both backends answered.
async fn assert_both_backends_reached(c: &Cluster, ip: Ipv4Addr, backends: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    while seen != *backends {
        if let Ok(r) = c.http_get_from_pod("default", "client", ip, 80, "/").await {
            assert_eq!(r.status, 200, "ClusterIP answered {r:?}");
            seen.insert(r.body.trim().to_string());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 45 s for HTTP 200 from both backends {backends:?} via {ip}:80; saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn demo(mode: ProxyMode) {
    let c = start(3, mode).await;
    let nodes = kubectl(&c, &["get", "nodes"]).await;
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "kubectl get nodes:\n{nodes}"
    );
    deploy_demo(&c).await;
    let pods = running_pods(&c, "app=nginx", 2).await;
    running_pods(&c, "", 3).await; // the two backends and the client
    let ip = cluster_ip(&c, "nginx").await;
    let backends: BTreeSet<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let pod_ips: Vec<String> = pods
        .iter()
        .map(|p| p.status.as_ref().unwrap().pod_ip.clone().unwrap())
        .collect();
    let hosts: BTreeSet<String> = pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "backends on two nodes: {hosts:?}");

    let svc = kubectl(&c, &["get", "svc", "nginx"]).await;
    assert!(svc.contains(&ip.to_string()), "kubectl get svc:\n{svc}");
    let wide = kubectl(&c, &["get", "pods", "-o", "wide"]).await;
    for pip in &pod_ips {
        assert!(
            wide.lines()
                .any(|l| l.contains(pip) && l.contains("Running")),
            "pod {pip} in:\n{wide}"
        );
    }
    wait_for(
        "both endpoints in `kubectl get ep nginx`",
        Duration::from_secs(30),
        || async {
            let ep = kubectl(&c, &["get", "ep", "nginx"]).await;
            pod_ips
                .iter()
                .all(|p| ep.contains(&format!("{p}:80")) || ep.contains(&format!("{p}:5353")))
                .then_some(())
        },
    )
    .await
    .unwrap();

    // kube-proxy programmed the service on every node.
    for node in ["node1", "node2", "node3"] {
        wait_for(
            &format!("{} rules for {ip} on {node}", mode.as_str()),
            Duration::from_secs(30),
            || async {
                match mode {
                    ProxyMode::Iptables => {
                        let out = c
                            .exec_on_node(
                                node,
                                &["iptables", "-t", "nat", "-L", "KUBE-SERVICES", "-n"],
                            )
                            .await
                            .ok()?;
                        let text = String::from_utf8_lossy(&out.stdout).into_owned();
                        text.lines()
                            .any(|l| l.starts_with("KUBE-SVC-") && l.contains(&ip.to_string()))
                            .then_some(())
                    }
                    ProxyMode::Nftables => {
                        let out = c
                            .exec_on_node(node, &["nft", "list", "table", "ip", "kube-proxy"])
                            .await
                            .ok()?;
                        String::from_utf8_lossy(&out.stdout)
                            .contains(&ip.to_string())
                            .then_some(())
                    }
                }
            },
        )
        .await
        .unwrap();
    }

    assert_both_backends_reached(&c, ip, &backends).await;

    // UDP through kube-proxy.
    let reply = wait_for(
        "UDP echo via the ClusterIP",
        Duration::from_secs(30),
        || async {
            c.udp_from_pod("default", "client", ip, 5353, "ping")
                .await
                .ok()
        },
    )
    .await
    .unwrap();
    let (from, payload) = reply.split_once(": ").unwrap();
    assert!(
        backends.contains(from),
        "UDP reply from {from}, not a backend"
    );
    assert_eq!(payload, "ping");

    // The `kubernetes` Service reaches the API server from a pod: a plain
    // HTTP request to its TLS port gets the Go TLS server's HTTP 400.
    let r = wait_for(
        "the kubernetes Service from a pod",
        Duration::from_secs(30),
        || async {
            c.http_get_from_pod("default", "client", Ipv4Addr::new(10, 96, 0, 1), 443, "/")
                .await
                .ok()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("HTTPS server"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_demo_with_kube_proxy_iptables() {
    let _g = SERIAL.lock().await;
    if skip_unless_root() {
        return;
    }
    demo(ProxyMode::Iptables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_demo_with_kube_proxy_nftables() {
    let _g = SERIAL.lock().await;
    if skip_unless_root() {
        return;
    }
    demo(ProxyMode::Nftables).await;
}

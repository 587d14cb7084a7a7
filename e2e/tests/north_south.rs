//! North-south end-to-end scenarios on the local real cluster (root):
//! traffic from OUTSIDE the cluster (an external client behind a router, no
//! NAT on the way) to every node's NodePorts and to LoadBalancer IPs the
//! lab's LoadBalancer routes to the nodes that pass its health checks;
//! through kube-proxy, across a migration off it, and back.

#![allow(clippy::unwrap_used)]

#[path = "north_south/observed.rs"]
mod observed;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use switchyard_api::{MigrationPlan, NodeDatapath, NodeStep, Phase};
use switchyard_e2e::ingress::{self, Ingress};
use switchyard_e2e::outside::model::EXCLUDE_LABEL;
use switchyard_e2e::outside::traffic::{self, ExternalLoad, FlowTotals, Flows};
use switchyard_e2e::scenario::{self, Totals};
use switchyard_e2e::topology::CLIENT_IP;
use switchyard_e2e::{Cluster, ClusterConfig, ProxyMode, skip_unless_root, wait_for};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests per second to each external target (8 targets).
const RATE: u32 = 20;
/// The pod on node1 that uses another node's NodePort.
const CLIENT_POD: &str = "client-node1";

fn project_bin(name: &str) -> std::path::PathBuf {
    let bins = switchyard_e2e::binaries::Binaries::locate().unwrap();
    let p = bins.project_bin.join(name);
    assert!(
        p.exists(),
        "{name} not built: run `make e2e` (it builds the project's binaries first)"
    );
    p
}

/// A 3-node cluster with its outside, the workload and the north-south
/// Services deployed, a client pod on node1, and (when `install`)
/// switchyard installed.
async fn start(mode: ProxyMode, install: bool) -> (Cluster, Ingress) {
    let started = Instant::now();
    let bins = switchyard_e2e::binaries::Binaries::locate().unwrap();
    let c = Cluster::start(ClusterConfig {
        nodes: 3,
        proxy_mode: mode,
        images: Some(scenario::images(&bins.project_bin).unwrap()),
        outside: true,
        ..Default::default()
    })
    .await
    .unwrap();
    scenario::deploy_workload(&c).await.unwrap();
    let ingress = ingress::deploy_ingress(&c).await.unwrap();
    switchyard_e2e::addons::apply(
        &c.client(),
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": CLIENT_POD, "namespace": "default"},
            "spec": {"nodeName": "node1", "containers": [{"name": "c",
                "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "ports": [{"containerPort": 8080}]}]}}),
    )
    .await
    .unwrap();
    wait_for(
        "the client pod on node1",
        Duration::from_secs(60),
        || async { c.pod("default", CLIENT_POD).ok() },
    )
    .await
    .unwrap();
    if install {
        scenario::install(&c).await.unwrap();
    }
    eprintln!(
        "[{}] cluster ({mode:?}), outside and north-south Services ready in {:.1}s; backends on {:?}, LB IPs {} (eTP=Local) {} (eTP=Cluster)",
        c.name(),
        started.elapsed().as_secs_f64(),
        ingress.backend_nodes,
        ingress.lb_local.ip,
        ingress.lb_cluster.ip
    );
    (c, ingress)
}

/// External load on every target, and the two long-lived flows to the
/// NodePorts of a node without a backend (kube-proxy forwards them to
/// another node).
async fn start_traffic(c: &Cluster, ingress: &Ingress) -> (ExternalLoad, Flows) {
    let outside = c.outside().unwrap();
    let load = traffic::start_load(
        outside,
        &project_bin("switchyard-loadgen"),
        &ingress.load_targets(),
        RATE,
    )
    .await
    .unwrap();
    let node = ingress.node_without_backend();
    let flows = traffic::start_flows(
        outside,
        &project_bin("switchyard-flows"),
        ingress.on_node(&node, ingress.node_port).unwrap(),
        ingress.on_node(&node, ingress.udp_node_port).unwrap(),
    )
    .await
    .unwrap();
    (load, flows)
}

/// Prints the totals (the closing note quotes them).
fn report_load(scenario: &str, totals: &[Totals]) {
    let ok: u64 = totals.iter().map(|t| t.ok).sum();
    let failed: u64 = totals.iter().map(|t| t.failed).sum();
    eprintln!("  [{scenario}] external requests: {ok} ok, {failed} failed");
    let at = |ms: Option<u128>| {
        let ms = ms.and_then(|m| i64::try_from(m).ok()).unwrap_or_default();
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default()
    };
    for t in totals.iter().filter(|t| t.failed > 0) {
        eprintln!(
            "    {}: {} ok, {} failed from {} to {}, last error {:?}",
            t.target,
            t.ok,
            t.failed,
            at(t.first_failure_ms),
            at(t.last_failure_ms),
            t.errors.last()
        );
    }
}

fn assert_no_failures(scenario: &str, totals: &[Totals], min_ok: u64) {
    let failed: u64 = totals.iter().map(|t| t.failed).sum();
    assert_eq!(failed, 0, "[{scenario}] failed external requests");
    for t in totals {
        assert!(
            t.ok >= min_ok,
            "[{scenario}] only {} requests to {} succeeded",
            t.ok,
            t.target
        );
    }
}

fn report_flows(scenario: &str, flows: &[FlowTotals]) {
    for f in flows {
        eprintln!(
            "  [{scenario}] long-lived {}: {} sent, {} answered, {} lost, {} connection(s), backends {:?}",
            f.target, f.sent, f.answered, f.lost, f.connections, f.backends
        );
    }
}

/// Prints what the external load, the long-lived flows and the
/// LoadBalancer's health checks saw (before any assertion, so a failing run
/// reports all of it).
fn report(c: &Cluster, scenario: &str, totals: &[Totals], flows: &[FlowTotals]) {
    report_load(scenario, totals);
    report_flows(scenario, flows);
    let lb = c.outside().unwrap().load_balancer();
    let (take_outs, (strikes, strikes_total)) = (lb.take_outs(), lb.strikes());
    eprintln!(
        "  [{scenario}] LoadBalancer: {strikes_total} failed check(s) of nodes in rotation, {} take-out(s)",
        take_outs.len()
    );
    for s in strikes.iter().take(10) {
        eprintln!(
            "    {} {} failed a check for {}: {}",
            s.at.format("%H:%M:%S%.3f"),
            s.node,
            s.service,
            s.failure
        );
    }
    for t in &take_outs {
        eprintln!(
            "    {} {} out of {}: {:?}",
            t.at.format("%H:%M:%S%.3f"),
            t.node,
            t.service,
            t.failures.last()
        );
    }
}

fn assert_flows_intact(scenario: &str, flows: &[FlowTotals], min_sent: u64) {
    for f in flows {
        assert!(f.sent >= min_sent, "[{scenario}] {}: too short", f.target);
        assert_eq!(
            (f.lost, f.connections, f.backends.len(), f.backend_changes),
            (0, 1, 1, 0),
            "[{scenario}] {} lost messages, was reopened or changed backend: {:?}",
            f.target,
            f.errors
        );
    }
}

/// The eTP=Local LoadBalancer Service's backends see the external client's
/// own address, whichever backend node the router picks.
async fn assert_source_preserved(c: &Cluster, ingress: &Ingress) {
    let outside = c.outside().unwrap();
    let lb = SocketAddr::from((ingress.lb_local.ip, ingress.lb_local.port));
    for _ in 0..6 {
        let r = outside.http_get(lb, "/source").await.unwrap();
        assert_eq!(r.status, 200);
        let seen: Ipv4Addr = r.body.trim().rsplit_once(':').unwrap().0.parse().unwrap();
        assert_eq!(seen, CLIENT_IP, "the backend saw {seen}, not the client");
    }
}

/// A pod on node1 reaches the NodePort Service through node2's address.
async fn assert_pod_uses_other_nodes_node_port(c: &Cluster, ingress: &Ingress) {
    let node2 = ingress.node_ip("node2").unwrap();
    let r = c
        .http_get_from_pod("default", CLIENT_POD, node2, ingress.node_port, "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

/// A client on node1 reaching `127.0.0.1:<nodePort>` (curl, in the node's
/// network namespace and cgroup) gets an answer exactly when kube-proxy's
/// `mode` serves localhost NodePorts (iptables mode does, nftables mode
/// does not).
async fn assert_localhost_node_port(c: &Cluster, ingress: &Ingress, mode: ProxyMode) {
    let url = format!("http://127.0.0.1:{}/", ingress.node_port);
    let argv = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "3",
        &url,
    ];
    let out = c.exec_on_node("node1", &argv).await.unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let expected = if mode == ProxyMode::Iptables {
        "200"
    } else {
        "000"
    };
    assert_eq!(code, expected, "localhost NodePort in {mode:?} mode");
}

/// An outside client reaches `web-nodeport`'s ClusterIP through a route
/// the router holds to node1, as routers do for BGP-advertised Service
/// IPs: kube-proxy serves that, and so must its replacement.
async fn assert_cluster_ip_from_outside(c: &Cluster, ingress: &Ingress) {
    let svc: Service = Api::namespaced(c.client(), "default")
        .get("web-nodeport")
        .await
        .unwrap();
    let spec = svc.spec.unwrap();
    let ip: Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    let port = u16::try_from(spec.ports.unwrap()[0].port).unwrap();
    let node1 = ingress.node_ip("node1").unwrap().to_string();
    let route = [
        "-n",
        &c.plan().router_netns,
        "route",
        "replace",
        &format!("{ip}/32"),
        "via",
        &node1,
    ];
    let out = tokio::process::Command::new("ip")
        .args(route)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = c.outside().unwrap().http_get((ip, port).into(), "/").await;
    assert_eq!(
        r.map(|r| r.status).ok(),
        Some(200),
        "ClusterIP {ip}:{port} from outside"
    );
}

/// An address added to node1 after the migration serves NodePorts within
/// a few of the agent's heartbeats, as kube-proxy's iptables mode serves
/// every local address as it is.
async fn assert_an_added_address_serves_node_ports(c: &Cluster, ingress: &Ingress) {
    let added = Ipv4Addr::new(172, 31, 255, 111);
    let argv = ["ip", "addr", "add", &format!("{added}/24"), "dev", "eth0"];
    let out = c.exec_on_node("node1", &argv).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outside = c.outside().unwrap();
    let target = SocketAddr::from((added, ingress.node_port));
    wait_for(
        "the NodePort on an added address",
        Duration::from_secs(60),
        || async {
            let r = outside.http_get(target, "/").await.ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await
    .unwrap();
}

/// The LoadBalancer never took a node out (single failed checks are
/// reported by [`report`], not asserted: a take-out is what cuts traffic).
fn assert_no_take_outs(c: &Cluster, scenario: &str) {
    let take_outs = c.outside().unwrap().load_balancer().take_outs();
    assert!(
        take_outs.is_empty(),
        "[{scenario}] the LoadBalancer took healthy nodes out: {take_outs:#?}"
    );
}

fn progress(p: &MigrationPlan) {
    if let Some(s) = &p.status {
        let nodes: Vec<String> = s
            .expanded()
            .nodes
            .iter()
            .map(|n| format!("{}={:?}", n.name, n.step))
            .collect();
        eprintln!(
            "  {} plan {:?} {} [{}]",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            s.phase,
            s.summary.progress,
            nodes.join(" ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_traffic_is_served_by_kube_proxy_and_the_lb_sees_every_node_healthy() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (c, ingress) = start(ProxyMode::Iptables, false).await;
    let (load, flows) = start_traffic(&c, &ingress).await;
    assert_source_preserved(&c, &ingress).await;
    assert_pod_uses_other_nodes_node_port(&c, &ingress).await;
    load.wait_for_more(60).await.unwrap();
    flows.wait_for_more(30).await.unwrap();
    let (totals, flow_totals) = (load.stop().await.unwrap(), flows.stop().await.unwrap());
    report(&c, "kube-proxy", &totals, &flow_totals);
    assert_no_failures("kube-proxy", &totals, 60);
    assert_flows_intact("kube-proxy", &flow_totals, 30);
    assert_no_take_outs(&c, "kube-proxy");
    assert_exclusion_label_drains_a_node(&c, &ingress).await;
}

/// The router's route to a LoadBalancer IP.
async fn router_route(c: &Cluster, ip: Ipv4Addr) -> String {
    let out = tokio::process::Command::new("ip")
        .args([
            "-n",
            &c.plan().router_netns,
            "route",
            "show",
            &format!("{ip}/32"),
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node labelled `exclude-from-external-load-balancers` leaves every
/// rotation and the router's routes (without counting as a take-out), and
/// returns once the label is gone.
async fn assert_exclusion_label_drains_a_node(c: &Cluster, ingress: &Ingress) {
    let node = ingress.backend_nodes.iter().next().unwrap().clone();
    let ip = ingress.node_ip(&node).unwrap().to_string();
    let nodes: Api<Node> = Api::all(c.client());
    let label = |v: serde_json::Value| json!({"metadata": {"labels": {EXCLUDE_LABEL: v}}});
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(label(json!(""))),
        )
        .await
        .unwrap();
    let lb = c.outside().unwrap().load_balancer();
    wait_for(
        "the excluded node out of every rotation",
        Duration::from_secs(10),
        || async {
            let st = lb.state();
            let out = st.services.values().all(|s| !s.in_rotation.contains(&node));
            let routes = router_route(c, ingress.lb_cluster.ip).await;
            (out && !routes.contains(&ip)).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        router_route(c, ingress.lb_cluster.ip)
            .await
            .contains("nexthop via")
    );
    nodes
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(label(serde_json::Value::Null)),
        )
        .await
        .unwrap();
    ingress::wait_lb_rotation(c, ingress).await.unwrap();
    assert!(router_route(c, ingress.lb_cluster.ip).await.contains(&ip));
    assert_no_take_outs(c, "exclusion label");
    eprintln!("  the exclusion label drained {node} and its removal restored it");
}

/// Migrates every node under external load and long-lived flows; asserts
/// that nothing failed, nothing was lost and no node was taken out.
async fn migrate_under_external_load(mode: ProxyMode, label: &str) -> (Cluster, Ingress) {
    let (c, ingress) = start(mode, true).await;
    assert_source_preserved(&c, &ingress).await;
    assert_localhost_node_port(&c, &ingress, mode).await;
    assert_cluster_ip_from_outside(&c, &ingress).await;
    let (load, flows) = start_traffic(&c, &ingress).await;
    let started = Instant::now();
    let body = scenario::migration_plan("to-ebpf", json!({}));
    scenario::apply_plan(&c, body).await.unwrap();
    let p = scenario::follow_plan(
        &c,
        "to-ebpf",
        Duration::from_secs(300),
        progress,
        scenario::settled,
    )
    .await
    .unwrap();
    let s = p.status.unwrap().expanded();
    assert_eq!(s.phase, Phase::Succeeded, "{:?}", s.message);
    eprintln!(
        "  [{label}] migrated {} nodes in {:.1}s",
        s.nodes.len(),
        started.elapsed().as_secs_f64()
    );
    // Traffic covers the last switch and the time after it.
    flows.wait_for_more(20).await.unwrap();
    load.wait_for_more(20).await.unwrap();
    let (totals, flow_totals) = (load.stop().await.unwrap(), flows.stop().await.unwrap());
    report(&c, label, &totals, &flow_totals);
    assert_no_failures(label, &totals, 50);
    assert_flows_intact(label, &flow_totals, 50);
    assert_no_take_outs(&c, label);
    assert_source_preserved(&c, &ingress).await;
    assert_pod_uses_other_nodes_node_port(&c, &ingress).await;
    assert_localhost_node_port(&c, &ingress, mode).await;
    assert_cluster_ip_from_outside(&c, &ingress).await;
    if mode == ProxyMode::Iptables {
        assert_an_added_address_serves_node_ports(&c, &ingress).await;
    }
    (c, ingress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iptables_migration_serves_external_traffic_without_a_failure_then_rolls_back() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (c, ingress) = migrate_under_external_load(ProxyMode::Iptables, "iptables").await;
    observed::each_connection_from_outside_is_one_flow(&c, &ingress).await;

    // Rollback of the whole plan under the same external load.
    let (load, flows) = start_traffic(&c, &ingress).await;
    let api: Api<MigrationPlan> = Api::all(c.client());
    api.patch(
        "to-ebpf",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rollback": true}})),
    )
    .await
    .unwrap();
    let p = scenario::follow_plan(&c, "to-ebpf", Duration::from_secs(300), progress, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::RolledBack)
    })
    .await
    .unwrap();
    assert!(
        p.status
            .unwrap()
            .expanded()
            .nodes
            .iter()
            .all(|n| n.step == NodeStep::RolledBack)
    );
    flows.wait_for_more(20).await.unwrap();
    load.wait_for_more(20).await.unwrap();
    let (totals, flow_totals) = (load.stop().await.unwrap(), flows.stop().await.unwrap());
    report(&c, "rollback", &totals, &flow_totals);
    assert_no_failures("rollback", &totals, 50);
    assert_flows_intact("rollback", &flow_totals, 50);
    assert_no_take_outs(&c, "rollback");
    let ndp: Api<NodeDatapath> = Api::all(c.client());
    for d in ndp.list(&ListParams::default()).await.unwrap().items {
        assert_eq!(
            d.status.unwrap().active_mode,
            Some(switchyard_api::DatapathMode::Off),
            "{:?}",
            d.metadata.name
        );
    }
    assert_source_preserved(&c, &ingress).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nftables_migration_serves_external_traffic_without_a_failure() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    migrate_under_external_load(ProxyMode::Nftables, "nftables").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_manual_procedure_cuts_external_traffic_for_contrast() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (c, ingress) = start(ProxyMode::Iptables, true).await;
    let (load, flows) = start_traffic(&c, &ingress).await;
    let t0 = Instant::now();
    scenario::manual_procedure(&c).await.unwrap();
    let switched = t0.elapsed();
    load.wait_for_more(40).await.unwrap();
    flows.wait_for_more(20).await.unwrap();
    let (totals, flow_totals) = (load.stop().await.unwrap(), flows.stop().await.unwrap());
    eprintln!(
        "  [manual procedure] the switch took {:.1}s",
        switched.as_secs_f64()
    );
    report(&c, "manual procedure", &totals, &flow_totals);
    let failed: u64 = totals.iter().map(|t| t.failed).sum();
    assert!(
        failed > 0,
        "the manual procedure is expected to fail external requests between the flush and the new datapath"
    );
}

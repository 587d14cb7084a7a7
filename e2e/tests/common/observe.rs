//! `kubectl switchyard observe` on a migrated cluster: a pod connects to a
//! ClusterIP Service without endpoints, the eBPF datapath refuses it (the
//! client sees ECONNREFUSED, as under kube-proxy) and reports the drop;
//! observe, through the API server's pod proxy to every agent, shows that
//! one DROPPED flow with the pod, the Service and the reason; `observe -f`
//! prints the next one as it happens; the web view shows the same drop.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};
use switchyard_api::NodeDatapath;
use switchyard_e2e::{Cluster, wait_for};

use super::kubectl_switchyard;
use super::web::WebView;

pub(super) const NS: &str = "default";
pub(super) const SERVICE: &str = "no-endpoints";

/// A running nginx pod: (name, node).
async fn client_pod(c: &Cluster) -> (String, String) {
    let pods: Api<Pod> = Api::namespaced(c.client(), NS);
    let list = pods
        .list(&ListParams::default().labels("app=nginx"))
        .await
        .unwrap();
    let p = list
        .items
        .iter()
        .find(|p| c.pod(NS, p.metadata.name.as_deref().unwrap_or("")).is_ok())
        .expect("a running nginx pod");
    let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
    (p.metadata.name.clone().unwrap(), node)
}

/// Services `node`'s agent has seen and programmed.
async fn services_on(c: &Cluster, node: &str) -> (u32, u32) {
    let api: Api<NodeDatapath> = Api::all(c.client());
    let sync = api
        .get(node)
        .await
        .ok()
        .and_then(|d| d.status)
        .map(|s| s.sync)
        .unwrap_or_default();
    (sync.services_seen, sync.services_programmed)
}

/// Creates the Service (a selector no pod has) once `node`'s agent has
/// programmed it; returns its ClusterIP.
async fn service_without_endpoints(c: &Cluster, node: &str) -> String {
    let (seen, _) = services_on(c, node).await;
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NS},
        "spec": {"selector": {"app": "nobody"}, "ports": [{"name": "p", "port": 80, "targetPort": 80}]}});
    switchyard_e2e::addons::apply(&c.client(), &svc)
        .await
        .unwrap();
    wait_for(
        &format!("{node}'s agent programs {NS}/{SERVICE}"),
        Duration::from_secs(60),
        || async {
            let (s, p) = services_on(c, node).await;
            (s > seen && p == s).then_some(())
        },
    )
    .await
    .unwrap();
    let api: Api<Service> = Api::namespaced(c.client(), NS);
    let svc = api.get(SERVICE).await.unwrap();
    svc.spec.and_then(|s| s.cluster_ip).unwrap()
}

/// The DROPPED flows to the Service, as `observe -o json` prints them.
async fn observed(c: &Cluster, extra: &[&str]) -> Vec<Value> {
    let to = format!("{NS}/{SERVICE}");
    let mut args = vec!["observe", "--verdict", "DROPPED", "--to-service", &to];
    args.extend_from_slice(extra);
    let (ok, out, err) = kubectl_switchyard(c, &args).await;
    assert!(ok, "kubectl switchyard {}: {err}", args.join(" "));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Connects from the pod to `ip`:80; the datapath refuses it.
pub(super) async fn refused(c: &Cluster, pod: &str, ip: &str) {
    let connect = format!("exec 3<>/dev/tcp/{ip}/80");
    let out = c
        .exec_in_pod(NS, pod, &["bash", "-c", &connect])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Connection refused"),
        "{NS}/{pod} connecting to {ip}:80 (no endpoints): {out:?}"
    );
}

/// The flow (`-o json` line) is the pod's refused connection to the
/// Service, seen on `node`.
pub(super) fn assert_the_drop(line: &Value, pod: &str, node: &str, ip: &str) {
    let f = &line["flow"];
    assert_eq!(f["verdict"], "DROPPED", "{f}");
    assert_eq!(f["source"]["namespace"], NS, "{f}");
    assert_eq!(f["source"]["pod_name"], pod, "{f}");
    assert_eq!(
        f["destination_service"],
        json!({"namespace": NS, "name": SERVICE}),
        "{f}"
    );
    assert_eq!(f["drop_reason_desc"], "SERVICE_BACKEND_NOT_FOUND", "{f}");
    assert_eq!(f["IP"]["destination"], ip, "{f}");
    assert_eq!(f["node_name"], node, "{f}");
}

/// The follow both clients are given, the same filters for each: the last
/// drop to `to`, then the next ones, as JSON.
pub fn follow_args(to: &str) -> [&str; 8] {
    [
        "observe",
        "-f",
        "--last",
        "1",
        "--to-service",
        to,
        "-o",
        "json",
    ]
}

/// `observe -f --last 1` (every node followed through the API server's
/// pod proxy) prints the drop already seen, then the next one as it
/// happens, which it returns.
async fn followed(c: &Cluster, pod: &str, node: &str, ip: &str, seen: &Value) -> Value {
    let to = format!("{NS}/{SERVICE}");
    let child = super::kubectl_switchyard_command(c, &follow_args(&to));
    follow(c, child, pod, node, ip, seen).await
}

/// Runs `command` (a following observe printing `-o json` lines), checks
/// its first line is `seen`, makes the pod's connection be refused again,
/// and returns the next line, that new drop.
pub(super) async fn follow(
    c: &Cluster,
    mut command: tokio::process::Command,
    pod: &str,
    node: &str,
    ip: &str,
    seen: &Value,
) -> Value {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let line = line.expect("a following observe printed a flow within 30s");
        let line = line.unwrap().expect("a following observe ended early");
        serde_json::from_str(&line).unwrap()
    };
    // The node's answer has begun: its agent follows its new flows.
    assert_eq!(
        next().await["flow"]["socket_cookie"],
        seen["flow"]["socket_cookie"]
    );
    refused(c, pod, ip).await;
    let new = next().await;
    assert_the_drop(&new, pod, node, ip);
    assert_ne!(new["flow"]["socket_cookie"], seen["flow"]["socket_cookie"]);
    child.kill().await.unwrap();
    new
}

/// With `web`, the web view shows that one drop too.
pub async fn a_refused_connection_is_one_dropped_flow(c: &Cluster, web: Option<&mut WebView>) {
    let started = Instant::now();
    let (pod, node) = client_pod(c).await;
    let ip = service_without_endpoints(c, &node).await;
    refused(c, &pod, &ip).await;
    let flows = wait_for(
        "observe shows the refused connection",
        Duration::from_secs(30),
        || async {
            let flows = observed(c, &["-o", "json"]).await;
            (!flows.is_empty()).then_some(flows)
        },
    )
    .await
    .unwrap();
    assert_eq!(flows.len(), 1, "{flows:#?}");
    assert_the_drop(&flows[0], &pod, &node, &ip);
    if let Some(web) = web {
        let (from, to) = (format!("{NS}/{pod}"), format!("{NS}/{SERVICE}"));
        super::web::assert_shows_the_drop(web, &from, &node, &to).await;
    }
    // The other nodes saw none of it; the compact line says the same.
    let other = c.plan().nodes.iter().find(|n| n.name != node).unwrap();
    assert!(
        observed(c, &["--node", &other.name, "-o", "json"])
            .await
            .is_empty()
    );
    let from = format!("{NS}/{pod}");
    let (ok, line, err) =
        kubectl_switchyard(c, &["observe", "--from-pod", &from, "--verdict", "DROPPED"]).await;
    assert!(ok, "{err}");
    eprintln!("  kubectl switchyard observe --from-pod {from} --verdict DROPPED:\n{line}");
    let want =
        format!("{from} -> {ip}:80 to-service {NS}/{SERVICE} DROPPED (Service backend not found)");
    assert!(line.contains(&want), "{line}");
    let latest = followed(c, &pod, &node, &ip, &flows[0]).await;
    super::hubble::the_hubble_cli_shows_the_drops(c, &pod, &node, &ip, &latest).await;
    let svc: Api<Service> = Api::namespaced(c.client(), NS);
    svc.delete(SERVICE, &DeleteParams::default()).await.unwrap();
    eprintln!(
        "  observe: one DROPPED flow from {from} to {NS}/{SERVICE}, then one followed ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
}

//! The real Hubble CLI (built from Cilium's Go module) against an agent's
//! Observer API: a client we did not write sees the same refused
//! connection that `kubectl switchyard observe` shows, with its own
//! filters, in its own JSON, and follows the next one; then the real
//! hubble-relay, given the operator's Peer API, aggregates every node.

use std::path::PathBuf;
use std::process::Output;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use switchyard_e2e::relay::HubbleRelay;
use switchyard_e2e::{Cluster, wait_for};
use tokio::process::Command;

use super::observe::{NS, SERVICE, assert_the_drop, follow, follow_args};

/// The agents' Observer API port (and the operator's Peer API's).
const OBSERVER_PORT: u16 = 4244;

fn hubble() -> PathBuf {
    switchyard_e2e::binaries::build_hubble()
        .expect("e2e/hack/build-hubble.sh builds the hubble CLI")
        .join("hubble")
}

async fn run(server: &str, args: &[&str]) -> Output {
    let out = Command::new(hubble())
        .args(args)
        .arg("--server")
        .arg(server)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "hubble {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON lines `hubble … -o json` printed.
fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `hubble observe` of the DROPPED flows to the Service without endpoints,
/// with `extra` filters, as JSON.
async fn the_drops(server: &str, extra: &[&str]) -> Vec<Value> {
    let to = format!("{NS}/{SERVICE}");
    let mut args = vec![
        "observe",
        "--to-service",
        &to,
        "--verdict",
        "DROPPED",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    json_lines(&run(server, &args).await)
}

/// `hubble status`, `hubble observe` with its filters and `hubble observe
/// -f` against `node`'s agent; `latest` is the last drop observe showed.
pub async fn the_hubble_cli_shows_the_drops(
    c: &Cluster,
    pod: &str,
    node: &str,
    ip: &str,
    latest: &Value,
) {
    let fwd = c
        .forward_to_node_loopback(node, OBSERVER_PORT)
        .await
        .unwrap();
    let server = fwd.local.to_string();
    let status = String::from_utf8_lossy(&run(&server, &["status"]).await.stdout).into_owned();
    eprintln!("  hubble status:\n{status}");
    assert!(
        status.contains("Healthcheck") && status.contains("Flows"),
        "{status}"
    );

    let flows = the_drops(&server, &["--from-namespace", NS]).await;
    assert_eq!(
        flows.len(),
        2,
        "the first drop and the followed one: {flows:#?}"
    );
    for f in &flows {
        assert_the_drop(f, pod, node, ip);
    }
    // The same flow, printed by hubble and by `kubectl switchyard observe`:
    // the same JSON.
    assert_eq!(&flows[1], latest);

    let mut following = Command::new(hubble());
    following
        .args(follow_args(&format!("{NS}/{SERVICE}")))
        .arg("--server")
        .arg(&server);
    follow(c, following, pod, node, ip, latest).await;
    eprintln!("  hubble observe: the same drops, with its own filters, and the next one followed");
    the_relay_aggregates_every_node(c, pod, node, ip, flows.len() + 1).await;
}

/// The operator pod's address (the Peer API listens there).
async fn operator_ip(c: &Cluster) -> String {
    let pods: Api<Pod> = Api::namespaced(c.client(), "switchyard-system");
    let lp = ListParams::default().labels("app.kubernetes.io/name=switchyard-operator");
    let list = pods.list(&lp).await.unwrap();
    list.items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .expect("the operator pod has an address")
}

/// hubble-relay, pointed at the operator's Peer API, connects to every
/// node's agent, and `hubble` through it shows the `drops` refused
/// connections seen on `node`, and every node connected.
async fn the_relay_aggregates_every_node(
    c: &Cluster,
    pod: &str,
    node: &str,
    ip: &str,
    drops: usize,
) {
    let peer = format!("{}:{OBSERVER_PORT}", operator_ip(c).await);
    let mut relay = HubbleRelay::start(c, &peer).await.unwrap();
    let server = relay.server();
    let nodes = c.plan().nodes.len();
    let want = format!("Connected Nodes: {nodes}/{nodes}");
    let connected = wait_for(
        "hubble-relay to connect every node",
        Duration::from_secs(60),
        || async {
            let out = Command::new(hubble())
                .args(["status", "--server", &server])
                .output()
                .await
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(&want).then_some(text)
        },
    )
    .await;
    relay.check_running().unwrap();
    let status = connected.unwrap();
    eprintln!("  hubble status through hubble-relay:\n{status}");

    let flows = the_drops(&server, &[]).await;
    assert_eq!(flows.len(), drops, "through hubble-relay: {flows:#?}");
    for f in &flows {
        assert_the_drop(f, pod, node, ip);
    }
    let out = run(&server, &["list", "nodes", "-o", "json"]).await;
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen: Vec<(String, String, String)> = listed
        .iter()
        .map(|n| {
            let field = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (field("name"), field("address"), field("state"))
        })
        .collect();
    seen.sort();
    let want: Vec<_> = c
        .plan()
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                format!("{}:{OBSERVER_PORT}", n.ip),
                "NODE_CONNECTED".to_string(),
            )
        })
        .collect();
    assert_eq!(seen, want, "hubble list nodes: {listed:?}");
    eprintln!("  hubble-relay: {nodes} nodes through the Peer API, the {drops} drops on {node}");
}

//! The real Hubble CLI (built from Cilium's Go module) against an agent's
//! Observer API: a client we did not write sees the same refused
//! connection that `kubectl switchyard observe` shows, with its own
//! filters, in its own JSON, and follows the next one.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;
use switchyard_e2e::Cluster;
use tokio::process::Command;

use super::observe::{NS, SERVICE, assert_the_drop, follow, follow_args};

/// The agents' Observer API port (node-local).
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

    let to = format!("{NS}/{SERVICE}");
    let filters = [
        "observe",
        "--from-namespace",
        NS,
        "--to-service",
        &to,
        "--verdict",
        "DROPPED",
        "-o",
        "json",
    ];
    let out = run(&server, &filters).await;
    let flows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
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
        .args(follow_args(&to))
        .arg("--server")
        .arg(&server);
    follow(c, following, pod, node, ip, latest).await;
    eprintln!("  hubble observe: the same drops, with its own filters, and the next one followed");
}

//! Privileged tests of how the ingress program and the health-port
//! steering attach and change hands: restarts adopt or swap them (tcx links,
//! or `clsact` filters on kernels without tcx), Off removes them, and the
//! health ports pass between kube-proxy and the agent with no refused
//! connection. Run as root; skipped with a message otherwise:
//! `cargo test -p switchyard-node-datapath --test ingress_attach`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{
    Lab, NODE_EXTERNAL_IP, Outside, err_total, in_netns, nodeport, ok_count, ok_total,
    program_nodeport, run, start_with_ingress, started,
};
use switchyard_node_datapath::{Datapath, DatapathConfig, LinkAction, TcAttach};

/// `tc filter show` of `ext0`'s ingress in the lab node.
fn ingress_filters(lab: &Lab) -> String {
    run(
        "tc",
        &[
            "-n",
            &lab.node_ns,
            "filter",
            "show",
            "dev",
            "ext0",
            "ingress",
        ],
    )
}

/// A TCP listener in the node's namespace answering each connection with
/// its name and counting them; it stops listening when dropped.
struct Answerer {
    listener: std::net::TcpListener,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Answerer {
    fn new(lab: &Lab, name: &'static str, listen: &str) -> Self {
        let listener = in_netns(&lab.node_ns, || {
            std::net::TcpListener::bind(listen).unwrap()
        });
        listener.set_nonblocking(true).unwrap();
        let (answered, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (l, n, s) = (
            listener.try_clone().unwrap(),
            answered.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        let _ =
                            std::io::Write::write_all(&mut conn, format!("{name}\n").as_bytes());
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    // Nonblocking: poll, so the thread sees `stop`.
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Self {
            listener,
            answered,
            stop,
        }
    }

    /// Waits until it answered `n` more connections.
    fn wait_answers(&self, n: u64) {
        let from = self.answered.load(Ordering::Relaxed);
        common::wait_for(
            "connections to be answered",
            Duration::from_secs(10),
            || (self.answered.load(Ordering::Relaxed) >= from + n).then_some(()),
        );
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn health_ports_change_hands_without_a_refused_connection() {
    require_privileged!();
    let lab = Lab::new(1);
    let out = Outside::new(&lab);
    let kube_proxy = Answerer::new(&lab, "kube-proxy", "0.0.0.0:10256");
    // The agent listens on a port of its own.
    let agent = Answerer::new(&lab, "agent", "0.0.0.0:0");
    let health = format!("{NODE_EXTERNAL_IP}:10256");
    let dp = start_with_ingress(&lab);
    let mut sockets = dp.health_sockets().unwrap();
    // Health checks back to back, across every change of hands.
    let checks = out.looping(&lab, "tcp", &health, 0);
    kube_proxy.wait_answers(10);
    // Take over while kube-proxy still listens, give back, take over again.
    for _ in 0..2 {
        sockets.steer(10256, &agent.listener).unwrap();
        agent.wait_answers(10);
        sockets.release(10256).unwrap();
        kube_proxy.wait_answers(10);
    }
    let s = checks.stop();
    assert_eq!(err_total(&s), 0, "a health check was refused: {s}");
    let seq: Vec<&str> = s["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let hands = ["kube-proxy", "agent", "kube-proxy", "agent", "kube-proxy"];
    assert_eq!(seq, hands, "who answered, in order: {s}");

    // Once kube-proxy is gone, the steering alone answers the port.
    drop(kube_proxy);
    sockets.steer(10256, &agent.listener).unwrap();
    let s = out.client("tcp", &health, 3);
    assert_eq!(ok_count(&s, "agent"), 3, "{s}");
}

#[test]
fn a_restart_adopts_the_ingress_and_health_links_and_off_removes_them() {
    require_privileged!();
    let lab = Lab::new(1);
    let _out = Outside::new(&lab);
    let first = start_with_ingress(&lab);
    let attached = Some(LinkAction::Attached);
    assert_eq!(
        first.report().ingress,
        [("ext0".to_string(), LinkAction::Attached)]
    );
    assert_eq!(first.report().health, attached);
    drop(first);
    let again = start_with_ingress(&lab);
    assert_eq!(
        again.report().ingress,
        [("ext0".to_string(), LinkAction::Kept)]
    );
    assert_eq!(again.report().health, Some(LinkAction::Kept));
    // Without ingress interfaces both links go.
    let plain = in_netns(&lab.node_ns, || started(Datapath::start(&lab.config())));
    assert!(plain.report().ingress.is_empty());
    assert_eq!(plain.report().health, None);
    let links = lab.bpffs_dir.join("links");
    assert!(!links.join("ingress-ext0").exists() && !links.join("health-lookup").exists());
    let again = start_with_ingress(&lab);
    assert_eq!(again.report().health, attached);
    let off = switchyard_node_datapath::off(&lab.bpffs_dir).unwrap();
    let removed = off.links_removed.join(" ");
    assert!(
        removed.contains("ingress-ext0") && removed.contains("health-lookup"),
        "{off:?}"
    );
}

#[test]
fn without_tcx_a_clsact_filter_serves_is_swapped_by_a_restart_and_removed_by_off() {
    require_privileged!();
    let mut lab = Lab::new(2);
    let out = Outside::new(&lab);
    lab.serve(1, 8080);
    lab.serve(2, 8080);
    let config = DatapathConfig {
        ingress_interfaces: vec!["ext0".into()],
        tc_attach: TcAttach::Clsact,
        ..lab.config()
    };
    let start = || in_netns(&lab.node_ns, || started(Datapath::start(&config)));
    let first = start();
    assert_eq!(
        first.report().ingress,
        [("ext0".to_string(), LinkAction::Attached)]
    );
    assert!(
        !lab.bpffs_dir.join("links/ingress-ext0").exists(),
        "no tcx link"
    );
    let filters = ingress_filters(&lab);
    assert!(
        filters.contains("sy_ingress") && filters.contains("pref 49408"),
        "{filters}"
    );
    program_nodeport(&first, 0);
    drop(first);
    // The filter outlives the process; a restart swaps its program in
    // place while an outside client keeps connecting.
    let client = out.looping(&lab, "tcp", &nodeport(), 5);
    let again = start();
    assert_eq!(
        again.report().ingress,
        [("ext0".to_string(), LinkAction::Replaced)]
    );
    let s = client.stop();
    assert_eq!(err_total(&s), 0, "{s}");
    assert!(ok_total(&s) > 0, "{s}");
    let filters = ingress_filters(&lab);
    assert_eq!(filters.matches("handle 0x53590001").count(), 1, "{filters}");
    let off = in_netns(&lab.node_ns, || {
        switchyard_node_datapath::off(&lab.bpffs_dir)
    })
    .unwrap();
    assert!(
        off.links_removed
            .iter()
            .any(|l| l == "clsact filter on ext0"),
        "{off:?}"
    );
    assert!(!ingress_filters(&lab).contains("sy_ingress"));
    let s = out.client("tcp", &nodeport(), 1);
    assert_eq!(
        ok_total(&s),
        0,
        "nothing serves the NodePort after Off: {s}"
    );
}

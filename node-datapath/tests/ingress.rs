//! Privileged tests of the ingress program (`bpf/nodeport.h`): real
//! packets from a client outside the node, through the tc program on the
//! node's external interface and the kernel's conntrack NAT, to backend
//! namespaces. Run as root; skipped with a message otherwise:
//! `cargo test -p switchyard-node-datapath --test ingress`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

mod common;

use std::time::Duration;

use common::{
    Lab, NODE_EXTERNAL_IP, NODE_PORT, OUTSIDE_CLIENT_IP, Outside, Svc, counter, err_total,
    nodeport, ok_count, ok_total, program_nodeport, run, start_with_ingress, telling_source_lab,
};
use switchyard_abi::{
    Counter, FlowEvent, IPPROTO_TCP, IPPROTO_UDP, SCOPE_INGRESS, SCOPE_NODE, event_hook,
    event_verdict, svc_flags,
};
use switchyard_lb::maps::LbMaps;
use switchyard_node_datapath::FlowEventRing;

fn names(summary: &serde_json::Value) -> Vec<String> {
    summary["ok"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn nodeport_traffic_from_outside_reaches_every_backend_masqueraded() {
    require_privileged!();
    let (_lab, out, dp) = telling_source_lab();
    program_nodeport(&dp, 0);
    let before = counter(&dp, Counter::IngressTranslated);

    for mode in ["tcp", "udp-connect"] {
        let s = out.client(mode, &nodeport(), 40);
        assert_eq!(err_total(&s), 0, "{mode}: {s}");
        assert_eq!(ok_total(&s), 40, "{mode}: {s}");
        // externalTrafficPolicy: Cluster masquerades: each backend sees the
        // node's address on the route to it, as kube-proxy's MASQUERADE does.
        let mut seen = names(&s);
        seen.sort();
        assert_eq!(seen, ["b1@10.1.1.1", "b2@10.1.2.1"], "{mode}: {s}");
    }
    assert!(counter(&dp, Counter::IngressTranslated) >= before + 41);
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address_and_drops_without_local_endpoints() {
    require_privileged!();
    let (_lab, out, dp) = telling_source_lab();
    // Node clients get both backends; external ones backend 1 only.
    program_nodeport(&dp, svc_flags::INGRESS_SCOPE);
    let mut maps = dp.lb_maps().unwrap();
    let local = (
        SCOPE_INGRESS,
        3,
        svc_flags::NODEPORT | svc_flags::LOCAL_ONLY,
    );
    let b1 = [(1, Lab::backend_addr(1), 8080)];
    maps.apply_all(
        &Svc::new(NODE_EXTERNAL_IP, NODE_PORT, IPPROTO_TCP)
            .at(local)
            .backends(&b1)
            .ops(),
    )
    .unwrap();

    let s = out.client("tcp", &nodeport(), 20);
    assert_eq!(ok_count(&s, &format!("b1@{OUTSIDE_CLIENT_IP}")), 20, "{s}");

    // No local endpoint: dropped and counted, as kube-proxy drops.
    maps.apply_all(
        &Svc::new(NODE_EXTERNAL_IP, NODE_PORT, IPPROTO_TCP)
            .at(local)
            .ops(),
    )
    .unwrap();
    let drops = counter(&dp, Counter::DropNoLocalBackend);
    let s = out.client("tcp", &nodeport(), 2);
    assert_eq!(ok_total(&s), 0, "{s}");
    assert!(counter(&dp, Counter::DropNoLocalBackend) > drops);
}

/// kube-proxy's translation of a NodePort, as its rules do it.
const KUBE_PROXY_LIKE: &str = "table ip sy-test-kube-proxy {
  chain prerouting { type nat hook prerouting priority -100; policy accept;
    ip daddr 10.2.0.1 tcp dport 30080 dnat to 10.1.1.2:8080
    ip daddr 10.2.0.1 udp dport 30080 dnat to 10.1.1.2:8080
  }
  chain postrouting { type nat hook postrouting priority 100; policy accept;
    ip daddr 10.1.1.2 masquerade
  }
}";

/// Counts the packets the node forwards for established flows (both
/// directions), so a test can wait for held flows to make progress.
const FORWARD_COUNTER: &str = "table ip sy-test-count {
  chain forward { type filter hook forward priority 0; policy accept;
    ct state established counter
  }
}";

fn forwarded(lab: &Lab) -> u64 {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.node_ns,
            "nft",
            "list",
            "table",
            "ip",
            "sy-test-count",
        ],
    );
    let at = out.find("packets ").expect("a counter");
    out[at + 8..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until held flows had `n` more packets forwarded.
fn wait_forwarded(lab: &Lab, n: u64) {
    let from = forwarded(lab);
    common::wait_for(
        "held flows to make progress",
        Duration::from_secs(10),
        || (forwarded(lab) >= from + n).then_some(()),
    );
}

#[test]
fn flows_kube_proxy_translated_stay_on_their_backend_through_the_switch_and_back() {
    require_privileged!();
    let mut lab = Lab::new(2);
    let out = Outside::new(&lab);
    lab.serve_with(1, 8080, &["--hold", "true"]);
    lab.serve_with(2, 8080, &["--hold", "true"]);
    common::nft(&lab.node_ns, KUBE_PROXY_LIKE);
    common::nft(&lab.node_ns, FORWARD_COUNTER);
    let tcp = out.hold(&lab, "tcp-hold", &nodeport());
    let udp = out.hold(&lab, "udp-hold", &nodeport());

    // The switch: the datapath serves the NodePort from backend 2 only,
    // then kube-proxy's rules go.
    let dp = start_with_ingress(&lab);
    let mut maps = dp.lb_maps().unwrap();
    for (proto, rev_nat) in [(IPPROTO_TCP, 1), (IPPROTO_UDP, 2)] {
        let scope = (SCOPE_NODE, rev_nat, svc_flags::NODEPORT);
        let b2 = [(2, Lab::backend_addr(2), 8080)];
        maps.apply_all(
            &Svc::new(NODE_EXTERNAL_IP, NODE_PORT, proto)
                .at(scope)
                .backends(&b2)
                .ops(),
        )
        .unwrap();
    }
    let tracked = counter(&dp, Counter::IngressTracked);
    let node = lab.node_ns.clone();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &node,
            "nft",
            "delete",
            "table",
            "ip",
            "sy-test-kube-proxy",
        ],
    );
    // Packets of the held flows pass to conntrack untouched.
    common::wait_counter(&dp, Counter::IngressTracked, tracked, 20);
    // New connections are the datapath's; the held ones stay kube-proxy's.
    for _ in 0..5 {
        let s = out.client("tcp-hold", &nodeport(), 1);
        assert_eq!(ok_count(&s, "b2"), 1, "{s}");
    }
    let ours = out.hold(&lab, "tcp-hold", &nodeport());
    wait_forwarded(&lab, 40);

    // Rollback: the ingress program goes; every flow keeps its backend.
    switchyard_node_datapath::off(&lab.bpffs_dir).unwrap();
    wait_forwarded(&lab, 60);
    for (held, backend) in [(tcp, "b1"), (udp, "b1"), (ours, "b2")] {
        let s = held.stop();
        assert_eq!(err_total(&s), 0, "{s}");
        assert_eq!(names(&s), [backend], "one backend for the whole flow: {s}");
        assert!(ok_total(&s) >= 10, "{s}");
    }
}

#[test]
fn a_client_port_reused_while_its_last_connection_is_in_time_wait_is_translated_anew() {
    require_privileged!();
    let mut lab = Lab::new(1);
    let out = Outside::new(&lab);
    lab.serve(1, 8080);
    let dp = start_with_ingress(&lab);
    // Two NodePorts with the same backend: masquerading a client port
    // used for both would also yield the same translated reply tuple.
    let mut maps = dp.lb_maps().unwrap();
    let b1 = [(1, Lab::backend_addr(1), 8080)];
    for (port, rev_nat) in [(NODE_PORT, 1), (NODE_PORT + 1, 2)] {
        let scope = (SCOPE_NODE, rev_nat, svc_flags::NODEPORT);
        maps.apply_all(
            &Svc::new(NODE_EXTERNAL_IP, port, IPPROTO_TCP)
                .at(scope)
                .backends(&b1)
                .ops(),
        )
        .unwrap();
    }
    // Each round reuses a tuple whose last connection is in TIME_WAIT.
    for round in 0..3 {
        for port in [NODE_PORT, NODE_PORT + 1] {
            let s = out.client("tcp-from-40000", &format!("{NODE_EXTERNAL_IP}:{port}"), 1);
            assert_eq!(ok_count(&s, "b1"), 1, "round {round}, NodePort {port}: {s}");
        }
    }
    assert_eq!(counter(&dp, Counter::IngressReopened), 4);
}

#[test]
fn load_balancer_source_ranges_admit_only_their_clients() {
    require_privileged!();
    let mut lab = Lab::new(1);
    let out = Outside::new(&lab);
    lab.serve(1, 8080);
    let dp = start_with_ingress(&lab);
    let mut maps = dp.lb_maps().unwrap();
    // The LoadBalancer IP is routed to the node; its frontend lists ranges.
    let lb_ip = std::net::Ipv4Addr::new(10, 2, 0, 100);
    let b1 = [(1, Lab::backend_addr(1), 8080)];
    let flags = svc_flags::LOADBALANCER | svc_flags::SOURCE_RANGES;
    let set_ranges = |maps: &mut switchyard_node_datapath::PinnedLbMaps, ranges: &[(u32, u16)]| {
        let mut ops = Svc::new(lb_ip, 80, IPPROTO_TCP).source_range_ops(ranges);
        ops.extend(
            Svc::new(lb_ip, 80, IPPROTO_TCP)
                .at((SCOPE_NODE, 1, flags))
                .backends(&b1)
                .ops(),
        );
        maps.apply_all(&ops).unwrap();
    };
    run(
        "ip",
        &[
            "-n",
            &out.ns,
            "route",
            "add",
            "10.2.0.100/32",
            "via",
            "10.2.0.1",
        ],
    );
    let target = format!("{lb_ip}:80");
    // The client (10.2.0.2) is in the second range.
    set_ranges(&mut maps, &[(0xc000_0200, 24), (0x0a02_0000, 16)]);
    let s = out.client("tcp", &target, 5);
    assert_eq!(ok_count(&s, "b1"), 5, "{s}");
    // Not in any range any more: dropped, counted by reason.
    let denied = counter(&dp, Counter::DropSourceRange);
    set_ranges(&mut maps, &[(0xc000_0200, 24)]);
    let s = out.client("tcp", &target, 2);
    assert_eq!(ok_total(&s), 0, "{s}");
    let dropped = counter(&dp, Counter::DropSourceRange);
    assert!(
        dropped >= denied + 2,
        "each attempt's SYN is dropped: {dropped}"
    );
}

#[test]
fn path_mtu_discovery_works_through_the_translation() {
    require_privileged!();
    let mut lab = Lab::new(2);
    let out = Outside::new(&lab);
    // Replies larger than the node's link to the client: the node answers
    // the backends' full-size segments with ICMP "fragmentation needed",
    // which reaches a backend only if translated back (inner header too).
    lab.serve_with(1, 8080, &["--reply-size", "20000"]);
    lab.serve_with(2, 8080, &["--reply-size", "20000"]);
    let ext0 = ["-n", &lab.node_ns, "link", "set", "ext0", "mtu", "1280"];
    run("ip", &ext0);
    let dp = start_with_ingress(&lab);
    program_nodeport(&dp, 0);
    let s = out.client("tcp", &nodeport(), 10);
    assert_eq!(err_total(&s), 0, "a reply was black-holed: {s}");
    assert_eq!(ok_total(&s), 10, "{s}");
}

#[test]
fn a_new_flow_whose_first_datagram_is_fragmented_is_translated() {
    require_privileged!();
    let mut lab = Lab::new(2);
    let out = Outside::new(&lab);
    lab.serve(1, 8080);
    lab.serve(2, 8080);
    let dp = start_with_ingress(&lab);
    program_nodeport(&dp, 0);
    let before = counter(&dp, Counter::IngressFragment);
    // Each request is a new flow (its own socket) whose first datagram
    // arrives as three fragments: the first decides, the rest are
    // reassembled with it by netfilter and translated by its entry.
    let s = out.client("udp-fragmented", &nodeport(), 20);
    assert_eq!(err_total(&s), 0, "{s}");
    assert_eq!(ok_total(&s), 20, "{s}");
    assert!(counter(&dp, Counter::IngressFragment) >= before + 40);
}

#[test]
fn a_cluster_ip_routed_to_the_node_from_outside_is_served_masqueraded() {
    require_privileged!();
    let (_lab, out, dp) = telling_source_lab();
    let vip = std::net::Ipv4Addr::new(10, 96, 0, 10);
    let backends = [
        (1, Lab::backend_addr(1), 8080),
        (2, Lab::backend_addr(2), 8080),
    ];
    let program = |flags: u8, backends: &[(u32, std::net::Ipv4Addr, u16)]| {
        let mut maps = dp.lb_maps().unwrap();
        for (proto, rev_nat) in [(IPPROTO_TCP, 1), (IPPROTO_UDP, 2)] {
            let svc = Svc::new(vip, 80, proto).rev_nat(rev_nat);
            let ops = svc.flags(svc_flags::CLUSTER_IP | flags).backends(backends);
            maps.apply_all(&ops.cluster_ip_ops()).unwrap();
        }
    };
    // The outside client's default route leads to the node, as a router
    // sending the Service network to it would.
    program(0, &backends);
    for mode in ["tcp", "udp-connect"] {
        let s = out.client(mode, &format!("{vip}:80"), 40);
        assert_eq!(ok_total(&s), 40, "{mode}: {s}");
        let mut seen = names(&s);
        seen.sort();
        assert_eq!(seen, ["b1@10.1.1.1", "b2@10.1.2.1"], "{mode}: {s}");
    }
    // internalTrafficPolicy: Local: the local endpoint, still masqueraded.
    program(svc_flags::LOCAL_ONLY, &backends[..1]);
    let s = out.client("tcp", &format!("{vip}:80"), 10);
    assert_eq!(names(&s), ["b1@10.1.1.1"], "{s}");
    assert_eq!(ok_total(&s), 10, "{s}");
}

#[test]
fn each_new_flow_from_outside_is_one_ingress_event_with_its_client() {
    require_privileged!();
    let (lab, out, dp) = telling_source_lab();
    program_nodeport(&dp, 0);
    // A NodePort without backends: its new flows are dropped and reported.
    let empty = NODE_PORT + 1;
    let scope = (SCOPE_NODE, 3, svc_flags::NODEPORT);
    let ops = Svc::new(NODE_EXTERNAL_IP, empty, IPPROTO_TCP)
        .at(scope)
        .ops();
    dp.lb_maps().unwrap().apply_all(&ops).unwrap();
    let mut ring = FlowEventRing::open(&lab.bpffs_dir).unwrap();

    assert_eq!(ok_total(&out.client("tcp", &nodeport(), 10)), 10);
    let timeouts = out.client("tcp", &format!("{NODE_EXTERNAL_IP}:{empty}"), 2);
    assert_eq!(err_total(&timeouts), 2, "{timeouts}");

    let mut events = Vec::new();
    ring.drain(|b| events.extend(FlowEvent::from_bytes(b)));
    let from_outside =
        |e: &FlowEvent| e.hook == event_hook::INGRESS && e.client().0 == OUTSIDE_CLIENT_IP;
    assert!(events.iter().all(from_outside), "{events:?}");
    let (forwarded, dropped): (Vec<&FlowEvent>, Vec<&FlowEvent>) = events
        .iter()
        .partition(|e| e.verdict == event_verdict::FORWARDED);
    assert_eq!(forwarded.len(), 10, "one event a connection: {events:?}");
    assert!(
        forwarded
            .iter()
            .all(|e| e.frontend() == (NODE_EXTERNAL_IP, NODE_PORT))
    );
    // A SYN is retransmitted while the client waits: each is a new flow.
    assert!(dropped.len() >= 2, "{events:?}");
    assert!(
        dropped
            .iter()
            .all(|e| e.drop_reason == Counter::DropNoBackend as u8
                && e.frontend() == (NODE_EXTERNAL_IP, empty))
    );
    assert_eq!(dropped.len() as u64, counter(&dp, Counter::DropNoBackend));
}

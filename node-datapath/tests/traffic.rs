//! Privileged traffic tests: the real BPF programs on this kernel serving
//! clients in a simulated node (network namespace + cgroup, see `common`)
//! with backends in other namespaces. Run as root:
//! `cargo test -p switchyard-node-datapath --test traffic`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

mod common;

use common::{
    Lab, Svc, VIP, counter, err_total, every_link, ok_count, ok_total, serve_vip_on_backend_1,
    wait_counter,
};
use switchyard_abi::{Counter, IPPROTO_TCP, IPPROTO_UDP, SvcKey, svc_flags};
use switchyard_lb::maps::{LbMaps, MapOp};
use switchyard_node_datapath::{Datapath, Hook, LinkAction, ProgramRunTime, RunTimeStats};

#[test]
fn clusterip_tcp_spreads_over_backends_and_getpeername_sees_vip() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(1, 8080);
    lab.serve(2, 8080);
    let dp = lab.start();
    assert!(every_link(&dp, LinkAction::Attached));
    let ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(1)
        .backends(&[
            (1, Lab::backend_addr(1), 8080),
            (2, Lab::backend_addr(2), 8080),
        ])
        .cluster_ip_ops();
    dp.lb_maps()
        .unwrap()
        .apply_all(&ops)
        .map_err(|(i, e)| format!("op {i}: {e}"))
        .unwrap();

    let s = lab.client("tcp", "10.96.0.10:80", 60);
    assert_eq!(err_total(&s), 0, "{s}");
    assert_eq!(ok_total(&s), 60, "{s}");
    // P(fewer than 5 of 60 on one backend) at p = 1/2 is ~1e-12.
    assert!(
        ok_count(&s, "b1") >= 5 && ok_count(&s, "b2") >= 5,
        "not spread: {s}"
    );
    assert_eq!(
        s["peers"],
        serde_json::json!(["10.96.0.10:80"]),
        "getpeername: {s}"
    );
    let st = dp.stats().unwrap();
    assert!(st.get(Counter::ConnectTranslated) >= 60, "{st:?}");
    assert!(st.get(Counter::PeernameRevNat) >= 60, "{st:?}");
    assert_eq!(st.drops(), 0, "{st:?}");
}

#[test]
fn clusterip_udp_connected_and_unconnected_see_the_vip() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(1, 5353);
    lab.serve(2, 5353);
    let dp = lab.start();
    let ops = Svc::new(VIP, 53, IPPROTO_UDP)
        .rev_nat(7)
        .backends(&[
            (11, Lab::backend_addr(1), 5353),
            (12, Lab::backend_addr(2), 5353),
        ])
        .cluster_ip_ops();
    dp.lb_maps()
        .unwrap()
        .apply_all(&ops)
        .map_err(|(i, e)| format!("op {i}: {e}"))
        .unwrap();

    let connected = lab.client("udp-connect", "10.96.0.10:53", 30);
    assert_eq!(err_total(&connected), 0, "{connected}");
    assert!(
        ok_count(&connected, "b1") > 0 && ok_count(&connected, "b2") > 0,
        "{connected}"
    );
    assert_eq!(
        connected["peers"],
        serde_json::json!(["10.96.0.10:53"]),
        "{connected}"
    );

    let before = dp.stats().unwrap();
    let unconnected = lab.client("udp-sendto", "10.96.0.10:53", 30);
    assert_eq!(err_total(&unconnected), 0, "{unconnected}");
    assert_eq!(ok_total(&unconnected), 30, "{unconnected}");
    // recvfrom() reported the VIP, never a backend, as the sender.
    assert_eq!(
        unconnected["peers"],
        serde_json::json!(["10.96.0.10:53"]),
        "{unconnected}"
    );
    let after = dp.stats().unwrap();
    assert!(after.get(Counter::SendmsgTranslated) >= before.get(Counter::SendmsgTranslated) + 30);
    assert!(after.get(Counter::RecvmsgRevNat) >= before.get(Counter::RecvmsgRevNat) + 30);
}

#[test]
fn backends_added_and_removed_while_a_client_loops() {
    require_privileged!();
    let mut lab = Lab::new(3);
    for i in 1..=3 {
        lab.serve(i, 8080);
    }
    let dp = lab.start();
    let mut maps = dp.lb_maps().unwrap();
    let b = |i: u8| (u32::from(i), Lab::backend_addr(i), 8080);
    maps.apply_all(
        &Svc::new(VIP, 80, IPPROTO_TCP)
            .rev_nat(1)
            .backends(&[b(1), b(2)])
            .cluster_ip_ops(),
    )
    .unwrap();

    let client = lab.looping_client("tcp", "10.96.0.10:80");
    let c0 = counter(&dp, Counter::ConnectTranslated);
    let c1 = wait_counter(&dp, Counter::ConnectTranslated, c0, 100);
    // Add b3: backend, slot 3, then the master with count 3.
    maps.apply_all(
        &Svc::new(VIP, 80, IPPROTO_TCP)
            .rev_nat(1)
            .backends(&[b(1), b(2), b(3)])
            .cluster_ip_ops(),
    )
    .unwrap();
    let c2 = wait_counter(&dp, Counter::ConnectTranslated, c1, 300);
    // Remove b1: rewrite slots [b2, b3], shrink the master, delete the
    // orphaned slot 3 and backend 1 (the order the LB diff emits).
    let mut ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(1)
        .backends(&[b(2), b(3)])
        .cluster_ip_ops();
    ops.push(MapOp::DeleteService(SvcKey::new(
        VIP,
        80,
        IPPROTO_TCP,
        0,
        3,
    )));
    ops.push(MapOp::DeleteBackend(1));
    maps.apply_all(&ops).unwrap();
    let removed_at = counter(&dp, Counter::ConnectTranslated);
    wait_counter(&dp, Counter::ConnectTranslated, c2.max(removed_at), 300);
    let s = client.stop();

    assert_eq!(err_total(&s), 0, "a connection failed: {s}");
    assert!(ok_count(&s, "b3") > 0, "added backend never used: {s}");
    assert!(ok_count(&s, "b2") > 0, "{s}");
    // After the removal completed, b1 must not appear again: the run of
    // names ends with a tail containing only b2/b3 (>= 300 connections).
    let seq: Vec<&str> = s["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let last_b1 = seq.iter().rposition(|n| *n == "b1").unwrap();
    assert!(
        seq.len() - last_b1 > 10,
        "b1 still used near the end: {seq:?}"
    );
    assert_eq!(dp.stats().unwrap().drops(), 0);
}

#[test]
fn zero_backends_and_unknown_ports_are_refused_fast() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 8080);
    let dp = lab.start();
    let mut maps = dp.lb_maps().unwrap();
    maps.apply_all(&Svc::new(VIP, 80, IPPROTO_TCP).rev_nat(1).cluster_ip_ops())
        .unwrap();
    maps.apply_all(&Svc::new(VIP, 53, IPPROTO_UDP).rev_nat(2).cluster_ip_ops())
        .unwrap();

    let s = lab.client("tcp", "10.96.0.10:80", 5);
    assert_eq!(s["errors"]["ECONNREFUSED"], 5, "{s}");
    // Fast: refused in the syscall, not after a timeout.
    assert!(
        s["max_err_us"].as_u64().unwrap() < 100_000,
        "slow refusal: {s}"
    );
    let u = lab.client("udp-sendto", "10.96.0.10:53", 3);
    assert_eq!(u["errors"]["ECONNREFUSED"], 3, "{u}");
    let c = lab.client("udp-connect", "10.96.0.10:53", 2);
    assert_eq!(c["errors"]["ECONNREFUSED"], 2, "{c}");
    assert_eq!(counter(&dp, Counter::DropNoBackend), 10);

    // Known VIP, port that is no service port.
    let p = lab.client("tcp", "10.96.0.10:81", 2);
    assert_eq!(p["errors"]["ECONNREFUSED"], 2, "{p}");
    assert_eq!(counter(&dp, Counter::DropUnknownPort), 2);

    // Not a frontend at all: passed through untouched (no route there).
    let other = lab.client("tcp", "10.97.0.1:80", 1);
    assert_eq!(other["errors"]["ENETUNREACH"], 1, "{other}");
    // And a direct backend address still works.
    let direct = lab.client("tcp", "10.1.1.2:8080", 1);
    assert_eq!(ok_count(&direct, "b1"), 1, "{direct}");
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(1, 8080);
    lab.serve(2, 8080);
    let dp = lab.start();
    let ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(3)
        .flags(svc_flags::AFFINITY)
        .affinity(600)
        .backends(&[
            (1, Lab::backend_addr(1), 8080),
            (2, Lab::backend_addr(2), 8080),
        ])
        .cluster_ip_ops();
    dp.lb_maps().unwrap().apply_all(&ops).unwrap();
    let s = lab.client("tcp", "10.96.0.10:80", 40);
    assert_eq!(err_total(&s), 0, "{s}");
    assert_eq!(
        s["ok"].as_object().unwrap().len(),
        1,
        "affinity not kept: {s}"
    );
    assert_eq!(counter(&dp, Counter::AffinityHit), 39);
}

#[test]
fn measure_attach_time_and_connect_overhead() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 8080);
    let n = 2000;
    let direct_before = lab.client("tcp", "10.1.1.2:8080", n);
    let dp = lab.start();
    let attach = dp.report().elapsed;
    serve_vip_on_backend_1(&dp);
    let _accounting = RunTimeStats::enable().unwrap();
    let runtime = || dp.run_time(Hook::Connect4).unwrap();
    let r0 = runtime();
    let via_vip = lab.client("tcp", "10.96.0.10:80", n);
    let r1 = runtime();
    let direct_with = lab.client("tcp", "10.1.1.2:8080", n);
    let r2 = runtime();
    for s in [&direct_before, &via_vip, &direct_with] {
        assert_eq!(ok_total(s), u64::from(n), "{s}");
    }
    // connect4 runs once per connect(), translated or not, and the kernel
    // counts every run while the accounting is on.
    assert_eq!(r1.runs - r0.runs, u64::from(n), "connect4 runs via the VIP");
    assert_eq!(r2.runs - r1.runs, u64::from(n), "connect4 runs, direct");
    let per = |s: &serde_json::Value| s["total_us"].as_f64().unwrap() / f64::from(n);
    let ns = |a: &ProgramRunTime, b: &ProgramRunTime| b.mean_since(a).unwrap().as_nanos();
    eprintln!(
        "MEASURE load+attach {attach:?}; mean connect+read: direct without datapath {:.1} us, \
         via VIP {:.1} us, direct with datapath attached {:.1} us; connect4 {} ns/run via the \
         VIP, {} ns/run direct",
        per(&direct_before),
        per(&via_vip),
        per(&direct_with),
        ns(&r0, &r1),
        ns(&r1, &r2),
    );
}

/// NodePort 30080 on `address`, served by backend 2 (a NodePort frontend:
/// no VIP marker, so the address's other ports stay untouched).
fn serve_nodeport_on(dp: &Datapath, address: std::net::Ipv4Addr) {
    let mut ops: Vec<MapOp> = Svc::new(address, 30080, IPPROTO_TCP)
        .rev_nat(9)
        .flags(svc_flags::NODEPORT)
        .backends(&[(2, Lab::backend_addr(2), 8080)])
        .cluster_ip_ops();
    ops.retain(|op| !matches!(op, MapOp::UpsertService(k, _) if k.port() == 0));
    dp.lb_maps().unwrap().apply_all(&ops).unwrap();
}

#[test]
fn nodeport_on_a_node_address_is_served_like_any_frontend() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(2, 8080);
    let dp = lab.start();
    serve_nodeport_on(&dp, std::net::Ipv4Addr::new(10, 1, 1, 1));
    let s = lab.client("tcp", "10.1.1.1:30080", 10);
    assert_eq!(ok_count(&s, "b2"), 10, "{s}");
    assert_eq!(s["peers"], serde_json::json!(["10.1.1.1:30080"]), "{s}");
    // Another port on the node address is not a frontend: untouched, and
    // nothing listens there.
    let other = lab.client("tcp", "10.1.1.1:30081", 1);
    assert_eq!(other["errors"]["ECONNREFUSED"], 1, "{other}");
    assert_eq!(counter(&dp, Counter::DropUnknownPort), 0);
}

#[test]
fn a_localhost_nodeport_is_served_to_clients_on_the_node() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(2, 8080);
    let dp = lab.start();
    // kube-proxy's iptables mode serves 127.0.0.1:<nodePort> (it DNATs and
    // masquerades); here the connect goes straight to the backend, from an
    // address the backend can answer.
    serve_nodeport_on(&dp, std::net::Ipv4Addr::LOCALHOST);
    let s = lab.client("tcp", "127.0.0.1:30080", 10);
    assert_eq!(ok_count(&s, "b2"), 10, "{s}");
    assert_eq!(s["peers"], serde_json::json!(["127.0.0.1:30080"]), "{s}");
}

#[test]
fn a_closed_socket_leaves_no_rev_nat_entry() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 8080);
    let dp = lab.start();
    serve_vip_on_backend_1(&dp);
    let sock_entries = || {
        dp.stats()
            .unwrap()
            .maps
            .iter()
            .find(|m| m.map == "sy_sock_rnat4")
            .map(|m| m.entries)
            .unwrap()
    };
    let n = 300;
    let s = lab.client("tcp", "10.96.0.10:80", n);
    assert_eq!(ok_total(&s), u64::from(n), "{s}");
    // Every connect was translated and recorded its rev-NAT entry; every
    // close (sock_release) removed it again.
    assert_eq!(counter(&dp, Counter::ConnectTranslated), u64::from(n));
    assert_eq!(sock_entries(), 0, "rev-NAT entries of closed sockets left");
}

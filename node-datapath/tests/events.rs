//! Privileged flow event tests: the real connect4/sendmsg4 programs report
//! translations and refusals through the real ring buffer, count what does
//! not fit and what is over the rate limit, and go quiet when switched off. Run as root:
//! `cargo test -p switchyard-node-datapath --test events`.

#![allow(clippy::unwrap_used)] // test code (also outside #[test] fns)

mod common;

use std::{net::Ipv4Addr, os::unix::fs::MetadataExt};

use common::{Lab, Svc, VIP, counter, err_total, ok_total, started};
use switchyard_abi::{Counter, FlowEvent, IPPROTO_TCP, IPPROTO_UDP, event_hook, event_verdict};
use switchyard_lb::maps::LbMaps;
use switchyard_node_datapath::{
    Datapath, FlowEventRing, events_lost, events_shed, set_flow_event_rate, set_flow_events,
};

/// A ClusterIP with no endpoints.
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);

/// Programs VIP:80/TCP onto backend 1's port 8080, VIP:53/UDP onto its
/// port 5353, and EMPTY_VIP:80/TCP without backends.
fn program(dp: &Datapath) {
    let mut ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(1)
        .backends(&[(1, Lab::backend_addr(1), 8080)])
        .cluster_ip_ops();
    ops.extend(
        Svc::new(VIP, 53, IPPROTO_UDP)
            .rev_nat(2)
            .backends(&[(2, Lab::backend_addr(1), 5353)])
            .cluster_ip_ops(),
    );
    ops.extend(
        Svc::new(EMPTY_VIP, 80, IPPROTO_TCP)
            .rev_nat(3)
            .cluster_ip_ops(),
    );
    dp.lb_maps()
        .unwrap()
        .apply_all(&ops)
        .map_err(|(i, e)| format!("op {i}: {e}"))
        .unwrap();
}

/// Every event waiting in the ring; panics on a record that is not one.
fn drain(ring: &mut FlowEventRing) -> Vec<FlowEvent> {
    let mut events = Vec::new();
    ring.drain(|bytes| {
        events.push(
            FlowEvent::from_bytes(bytes)
                .unwrap_or_else(|| panic!("a record of {} bytes is no flow event", bytes.len())),
        )
    });
    events
}

#[test]
fn a_translated_and_a_refused_connect_are_one_event_each() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 8080);
    let dp = lab.start();
    program(&dp);
    let mut ring = FlowEventRing::open(&lab.bpffs_dir).unwrap();
    let cgroup_id = std::fs::metadata(&lab.cgroup).unwrap().ino();

    let ok = lab.client("tcp", "10.96.0.10:80", 1);
    assert_eq!(ok_total(&ok), 1, "{ok}");
    let refused = lab.client("tcp", "10.96.0.11:80", 1);
    assert_eq!(err_total(&refused), 1, "{refused}");

    let events = drain(&mut ring);
    assert_eq!(events.len(), 2, "{events:#?}");
    let (fwd, drop) = (&events[0], &events[1]);
    assert_eq!(fwd.verdict, event_verdict::FORWARDED);
    assert_eq!(fwd.hook, event_hook::CONNECT4);
    assert_eq!(fwd.proto, IPPROTO_TCP);
    assert_eq!(fwd.frontend(), (VIP, 80));
    assert_eq!(fwd.backend(), (Lab::backend_addr(1), 8080));
    assert_eq!(fwd.cgroup_id, cgroup_id);
    assert_ne!(fwd.sock_cookie, 0);
    assert_eq!(drop.verdict, event_verdict::DROPPED);
    assert_eq!(drop.drop_reason, Counter::DropNoBackend as u8);
    assert_eq!(drop.frontend(), (EMPTY_VIP, 80));
    assert_eq!(drop.backend(), (Ipv4Addr::UNSPECIFIED, 0));
    assert_eq!(drop.cgroup_id, cgroup_id);
    assert_ne!(drop.sock_cookie, fwd.sock_cookie);
    assert!(drop.ktime_ns >= fwd.ktime_ns);
    assert_eq!(events_lost(&lab.bpffs_dir).unwrap(), 0);
}

#[test]
fn an_unconnected_udp_socket_is_one_flow_per_backend() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 5353);
    let dp = lab.start();
    program(&dp);
    let mut ring = FlowEventRing::open(&lab.bpffs_dir).unwrap();
    let before = counter(&dp, Counter::SendmsgTranslated);

    // One socket, five datagrams: one flow. Five sockets: five flows.
    let held = lab.client("udp-sendto-hold", "10.96.0.10:53", 5);
    assert_eq!(ok_total(&held), 5, "{held}");
    let fresh = lab.client("udp-sendto", "10.96.0.10:53", 5);
    assert_eq!(ok_total(&fresh), 5, "{fresh}");

    let events = drain(&mut ring);
    assert_eq!(events.len(), 6, "{events:#?}");
    for ev in &events {
        assert_eq!(ev.hook, event_hook::SENDMSG4);
        assert_eq!(
            (ev.verdict, ev.proto),
            (event_verdict::FORWARDED, IPPROTO_UDP)
        );
        assert_eq!(ev.frontend(), (VIP, 53));
        assert_eq!(ev.backend(), (Lab::backend_addr(1), 5353));
    }
    // Counters count every datagram, events or not.
    assert_eq!(counter(&dp, Counter::SendmsgTranslated), before + 10);
}

#[test]
fn a_full_ring_counts_every_event_it_loses() {
    require_privileged!();
    let lab = Lab::new(1);
    let mut config = lab.config();
    // One page: 73 records of 56 bytes (8 of header), nothing read meanwhile.
    config.capacities.events_ring = 4096;
    let dp = started(Datapath::start(&config));
    program(&dp);
    let mut ring = FlowEventRing::open(&lab.bpffs_dir).unwrap();

    let refused = lab.client("tcp", "10.96.0.11:80", 200);
    assert_eq!(err_total(&refused), 200, "{refused}");

    let drops = counter(&dp, Counter::DropNoBackend);
    assert_eq!(drops, 200, "counters do not depend on events");
    let kept = drain(&mut ring).len() as u64;
    let lost = events_lost(&lab.bpffs_dir).unwrap();
    assert_eq!(kept, 4096 / 56, "lost {lost}");
    assert_eq!(kept + lost, drops);
    assert_eq!(dp.stats().unwrap().events_lost, lost);
}

#[test]
fn over_the_rate_limit_events_are_shed_and_counted() {
    require_privileged!();
    let lab = Lab::new(1);
    let dp = lab.start();
    program(&dp);
    let mut ring = FlowEventRing::open(&lab.bpffs_dir).unwrap();
    let per_sec = 5;
    set_flow_event_rate(&lab.bpffs_dir, per_sec).unwrap();

    let started = std::time::Instant::now();
    let refused = lab.client("tcp", "10.96.0.11:80", 200);
    let secs = started.elapsed().as_secs();
    assert_eq!(err_total(&refused), 200, "{refused}");

    let read = drain(&mut ring).len() as u64;
    let shed = events_shed(&lab.bpffs_dir).unwrap();
    assert_eq!(read + shed, 200, "every event read or counted as shed");
    // A second's worth at once, then `per_sec` a second: each CPU's bucket.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let allowed = cpus * u64::from(per_sec) * (secs + 2);
    assert!(
        (1..=allowed).contains(&read),
        "read {read}, at most {allowed}"
    );
    assert_eq!(
        counter(&dp, Counter::DropNoBackend),
        200,
        "counters are exact"
    );
    assert_eq!(dp.stats().unwrap().events_shed, shed);
    assert_eq!(events_lost(&lab.bpffs_dir).unwrap(), 0);

    set_flow_event_rate(&lab.bpffs_dir, 0).unwrap();
    assert_eq!(err_total(&lab.client("tcp", "10.96.0.11:80", 50)), 50);
    assert_eq!(drain(&mut ring).len(), 50, "no limit: every event");
    assert_eq!(events_shed(&lab.bpffs_dir).unwrap(), shed);
}

#[test]
fn switched_off_the_programs_report_nothing_and_count_as_before() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 8080);
    let dp = lab.start();
    program(&dp);
    let mut ring = FlowEventRing::open(&lab.bpffs_dir).unwrap();

    set_flow_events(&lab.bpffs_dir, false).unwrap();
    assert_eq!(ok_total(&lab.client("tcp", "10.96.0.10:80", 3)), 3);
    assert_eq!(err_total(&lab.client("tcp", "10.96.0.11:80", 2)), 2);
    assert!(drain(&mut ring).is_empty());
    assert_eq!(counter(&dp, Counter::ConnectTranslated), 3);
    assert_eq!(counter(&dp, Counter::DropNoBackend), 2);
    assert_eq!(events_lost(&lab.bpffs_dir).unwrap(), 0);

    set_flow_events(&lab.bpffs_dir, true).unwrap();
    assert_eq!(ok_total(&lab.client("tcp", "10.96.0.10:80", 1)), 1);
    assert_eq!(drain(&mut ring).len(), 1);
}

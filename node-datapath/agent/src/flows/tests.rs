#![allow(clippy::unwrap_used)]

use std::time::UNIX_EPOCH;

use switchyard_lb::{Frontend, FrontendState, Proto, ServicePortRef};

use super::reader::FlowHub;
use super::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);

fn clock() -> Clock {
    Clock {
        wall: UNIX_EPOCH + Duration::from_secs(1_000),
        monotonic_ns: 5_000_000_000,
    }
}

fn event(verdict: u8, reason: u8) -> FlowEvent {
    FlowEvent {
        ktime_ns: 4_000_000_000,
        cgroup_id: 77,
        sock_cookie: 88,
        netns_cookie: 99,
        frontend_addr: u32::from(VIP).to_be(),
        frontend_port: 80u16.to_be(),
        backend_addr: if verdict == event_verdict::FORWARDED {
            u32::from(BACKEND).to_be()
        } else {
            0
        },
        backend_port: if verdict == event_verdict::FORWARDED {
            8080u16.to_be()
        } else {
            0
        },
        proto: IPPROTO_TCP,
        verdict,
        hook: event_hook::CONNECT4,
        drop_reason: reason,
    }
}

fn forwarded() -> Vec<u8> {
    event(event_verdict::FORWARDED, 0).to_bytes().to_vec()
}

fn dropped(reason: Counter) -> Vec<u8> {
    event(event_verdict::DROPPED, reason as u8)
        .to_bytes()
        .to_vec()
}

/// `default/web` on VIP:80/TCP (node scope) and 172.29.0.2:80 (ingress
/// scope only, which the socket programs never report).
fn services() -> ServiceIndex {
    let web = ServicePortRef {
        namespace: "default".into(),
        name: "web".into(),
        port_name: "".into(),
    };
    let state = |service: ServicePortRef| FrontendState {
        flags: 0,
        affinity_timeout: 0,
        backends: Vec::new(),
        source_ranges: Vec::new(),
        service,
    };
    let mut desired = DesiredState::default();
    desired
        .frontends
        .insert(Frontend::new(VIP, 80, Proto::Tcp), state(web.clone()));
    let mut ingress = Frontend::new(Ipv4Addr::new(172, 29, 0, 2), 80, Proto::Tcp);
    ingress.scope = Scope::Ingress;
    desired.frontends.insert(ingress, state(web));
    ServiceIndex::of(&desired)
}

fn web() -> Option<ServiceName> {
    Some(ServiceName {
        namespace: "default".into(),
        name: "web".into(),
    })
}

#[test]
fn a_forwarded_event_is_a_flow_to_its_backend_named_after_its_service() {
    let flow = decode(&forwarded(), &clock(), &services()).unwrap();
    assert_eq!(flow.verdict, Verdict::Forwarded);
    assert_eq!(flow.hook, Hook::Connect4);
    assert_eq!(flow.frontend, SocketAddrV4::new(VIP, 80));
    assert_eq!(flow.backend, Some(SocketAddrV4::new(BACKEND, 8080)));
    assert_eq!(flow.service, web());
    assert_eq!(
        (flow.cgroup_id, flow.sock_cookie, flow.netns_cookie),
        (77, 88, 99)
    );
    // One second before the clock was read.
    assert_eq!(flow.time, UNIX_EPOCH + Duration::from_secs(999));
}

#[test]
fn a_dropped_event_keeps_its_reason_and_has_no_backend() {
    let flow = decode(&dropped(Counter::DropNoBackend), &clock(), &services()).unwrap();
    assert_eq!(flow.verdict, Verdict::Dropped(Counter::DropNoBackend));
    assert_eq!(flow.backend, None);
    assert_eq!(flow.service, web());
}

#[test]
fn an_unknown_port_of_a_known_address_is_named_after_its_service_others_are_not() {
    let mut ev = event(event_verdict::DROPPED, Counter::DropUnknownPort as u8);
    ev.frontend_port = 81u16.to_be();
    let flow = decode(&ev.to_bytes(), &clock(), &services()).unwrap();
    assert_eq!(flow.service, web());
    ev.frontend_addr = u32::from(Ipv4Addr::new(10, 96, 0, 99)).to_be();
    assert_eq!(
        decode(&ev.to_bytes(), &clock(), &services())
            .unwrap()
            .service,
        None
    );
    // Ingress-scope frontends are not the socket programs'.
    ev.frontend_addr = u32::from(Ipv4Addr::new(172, 29, 0, 2)).to_be();
    ev.frontend_port = 80u16.to_be();
    assert_eq!(
        decode(&ev.to_bytes(), &clock(), &services())
            .unwrap()
            .service,
        None
    );
}

#[test]
fn malformed_records_are_errors_not_panics() {
    let s = services();
    let full = forwarded();
    for len in [0, 1, 47, 49, 96] {
        let rec: Vec<u8> = full.iter().copied().cycle().take(len).collect();
        assert_eq!(
            decode(&rec, &clock(), &s),
            Err(DecodeError::Length),
            "{len}"
        );
    }
    let bad = [
        event(0, 0),
        event(3, 0),
        // Not a drop counter, and past the last counter.
        event(event_verdict::DROPPED, Counter::ConnectTranslated as u8),
        event(event_verdict::DROPPED, 200),
        FlowEvent {
            hook: 9,
            ..event(event_verdict::FORWARDED, 0)
        },
        FlowEvent {
            proto: 1,
            ..event(event_verdict::FORWARDED, 0)
        },
    ];
    for ev in bad {
        assert_eq!(
            decode(&ev.to_bytes(), &clock(), &s),
            Err(DecodeError::Field),
            "{ev:?}"
        );
    }
}

#[test]
fn the_ring_keeps_the_newest_flows_and_counts_what_it_evicts() {
    let mut ring = FlowRing::new(3);
    for port in 1..=5u16 {
        let mut flow = decode(&forwarded(), &clock(), &services()).unwrap();
        flow.frontend.set_port(port);
        ring.push(Arc::new(flow));
    }
    let ports = |v: Vec<Arc<Flow>>| v.iter().map(|f| f.frontend.port()).collect::<Vec<_>>();
    assert_eq!(ports(ring.last(0, |_| true)), [3, 4, 5]);
    assert_eq!(ports(ring.last(2, |_| true)), [4, 5]);
    assert_eq!(ports(ring.last(2, |f| f.frontend.port() != 5)), [3, 4]);
    let c = ring.counts();
    assert_eq!((c.seen, c.forwarded, c.dropped, c.evicted), (5, 5, 0, 2));
    assert_eq!((ring.len(), ring.capacity()), (3, 3));
}

#[test]
fn the_hub_counts_bad_records_keeps_good_ones_and_feeds_followers() {
    let hub = FlowHub::new(16, true);
    hub.set_services(services());
    let (before, mut follow) = hub.last_and_follow(0, |_| true);
    assert!(before.is_empty());
    let good = forwarded();
    let drop = dropped(Counter::DropNoBackend);
    let records = [
        &good[..],
        &good[..10],
        &drop[..],
        &event(7, 0).to_bytes()[..],
    ];
    hub.ingest(records, &clock());
    let (kept, max, c) = hub.status();
    assert_eq!((kept, max), (2, 16));
    assert_eq!((c.seen, c.forwarded, c.dropped), (2, 1, 1));
    assert_eq!((c.decode_length, c.decode_field), (1, 1));
    assert_eq!(follow.try_recv().unwrap().verdict, Verdict::Forwarded);
    assert_eq!(
        follow.try_recv().unwrap().verdict,
        Verdict::Dropped(Counter::DropNoBackend)
    );
    assert!(follow.try_recv().is_err());
    let text = hub.metrics();
    assert!(
        text.contains("switchyard_agent_flows_total{verdict=\"forwarded\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_agent_flows_total{verdict=\"dropped\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("switchyard_agent_flow_decode_errors_total{error=\"length\"} 1\n"));
    assert!(
        text.contains("switchyard_agent_flow_decode_errors_total{error=\"unknown_value\"} 1\n")
    );
    assert!(text.contains("switchyard_agent_flows_evicted_total 0\n"));
}

#[test]
fn monotonic_times_after_the_clock_reading_map_forward() {
    assert_eq!(
        clock().wall_of(6_500_000_000),
        UNIX_EPOCH + Duration::from_millis(1_001_500)
    );
}

#[test]
fn an_ingress_event_is_a_flow_from_its_client_outside_the_node() {
    let mut ev = event(event_verdict::FORWARDED, 0);
    ev.hook = event_hook::INGRESS;
    ev.cgroup_id = 0;
    ev.netns_cookie = 0;
    let mut client = [0u8; 8];
    client[..4].copy_from_slice(&[203, 0, 113, 7]);
    client[4..6].copy_from_slice(&40_001u16.to_be_bytes());
    ev.sock_cookie = u64::from_ne_bytes(client);
    let flow = decode(&ev.to_bytes(), &clock(), &services()).unwrap();
    let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_001);
    assert_eq!(flow.hook, Hook::Ingress(from));
    assert_eq!(
        flow.sock_cookie, 0,
        "the union held the client, not a cookie"
    );
    assert_eq!(flow.backend, Some(SocketAddrV4::new(BACKEND, 8080)));
    assert_eq!(flow.service, web());
}

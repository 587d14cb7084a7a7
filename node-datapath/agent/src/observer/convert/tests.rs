#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use switchyard_abi::IPPROTO_UDP;

use super::*;
use crate::flows::{Hook, ServiceName};

pub(crate) fn sample(verdict: Verdict, service: (&str, &str)) -> Flow {
    Flow {
        time: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        verdict,
        hook: Hook::Connect4,
        proto: IPPROTO_TCP,
        frontend: SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80),
        backend: matches!(verdict, Verdict::Forwarded)
            .then_some(SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 7), 8080)),
        service: Some(ServiceName {
            namespace: Arc::from(service.0),
            name: Arc::from(service.1),
        }),
        source: None,
        cgroup_id: 42,
        sock_cookie: 7,
        netns_cookie: 1,
    }
}

#[test]
fn a_forwarded_flow_goes_to_its_backend_in_its_service() {
    let f = super::flow(&sample(Verdict::Forwarded, ("default", "web")), "node1");
    assert_eq!(f.verdict, pb::Verdict::Forwarded as i32);
    assert_eq!(f.r#type, pb::FlowType::Sock as i32);
    assert_eq!(f.ip.as_ref().unwrap().destination, "10.244.1.7");
    assert_eq!(
        f.l4.unwrap().protocol,
        Some(pb::layer4::Protocol::Tcp(pb::Tcp {
            source_port: 0,
            destination_port: 8080
        }))
    );
    let svc = f.destination_service.unwrap();
    assert_eq!(
        (svc.namespace.as_str(), svc.name.as_str()),
        ("default", "web")
    );
    assert_eq!((f.drop_reason, f.drop_reason_desc), (0, 0));
    assert_eq!((f.socket_cookie, f.cgroup_id), (7, 42));
    assert_eq!(f.node_name, "node1");
    let t = f.time.unwrap();
    assert_eq!((t.seconds, t.nanos), (1_700_000_000, 5));
}

#[test]
fn a_dropped_flow_goes_to_the_frontend_with_hubbles_reason() {
    let mut d = sample(Verdict::Dropped(Counter::DropNoBackend), ("default", "web"));
    d.proto = IPPROTO_UDP;
    let f = super::flow(&d, "node1");
    assert_eq!(f.verdict, pb::Verdict::Dropped as i32);
    assert_eq!(
        f.drop_reason_desc,
        pb::DropReason::ServiceBackendNotFound as i32
    );
    assert_eq!(f.drop_reason, 158);
    assert_eq!(f.ip.unwrap().destination, "10.96.0.10");
    assert!(matches!(
        f.l4.unwrap().protocol,
        Some(pb::layer4::Protocol::Udp(pb::Udp {
            destination_port: 80,
            ..
        }))
    ));
    let port = super::flow(
        &sample(Verdict::Dropped(Counter::DropUnknownPort), ("a", "b")),
        "n",
    );
    assert_eq!(port.drop_reason_desc, pb::DropReason::IsAClusterip as i32);
}

#[test]
fn a_flow_from_outside_is_a_packet_coming_in_from_its_client() {
    let mut d = sample(
        Verdict::Dropped(Counter::DropSourceRange),
        ("default", "lb"),
    );
    d.hook = Hook::Ingress(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40_001));
    let f = super::flow(&d, "node2");
    assert_eq!(f.r#type, pb::FlowType::L3L4 as i32);
    assert_eq!(f.traffic_direction, pb::TrafficDirection::Ingress as i32);
    assert_eq!(f.ip.as_ref().unwrap().source, "203.0.113.7");
    assert_eq!(
        f.l4.unwrap().protocol,
        Some(pb::layer4::Protocol::Tcp(pb::Tcp {
            source_port: 40_001,
            destination_port: 80
        }))
    );
    assert_eq!(
        f.drop_reason_desc,
        pb::DropReason::DeniedByLbSrcRangeCheck as i32
    );
    assert_eq!(f.sock_xlate_point, 0);
}

//! Pure: flows as Hubble's `flow.Flow` (and that as the JSON
//! `hubble observe -o json` prints, [`super::json`]).
//!
//! A flow is the socket layer's view (Hubble's `SOCK` type): the client
//! asked for a Service frontend, the program translated it to a backend
//! (FORWARDED, `destination` = the backend, after translation) or refused
//! it (DROPPED, `destination` = the frontend). The client's own address is
//! not known when connect() runs (the socket is usually not bound yet), so
//! the source address is left empty; the source endpoint is the client's
//! pod when the agent knows it. A flow from outside the node (the tc
//! ingress program) is a packet's view instead (`L3_L4`, `INGRESS`): the
//! client's address and port as its packet came, no pod.

use std::net::SocketAddrV4;
use std::time::SystemTime;

use switchyard_abi::{Counter, IPPROTO_TCP};

use super::proto::flow as pb;
use crate::flows::{Flow, Hook, Verdict};

/// Hubble's drop reason for a socket-program drop counter.
fn drop_reason(c: Counter) -> pb::DropReason {
    match c {
        Counter::DropUnknownPort => pb::DropReason::IsAClusterip,
        Counter::DropSourceRange => pb::DropReason::DeniedByLbSrcRangeCheck,
        Counter::DropCtFailed => pb::DropReason::CtMapInsertionFailed,
        // No backend, or none left while the Service changed.
        _ => pb::DropReason::ServiceBackendNotFound,
    }
}

pub(crate) fn verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Forwarded => pb::Verdict::Forwarded,
        Verdict::Dropped(_) => pb::Verdict::Dropped,
    }
}

/// Where the connection went: the backend, or the refused frontend.
pub(crate) fn destination(f: &Flow) -> SocketAddrV4 {
    f.backend.unwrap_or(f.frontend)
}

/// The wall-clock time of a Timestamp (before the epoch: the epoch).
pub fn system_time(t: &prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos.min(999_999_999))
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// How Hubble tells the two views apart: a socket flow (the client's
/// address unknown) leaving the client, or a packet flow from outside
/// coming into the node: (source address, source port, type, direction).
fn view(f: &Flow) -> (String, u32, pb::FlowType, pb::TrafficDirection) {
    match f.hook {
        Hook::Ingress(client) => (
            client.ip().to_string(),
            u32::from(client.port()),
            pb::FlowType::L3L4,
            pb::TrafficDirection::Ingress,
        ),
        Hook::Connect4 | Hook::Sendmsg4 => (
            String::new(),
            0,
            pb::FlowType::Sock,
            pb::TrafficDirection::Egress,
        ),
    }
}

/// `f` as Hubble's flow, observed on `node`.
pub fn flow(f: &Flow, node: &str) -> pb::Flow {
    let dst = destination(f);
    let (source_ip, source_port, kind, direction) = view(f);
    let l4 = if f.proto == IPPROTO_TCP {
        pb::layer4::Protocol::Tcp(pb::Tcp {
            source_port,
            destination_port: u32::from(dst.port()),
        })
    } else {
        pb::layer4::Protocol::Udp(pb::Udp {
            source_port,
            destination_port: u32::from(dst.port()),
        })
    };
    let (drop_reason, drop_reason_desc) = match f.verdict {
        Verdict::Dropped(c) => (drop_reason(c) as u32, drop_reason(c) as i32),
        Verdict::Forwarded => (0, 0),
    };
    let xlate = match (f.hook, f.verdict) {
        (Hook::Ingress(_), _) => pb::SocketTranslationPoint::SockXlatePointUnknown,
        (_, Verdict::Forwarded) => pb::SocketTranslationPoint::SockXlatePointPostDirectionFwd,
        (_, Verdict::Dropped(_)) => pb::SocketTranslationPoint::SockXlatePointPreDirectionFwd,
    };
    pb::Flow {
        time: Some(timestamp(f.time)),
        uuid: format!("{node}/{}/{}", f.sock_cookie, flow_nanos(f)),
        verdict: verdict(f.verdict) as i32,
        drop_reason,
        ip: Some(pb::Ip {
            source: source_ip,
            destination: dst.ip().to_string(),
            ip_version: pb::IpVersion::IPv4 as i32,
            encrypted: false,
        }),
        l4: Some(pb::Layer4 { protocol: Some(l4) }),
        source: f.source.as_ref().map(|p| pb::Endpoint {
            namespace: p.namespace.to_string(),
            pod_name: p.name.to_string(),
            ..Default::default()
        }),
        destination: None,
        r#type: kind as i32,
        node_name: node.to_owned(),
        destination_service: f.service.as_ref().map(|s| pb::Service {
            name: s.name.to_string(),
            namespace: s.namespace.to_string(),
        }),
        traffic_direction: direction as i32,
        drop_reason_desc,
        sock_xlate_point: xlate as i32,
        socket_cookie: f.sock_cookie,
        cgroup_id: f.cgroup_id,
    }
}

fn flow_nanos(f: &Flow) -> u128 {
    f.time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

#[cfg(test)]
pub(crate) mod tests;

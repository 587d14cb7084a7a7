//! Pure: flows as Hubble's `flow.Flow`, and the Observer API's flow
//! filters.
//!
//! A flow is the socket layer's view (Hubble's `SOCK` type): the client
//! asked for a Service frontend, the program translated it to a backend
//! (FORWARDED, `destination` = the backend, after translation) or refused
//! it (DROPPED, `destination` = the frontend). The client's own address is
//! not known when connect() runs (the socket is usually not bound yet), so
//! the source is left empty.

use std::net::SocketAddrV4;
use std::time::SystemTime;

use switchyard_abi::{Counter, IPPROTO_TCP};

use super::proto::flow as pb;
use crate::flows::{Flow, Verdict};

/// Hubble's drop reason for a socket-program drop counter.
fn drop_reason(c: Counter) -> pb::DropReason {
    match c {
        Counter::DropUnknownPort => pb::DropReason::IsAClusterip,
        // No backend, or none left while the Service changed.
        _ => pb::DropReason::ServiceBackendNotFound,
    }
}

fn verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Forwarded => pb::Verdict::Forwarded,
        Verdict::Dropped(_) => pb::Verdict::Dropped,
    }
}

/// Where the connection went: the backend, or the refused frontend.
fn destination(f: &Flow) -> SocketAddrV4 {
    f.backend.unwrap_or(f.frontend)
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `f` as Hubble's flow, observed on `node`.
pub fn flow(f: &Flow, node: &str) -> pb::Flow {
    let dst = destination(f);
    let l4 = if f.proto == IPPROTO_TCP {
        pb::layer4::Protocol::Tcp(pb::Tcp {
            source_port: 0,
            destination_port: u32::from(dst.port()),
        })
    } else {
        pb::layer4::Protocol::Udp(pb::Udp {
            source_port: 0,
            destination_port: u32::from(dst.port()),
        })
    };
    let (drop_reason, drop_reason_desc) = match f.verdict {
        Verdict::Dropped(c) => (drop_reason(c) as u32, drop_reason(c) as i32),
        Verdict::Forwarded => (0, 0),
    };
    let xlate = match f.verdict {
        Verdict::Forwarded => pb::SocketTranslationPoint::SockXlatePointPostDirectionFwd,
        Verdict::Dropped(_) => pb::SocketTranslationPoint::SockXlatePointPreDirectionFwd,
    };
    pb::Flow {
        time: Some(timestamp(f.time)),
        uuid: format!("{node}/{}/{}", f.sock_cookie, flow_nanos(f)),
        verdict: verdict(f.verdict) as i32,
        drop_reason,
        ip: Some(pb::Ip {
            source: String::new(),
            destination: dst.ip().to_string(),
            ip_version: pb::IpVersion::IPv4 as i32,
            encrypted: false,
        }),
        l4: Some(pb::Layer4 { protocol: Some(l4) }),
        source: None,
        destination: None,
        r#type: pb::FlowType::Sock as i32,
        node_name: node.to_owned(),
        destination_service: f.service.as_ref().map(|s| pb::Service {
            name: s.name.to_string(),
            namespace: s.namespace.to_string(),
        }),
        traffic_direction: pb::TrafficDirection::Egress as i32,
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

/// One `FlowFilter`: every non-empty field must match (a field matches
/// when any of its values does).
#[derive(Clone, Debug, Default)]
struct Filter {
    verdicts: Vec<i32>,
    /// `namespace/name-prefix`, `namespace/`, or `name-prefix`.
    services: Vec<(Option<String>, String)>,
    /// Networks (a bare address is a /32).
    destination_ips: Vec<(u32, u32)>,
    protocols: Vec<u8>,
    destination_ports: Vec<u16>,
}

/// A request's whitelist and blacklist.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    whitelist: Vec<Filter>,
    blacklist: Vec<Filter>,
}

impl Filters {
    /// The filters of a request; an error names a field this server cannot
    /// evaluate or a value it cannot parse (the client should know rather
    /// than get every flow or none).
    pub fn new(whitelist: &[pb::FlowFilter], blacklist: &[pb::FlowFilter]) -> Result<Self, String> {
        let parse = |l: &[pb::FlowFilter]| l.iter().map(Filter::new).collect::<Result<_, _>>();
        Ok(Self {
            whitelist: parse(whitelist)?,
            blacklist: parse(blacklist)?,
        })
    }

    pub fn matches(&self, f: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|w| w.matches(f)))
            && !self.blacklist.iter().any(|b| b.matches(f))
    }
}

fn cidr(s: &str) -> Result<(u32, u32), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
    let bad = || format!("destination_ip {s:?}: not an IPv4 address or network");
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok((u32::from(ip) & mask, mask))
}

impl Filter {
    fn new(f: &pb::FlowFilter) -> Result<Self, String> {
        let unknown = [
            ("source_ip", f.source_ip.is_empty()),
            ("source_pod", f.source_pod.is_empty()),
            ("destination_pod", f.destination_pod.is_empty()),
        ];
        if let Some((field, _)) = unknown.iter().find(|(_, empty)| !empty) {
            return Err(format!(
                "filter field {field} is not supported: socket-level flows carry no client address or pod yet"
            ));
        }
        let services = f
            .destination_service
            .iter()
            .map(|s| match s.split_once('/') {
                Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
                None => (None, s.clone()),
            })
            .collect();
        let protocols = f
            .protocol
            .iter()
            .map(|p| match p.to_ascii_lowercase().as_str() {
                "tcp" => Ok(IPPROTO_TCP),
                "udp" => Ok(switchyard_abi::IPPROTO_UDP),
                other => Err(format!("protocol {other:?}: only tcp and udp flows exist")),
            })
            .collect::<Result<_, _>>()?;
        let destination_ports = f
            .destination_port
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("destination_port {p:?}: not a port"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            verdicts: f.verdict.clone(),
            services,
            destination_ips: f
                .destination_ip
                .iter()
                .map(|s| cidr(s))
                .collect::<Result<_, _>>()?,
            protocols,
            destination_ports,
        })
    }

    fn matches(&self, f: &Flow) -> bool {
        let dst = destination(f);
        let field = |empty: bool, any: &dyn Fn() -> bool| empty || any();
        field(self.verdicts.is_empty(), &|| {
            self.verdicts.contains(&(verdict(f.verdict) as i32))
        }) && field(self.services.is_empty(), &|| {
            f.service.as_ref().is_some_and(|s| {
                self.services.iter().any(|(ns, prefix)| {
                    ns.as_deref().is_none_or(|ns| ns == &*s.namespace)
                        && s.name.starts_with(prefix.as_str())
                })
            })
        }) && field(self.destination_ips.is_empty(), &|| {
            let ip = u32::from(*dst.ip());
            self.destination_ips
                .iter()
                .any(|(net, mask)| ip & mask == *net)
        }) && field(self.protocols.is_empty(), &|| {
            self.protocols.contains(&f.proto)
        }) && field(self.destination_ports.is_empty(), &|| {
            self.destination_ports.contains(&dst.port())
        })
    }
}

#[cfg(test)]
mod tests;

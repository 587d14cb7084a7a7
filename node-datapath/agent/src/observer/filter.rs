//! Pure: which flows a client asked for. One implementation for both ways
//! of asking: the Observer API's `FlowFilter`s and `since`, and the agent's
//! HTTP `/v1/flows` query (parsed into the same messages, [`super::http`]).

use std::net::Ipv4Addr;
use std::time::SystemTime;

use switchyard_abi::{IPPROTO_TCP, IPPROTO_UDP};

use super::convert::{destination, verdict};
use super::proto::flow as pb;
use crate::flows::{Flow, ServiceName};

/// `namespace/name-prefix`, `namespace/` (the whole namespace) or
/// `name-prefix` (in any namespace): Hubble's pod and Service filter form.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NamePattern {
    namespace: Option<String>,
    prefix: String,
}

impl NamePattern {
    fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some((ns, name)) => Self {
                namespace: Some(ns.to_owned()),
                prefix: name.to_owned(),
            },
            None => Self {
                namespace: None,
                prefix: s.to_owned(),
            },
        }
    }

    fn matches(&self, n: &ServiceName) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == &*n.namespace)
            && n.name.starts_with(self.prefix.as_str())
    }
}

/// One `FlowFilter`: every non-empty field must match (a field matches
/// when any of its values does).
#[derive(Clone, Debug, Default)]
struct Filter {
    verdicts: Vec<i32>,
    /// The client pod.
    source_pods: Vec<NamePattern>,
    services: Vec<NamePattern>,
    /// Networks (a bare address is a /32).
    destination_ips: Vec<(u32, u32)>,
    protocols: Vec<u8>,
    destination_ports: Vec<u16>,
}

/// A request's whitelist, blacklist and start time.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    whitelist: Vec<Filter>,
    blacklist: Vec<Filter>,
    since: Option<SystemTime>,
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
            since: None,
        })
    }

    /// Only flows at or after `since` as well.
    pub fn since(mut self, since: Option<SystemTime>) -> Self {
        self.since = since;
        self
    }

    pub fn matches(&self, f: &Flow) -> bool {
        self.since.is_none_or(|t| f.time >= t)
            && (self.whitelist.is_empty() || self.whitelist.iter().any(|w| w.matches(f)))
            && !self.blacklist.iter().any(|b| b.matches(f))
    }
}

fn cidr(s: &str) -> Result<(u32, u32), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
    let bad = || format!("destination_ip {s:?}: not an IPv4 address or network");
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok((u32::from(ip) & mask, mask))
}

fn protocol(p: &str) -> Result<u8, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(IPPROTO_TCP),
        "udp" => Ok(IPPROTO_UDP),
        other => Err(format!("protocol {other:?}: only tcp and udp flows exist")),
    }
}

fn port(p: &str) -> Result<u16, String> {
    p.parse()
        .map_err(|_| format!("destination_port {p:?}: not a port"))
}

fn each<T>(l: &[String], f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    l.iter().map(|s| f(s)).collect()
}

impl Filter {
    fn new(f: &pb::FlowFilter) -> Result<Self, String> {
        let unknown = [
            ("source_ip", f.source_ip.is_empty()),
            ("destination_pod", f.destination_pod.is_empty()),
        ];
        if let Some((field, _)) = unknown.iter().find(|(_, empty)| !empty) {
            return Err(format!(
                "filter field {field} is not supported: socket-level flows carry no client address or backend pod"
            ));
        }
        let names = |l: &[String]| l.iter().map(|s| NamePattern::parse(s)).collect();
        Ok(Self {
            verdicts: f.verdict.clone(),
            source_pods: names(&f.source_pod),
            services: names(&f.destination_service),
            destination_ips: each(&f.destination_ip, cidr)?,
            protocols: each(&f.protocol, protocol)?,
            destination_ports: each(&f.destination_port, port)?,
        })
    }

    fn matches(&self, f: &Flow) -> bool {
        let dst = destination(f);
        let named = |pats: &[NamePattern], n: Option<&ServiceName>| {
            pats.is_empty() || n.is_some_and(|n| pats.iter().any(|p| p.matches(n)))
        };
        let any = |empty: bool, hit: bool| empty || hit;
        any(
            self.verdicts.is_empty(),
            self.verdicts.contains(&(verdict(f.verdict) as i32)),
        ) && named(&self.source_pods, f.source.as_ref())
            && named(&self.services, f.service.as_ref())
            && any(
                self.destination_ips.is_empty(),
                self.destination_ips
                    .iter()
                    .any(|(net, mask)| u32::from(*dst.ip()) & mask == *net),
            )
            && any(self.protocols.is_empty(), self.protocols.contains(&f.proto))
            && any(
                self.destination_ports.is_empty(),
                self.destination_ports.contains(&dst.port()),
            )
    }
}

#[cfg(test)]
mod tests;

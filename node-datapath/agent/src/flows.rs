//! Flows: what the socket load balancer did with a connection, decoded
//! from its flow events (`switchyard_abi::FlowEvent`) and kept in a
//! bounded ring for the Observer API ([`crate::observer`]) and `/metrics`.
//!
//! Pure: [`decode`] turns one ring buffer record into a [`Flow`] (naming
//! the Service from a [`ServiceIndex`]), [`FlowRing`] keeps the newest
//! flows and the counts. Reading the kernel's ring is [`reader`]'s job;
//! naming the client's pod from its cgroup is [`pods`]'.

pub mod pods;
pub mod reader;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchyard_abi::{Counter, FlowEvent, IPPROTO_TCP, IPPROTO_UDP, event_hook, event_verdict};
use switchyard_lb::{DesiredState, Scope};

/// The default number of flows kept (`--flows-max`).
pub const DEFAULT_MAX_FLOWS: usize = 4096;

/// Flow events each CPU may emit a second by default: far above the
/// connect rates measured on a node (`BENCHMARKS.md`, "Flow events"), low
/// enough that a flood of connects cannot flood the agent.
pub const DEFAULT_EVENTS_PER_CPU: u32 = 100_000;

/// What the datapath did with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Translated to a backend.
    Forwarded,
    /// Refused (the client saw ECONNREFUSED); the counter says why.
    Dropped(Counter),
}

impl Verdict {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::Dropped(_) => "dropped",
        }
    }
}

/// The program that saw the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// connect(): TCP, or connected UDP.
    Connect4,
    /// sendto() on an unconnected UDP socket (its first datagram to a backend).
    Sendmsg4,
    /// The tc ingress program: a new flow from this client outside the node
    /// (NodePort, ExternalIP, LoadBalancer IP).
    Ingress(SocketAddrV4),
}

/// A Service's `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// A pod's `namespace/name` (the same shape as a Service's).
pub type PodName = ServiceName;

/// One connection the datapath translated or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// When the program ran (wall clock).
    pub time: SystemTime,
    pub verdict: Verdict,
    pub hook: Hook,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// The Service address the client asked for.
    pub frontend: SocketAddrV4,
    /// The backend it got (forwarded flows only).
    pub backend: Option<SocketAddrV4>,
    /// The Service of the frontend, when the agent knows it.
    pub service: Option<ServiceName>,
    /// The client's pod, when the agent knows it (from the cgroup).
    pub source: Option<PodName>,
    /// cgroup v2 id of the client process.
    pub cgroup_id: u64,
    /// The client socket's cookie.
    pub sock_cookie: u64,
    /// The client's network namespace cookie.
    pub netns_cookie: u64,
}

/// Why a record is not a flow (counted, never fatal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeError {
    /// The record is not one event long (another build's layout).
    Length,
    /// A verdict, hook, protocol or drop reason this build does not know.
    Field,
}

impl DecodeError {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DecodeError::Length => "length",
            DecodeError::Field => "unknown_value",
        }
    }
}

/// How a `CLOCK_MONOTONIC` time (the programs' `bpf_ktime_get_ns`) maps to
/// the wall clock: both clocks read at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub wall: SystemTime,
    pub monotonic_ns: u64,
}

impl Clock {
    /// The wall-clock time of monotonic time `ns` (read before `self`).
    pub fn wall_of(&self, ns: u64) -> SystemTime {
        if ns <= self.monotonic_ns {
            self.wall - Duration::from_nanos(self.monotonic_ns - ns)
        } else {
            self.wall + Duration::from_nanos(ns - self.monotonic_ns)
        }
    }
}

/// Frontends (`ip:port/proto` a client connects to) by Service, from the
/// state the agent programmed; a frontend missing from it (an unknown port
/// of a ClusterIP) is named after any Service holding its address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceIndex {
    frontends: BTreeMap<(Ipv4Addr, u16, u8), ServiceName>,
}

impl ServiceIndex {
    /// The node-scope frontends of `state` (those the socket programs serve).
    pub fn of(state: &DesiredState) -> Self {
        let frontends = state
            .frontends
            .iter()
            .filter(|(fe, _)| fe.scope == Scope::Node)
            .map(|(fe, st)| {
                let name = ServiceName {
                    namespace: st.service.namespace.clone(),
                    name: st.service.name.clone(),
                };
                ((fe.ip, fe.port, fe.proto.number()), name)
            })
            .collect();
        Self { frontends }
    }

    /// The Service of `frontend`/`proto`, exactly or by address.
    pub fn lookup(&self, frontend: SocketAddrV4, proto: u8) -> Option<&ServiceName> {
        let ip = *frontend.ip();
        self.frontends
            .get(&(ip, frontend.port(), proto))
            .or_else(|| {
                self.frontends
                    .range((ip, 0, 0)..=(ip, u16::MAX, u8::MAX))
                    .map(|(_, s)| s)
                    .next()
            })
    }
}

/// The counter a dropped event names, if it is a socket-program drop.
fn drop_reason(index: u8) -> Option<Counter> {
    Counter::ALL
        .into_iter()
        .find(|c| *c as u32 == u32::from(index))
        .filter(|c| c.is_drop())
}

/// One ring buffer record as a flow.
pub fn decode(record: &[u8], clock: &Clock, services: &ServiceIndex) -> Result<Flow, DecodeError> {
    let ev = FlowEvent::from_bytes(record).ok_or(DecodeError::Length)?;
    let verdict = match ev.verdict {
        event_verdict::FORWARDED => Verdict::Forwarded,
        event_verdict::DROPPED => {
            Verdict::Dropped(drop_reason(ev.drop_reason).ok_or(DecodeError::Field)?)
        }
        _ => return Err(DecodeError::Field),
    };
    let hook = match ev.hook {
        event_hook::CONNECT4 => Hook::Connect4,
        event_hook::SENDMSG4 => Hook::Sendmsg4,
        event_hook::INGRESS => Hook::Ingress(SocketAddrV4::new(ev.client().0, ev.client().1)),
        _ => return Err(DecodeError::Field),
    };
    // An ingress event has the client where a socket event has its cookie.
    let sock_cookie = match hook {
        Hook::Ingress(_) => 0,
        _ => ev.sock_cookie,
    };
    if ev.proto != IPPROTO_TCP && ev.proto != IPPROTO_UDP {
        return Err(DecodeError::Field);
    }
    let (fip, fport) = ev.frontend();
    let frontend = SocketAddrV4::new(fip, fport);
    let backend = match verdict {
        Verdict::Forwarded => Some(SocketAddrV4::new(ev.backend().0, ev.backend().1)),
        Verdict::Dropped(_) => None,
    };
    Ok(Flow {
        time: clock.wall_of(ev.ktime_ns),
        verdict,
        hook,
        proto: ev.proto,
        frontend,
        backend,
        service: services.lookup(frontend, ev.proto).cloned(),
        source: None,
        cgroup_id: ev.cgroup_id,
        sock_cookie,
        netns_cookie: ev.netns_cookie,
    })
}

/// Counts since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Flows decoded (kept or since evicted).
    pub seen: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// Flows pushed out of the ring by newer ones.
    pub evicted: u64,
    /// Records that were not flows, by [`DecodeError`].
    pub decode_length: u64,
    pub decode_field: u64,
}

/// The newest flows, at most `capacity` of them (oldest evicted first).
#[derive(Debug)]
pub struct FlowRing {
    flows: VecDeque<Arc<Flow>>,
    capacity: usize,
    counts: FlowCounts,
}

impl FlowRing {
    /// An empty ring of `capacity` flows (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            flows: VecDeque::with_capacity(capacity.min(DEFAULT_MAX_FLOWS)),
            capacity,
            counts: FlowCounts::default(),
        }
    }

    /// Adds a flow, evicting the oldest when full.
    pub fn push(&mut self, flow: Arc<Flow>) {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
            self.counts.evicted += 1;
        }
        match flow.verdict {
            Verdict::Forwarded => self.counts.forwarded += 1,
            Verdict::Dropped(_) => self.counts.dropped += 1,
        }
        self.counts.seen += 1;
        self.flows.push_back(flow);
    }

    /// Counts a record that did not decode.
    pub fn decode_failed(&mut self, e: DecodeError) {
        match e {
            DecodeError::Length => self.counts.decode_length += 1,
            DecodeError::Field => self.counts.decode_field += 1,
        }
    }

    /// The newest `n` flows matching `keep`, oldest first (`n` = 0: all).
    pub fn last(&self, n: usize, keep: impl Fn(&Flow) -> bool) -> Vec<Arc<Flow>> {
        let n = if n == 0 { usize::MAX } else { n };
        let mut out: Vec<Arc<Flow>> = self
            .flows
            .iter()
            .rev()
            .filter(|f| keep(f))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn counts(&self) -> FlowCounts {
        self.counts
    }
}

/// Prometheus text of the flow counts and the kernel's lost events.
pub fn render_metrics(c: &FlowCounts) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP switchyard_agent_flows_total Flows read from the datapath's events, by verdict.\n\
         # TYPE switchyard_agent_flows_total counter\n",
    );
    for (verdict, v) in [("forwarded", c.forwarded), ("dropped", c.dropped)] {
        out.push_str(&format!(
            "switchyard_agent_flows_total{{verdict=\"{verdict}\"}} {v}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP switchyard_agent_flows_evicted_total Flows pushed out of the agent's flow ring by newer ones.\n\
         # TYPE switchyard_agent_flows_evicted_total counter\n\
         switchyard_agent_flows_evicted_total {}\n",
        c.evicted
    ));
    out.push_str(
        "# HELP switchyard_agent_flow_decode_errors_total Flow event records that were not flows, by why.\n\
         # TYPE switchyard_agent_flow_decode_errors_total counter\n",
    );
    for (e, v) in [
        (DecodeError::Length, c.decode_length),
        (DecodeError::Field, c.decode_field),
    ] {
        out.push_str(&format!(
            "switchyard_agent_flow_decode_errors_total{{error=\"{}\"}} {v}\n",
            e.label()
        ));
    }
    out
}

#[cfg(test)]
mod tests;

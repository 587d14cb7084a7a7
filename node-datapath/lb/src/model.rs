//! The desired load-balancer state for one node, as plain ordered data.
//!
//! [`DesiredState`] is what [`crate::desired::desired_state`] computes from
//! Services and EndpointSlices and what [`mod@crate::diff`] turns into map
//! operations. Everything is keyed and ordered (`BTreeMap`/`BTreeSet`), so
//! two computations from the same inputs are equal and render identically.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use switchyard_abi::{IPPROTO_TCP, IPPROTO_UDP, SCOPE_INGRESS, SCOPE_NODE, SvcKey};

/// A transport protocol the socket load balancer serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (`IPPROTO_TCP`).
    Tcp,
    /// UDP (`IPPROTO_UDP`).
    Udp,
}

impl Proto {
    /// The IP protocol number stored in the maps.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }

    /// The protocol for an IP protocol number, if it is one we serve.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            IPPROTO_TCP => Some(Proto::Tcp),
            IPPROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// Which clients a frontend's map entries serve (`sy_svc_key.scope`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Clients on this node (the socket programs), and clients outside it
    /// unless the frontend also has an [`Scope::Ingress`] entry. Every
    /// frontend has this one.
    #[default]
    Node,
    /// Clients outside the node, where they get other backends than local
    /// ones (`externalTrafficPolicy: Local`); the node-scope master then
    /// carries `svc_flags::INGRESS_SCOPE`.
    Ingress,
}

impl Scope {
    /// The key's scope number (lb.h `SY_SCOPE_*`).
    pub fn number(self) -> u8 {
        match self {
            Scope::Node => SCOPE_NODE,
            Scope::Ingress => SCOPE_INGRESS,
        }
    }

    fn from_number(n: u8) -> Option<Self> {
        match n {
            SCOPE_NODE => Some(Scope::Node),
            SCOPE_INGRESS => Some(Scope::Ingress),
            _ => None,
        }
    }
}

/// A service frontend: what a client connects to, and for which clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// Frontend address (ClusterIP, node address, external or LB IP).
    pub ip: Ipv4Addr,
    /// Frontend port (host order).
    pub port: u16,
    /// Transport protocol.
    pub proto: Proto,
    /// Which clients these entries serve.
    pub scope: Scope,
}

impl Frontend {
    /// The node-scope frontend `ip:port/proto`.
    pub fn new(ip: Ipv4Addr, port: u16, proto: Proto) -> Self {
        Self {
            ip,
            port,
            proto,
            scope: Scope::Node,
        }
    }

    /// The same frontend in another scope.
    pub fn in_scope(self, scope: Scope) -> Self {
        Self { scope, ..self }
    }

    /// The service-map key of this frontend's master entry (slot 0).
    pub fn master_key(&self) -> SvcKey {
        SvcKey::new(
            self.ip,
            self.port,
            self.proto.number(),
            self.scope.number(),
            0,
        )
    }

    /// The frontend a service-map key belongs to, if it is a frontend key of
    /// ours (TCP/UDP, a known scope, non-zero port); `None` for VIP markers
    /// and foreign keys.
    pub fn from_key(key: &SvcKey) -> Option<Self> {
        let proto = Proto::from_number(key.proto)?;
        let scope = Scope::from_number(key.scope)?;
        if key.port() == 0 {
            return None;
        }
        Some(Self::new(key.ip(), key.port(), proto).in_scope(scope))
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto)?;
        if self.scope == Scope::Ingress {
            f.write_str(" (external clients)")?;
        }
        Ok(())
    }
}

/// A backend's identity: the backend map is keyed by an id allocated per
/// distinct `(ip, port, proto)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// Endpoint address.
    pub ip: Ipv4Addr,
    /// Endpoint port (host order).
    pub port: u16,
    /// Transport protocol.
    pub proto: Proto,
}

impl BackendKey {
    /// The key of a backend map value, if its protocol is one we serve.
    pub fn from_backend(b: &switchyard_abi::Backend) -> Option<Self> {
        Some(Self {
            ip: b.ip(),
            port: b.host_port(),
            proto: Proto::from_number(b.proto)?,
        })
    }
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto)
    }
}

/// One backend of a frontend, in slot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DesiredBackend {
    /// Which endpoint.
    pub key: BackendKey,
    /// Serving but terminating (used only when no ready endpoint exists).
    pub terminating: bool,
}

/// The Service port a frontend was derived from (for status and reports).
/// Shared strings: every frontend of a Service, and every copy of its
/// state, points at the same three.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortRef {
    /// Service namespace.
    pub namespace: Arc<str>,
    /// Service name.
    pub name: Arc<str>,
    /// The Service port's name (`""` for a single unnamed port).
    pub port_name: Arc<str>,
}

impl fmt::Display for ServicePortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        Ok(())
    }
}

/// Everything the master entry of a frontend holds, plus its slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendState {
    /// `switchyard_abi::svc_flags` bits: exactly one of CLUSTER_IP, NODEPORT,
    /// EXTERNAL_IP, LOADBALANCER, plus AFFINITY and LOCAL_ONLY as applicable.
    pub flags: u8,
    /// Session affinity timeout in seconds (0 unless AFFINITY is set).
    pub affinity_timeout: u32,
    /// Backends in slot order (slot `i + 1` holds `backends[i]`). Empty means
    /// the service has no usable endpoint and connections are refused.
    pub backends: Vec<DesiredBackend>,
    /// With `SOURCE_RANGES` in `flags`: the only networks external clients
    /// may come from (at most `switchyard_abi::SOURCE_RANGES_MAX`).
    pub source_ranges: Vec<(Ipv4Addr, u8)>,
    /// The owning Service port.
    pub service: ServicePortRef,
}

/// The desired contents of the userspace-owned maps for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Every frontend with its master-entry values and ordered backends.
    pub frontends: BTreeMap<Frontend, FrontendState>,
    /// ClusterIPs that get a VIP marker entry (unknown ports are refused).
    pub vips: BTreeSet<Ipv4Addr>,
}

impl DesiredState {
    /// Distinct backends over all frontends, with their map flags: a backend
    /// is marked terminating only if every frontend using it lists it as
    /// terminating (one backend entry is shared by all frontends).
    pub fn backends(&self) -> BTreeMap<BackendKey, bool> {
        let mut out: BTreeMap<BackendKey, bool> = BTreeMap::new();
        for fe in self.frontends.values() {
            for b in &fe.backends {
                out.entry(b.key)
                    .and_modify(|t| *t = *t && b.terminating)
                    .or_insert(b.terminating);
            }
        }
        out
    }

    /// Number of distinct Services (namespace/name) with at least one frontend.
    pub fn service_count(&self) -> usize {
        self.frontends
            .values()
            .map(|f| (&f.service.namespace, &f.service.name))
            .collect::<BTreeSet<_>>()
            .len()
    }
}

//! The one ABI between the BPF programs and userspace.
//!
//! `node-datapath/bpf/lb.h` is the source of truth; every type here is a
//! `#[repr(C)]` mirror of a struct there, with a compile-time size assert.
//! Addresses and ports are stored in network byte order exactly as the kernel
//! sees them; the constructors take host-order values and convert, so callers
//! never juggle byte order. This crate is plain data: no I/O, no aya unless the
//! `aya` feature is enabled (then each type implements `aya::Pod`).

use std::net::Ipv4Addr;

/// Map names (at most 15 bytes, the kernel's limit), as declared in lb.h.
pub mod map_names {
    pub const SERVICES: &str = "sy_svc_v4";
    pub const BACKENDS: &str = "sy_backend_v4";
    pub const REV_NAT: &str = "sy_revnat_v4";
    pub const SOCK_REV_NAT: &str = "sy_sock_rnat4";
    pub const AFFINITY: &str = "sy_affinity4";
    pub const COUNTERS: &str = "sy_counters";
    pub const HEALTH_SOCKS: &str = "sy_health_socks";
    pub const EVENTS: &str = "sy_events";
    pub const EVENTS_LOST: &str = "sy_events_lost";
    pub const CONFIG: &str = "sy_config";
    pub const EVENTS_RATE: &str = "sy_events_rate";
}

/// Default map capacities (lb.h `SY_*_MAP_MAX`).
pub mod capacity {
    pub const SERVICES: u32 = 524_288;
    pub const BACKENDS: u32 = 524_288;
    pub const REV_NAT: u32 = 65_536;
    pub const SOCK_REV_NAT: u32 = 262_144;
    pub const AFFINITY: u32 = 65_536;
    pub const HEALTH_SOCKS: u32 = 1_024;
    /// Bytes of the flow event ring (a power of 2, whole pages).
    pub const EVENTS_RING: u32 = 262_144;
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `SY_SCOPE_NODE`: every frontend, with the backends for clients on this node.
pub const SCOPE_NODE: u8 = 0;
/// `SY_SCOPE_INGRESS`: a frontend's backends for clients outside the node,
/// where they differ (its node-scope master carries `svc_flags::INGRESS_SCOPE`).
pub const SCOPE_INGRESS: u8 = 1;
/// `SY_SCOPE_SOURCE_RANGE`: a frontend's loadBalancerSourceRanges, one per
/// slot (its node-scope master carries `svc_flags::SOURCE_RANGES`).
pub const SCOPE_SOURCE_RANGE: u8 = 2;
/// `SY_SOURCE_RANGES_MAX`: the most ranges of one frontend enforced.
pub const SOURCE_RANGES_MAX: usize = 64;

/// `sy_svc_value.flags`.
pub mod svc_flags {
    pub const CLUSTER_IP: u8 = 1 << 0;
    pub const NODEPORT: u8 = 1 << 1;
    pub const EXTERNAL_IP: u8 = 1 << 2;
    pub const LOADBALANCER: u8 = 1 << 3;
    pub const AFFINITY: u8 = 1 << 4;
    pub const LOCAL_ONLY: u8 = 1 << 5;
    pub const INGRESS_SCOPE: u8 = 1 << 6;
    pub const SOURCE_RANGES: u8 = 1 << 7;
}

/// `sy_backend.flags`.
pub mod backend_flags {
    pub const TERMINATING: u8 = 1 << 0;
}

/// Backend id: the key of the backend map. 0 is never a valid id.
pub type BackendId = u32;
/// Rev-NAT id: the key of the rev-NAT map. 0 is never a valid id.
pub type RevNatId = u16;

/// `struct sy_svc_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SvcKey {
    pub address: u32,
    pub dport: u16,
    pub backend_slot: u16,
    pub proto: u8,
    pub scope: u8,
    pub pad: [u8; 2],
}

impl SvcKey {
    /// A key from host-order values.
    pub fn new(address: Ipv4Addr, port: u16, proto: u8, scope: u8, slot: u16) -> Self {
        Self {
            address: u32::from(address).to_be(),
            dport: port.to_be(),
            backend_slot: slot,
            proto,
            scope,
            pad: [0; 2],
        }
    }

    /// The VIP marker key of a ClusterIP (port 0, proto 0, slot 0).
    pub fn vip_marker(address: Ipv4Addr) -> Self {
        Self::new(address, 0, 0, SCOPE_NODE, 0)
    }

    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.address))
    }

    pub fn port(&self) -> u16 {
        u16::from_be(self.dport)
    }

    /// The same frontend at another slot.
    pub fn with_slot(self, slot: u16) -> Self {
        Self {
            backend_slot: slot,
            ..self
        }
    }

    /// The same frontend and slot in another scope.
    pub fn with_scope(self, scope: u8) -> Self {
        Self { scope, ..self }
    }
}

/// `struct sy_svc_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SvcValue {
    pub backend_id: BackendId,
    pub count: u16,
    pub rev_nat_index: RevNatId,
    pub flags: u8,
    pub pad: u8,
    pub pad2: u16,
    pub affinity_timeout: u32,
}

/// `struct sy_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Backend {
    pub address: u32,
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

impl Backend {
    pub fn new(address: Ipv4Addr, port: u16, proto: u8, flags: u8) -> Self {
        Self {
            address: u32::from(address).to_be(),
            port: port.to_be(),
            proto,
            flags,
        }
    }

    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.address))
    }

    pub fn host_port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// `struct sy_rev_nat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RevNat {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

impl RevNat {
    pub fn new(address: Ipv4Addr, port: u16) -> Self {
        Self {
            address: u32::from(address).to_be(),
            port: port.to_be(),
            pad: 0,
        }
    }
}

/// `struct sy_sock_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockKey {
    pub cookie: u64,
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// `struct sy_sock_rev_nat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevNat {
    pub address: u32,
    pub port: u16,
    pub rev_nat_index: RevNatId,
}

/// `struct sy_affinity_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AffinityKey {
    pub client_cookie: u64,
    pub rev_nat_index: RevNatId,
    pub pad: u16,
    pub pad2: u32,
}

/// `struct sy_affinity_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AffinityValue {
    pub last_used_ns: u64,
    pub backend_id: BackendId,
    pub pad: u32,
}

/// `sy_config.flags`.
pub mod config_flags {
    /// `SY_CFG_F_EVENTS_OFF`: connect4/sendmsg4 emit no flow events.
    pub const EVENTS_OFF: u32 = 1 << 0;
}

/// `struct sy_config`: the one value (key 0) of the `sy_config` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Config {
    pub flags: u32,
    /// Flow events each CPU may emit a second; 0: no limit.
    pub events_per_sec: u32,
}

/// `struct sy_events_rate`: one CPU's token bucket of flow events (the
/// per-CPU value, key 0, of the `sy_events_rate` array).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EventsRate {
    pub last_ns: u64,
    pub tokens: u64,
    /// Events over the limit, not emitted.
    pub shed: u64,
}

/// `sy_flow_event.verdict`.
pub mod event_verdict {
    pub const FORWARDED: u8 = 1;
    pub const DROPPED: u8 = 2;
}

/// `sy_flow_event.hook`.
pub mod event_hook {
    pub const CONNECT4: u8 = 1;
    pub const SENDMSG4: u8 = 2;
    /// The tc ingress program: a new flow from outside the node.
    pub const INGRESS: u8 = 3;
}

/// `struct sy_flow_event`: one record of the `sy_events` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowEvent {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    /// The client socket's cookie; for [`event_hook::INGRESS`], the client's
    /// address and port ([`FlowEvent::client`]).
    pub sock_cookie: u64,
    pub netns_cookie: u64,
    pub frontend_addr: u32,
    pub backend_addr: u32,
    pub frontend_port: u16,
    pub backend_port: u16,
    pub proto: u8,
    pub verdict: u8,
    pub hook: u8,
    pub drop_reason: u8,
}

impl FlowEvent {
    /// The event in a ring buffer record, if the record is exactly one
    /// event long (the kernel pads records, but reports their own length).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked, every bit pattern is a valid
        // FlowEvent (plain integers), and read_unaligned needs no alignment.
        Some(unsafe { bytes.as_ptr().cast::<Self>().read_unaligned() })
    }

    /// The record's bytes, as the kernel writes them (for tests and tools).
    pub fn to_bytes(&self) -> [u8; size_of::<FlowEvent>()] {
        // SAFETY: FlowEvent is repr(C) without implicit padding (asserted
        // below), so all its bytes are initialized.
        unsafe { std::mem::transmute_copy(self) }
    }

    pub fn frontend(&self) -> (Ipv4Addr, u16) {
        (
            Ipv4Addr::from(u32::from_be(self.frontend_addr)),
            u16::from_be(self.frontend_port),
        )
    }

    pub fn backend(&self) -> (Ipv4Addr, u16) {
        (
            Ipv4Addr::from(u32::from_be(self.backend_addr)),
            u16::from_be(self.backend_port),
        )
    }

    /// The client of an [`event_hook::INGRESS`] event, as its packet came:
    /// the union's `client_addr` and `client_port`, both in network order,
    /// where a socket event has its cookie.
    pub fn client(&self) -> (Ipv4Addr, u16) {
        let b = self.sock_cookie.to_ne_bytes();
        (
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            u16::from_be_bytes([b[4], b[5]]),
        )
    }
}

/// `enum sy_counter`: indexes of the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    ConnectTranslated = 0,
    SendmsgTranslated = 1,
    RecvmsgRevNat = 2,
    PeernameRevNat = 3,
    DropNoBackend = 4,
    DropBackendMissing = 5,
    DropSlotMissing = 6,
    SockRevNatFull = 7,
    AffinityHit = 8,
    DropUnknownPort = 9,
    IngressTranslated = 10,
    IngressTracked = 11,
    IngressUntracked = 12,
    DropNoLocalBackend = 13,
    DropCtFailed = 14,
    IngressFragment = 15,
    IngressCtClash = 16,
    IngressReopened = 17,
    DropSourceRange = 18,
}

impl Counter {
    /// Every counter, in index order (`SY_CNT_MAX` entries).
    pub const ALL: [Counter; 19] = [
        Counter::ConnectTranslated,
        Counter::SendmsgTranslated,
        Counter::RecvmsgRevNat,
        Counter::PeernameRevNat,
        Counter::DropNoBackend,
        Counter::DropBackendMissing,
        Counter::DropSlotMissing,
        Counter::SockRevNatFull,
        Counter::AffinityHit,
        Counter::DropUnknownPort,
        Counter::IngressTranslated,
        Counter::IngressTracked,
        Counter::IngressUntracked,
        Counter::DropNoLocalBackend,
        Counter::DropCtFailed,
        Counter::IngressFragment,
        Counter::IngressCtClash,
        Counter::IngressReopened,
        Counter::DropSourceRange,
    ];

    /// Whether this counter counts a packet the datapath could not serve.
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DropNoBackend
                | Counter::DropBackendMissing
                | Counter::DropSlotMissing
                | Counter::SockRevNatFull
                | Counter::DropUnknownPort
                | Counter::DropNoLocalBackend
                | Counter::DropCtFailed
                | Counter::IngressFragment
                | Counter::DropSourceRange
        )
    }

    /// The Prometheus label value (`reason=…`).
    pub fn reason(self) -> &'static str {
        match self {
            Counter::ConnectTranslated => "connect_translated",
            Counter::SendmsgTranslated => "sendmsg_translated",
            Counter::RecvmsgRevNat => "recvmsg_revnat",
            Counter::PeernameRevNat => "getpeername_revnat",
            Counter::DropNoBackend => "no_backend",
            Counter::DropBackendMissing => "backend_missing",
            Counter::DropSlotMissing => "slot_missing",
            Counter::SockRevNatFull => "sock_revnat_map_full",
            Counter::AffinityHit => "affinity_hit",
            Counter::DropUnknownPort => "unknown_service_port",
            Counter::IngressTranslated => "ingress_translated",
            Counter::IngressTracked => "ingress_tracked",
            Counter::IngressUntracked => "ingress_untracked",
            Counter::DropNoLocalBackend => "no_local_backend",
            Counter::DropCtFailed => "conntrack_failed",
            Counter::IngressFragment => "ingress_fragment",
            Counter::IngressCtClash => "ingress_conntrack_clash",
            Counter::IngressReopened => "ingress_reopened",
            Counter::DropSourceRange => "denied_by_lb_source_range",
        }
    }
}

/// `SY_CNT_MAX`.
pub const COUNTER_MAX: u32 = Counter::ALL.len() as u32;

const _: () = {
    assert!(size_of::<SvcKey>() == 12);
    assert!(size_of::<SvcValue>() == 16);
    assert!(size_of::<Backend>() == 8);
    assert!(size_of::<RevNat>() == 8);
    assert!(size_of::<SockKey>() == 16);
    assert!(size_of::<SockRevNat>() == 8);
    assert!(size_of::<AffinityKey>() == 16);
    assert!(size_of::<AffinityValue>() == 16);
    assert!(size_of::<Config>() == 8);
    assert!(size_of::<EventsRate>() == 24);
    assert!(size_of::<FlowEvent>() == 48);
    assert!(std::mem::offset_of!(FlowEvent, frontend_addr) == 32);
    assert!(std::mem::offset_of!(FlowEvent, proto) == 44);
};

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: every type is `#[repr(C)]`, `Copy`, has no padding the compiler
    // inserts (explicit pad fields, sizes asserted above) and is valid for
    // any bit pattern.
    unsafe impl aya::Pod for super::SvcKey {}
    unsafe impl aya::Pod for super::SvcValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::RevNat {}
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::SockRevNat {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::EventsRate {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_store_network_byte_order() {
        let k = SvcKey::new(Ipv4Addr::new(10, 96, 0, 10), 53, IPPROTO_UDP, SCOPE_NODE, 0);
        assert_eq!(k.address.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(k.dport.to_ne_bytes(), [0, 53]);
        assert_eq!(k.ip(), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(k.port(), 53);
        let b = Backend::new(Ipv4Addr::new(10, 244, 1, 7), 8080, IPPROTO_TCP, 0);
        assert_eq!(b.port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(
            (b.ip(), b.host_port()),
            (Ipv4Addr::new(10, 244, 1, 7), 8080)
        );
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.reason()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }

    #[test]
    fn header_and_mirror_agree() {
        // The header is the source of truth: check names, counter indexes and
        // capacities against it textually so a one-sided edit fails here.
        let h = include_str!("../../bpf/lb.h");
        for name in [
            map_names::SERVICES,
            map_names::BACKENDS,
            map_names::REV_NAT,
            map_names::SOCK_REV_NAT,
            map_names::AFFINITY,
            map_names::COUNTERS,
            map_names::HEALTH_SOCKS,
            map_names::EVENTS,
            map_names::EVENTS_LOST,
            map_names::CONFIG,
            map_names::EVENTS_RATE,
        ] {
            assert!(h.contains(&format!("\"{name}\"")), "map {name} not in lb.h");
            assert!(name.len() <= 15, "map name {name} too long for the kernel");
        }
        assert!(h.contains(&format!("SY_CNT_MAX = {},", COUNTER_MAX)));
        assert!(h.contains(&format!("SY_SVC_MAP_MAX {}", capacity::SERVICES)));
        assert!(h.contains(&format!("SY_BACKEND_MAP_MAX {}", capacity::BACKENDS)));
        assert!(h.contains(&format!("SY_HEALTH_SOCKS_MAX {}", capacity::HEALTH_SOCKS)));
        assert!(h.contains(&format!("SY_SOURCE_RANGES_MAX {SOURCE_RANGES_MAX}")));
        assert!(h.contains(&format!("SY_SCOPE_SOURCE_RANGE {SCOPE_SOURCE_RANGE}")));
        assert!(h.contains(&format!("SY_EVENTS_RING_BYTES {}", capacity::EVENTS_RING)));
        assert!(h.contains(&format!(
            "SY_CFG_F_EVENTS_OFF (1 << {})",
            config_flags::EVENTS_OFF.trailing_zeros()
        )));
        for (name, v) in [
            ("SY_EV_FORWARDED", event_verdict::FORWARDED),
            ("SY_EV_DROPPED", event_verdict::DROPPED),
            ("SY_EV_HOOK_CONNECT4", event_hook::CONNECT4),
            ("SY_EV_HOOK_SENDMSG4", event_hook::SENDMSG4),
            ("SY_EV_HOOK_INGRESS", event_hook::INGRESS),
        ] {
            assert!(h.contains(&format!("#define {name} {v} ")), "{name} {v}");
        }
        assert!(h.contains("};                             /* 48 bytes */"));
    }

    #[test]
    fn flow_events_round_trip_and_other_lengths_are_refused() {
        let ev = FlowEvent {
            ktime_ns: 1,
            cgroup_id: 2,
            sock_cookie: 3,
            netns_cookie: 4,
            frontend_addr: u32::from(Ipv4Addr::new(10, 96, 0, 10)).to_be(),
            backend_addr: u32::from(Ipv4Addr::new(10, 244, 0, 5)).to_be(),
            frontend_port: 80u16.to_be(),
            backend_port: 8080u16.to_be(),
            proto: IPPROTO_TCP,
            verdict: event_verdict::FORWARDED,
            hook: event_hook::CONNECT4,
            drop_reason: 0,
        };
        let bytes = ev.to_bytes();
        assert_eq!(bytes[32..36], [10, 96, 0, 10]);
        assert_eq!(FlowEvent::from_bytes(&bytes), Some(ev));
        assert_eq!(ev.frontend(), (Ipv4Addr::new(10, 96, 0, 10), 80));
        assert_eq!(ev.backend(), (Ipv4Addr::new(10, 244, 0, 5), 8080));
        assert_eq!(FlowEvent::from_bytes(&bytes[..47]), None);
        assert_eq!(FlowEvent::from_bytes(&[0; 56]), None);
        assert_eq!(FlowEvent::from_bytes(&[]), None);
    }

    #[test]
    fn an_ingress_event_carries_the_client_where_a_socket_event_has_its_cookie() {
        let mut bytes = FlowEvent::default().to_bytes();
        // As the program writes the union: address, then port, network order.
        bytes[16..20].copy_from_slice(&[203, 0, 113, 7]);
        bytes[20..22].copy_from_slice(&40_001u16.to_be_bytes());
        let ev = FlowEvent::from_bytes(&bytes).unwrap_or_default();
        assert_eq!(ev.client(), (Ipv4Addr::new(203, 0, 113, 7), 40_001));
    }
}

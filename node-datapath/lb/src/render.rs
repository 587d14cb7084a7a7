//! Stable, human-readable rendering of map contents (golden tests, debug
//! dumps): frontends in address order with their slots, then VIP markers,
//! rev-NATs and backends.

use std::fmt::Write as _;

use std::net::Ipv4Addr;

use switchyard_abi::{SCOPE_NODE, SCOPE_SOURCE_RANGE, SvcKey, backend_flags, svc_flags};

use crate::diff::is_vip_marker;
use crate::maps::MapsSnapshot;
use crate::model::{DesiredState, Frontend};

/// Names of the `svc_flags` bits set in `flags`, space separated.
pub fn flag_names(flags: u8, affinity_timeout: u32) -> String {
    let mut out = Vec::new();
    for (bit, name) in [
        (svc_flags::CLUSTER_IP, "cluster-ip"),
        (svc_flags::NODEPORT, "nodeport"),
        (svc_flags::EXTERNAL_IP, "external-ip"),
        (svc_flags::LOADBALANCER, "loadbalancer"),
        (svc_flags::LOCAL_ONLY, "local-only"),
        (svc_flags::INGRESS_SCOPE, "ingress-scope"),
        (svc_flags::SOURCE_RANGES, "source-ranges"),
    ] {
        if flags & bit != 0 {
            out.push(name.to_string());
        }
    }
    if flags & svc_flags::AFFINITY != 0 {
        out.push(format!("affinity={affinity_timeout}s"));
    }
    out.join(" ")
}

/// Renders `maps`; with `desired`, each frontend is annotated with its
/// owning Service port.
pub fn render(maps: &MapsSnapshot, desired: Option<&DesiredState>) -> String {
    let mut s = String::new();
    let mut masters: Vec<_> = maps
        .services
        .iter()
        .filter(|(k, _)| k.backend_slot == 0 && !is_vip_marker(k))
        .collect();
    masters.sort_by_key(|(k, _)| (k.ip(), k.port(), k.proto, k.scope));
    for (k, v) in masters {
        let fe = Frontend::from_key(k);
        let name = fe.map_or_else(
            || format!("{}:{}/proto{}/scope{}", k.ip(), k.port(), k.proto, k.scope),
            |f| f.to_string(),
        );
        let _ = write!(
            s,
            "frontend {name} [{}] rev-nat={} count={}",
            flag_names(v.flags, v.affinity_timeout),
            v.rev_nat_index,
            v.count
        );
        if let Some(st) = fe.and_then(|f| desired?.frontends.get(&f)) {
            let _ = write!(s, " ({})", st.service);
        }
        s.push('\n');
        render_entries(&mut s, maps, k);
    }
    let mut vips: Vec<_> = maps
        .services
        .keys()
        .filter(|k| is_vip_marker(k))
        .map(|k| k.ip())
        .collect();
    vips.sort_unstable();
    for vip in vips {
        let _ = writeln!(s, "vip-marker {vip}");
    }
    for (id, r) in &maps.rev_nat {
        let ip = std::net::Ipv4Addr::from(u32::from_be(r.address));
        let _ = writeln!(s, "rev-nat {id} -> {ip}:{}", u16::from_be(r.port));
    }
    for (id, b) in &maps.backends {
        let proto = crate::model::Proto::from_number(b.proto)
            .map_or_else(|| format!("proto{}", b.proto), |p| p.to_string());
        let term = if b.flags & backend_flags::TERMINATING != 0 {
            " terminating"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "backend {id} -> {}:{}/{proto}{term}",
            b.ip(),
            b.host_port()
        );
    }
    s
}

/// The slots (with their backends) and source ranges of the master `k`.
fn render_entries(s: &mut String, maps: &MapsSnapshot, k: &SvcKey) {
    // Key order is (address, port, slot, proto, scope): filter the range
    // down to this frontend's protocol and scope.
    let slots = maps
        .services
        .range(k.with_slot(1)..=k.with_slot(u16::MAX))
        .filter(|(sk, _)| sk.proto == k.proto && sk.scope == k.scope);
    for (slot_key, sv) in slots {
        let target = maps.backends.get(&sv.backend_id).map_or_else(
            || "MISSING".to_string(),
            |b| format!("{}:{}", b.ip(), b.host_port()),
        );
        let _ = writeln!(
            s,
            "  slot {} -> backend {} {target}",
            slot_key.backend_slot, sv.backend_id
        );
    }
    let ranges = maps
        .services
        .range(k.with_slot(1)..=k.with_slot(u16::MAX))
        .filter(|(rk, _)| rk.proto == k.proto && rk.scope == SCOPE_SOURCE_RANGE);
    for (_, rv) in ranges.filter(|_| k.scope == SCOPE_NODE) {
        let net = Ipv4Addr::from(u32::from_be(rv.backend_id));
        let _ = writeln!(s, "  source-range {net}/{}", rv.count);
    }
}

//! The map operations the privileged tests write, built per frontend:
//! `Svc::new(VIP, 80, IPPROTO_TCP).rev_nat(1).backends(&b).cluster_ip_ops()`.

use std::net::Ipv4Addr;

use switchyard_abi::{
    Backend, RevNat, SCOPE_NODE, SCOPE_SOURCE_RANGE, SvcKey, SvcValue, svc_flags,
};
use switchyard_lb::maps::MapOp;

/// One frontend `addr:port/proto` and what its entries hold. Defaults:
/// node scope, rev-NAT id 1, no flags, no affinity, no backends.
#[derive(Clone, Copy, Debug)]
pub struct Svc<'a> {
    addr: Ipv4Addr,
    port: u16,
    proto: u8,
    scope: u8,
    rev_nat: u16,
    flags: u8,
    affinity_timeout: u32,
    backends: &'a [(u32, Ipv4Addr, u16)],
}

impl<'a> Svc<'a> {
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        Svc {
            addr,
            port,
            proto,
            scope: SCOPE_NODE,
            rev_nat: 1,
            flags: 0,
            affinity_timeout: 0,
            backends: &[],
        }
    }

    /// The service-map scope of its entries.
    pub fn scope(self, scope: u8) -> Self {
        Svc { scope, ..self }
    }

    pub fn rev_nat(self, rev_nat: u16) -> Self {
        Svc { rev_nat, ..self }
    }

    /// The master's flags (its kind plus extras).
    pub fn flags(self, flags: u8) -> Self {
        Svc { flags, ..self }
    }

    /// Scope, rev-NAT id and flags at once.
    pub fn at(self, (scope, rev_nat, flags): (u8, u16, u8)) -> Self {
        Svc {
            scope,
            rev_nat,
            flags,
            ..self
        }
    }

    /// Session affinity's timeout, seconds.
    pub fn affinity(self, affinity_timeout: u32) -> Self {
        Svc {
            affinity_timeout,
            ..self
        }
    }

    /// `(backend id, address, port)` per slot, in slot order.
    pub fn backends(self, backends: &'a [(u32, Ipv4Addr, u16)]) -> Self {
        Svc { backends, ..self }
    }

    /// The frontend's entries in the documented order: backends, rev-NAT,
    /// slots, master.
    pub fn ops(&self) -> Vec<MapOp> {
        let mut ops: Vec<MapOp> = self
            .backends
            .iter()
            .map(|(id, a, p)| MapOp::UpsertBackend(*id, Backend::new(*a, *p, self.proto, 0)))
            .collect();
        ops.push(MapOp::UpsertRevNat(
            self.rev_nat,
            RevNat::new(self.addr, self.port),
        ));
        let key = SvcKey::new(self.addr, self.port, self.proto, self.scope, 0);
        for (i, (id, _, _)) in self.backends.iter().enumerate() {
            let value = SvcValue {
                backend_id: *id,
                rev_nat_index: self.rev_nat,
                ..Default::default()
            };
            ops.push(MapOp::UpsertService(key.with_slot(i as u16 + 1), value));
        }
        let master = SvcValue {
            count: self.backends.len() as u16,
            rev_nat_index: self.rev_nat,
            flags: self.flags,
            affinity_timeout: self.affinity_timeout,
            ..Default::default()
        };
        ops.push(MapOp::UpsertService(key, master));
        ops
    }

    /// A ClusterIP: [`Self::ops`] with the ClusterIP flag added, then the
    /// VIP marker.
    pub fn cluster_ip_ops(&self) -> Vec<MapOp> {
        let mut ops = self.flags(self.flags | svc_flags::CLUSTER_IP).ops();
        ops.push(MapOp::UpsertService(
            SvcKey::vip_marker(self.addr),
            SvcValue::default(),
        ));
        ops
    }

    /// The frontend's loadBalancerSourceRanges entries (`(network as a
    /// host-order u32, prefix length)`, one a slot).
    pub fn source_range_ops(&self, ranges: &[(u32, u16)]) -> Vec<MapOp> {
        let key = SvcKey::new(self.addr, self.port, self.proto, SCOPE_SOURCE_RANGE, 0);
        let mut ops: Vec<MapOp> = (1..)
            .zip(ranges)
            .map(|(slot, (net, len))| {
                let value = SvcValue {
                    backend_id: net.to_be(),
                    count: *len,
                    ..Default::default()
                };
                MapOp::UpsertService(key.with_slot(slot), value)
            })
            .collect();
        // A shorter list: the next slot must go (the list ends at a gap).
        ops.push(MapOp::DeleteService(key.with_slot(ranges.len() as u16 + 1)));
        ops
    }
}

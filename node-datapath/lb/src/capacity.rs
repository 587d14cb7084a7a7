//! Whether a desired state fits the datapath's maps. A state that does not
//! fit cannot be written (the sync fails when an id or an entry runs out),
//! so the Services beyond the limits are named as findings before anything
//! is written, and preflight shows them on the node.

use switchyard_abi::capacity;

use crate::desired::{Finding, FindingKind};
use crate::model::DesiredState;

/// What the maps hold at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Limits {
    /// Frontends: each takes one rev-NAT id (a `u16`, 0 unused).
    pub frontends: usize,
    /// Service-map entries: a master, its slots and source ranges per
    /// frontend, and a VIP marker per ClusterIP.
    pub service_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frontends: (capacity::REV_NAT as usize - 1).min(usize::from(u16::MAX)),
            service_entries: capacity::SERVICES as usize,
        }
    }
}

/// One finding per Service with a frontend past `limits`, counting
/// frontends in the state's order (the order ids are first handed out).
pub fn over_capacity(state: &DesiredState, limits: Limits) -> Vec<Finding> {
    let mut frontends = 0usize;
    let mut entries = state.vips.len();
    let mut over: Vec<String> = Vec::new();
    for fe in state.frontends.values() {
        frontends += 1;
        entries += 1 + fe.backends.len() + fe.source_ranges.len();
        if frontends > limits.frontends || entries > limits.service_entries {
            over.push(format!("{}/{}", fe.service.namespace, fe.service.name));
        }
    }
    over.sort();
    over.dedup();
    let kind = FindingKind::OverCapacity {
        frontends,
        service_entries: entries,
        limits,
    };
    over.into_iter()
        .map(|service| Finding {
            service,
            kind: kind.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use super::*;
    use crate::model::{Frontend, FrontendState, Proto, ServicePortRef};

    fn state(services: u16) -> DesiredState {
        let mut s = DesiredState::default();
        for i in 0..services {
            let ip = Ipv4Addr::new(10, 96, (i >> 8) as u8, i as u8);
            let fe = Frontend::new(ip, 80, Proto::Tcp);
            let st = FrontendState {
                flags: switchyard_abi::svc_flags::CLUSTER_IP,
                affinity_timeout: 0,
                backends: Vec::new(),
                source_ranges: Vec::new(),
                service: ServicePortRef {
                    namespace: Arc::from("ns"),
                    name: Arc::from(format!("s{i:03}")),
                    port_name: Arc::from(""),
                },
            };
            s.frontends.insert(fe, st);
            s.vips.insert(ip);
        }
        s
    }

    #[test]
    fn services_past_the_frontend_limit_are_named_and_those_within_are_not() {
        let s = state(10);
        let limits = Limits {
            frontends: 8,
            service_entries: 1000,
        };
        let over = over_capacity(&s, limits);
        let names: Vec<&str> = over.iter().map(|f| f.service.as_str()).collect();
        assert_eq!(names, ["ns/s008", "ns/s009"]);
        assert!(over[0].to_string().contains("10 frontends"), "{}", over[0]);
        assert!(over_capacity(&s, Limits::default()).is_empty());
    }

    #[test]
    fn vip_markers_and_master_entries_count_against_the_service_map() {
        // 10 VIP markers + 10 masters = 20 entries.
        let s = state(10);
        let fits = Limits {
            frontends: 100,
            service_entries: 20,
        };
        assert!(over_capacity(&s, fits).is_empty());
        let tight = Limits {
            service_entries: 19,
            ..fits
        };
        assert_eq!(over_capacity(&s, tight).len(), 1);
    }
}

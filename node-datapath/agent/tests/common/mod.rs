//! What the agent's integration tests share.

use std::net::Ipv4Addr;

use switchyard_agent::flows::ServiceIndex;
use switchyard_lb::{DesiredState, Frontend, FrontendState, Proto, ServicePortRef};

/// The Services an agent would have synced: each `(ClusterIP, name)` a
/// Service `shop/<name>` on TCP port 80, without backends, with `flags`.
pub fn services(frontends: &[(Ipv4Addr, &str)], flags: u8) -> ServiceIndex {
    let mut desired = DesiredState::default();
    for (ip, name) in frontends {
        let state = FrontendState {
            flags,
            affinity_timeout: 0,
            backends: Vec::new(),
            source_ranges: Vec::new(),
            service: ServicePortRef {
                namespace: "shop".into(),
                name: (*name).into(),
                port_name: "".into(),
            },
        };
        desired
            .frontends
            .insert(Frontend::new(*ip, 80, Proto::Tcp), state);
    }
    ServiceIndex::of(&desired)
}

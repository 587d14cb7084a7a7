//! Full-sync cost at scale: `cargo test -p switchyard-lb --test bench --
//! --ignored --nocapture` (add `--release` for optimised numbers).

// Test code: helpers outside #[test] fns unwrap too (clippy.toml covers only those).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{mk_node, mk_service, mk_slice};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use switchyard_lb::{IdAllocator, LbMaps, MirrorMaps, Options, consistent, desired_state, diff};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;

fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..SERVICES {
        let vip = std::net::Ipv4Addr::from(0x0a60_0000u32 + i + 1);
        svcs.push(mk_service("bench", &format!("svc-{i}"), &vip.to_string()));
        let eps: Vec<_> = (0..ENDPOINTS)
            .map(|e| {
                let ip = std::net::Ipv4Addr::from(0x0af4_0000u32 + i * ENDPOINTS + e);
                json!({"addresses": [ip.to_string()], "conditions": {"ready": true},
                       "nodeName": format!("node-{}", e % 5)})
            })
            .collect();
        slices.push(mk_slice(
            "bench",
            &format!("svc-{i}-x"),
            &format!("svc-{i}"),
            json!(eps),
        ));
    }
    (svcs, slices)
}

#[test]
#[ignore = "benchmark; run explicitly with --ignored --nocapture"]
fn full_sync_10k_services_10_endpoints() {
    let (svcs, slices) = objects();
    let node = mk_node("node-0", "192.168.1.10".parse().unwrap());
    let t0 = Instant::now();
    let desired = desired_state(&svcs, &slices, &node, &Options::default());
    let t_desired = t0.elapsed();
    let mut ids = IdAllocator::new();
    let mut maps = MirrorMaps::new();
    let t1 = Instant::now();
    let ops = diff(maps.contents(), &desired.state, &mut ids).unwrap();
    let t_diff = t1.elapsed();
    let t2 = Instant::now();
    maps.apply_all(&ops).unwrap();
    let t_apply = t2.elapsed();
    assert!(consistent(maps.contents()).is_ok());
    let t3 = Instant::now();
    let again = diff(maps.contents(), &desired.state, &mut ids).unwrap();
    let t_noop = t3.elapsed();
    assert!(again.is_empty());
    // Phases of the no-op resync.
    let t4 = Instant::now();
    let wanted = desired.state.backends();
    let t_backends = t4.elapsed();
    let t5 = Instant::now();
    ids.assign(&desired.state, maps.contents()).unwrap();
    let t_assign = t5.elapsed();
    let t6 = Instant::now();
    let target = switchyard_lb::diff::target_maps(&desired.state, &ids).unwrap();
    let t_target = t6.elapsed();
    let t7 = Instant::now();
    assert!(switchyard_lb::diff::diff_snapshots(maps.contents(), &target).is_empty());
    let t_cmp = t7.elapsed();
    println!(
        "no-op phases: backends() {t_backends:?} ({} keys), assign {t_assign:?}, \
         target maps {t_target:?}, compare {t_cmp:?}",
        wanted.len()
    );
    assert_eq!(desired.state.frontends.len(), SERVICES as usize);
    assert_eq!(
        maps.contents().backends.len(),
        (SERVICES * ENDPOINTS) as usize
    );
    println!(
        "10k services x 10 endpoints: desired {t_desired:?}, diff from empty {t_diff:?} \
         ({} ops), mirror apply {t_apply:?}, no-op resync (diff only) {t_noop:?}",
        ops.len()
    );
}

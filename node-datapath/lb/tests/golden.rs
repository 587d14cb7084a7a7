//! Golden tests: `tests/golden/<case>.yaml` (a Node, Services and
//! EndpointSlices as real Kubernetes YAML) → the map contents a sync from
//! empty maps produces, rendered as text and compared with
//! `tests/golden/<case>.txt`.
//!
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p switchyard-lb --test golden`,
//! then review every changed `.txt` by hand: the files are the specification.

// Test code: helpers outside #[test] fns unwrap too (clippy.toml covers only those).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard_lb::{
    DesiredState, IdAllocator, LbMaps, LbState, MapsSnapshot, MirrorMaps, ServiceView, SliceView,
    consistent, desired_state, diff, plan_sync, render::render,
};

/// `cargo test` names the checkout at run time (a target dir shared between
/// checkouts may hold this binary built from another one).
fn golden_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/golden")
}

/// The fixture's objects through the crate's entry, [`LbState`], as the
/// agent feeds it (a relist of projections).
fn lb_state(fx: &common::Fixture) -> LbState {
    let services: Vec<ServiceView> = fx.services.iter().map(ServiceView::from).collect();
    let slices: Vec<SliceView> = fx.slices.iter().map(SliceView::from).collect();
    let mut lb = LbState::new(fx.node.clone(), fx.options);
    lb.reset(
        fx.services.iter().map(|s| {
            let m = &s.metadata;
            let ns = m.namespace.as_deref().unwrap_or_default();
            (ns, m.name.as_deref().unwrap_or_default())
        }),
        fx.slices.iter().map(|s| {
            let m = &s.metadata;
            let ns = m.namespace.as_deref().unwrap_or_default();
            (
                ns,
                m.name.as_deref().unwrap_or_default(),
                LbState::slice_service(s),
            )
        }),
    );
    lb.refresh(
        |ns, name| {
            fx.services
                .iter()
                .position(|s| meta_is(&s.metadata, ns, name))
                .map(|i| &services[i])
        },
        |ns, name| {
            fx.slices
                .iter()
                .position(|s| meta_is(&s.metadata, ns, name))
                .map(|i| &slices[i])
        },
    );
    lb
}

fn meta_is(m: &ObjectMeta, ns: &str, name: &str) -> bool {
    m.namespace.as_deref().unwrap_or_default() == ns && m.name.as_deref() == Some(name)
}

/// The counts the fixture's header prints, of the desired state and of the
/// maps written for it.
fn header_counts(desired: &DesiredState, maps: &MapsSnapshot) -> [usize; 6] {
    [
        desired.service_count(),
        desired.frontends.len(),
        maps.backends.len(),
        desired.frontends.values().map(|f| f.backends.len()).sum(),
        desired.vips.len(),
        desired
            .frontends
            .values()
            .filter(|f| f.backends.is_empty())
            .count(),
    ]
}

/// Runs one fixture through [`LbState`] → plan → [`MirrorMaps`] and renders
/// the result; the state equals the full computation of `desired_state`.
fn run_case(yaml: &Path) -> String {
    let fx = common::load(yaml);
    let desired = desired_state(&fx.services, &fx.slices, &fx.node, &fx.options);
    let mut lb = lb_state(&fx);
    assert_eq!(
        lb.state(),
        &desired.state,
        "{}: LbState differs from desired_state",
        yaml.display()
    );
    let mut ids = IdAllocator::new();
    let mut maps = MirrorMaps::new();
    let ops = lb.plan(maps.contents(), &mut ids).unwrap();
    for (i, op) in ops.iter().enumerate() {
        maps.apply(op).unwrap();
        if let Err(e) = consistent(maps.contents()) {
            panic!("{}: inconsistent after op {i} {op:?}: {e}", yaml.display());
        }
    }
    let again = diff(maps.contents(), &desired.state, &mut ids).unwrap();
    assert!(
        again.is_empty(),
        "{}: second sync not empty: {:?}",
        yaml.display(),
        again
    );

    let [services, frontends, backends, slots, vips, without] =
        header_counts(&desired.state, maps.contents());
    let full = plan_sync(
        &MapsSnapshot::default(),
        &desired.state,
        &mut IdAllocator::new(),
    )
    .unwrap()
    .stats;
    assert_eq!(
        [
            full.services,
            full.frontends,
            full.backends,
            full.slots,
            full.vips,
            full.frontends_without_backends
        ],
        [services, frontends, backends, slots, vips, without],
        "{}: plan_sync's counts",
        yaml.display()
    );
    let mut out = format!(
        "# node {} addresses {:?} zone {:?} external-policy {:?}\n\
         # services={} frontends={} backends={} slots={} vips={} without-backends={}\n",
        fx.node.name,
        fx.node.addresses,
        fx.node.zone,
        fx.options.external_policy,
        services,
        frontends,
        backends,
        slots,
        vips,
        without,
    );
    out.push_str(&render(maps.contents(), Some(&desired.state)));
    out.push_str("findings:\n");
    for f in &desired.findings {
        out.push_str(&format!("  {f}\n"));
    }
    out
}

#[test]
fn golden_fixtures() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the golden fixtures, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for yaml in &cases {
        let got = run_case(yaml);
        let txt = yaml.with_extension("txt");
        if update {
            std::fs::write(&txt, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&txt).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "--- {} (expected)\n{want}\n+++ actual\n{got}",
                txt.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to rewrite, then review):\n{}",
        failures.join("\n")
    );
}

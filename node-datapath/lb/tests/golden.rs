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

use switchyard_lb::{
    IdAllocator, LbMaps, MirrorMaps, consistent, desired_state, plan_sync, render::render,
};

/// `cargo test` names the checkout at run time (a target dir shared between
/// checkouts may hold this binary built from another one).
fn golden_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/golden")
}

/// Runs one fixture through desired → plan → MirrorMaps and renders the result.
fn run_case(yaml: &Path) -> String {
    let fx = common::load(yaml);
    let desired = desired_state(&fx.services, &fx.slices, &fx.node, &fx.options);
    let mut ids = IdAllocator::new();
    let mut maps = MirrorMaps::new();
    let plan = plan_sync(maps.contents(), &desired.state, &mut ids).unwrap();
    for (i, op) in plan.ops.iter().enumerate() {
        maps.apply(op).unwrap();
        if let Err(e) = consistent(maps.contents()) {
            panic!("{}: inconsistent after op {i} {op:?}: {e}", yaml.display());
        }
    }
    let again = plan_sync(maps.contents(), &desired.state, &mut ids).unwrap();
    assert!(
        again.ops.is_empty(),
        "{}: second sync not empty: {:?}",
        yaml.display(),
        again.ops
    );

    let s = plan.stats;
    let mut out = format!(
        "# node {} addresses {:?} zone {:?} external-policy {:?}\n\
         # services={} frontends={} backends={} slots={} vips={} without-backends={}\n",
        fx.node.name,
        fx.node.addresses,
        fx.node.zone,
        fx.options.external_policy,
        s.services,
        s.frontends,
        s.backends,
        s.slots,
        s.vips,
        s.frontends_without_backends,
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

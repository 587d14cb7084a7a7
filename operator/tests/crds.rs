//! The committed CRDs are exactly what the API types generate, carry the
//! validation and printer columns users rely on, and the samples parse.

use std::path::PathBuf;

use switchyard_api::{MigrationPlan, crd_file_name, crd_yaml, crds};

/// The checkout under test: `cargo test` names it at run time (a target dir
/// shared between checkouts may hold this binary built from another one).
fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

#[test]
fn committed_crds_match_the_types() {
    for crd in crds() {
        let path = repo().join("crds").join(crd_file_name(&crd));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
        assert!(
            committed == crd_yaml(&crd).unwrap(),
            "{} is out of date with operator/api; run `make crds` and commit the result",
            path.display()
        );
    }
    let kustomization = std::fs::read_to_string(repo().join("crds/kustomization.yaml")).unwrap();
    assert_eq!(
        kustomization,
        switchyard_api::crds_kustomization(),
        "run `make crds`"
    );
    let files = std::fs::read_dir(repo().join("crds")).unwrap().count();
    assert_eq!(
        files,
        crds().len() + 1,
        "crds/ holds a file no type generates"
    );
}

#[test]
fn plan_crd_has_status_printer_columns_and_cel_rules() {
    let crd = serde_json::to_value(&crds()[0]).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "mp");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Phase", "Migrated", "Wave", "Ready", "Age"]);
    let text = serde_json::to_string(&crd).unwrap();
    for rule in [
        "!(self.dryRun && self.rollback)",
        "httpPath needs protocol TCP",
        "waveSize must be a node count",
        "apiServer must be host:port",
    ] {
        assert!(text.contains(rule), "CRD lacks the rule {rule:?}");
    }
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let port = &spec["verification"]["properties"]["probes"]["items"]["properties"]["port"];
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    assert_eq!(
        spec["failurePolicy"]["properties"]["action"]["enum"],
        serde_json::json!(["Pause", "Rollback"])
    );
    assert!(
        spec["strategy"]["description"]
            .as_str()
            .unwrap()
            .contains("grouped and paced"),
        "field docs become `kubectl explain`"
    );
}

#[test]
fn samples_parse_into_the_plan_type() {
    let dir = repo().join("config/samples");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("migrationplan") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let plan: MigrationPlan =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
        assert!(!(plan.spec.dry_run && plan.spec.rollback), "{name}");
        parsed += 1;
    }
    assert!(
        parsed >= 2,
        "expected the sample plans under config/samples"
    );
    let plan: MigrationPlan =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("migrationplan.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        plan.spec.verification.probes[0].http_path.as_deref(),
        Some("/")
    );
    assert_eq!(
        plan.spec.failure_policy.action,
        switchyard_api::FailureAction::Rollback
    );
}

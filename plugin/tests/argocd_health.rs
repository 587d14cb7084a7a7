//! `config/argocd/health.lua` run by a real Lua 5.1 (Argo CD's gopher-lua
//! implements 5.1), on MigrationPlans built from the API's own types and
//! serialised with serde, so a renamed field or phase breaks these tests
//! rather than Argo CD's view of a live plan.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResourceExt;
use mlua::{Lua, LuaSerdeExt};
use switchyard_api::{
    MigrationPlan, MigrationPlanSpec, MigrationPlanStatus, NodeProgress, NodeStep, Phase, Summary,
    conditions,
};

const SCRIPT: &str = include_str!("../../config/argocd/health.lua");
const CM_PATCH: &str = include_str!("../../config/argocd/argocd-cm-patch.yaml");
const HEALTH_KEY: &str = "resource.customizations.health.switchyard.dev_MigrationPlan";

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What Argo CD would show: (status, message).
fn health(plan: &MigrationPlan) -> Result<(String, String), Box<dyn std::error::Error>> {
    let lua = Lua::new();
    // As Argo CD decodes the object from JSON: absent and null fields are
    // nil, arrays are plain tables.
    let options = mlua::serde::ser::Options::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let obj = lua.to_value_with(&serde_json::to_value(plan)?, options)?;
    lua.globals().set("obj", obj)?;
    let hs: mlua::Table = lua.load(SCRIPT).set_name("health.lua").eval()?;
    Ok((hs.get("status")?, hs.get("message")?))
}

fn plan(generation: i64, status: Option<MigrationPlanStatus>) -> MigrationPlan {
    let mut p = MigrationPlan::new("to-ebpf", MigrationPlanSpec::default());
    p.metadata.generation = Some(generation);
    p.status = status;
    p
}

fn status(phase: Phase, message: &str) -> MigrationPlanStatus {
    MigrationPlanStatus {
        phase,
        observed_generation: Some(1),
        message: Some(message.into()),
        summary: Summary {
            total: 3,
            migrated: 1,
            ..Summary::default()
        },
        ..MigrationPlanStatus::default()
    }
}

fn with_condition(
    mut s: MigrationPlanStatus,
    type_: &str,
    on: bool,
    message: &str,
) -> MigrationPlanStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    conditions::set(&mut s.conditions, type_, on, "Test", message, Some(1), now);
    s
}

fn assert_health(plan: &MigrationPlan, want: &str, message_has: &str) -> TestResult {
    let (got, message) = health(plan)?;
    assert_eq!(got, want, "message: {message}");
    assert!(
        message.contains(message_has),
        "{message:?} lacks {message_has:?}"
    );
    Ok(())
}

#[test]
fn a_new_plan_waits_for_the_controller() -> TestResult {
    assert_health(&plan(1, None), "Progressing", "Waiting for the controller")
}

#[test]
fn a_status_older_than_the_spec_is_progressing() -> TestResult {
    let p = plan(2, Some(status(Phase::Succeeded, "done")));
    assert_health(&p, "Progressing", "observe generation 2")
}

#[test]
fn each_phase_maps_to_its_health() -> TestResult {
    let cases = [
        (Phase::Succeeded, "Healthy"),
        (Phase::Paused, "Suspended"),
        (Phase::Failed, "Degraded"),
        (Phase::Migrating, "Progressing"),
        (Phase::Preflight, "Progressing"),
        (Phase::Finalizing, "Progressing"),
        (Phase::RollingBack, "Progressing"),
        (Phase::Planned, "Healthy"),
        (Phase::RolledBack, "Healthy"),
    ];
    for (phase, want) in cases {
        let p = plan(1, Some(status(phase, "the plan's message")));
        assert_health(&p, want, "the plan's message")?;
    }
    Ok(())
}

#[test]
fn without_a_message_the_node_counts_are_shown() -> TestResult {
    let mut s = status(Phase::Migrating, "");
    s.message = None;
    assert_health(
        &plan(1, Some(s)),
        "Progressing",
        "Migrating: 1/3 nodes migrated",
    )
}

#[test]
fn a_stalled_plan_is_degraded_with_the_stall_reason() -> TestResult {
    let s = with_condition(
        status(Phase::RollingBack, "rolling back"),
        conditions::STALLED,
        true,
        "node2 waits for kube-proxy",
    );
    assert_health(
        &plan(1, Some(s.clone())),
        "Degraded",
        "node2 waits for kube-proxy",
    )?;
    let s = with_condition(s, conditions::STALLED, false, "no human action needed");
    assert_health(&plan(1, Some(s)), "Progressing", "rolling back")
}

#[test]
fn a_rollback_after_a_failed_node_is_degraded_a_requested_one_healthy() -> TestResult {
    let mut s = status(Phase::RolledBack, "every node back on kube-proxy");
    s.nodes = vec![NodeProgress {
        name: "node2".into(),
        step: NodeStep::RolledBack,
        failed_step: Some(NodeStep::Verify),
        failure: Some("probe \"web\" failed".into()),
        ..NodeProgress::default()
    }];
    assert_health(
        &plan(1, Some(s.clone())),
        "Degraded",
        "node2: probe \"web\" failed",
    )?;
    if let Some(n) = s.nodes.first_mut() {
        n.failure = None;
        n.failed_step = None;
    }
    assert_health(
        &plan(1, Some(s)),
        "Healthy",
        "every node back on kube-proxy",
    )
}

#[test]
fn a_dry_run_blocked_by_preflight_is_degraded() -> TestResult {
    let s = with_condition(
        status(Phase::Planned, "preflight found errors"),
        conditions::PREFLIGHT_PASSED,
        false,
        "preflight found errors (status.preflight)",
    );
    assert_health(&plan(1, Some(s)), "Degraded", "preflight found errors")
}

/// Every phase the CRD admits gets one of Argo CD's health statuses, so a
/// phase added to the API without a thought for Argo CD fails here.
#[test]
fn every_phase_of_the_crd_has_an_argo_health() -> TestResult {
    let crd = serde_json::to_value(MigrationPlan::crd())?;
    let phases = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["phase"]["enum"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(phases.len() >= 10, "{phases:?}");
    for phase in phases {
        let phase: Phase = serde_json::from_value(phase)?;
        let (got, _) = health(&plan(1, Some(status(phase, "m"))))?;
        assert!(
            ["Healthy", "Progressing", "Degraded", "Suspended"].contains(&got.as_str()),
            "{phase:?} → {got}"
        );
    }
    Ok(())
}

/// The ConfigMap patch users apply carries the tested script verbatim.
#[test]
fn the_argocd_cm_patch_embeds_the_tested_script() -> TestResult {
    let cm: serde_yaml::Value = serde_yaml::from_str(CM_PATCH)?;
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(cm["data"][HEALTH_KEY].as_str(), Some(SCRIPT));
    Ok(())
}

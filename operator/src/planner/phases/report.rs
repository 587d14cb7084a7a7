//! What a decision reports besides the nodes' progress: the summary and the
//! kstatus conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::conditions::{self, PREFLIGHT_PASSED, READY, RECONCILING, STALLED};
use switchyard_api::{MigrationPlanStatus, NodeStep, Phase, Summary};

use super::super::preflight;
use super::{Ctx, Draft};

pub(super) fn summarize(st: &mut MigrationPlanStatus) {
    let mut sum = Summary {
        total: st.nodes.len() as u32,
        ..Summary::default()
    };
    for n in &st.nodes {
        match n.step {
            NodeStep::Pending => sum.pending += 1,
            NodeStep::Done => sum.migrated += 1,
            NodeStep::Failed => sum.failed += 1,
            NodeStep::RolledBack => sum.rolled_back += 1,
            NodeStep::Gone => {}
            _ => sum.in_progress += 1,
        }
    }
    sum.progress = format!("{}/{}", sum.migrated, sum.total);
    st.summary = sum;
}

pub(super) fn set_conditions(ctx: &Ctx<'_>, generation: Option<i64>, s: &mut Draft) {
    let now = Time(ctx.now);
    let st = &mut s.st;
    let phase = st.phase;
    let blocked = preflight::blocking(&st.preflight);
    if phase != Phase::Pending {
        conditions::set(
            &mut st.conditions,
            PREFLIGHT_PASSED,
            !blocked,
            if blocked { "Blocked" } else { "Passed" },
            if blocked {
                "preflight found errors (status.preflight)"
            } else {
                "preflight found no blocking issue"
            },
            generation,
            now.clone(),
        );
    }
    let ready = match phase {
        Phase::Succeeded | Phase::RolledBack => true,
        Phase::Planned => !blocked,
        _ => false,
    };
    conditions::set(
        &mut st.conditions,
        READY,
        ready,
        &format!("{phase:?}"),
        st.message
            .clone()
            .unwrap_or_else(|| format!("plan is {phase:?}")),
        generation,
        now.clone(),
    );
    let stalled = set_stalled(st, s.stall.as_ref(), generation, now.clone());
    set_reconciling(st, stalled, generation, now);
    if st.message.is_none() {
        st.message = s.stall.as_ref().map(|(_, m)| m.clone());
    }
}

/// `Stalled`: the plan needs a human (`stall`: reason and message).
/// Returns whether it does.
fn set_stalled(
    st: &mut MigrationPlanStatus,
    stall: Option<&(String, String)>,
    generation: Option<i64>,
    now: Time,
) -> bool {
    let (stalled, reason, message) = match stall {
        Some((r, m)) => (true, r.clone(), m.clone()),
        None => (
            false,
            "Progressing".to_string(),
            "no human action needed".to_string(),
        ),
    };
    conditions::set(
        &mut st.conditions,
        STALLED,
        stalled,
        &reason,
        message,
        generation,
        now,
    );
    stalled
}

/// `Reconciling`: the operator is still moving the plan on its own.
fn set_reconciling(
    st: &mut MigrationPlanStatus,
    stalled: bool,
    generation: Option<i64>,
    now: Time,
) {
    let phase = st.phase;
    let reconciling = !stalled
        && matches!(
            phase,
            Phase::Pending
                | Phase::Preflight
                | Phase::Migrating
                | Phase::Finalizing
                | Phase::RollingBack
        );
    conditions::set(
        &mut st.conditions,
        RECONCILING,
        reconciling,
        &format!("{phase:?}"),
        format!(
            "{} of {} nodes migrated",
            st.summary.migrated, st.summary.total
        ),
        generation,
        now,
    );
}

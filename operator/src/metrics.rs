//! Operator metrics (Prometheus text), served with readiness by
//! `switchyard-daemon`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use switchyard_api::{MigrationPlanStatus, conditions};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    plan: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    plan: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    plan: String,
    condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    plan: String,
}

/// Everything the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    plans: Family<PlanLabels, Gauge>,
    nodes: Family<StepLabels, Gauge>,
    conditions: Family<ConditionLabels, Gauge>,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    reconcile_seconds: Histogram,
    actions: Counter,
    /// Set once caches are synced and this replica leads.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchyard_operator");
        let plans = Family::<PlanLabels, Gauge>::default();
        let nodes = Family::<StepLabels, Gauge>::default();
        let conditions = Family::<ConditionLabels, Gauge>::default();
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let actions = Counter::default();
        registry.register(
            "plans",
            "MigrationPlans by phase (1 for the plan's current phase)",
            plans.clone(),
        );
        registry.register("nodes", "Nodes of a plan by migration step", nodes.clone());
        // Alerts need the conditions a phase does not tell: a plan stalled in
        // RollingBack, kube-proxy back on a Succeeded plan's cluster.
        registry.register(
            "plan_condition",
            "A plan's status conditions (1 when True, 0 when False or not set)",
            conditions.clone(),
        );
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by plan",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, API calls included",
            reconcile_seconds.clone(),
        );
        registry.register("actions", "Actions applied to the cluster", actions.clone());
        Self {
            registry,
            plans,
            nodes,
            conditions,
            reconciles,
            errors,
            reconcile_seconds,
            actions,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Records a plan's status after a reconcile.
    pub fn observe(&self, plan: &str, status: &MigrationPlanStatus, seconds: f64, actions: usize) {
        self.reconciles.inc();
        self.reconcile_seconds.observe(seconds);
        self.actions.inc_by(actions as u64);
        // Present at 0 from the first reconcile: a rate of it (the
        // dashboard's errors) has data before the first error.
        drop(
            self.errors
                .get_or_create(&ErrorLabels { plan: plan.into() }),
        );
        for phase in PHASES {
            let v = i64::from(format!("{:?}", status.phase) == phase);
            self.plans
                .get_or_create(&PlanLabels {
                    plan: plan.into(),
                    phase: phase.into(),
                })
                .set(v);
        }
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for n in &status.nodes {
            *counts.entry(format!("{:?}", n.step)).or_default() += 1;
        }
        for step in STEPS {
            let v = counts.get(step).copied().unwrap_or(0);
            self.nodes
                .get_or_create(&StepLabels {
                    plan: plan.into(),
                    step: step.into(),
                })
                .set(v);
        }
        for condition in CONDITIONS {
            let v = i64::from(conditions::is_true(&status.conditions, condition));
            self.conditions
                .get_or_create(&ConditionLabels {
                    plan: plan.into(),
                    condition: condition.into(),
                })
                .set(v);
        }
    }

    /// Drops every series of a plan that is gone (its finalizer released):
    /// a deleted plan's last phase or `Stalled` condition must not keep an
    /// alert firing.
    pub fn forget(&self, plan: &str) {
        for phase in PHASES {
            self.plans.remove(&PlanLabels {
                plan: plan.into(),
                phase: phase.into(),
            });
        }
        for step in STEPS {
            self.nodes.remove(&StepLabels {
                plan: plan.into(),
                step: step.into(),
            });
        }
        for condition in CONDITIONS {
            self.conditions.remove(&ConditionLabels {
                plan: plan.into(),
                condition: condition.into(),
            });
        }
        self.errors.remove(&ErrorLabels { plan: plan.into() });
    }

    pub fn error(&self, plan: &str) {
        self.errors
            .get_or_create(&ErrorLabels { plan: plan.into() })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

const PHASES: [&str; 10] = [
    "Pending",
    "Preflight",
    "Planned",
    "Migrating",
    "Paused",
    "Finalizing",
    "Succeeded",
    "Failed",
    "RollingBack",
    "RolledBack",
];
/// Every condition a plan carries, so each series exists (at 0) before it
/// first turns true and an alert's `for:` starts from a known value.
const CONDITIONS: [&str; 5] = [
    conditions::READY,
    conditions::RECONCILING,
    conditions::STALLED,
    conditions::PREFLIGHT_PASSED,
    conditions::KUBE_PROXY_REAPPEARED,
];
const STEPS: [&str; 14] = [
    "Pending",
    "Cordon",
    "ActivateDatapath",
    "RemoveKubeProxy",
    "FlushRules",
    "Verify",
    "Uncordon",
    "Done",
    "Failed",
    "RestoreKubeProxy",
    "DeactivateDatapath",
    "RollbackUncordon",
    "RolledBack",
    "Gone",
];

impl switchyard_daemon::Health for Metrics {
    fn metrics(&self) -> String {
        self.render()
    }

    fn not_ready(&self) -> Option<&'static str> {
        (!self.ready.load(Ordering::Relaxed)).then_some("caches syncing or not the leader")
    }

    fn handle(
        &self,
        path: &str,
        _query: Option<&str>,
    ) -> Option<switchyard_daemon::Response<switchyard_daemon::Body>> {
        crate::web::respond(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::{NodeProgress, NodeStep, Phase};

    #[test]
    fn renders_plans_and_nodes_by_step() {
        let m = Metrics::default();
        let status = MigrationPlanStatus {
            phase: Phase::Migrating,
            nodes: vec![
                NodeProgress {
                    name: "a".into(),
                    step: NodeStep::Done,
                    ..NodeProgress::default()
                },
                NodeProgress {
                    name: "b".into(),
                    step: NodeStep::Verify,
                    ..NodeProgress::default()
                },
                NodeProgress {
                    name: "c".into(),
                    step: NodeStep::Done,
                    ..NodeProgress::default()
                },
            ],
            ..MigrationPlanStatus::default()
        };
        m.observe("p", &status, 0.01, 3);
        let text = m.render();
        assert!(text.contains(r#"switchyard_operator_reconcile_errors_total{plan="p"} 0"#));
        m.error("p");
        let text = m.render();
        assert!(
            text.contains(r#"switchyard_operator_plans{plan="p",phase="Migrating"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"switchyard_operator_plans{plan="p",phase="Succeeded"} 0"#));
        assert!(text.contains(r#"switchyard_operator_nodes{plan="p",step="Done"} 2"#));
        assert!(text.contains(r#"switchyard_operator_nodes{plan="p",step="Verify"} 1"#));
        assert!(text.contains(r#"switchyard_operator_reconcile_errors_total{plan="p"} 1"#));
        assert!(text.contains("switchyard_operator_actions_total 3"));
    }

    #[test]
    fn a_released_plan_leaves_no_series_behind() {
        let m = Metrics::default();
        let mut st = MigrationPlanStatus::default();
        st.nodes.push(switchyard_api::NodeProgress {
            name: "n1".into(),
            ..Default::default()
        });
        m.observe("gone", &st, 0.01, 1);
        m.observe("kept", &st, 0.01, 1);
        m.error("gone");
        assert!(m.render().contains("plan=\"gone\""));
        m.forget("gone");
        let text = m.render();
        assert!(!text.contains("plan=\"gone\""), "{text}");
        assert!(text.contains("plan=\"kept\""), "{text}");
    }

    #[test]
    fn conditions_are_one_while_true_and_zero_once_cleared() {
        let m = Metrics::default();
        let mut status = MigrationPlanStatus {
            phase: Phase::RollingBack,
            ..MigrationPlanStatus::default()
        };
        let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let set = |st: &mut MigrationPlanStatus, type_: &str, on: bool| {
            conditions::set(&mut st.conditions, type_, on, "R", "m", None, at.clone());
        };
        set(&mut status, conditions::STALLED, true);
        set(&mut status, conditions::READY, false);
        m.observe("p", &status, 0.01, 0);
        let text = m.render();
        assert!(
            text.contains(r#"switchyard_operator_plan_condition{plan="p",condition="Stalled"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchyard_operator_plan_condition{plan="p",condition="Ready"} 0"#)
        );
        // Absent conditions are exported too, at 0.
        assert!(text.contains(
            r#"switchyard_operator_plan_condition{plan="p",condition="KubeProxyReappeared"} 0"#
        ));
        set(&mut status, conditions::STALLED, false);
        m.observe("p", &status, 0.01, 0);
        assert!(
            m.render()
                .contains(r#"switchyard_operator_plan_condition{plan="p",condition="Stalled"} 0"#)
        );
    }
}

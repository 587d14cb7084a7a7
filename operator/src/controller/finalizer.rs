//! The plan's finalizer ([`PLAN_FINALIZER`]): put on every plan the
//! operator reconciles, removed when the planner says the plan may go
//! (`Decision::release`: rolled back, abandoned, or nothing to undo). A
//! merge patch replaces the whole list, so it carries the resourceVersion
//! read: a concurrent writer's edit is never lost (the patch fails and the
//! next reconcile retries).

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use switchyard_api::{MigrationPlan, PLAN_FINALIZER};
use tracing::info;

use crate::error::Result;

/// Whether the plan carries the finalizer.
pub fn has(plan: &MigrationPlan) -> bool {
    plan.finalizers().iter().any(|f| f == PLAN_FINALIZER)
}

/// Adds the finalizer.
pub async fn add(client: &Client, plan: &MigrationPlan) -> Result<()> {
    let mut list = plan.finalizers().to_vec();
    list.push(PLAN_FINALIZER.to_string());
    write(client, plan, list).await
}

/// Removes the finalizer: the plan object goes once no other holds it.
pub async fn remove(client: &Client, plan: &MigrationPlan) -> Result<()> {
    info!("releasing the deleted plan (finalizer removed)");
    let list = plan
        .finalizers()
        .iter()
        .filter(|f| *f != PLAN_FINALIZER)
        .cloned()
        .collect();
    write(client, plan, list).await
}

async fn write(client: &Client, plan: &MigrationPlan, list: Vec<String>) -> Result<()> {
    let patch = json!({"metadata": {
        "resourceVersion": plan.metadata.resource_version,
        "finalizers": list,
    }});
    Api::<MigrationPlan>::all(client.clone())
        .patch(
            &plan.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

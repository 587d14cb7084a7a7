//! kube-proxy re-created after success, the way `kubeadm upgrade` does it
//! (its DaemonSet and ConfigMap as the user had them, here from the plan's
//! backup): excluded again, every pod it started on a migrated node gone
//! and the rules it wrote there cleaned again, while traffic flows.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use switchyard_api::{MigrationPlan, conditions};
use switchyard_e2e::scenario::{self, Target};
use switchyard_e2e::{Cluster, addons, wait_for};

use super::{assert_no_failures, kube_proxy_pods};

/// Re-creates kube-proxy from plan `plan`'s backup and checks the plan's
/// guard puts every node back to what the migration left.
pub async fn kube_proxy_recreated_after_success_is_cleaned_again(
    c: &Cluster,
    plan: &str,
    targets: &[Target],
) {
    let load = scenario::start_load(c, targets, 25).await.unwrap();
    let plans: Api<MigrationPlan> = Api::all(c.client());
    let status = plans.get(plan).await.unwrap().status.unwrap();
    let backup = Api::<ConfigMap>::namespaced(c.client(), "switchyard-system")
        .get(status.kube_proxy_backup.as_deref().unwrap())
        .await
        .unwrap();
    let data = backup.data.unwrap();
    for key in ["configmap.yaml", "daemonset.yaml"] {
        let obj: serde_json::Value = serde_yaml::from_str(&data[key]).unwrap();
        addons::apply(&c.client(), &obj).await.unwrap();
    }
    wait_for(
        "the plan to see kube-proxy back",
        Duration::from_secs(60),
        || async {
            let s = plans.get(plan).await.ok()?.status?;
            conditions::is_true(&s.conditions, "KubeProxyReappeared").then_some(())
        },
    )
    .await
    .unwrap();
    wait_for(
        "no kube-proxy pod and no kube-proxy rule on any node",
        Duration::from_secs(120),
        || async {
            if !kube_proxy_pods(c).await.is_empty() {
                return None;
            }
            for n in &c.plan().nodes {
                let rules = scenario::kube_proxy_rules(c, &n.name).await.ok()?;
                if rules.values().any(|lines| !lines.is_empty()) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(c).await.unwrap();
    assert_no_failures(&totals, 100);
    eprintln!("  kube-proxy re-created from the backup: excluded again, its rules cleaned again");
}

//! Helpers of the migration scenarios: kubelet-owned chains, and what a
//! plan may (not) do to kube-proxy's pods and DaemonSet.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code, unused_imports)]

pub mod drift;
pub mod hubble;
pub mod joining;
pub mod monitoring;
pub mod observe;
mod plugin;
pub mod reconnect;
mod scenarios;
pub mod web;
pub use plugin::{assert_plugin_reports_success, kubectl_switchyard, kubectl_switchyard_command};
pub use scenarios::{Installer, assert_no_failures, plan, progress, run_plan, setup, setup_with};

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use switchyard_api::{KUBE_PROXY_STRATEGY_ANNOTATION, MigrationPlan, NodeStep};
use switchyard_e2e::scenario::Target;
use switchyard_e2e::{Cluster, scenario, wait_for};

/// A kubelet-owned chain on every node, as kubelets >= 1.28 create it.
pub async fn add_kubelet_chains(c: &Cluster) {
    for n in &c.plan().nodes {
        for table in ["mangle", "nat", "filter"] {
            let out = c
                .exec_on_node(
                    &n.name,
                    &["iptables", "-t", table, "-N", "KUBE-KUBELET-CANARY"],
                )
                .await
                .unwrap();
            assert!(
                out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"),
                "{out:?}"
            );
        }
    }
}

pub async fn assert_kubelet_chains(c: &Cluster) {
    for n in &c.plan().nodes {
        for table in ["mangle", "nat", "filter"] {
            let save = c.iptables_save(&n.name, table).await.unwrap();
            assert!(
                save.contains(":KUBE-KUBELET-CANARY"),
                "the kubelet's chain is gone from {} {table}",
                n.name
            );
        }
    }
}

/// kube-proxy's pods that are not being deleted: node name → pod UID.
pub async fn kube_proxy_pods(c: &Cluster) -> BTreeMap<String, String> {
    let pods: Api<Pod> = Api::namespaced(c.client(), "kube-system");
    pods.list(&ListParams::default().labels("k8s-app=kube-proxy"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.spec?.node_name?, p.metadata.uid?)))
        .collect()
}

/// What [`follow_plan_keeping_kube_proxy`] saw.
#[derive(Debug, Default)]
pub struct Untouched {
    /// Looks at the pods of nodes the plan had not reached.
    pub checks: usize,
    /// Of those, looks taken while another node was already migrated.
    pub beside_a_migrated_node: usize,
}

/// Follows plan `name` until it settles (as [`scenario::follow_plan`]
/// does), checking at every look that each node the plan has not yet
/// taken kube-proxy from (its furthest step before `RemoveKubeProxy`)
/// still runs the kube-proxy pod it ran before the plan (`before`).
pub async fn follow_plan_keeping_kube_proxy(
    c: &Cluster,
    name: &str,
    timeout: Duration,
    before: &BTreeMap<String, String>,
    mut progress: impl FnMut(&MigrationPlan),
) -> (MigrationPlan, Untouched) {
    let plans: Api<MigrationPlan> = Api::all(c.client());
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Untouched::default();
    let mut last = None;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "MigrationPlan {name} did not settle in {timeout:?}"
        );
        // Pods first: a node the status (read after) has not reached had
        // not been reached when the pods were listed either.
        let pods = kube_proxy_pods(c).await;
        let Some(p) = plans.get_opt(name).await.unwrap() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let nodes = p
            .status
            .as_ref()
            .map(|s| s.expanded().nodes)
            .unwrap_or_default();
        let migrated = nodes.iter().any(|n| n.step == NodeStep::Done);
        for n in nodes
            .iter()
            .filter(|n| n.reached < NodeStep::RemoveKubeProxy)
        {
            assert_eq!(
                pods.get(&n.name),
                before.get(&n.name),
                "kube-proxy's pod on {} changed before the plan reached the node (at {:?}; every node: {:?})",
                n.name,
                n.step,
                nodes.iter().map(|n| (&n.name, n.step)).collect::<Vec<_>>()
            );
            seen.checks += 1;
            seen.beside_a_migrated_node += usize::from(migrated);
        }
        if last.as_ref() != Some(&p.status) {
            progress(&p);
            last = Some(p.status.clone());
        }
        if scenario::settled(&p) {
            return (p, seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until kube-proxy's DaemonSet has its own update strategy back
/// (the lab installs it with `RollingUpdate`) and no remembered one.
pub async fn wait_rollout_released(c: &Cluster) {
    let daemon_sets: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    wait_for(
        "kube-proxy's own updateStrategy back",
        Duration::from_secs(60),
        || async {
            let ds = daemon_sets.get("kube-proxy").await.ok()?;
            let strategy = ds.spec?.update_strategy?.type_?;
            let remembered = ds
                .metadata
                .annotations
                .is_some_and(|a| a.contains_key(KUBE_PROXY_STRATEGY_ANNOTATION));
            (strategy == "RollingUpdate" && !remembered).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Every node: no kube-proxy rule left (kubelet's chains excepted).
pub async fn assert_no_kube_proxy_rules(c: &Cluster) {
    for n in &c.plan().nodes {
        let rules = scenario::kube_proxy_rules(c, &n.name).await.unwrap();
        for (table, lines) in rules {
            assert!(
                lines.is_empty(),
                "kube-proxy leftovers on {} ({table}):\n{}",
                n.name,
                lines.join("\n")
            );
        }
    }
}

/// Every TCP Service answers from every node, asked by a process in the
/// node's network namespace and cgroup (where the datapath attaches).
pub async fn assert_services_reachable(c: &Cluster, targets: &[Target]) {
    for n in &c.plan().nodes {
        for t in targets.iter().filter(|t| !t.udp) {
            let url = format!("http://{}:{}/", t.ip, t.port);
            let out = c
                .exec_on_node(
                    &n.name,
                    &[
                        "curl",
                        "-sS",
                        "-m",
                        "5",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        &url,
                    ],
                )
                .await
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "200",
                "{} from {}: {out:?}",
                t.service,
                n.name
            );
        }
    }
}

//! The migration scenarios' shared steps: a 3-node cluster with switchyard
//! installed and load running from every node, plans, and the checks on the
//! load's totals.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::Api;
use switchyard_api::MigrationPlan;
use switchyard_e2e::scenario::{self, Load, Target, Totals};
use switchyard_e2e::{Cluster, ClusterConfig, ProxyMode};

/// How a scenario installs switchyard: both are ways users do.
#[derive(Debug, Clone, Copy)]
pub enum Installer {
    /// `kubectl apply -k` of an overlay of `config/`.
    Kustomize,
    /// `helm install` of `config/helm/switchyard`.
    Helm,
}

/// A 3-node cluster with switchyard installed from `config/`, the workload
/// deployed and load running from every node.
pub async fn setup(mode: ProxyMode) -> (Cluster, Vec<Target>, Load) {
    setup_with(mode, Installer::Kustomize).await
}

/// [`setup`], switchyard installed as `installer` says.
pub async fn setup_with(mode: ProxyMode, installer: Installer) -> (Cluster, Vec<Target>, Load) {
    let started = Instant::now();
    let bins = switchyard_e2e::binaries::Binaries::locate().unwrap();
    for b in [
        "switchyard-operator",
        "switchyard-agent",
        "switchyard-loadgen",
    ] {
        assert!(
            bins.project_bin.join(b).exists(),
            "{b} not built: run `make e2e` (it builds the project's binaries first)"
        );
    }
    let c = Cluster::start(ClusterConfig {
        nodes: 3,
        proxy_mode: mode,
        images: Some(scenario::images(&bins.project_bin).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let targets = scenario::deploy_workload(&c).await.unwrap();
    match installer {
        Installer::Kustomize => scenario::install(&c).await.unwrap(),
        Installer::Helm => {
            // The agents serve their Observer API on the nodes' addresses,
            // for the hubble-relay the scenario runs.
            let observer = ["--set", "agent.observerAddress=0.0.0.0:4244"];
            scenario::install_with_helm(&c, &observer).await.unwrap();
            // The objects are the Helm release's, not left by an earlier apply.
            let operator: Api<Deployment> = Api::namespaced(c.client(), "switchyard-system");
            let operator = operator.get("switchyard-operator").await.unwrap();
            let release = operator.annotations().get("meta.helm.sh/release-name");
            assert_eq!(release.map(String::as_str), Some("switchyard"));
        }
    }
    let load = scenario::start_load(&c, &targets, 25).await.unwrap();
    eprintln!(
        "[{}] cluster, switchyard and load ready in {:.1}s",
        c.name(),
        started.elapsed().as_secs_f64()
    );
    (c, targets, load)
}

pub fn plan(name: &str, extra: serde_json::Value) -> serde_json::Value {
    scenario::migration_plan(name, extra)
}

pub fn progress(p: &MigrationPlan) {
    if let Some(s) = &p.status {
        let nodes: Vec<String> = s
            .expanded()
            .nodes
            .iter()
            .map(|n| format!("{}={:?}", n.name, n.step))
            .collect();
        eprintln!(
            "  plan {:?} {} [{}]",
            s.phase,
            s.summary.progress,
            nodes.join(" ")
        );
    }
}

pub async fn run_plan(c: &Cluster, body: serde_json::Value, timeout: Duration) -> MigrationPlan {
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    scenario::apply_plan(c, body).await.unwrap();
    scenario::follow_plan(c, &name, timeout, progress, scenario::settled)
        .await
        .unwrap()
}

pub fn assert_no_failures(totals: &[Totals], min_ok: u64) {
    for t in totals {
        assert_eq!(
            t.failed, 0,
            "failed requests from {} to {}: {:?}",
            t.pod, t.target, t.errors
        );
        assert!(
            t.ok >= min_ok,
            "only {} requests from {} to {} succeeded",
            t.ok,
            t.pod,
            t.target
        );
    }
    let ok: u64 = totals.iter().map(|t| t.ok).sum();
    eprintln!("  traffic: {ok} requests, 0 failed");
}

//! End-to-end migrations on the local real cluster (root): switchyard
//! installed from `config/` (`kubectl apply -k`, or `helm install` of its
//! chart in the iptables scenario), its operator and agents
//! running as pods under their own ServiceAccounts, real kube-proxy, real
//! BPF, and client traffic from every node for the whole migration.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use switchyard_api::{MigrationPlan, NodeDatapath, NodeStep, Phase};
use switchyard_e2e::prometheus::Prometheus;
use switchyard_e2e::scenario::{self, Target};
use switchyard_e2e::{Cluster, ClusterConfig, ProxyMode, skip_unless_root, wait_for};

mod common;
use common::web::WebView;
use common::{
    Installer, add_kubelet_chains, assert_kubelet_chains, assert_no_failures,
    assert_no_kube_proxy_rules, assert_services_reachable, plan, progress, run_plan, setup,
    setup_with,
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What watched a migration from before its plan was applied: a real
/// Prometheus scraping switchyard, and the web view in a real browser.
struct Watchers {
    prometheus: Prometheus,
    web: WebView,
}

/// Migrates every node under load, checks that nothing failed and that
/// kube-proxy is gone; with `watched`, [`Watchers`] follow it.
async fn migrate_with_zero_failures(
    mode: ProxyMode,
    installer: Installer,
    watched: bool,
) -> (Cluster, Vec<Target>, Option<Watchers>) {
    let (c, targets, load) = setup_with(mode, installer).await;
    add_kubelet_chains(&c).await;
    let prometheus = match watched {
        true => Some(common::monitoring::start_prometheus(&c).await),
        false => None,
    };
    let web = match watched {
        true => Some(common::web::follow(WebView::open(&c).await)),
        false => None,
    };
    let started = Instant::now();
    // kube-proxy keeps running untouched on each node until its turn.
    let before = common::kube_proxy_pods(&c).await;
    assert_eq!(before.len(), 3, "{before:?}");
    scenario::apply_plan(&c, plan("to-ebpf", json!({})))
        .await
        .unwrap();
    let timeout = Duration::from_secs(300);
    let (p, seen) =
        common::follow_plan_keeping_kube_proxy(&c, "to-ebpf", timeout, &before, progress).await;
    eprintln!("  kube-proxy pods of unreached nodes unchanged: {seen:?}");
    assert!(seen.beside_a_migrated_node > 0, "{seen:?}");
    let secs = started.elapsed().as_secs_f64();
    let s = p.status.clone().unwrap().expanded();
    assert_eq!(s.phase, Phase::Succeeded, "{:?}", s.message);
    assert!(switchyard_api::conditions::is_true(&s.conditions, "Ready"));
    eprintln!(
        "  migrated {} nodes in {secs:.1}s ({:.1}s per node), kube-proxy mode {:?}",
        s.nodes.len(),
        secs / s.nodes.len() as f64,
        s.kube_proxy_mode
    );
    // However fast the migration went, the traffic covers it and the time
    // after it.
    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(&c).await.unwrap();
    assert_no_failures(&totals, 100);
    let watchers = match (prometheus, web) {
        (Some(prometheus), Some(web)) => Some(Watchers {
            prometheus,
            web: common::web::assert_followed(&c, web).await,
        }),
        _ => None,
    };

    assert_kube_proxy_gone_and_backed_up(&c, s.kube_proxy_backup.as_deref()).await;
    assert_no_kube_proxy_rules(&c).await;
    assert_kubelet_chains(&c).await;
    assert_services_reachable(&c, &targets).await;
    common::assert_plugin_reports_success(&c, "to-ebpf", &p).await;
    (c, targets, watchers)
}

/// kube-proxy's DaemonSet, ConfigMap and pods are gone, and the plan's
/// backup holds the DaemonSet.
async fn assert_kube_proxy_gone_and_backed_up(c: &Cluster, backup: Option<&str>) {
    let ds: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    assert!(
        ds.get_opt("kube-proxy").await.unwrap().is_none(),
        "kube-proxy DaemonSet still exists"
    );
    let cms: Api<ConfigMap> = Api::namespaced(c.client(), "kube-system");
    assert!(
        cms.get_opt("kube-proxy").await.unwrap().is_none(),
        "kube-proxy ConfigMap still exists"
    );
    let backups: Api<ConfigMap> = Api::namespaced(c.client(), "switchyard-system");
    let backup = backups
        .get(backup.expect("the plan names its backup"))
        .await
        .unwrap();
    assert!(backup.data.unwrap().contains_key("daemonset.yaml"));
    let pods: Api<Pod> = Api::namespaced(c.client(), "kube-system");
    wait_for("no kube-proxy pod", Duration::from_secs(30), || async {
        pods.list(&ListParams::default().labels("k8s-app=kube-proxy"))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await
    .unwrap();
}

/// `cordoned` is the only unschedulable node: the plan lifted its own
/// cordons and left someone else's.
async fn assert_cordoned_only(c: &Cluster, cordoned: &str) {
    let nodes: Api<Node> = Api::all(c.client());
    for n in nodes.list(&ListParams::default()).await.unwrap().items {
        let name = n.metadata.name.unwrap_or_default();
        let unschedulable = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        assert_eq!(unschedulable, name == cordoned, "node {name} unschedulable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn iptables_migration_has_zero_failed_requests_then_rolls_back() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    // Installed with Helm: the chart's own acceptance (`helm install`, then
    // a migration that succeeds with no failed request); the nftables
    // scenario covers `kubectl apply -k`.
    let (c, targets, watchers) =
        migrate_with_zero_failures(ProxyMode::Iptables, Installer::Helm, true).await;
    let Watchers {
        prometheus,
        mut web,
    } = watchers.unwrap();
    common::observe::a_refused_connection_is_one_dropped_flow(&c, Some(&mut web)).await;
    drop(web);
    // The shipped dashboard and alerts, on what a real Prometheus scraped
    // during the migration.
    common::monitoring::every_dashboard_query_and_alert_has_data(&c, &prometheus).await;
    drop(prometheus);

    // Full rollback after success: kube-proxy restored from the backup and
    // running everywhere, the datapath off, no failed request.
    // Asked for as a user would: `kubectl switchyard rollback`. Someone
    // took a migrated node out for maintenance first: their cordon stays.
    let maintained = c.plan().nodes[1].name.clone();
    scenario::kubectl(&c, &["cordon", &maintained])
        .await
        .unwrap();
    let load = scenario::start_load(&c, &targets, 25).await.unwrap();
    let (ok, out, err) = common::kubectl_switchyard(&c, &["rollback", "to-ebpf"]).await;
    assert!(ok, "kubectl switchyard rollback: {err}");
    assert_eq!(
        out,
        "migrationplan.switchyard.dev/to-ebpf rollback requested\n"
    );
    let p = scenario::follow_plan(&c, "to-ebpf", Duration::from_secs(300), progress, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::RolledBack)
    })
    .await
    .unwrap();
    assert!(
        p.status
            .unwrap()
            .expanded()
            .nodes
            .iter()
            .all(|n| n.step == NodeStep::RolledBack)
    );
    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(&c).await.unwrap();
    assert_no_failures(&totals, 100);
    assert_back_on_kube_proxy(&c).await;
    assert_cordoned_only(&c, &maintained).await;
    assert_services_reachable(&c, &targets).await;
}

/// After a whole-plan rollback: kube-proxy ready on every node with its
/// own rollout back and its rules written, every datapath off.
async fn assert_back_on_kube_proxy(c: &Cluster) {
    let ds: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    let ds = ds.get("kube-proxy").await.unwrap();
    assert_eq!(
        ds.status.unwrap().number_ready,
        3,
        "kube-proxy ready on every node"
    );
    common::wait_rollout_released(c).await;
    let ndp: Api<NodeDatapath> = Api::all(c.client());
    for d in ndp.list(&ListParams::default()).await.unwrap().items {
        assert_eq!(
            d.status.unwrap().active_mode,
            Some(switchyard_api::DatapathMode::Off),
            "{:?}",
            d.metadata.name
        );
    }
    for n in &c.plan().nodes {
        let nat = c.iptables_save(&n.name, "nat").await.unwrap();
        assert!(
            nat.contains("KUBE-SERVICES"),
            "kube-proxy rules back on {}",
            n.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nftables_migration_then_a_joining_node_its_replacement_and_kube_proxy_recreated_fail_no_request()
 {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (mut c, targets, _) =
        migrate_with_zero_failures(ProxyMode::Nftables, Installer::Kustomize, false).await;
    common::reconnect::an_agent_restarted_after_kube_proxy_is_gone_reconnects(&c).await;
    // The joining node's agent starts after kube-proxy is gone: it finds the
    // API server from the same mounted endpoints.
    let joined =
        common::joining::a_node_joins_and_serves_from_its_first_pod(&mut c, "to-ebpf", &targets)
            .await;
    common::joining::a_node_replaced_under_its_name_is_migrated_again(
        &mut c, "to-ebpf", &targets, &joined,
    )
    .await;
    common::drift::kube_proxy_recreated_after_success_is_cleaned_again(&c, "to-ebpf", &targets)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_probe_stops_the_plan_rolls_the_node_back_and_a_retry_finishes_it() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (c, _targets, load) = setup(ProxyMode::Iptables).await;
    let before = common::kube_proxy_pods(&c).await;
    let bad = a_service_one_node_cannot_reach(&c).await;
    let body = plan(
        "probe-fails",
        json!({
        "strategy": {"canaryNodes": 1, "waveSize": 1, "stepTimeoutSeconds": 120, "nodeOrder": [bad]},
        "verification": {"consecutiveSuccesses": 2, "timeoutSeconds": 1, "probes": [
            {"name": "local-web", "service": {"namespace": "default", "name": "local-only"}, "port": 80, "protocol": "TCP"}]}}),
    );
    let p = run_plan(&c, body, Duration::from_secs(240)).await;
    let s = p.status.unwrap().expanded();
    assert_eq!(s.phase, Phase::Failed);
    let stalled = switchyard_api::conditions::get(&s.conditions, "Stalled").unwrap();
    assert_eq!(stalled.status, "True");
    assert!(
        stalled.message.contains(&bad) && stalled.message.contains("local-web"),
        "{}",
        stalled.message
    );
    let node = s.nodes.iter().find(|n| n.name == bad).unwrap();
    assert_eq!(
        (node.step, node.failed_step),
        (NodeStep::RolledBack, Some(NodeStep::Verify))
    );
    assert!(
        s.nodes
            .iter()
            .filter(|n| n.name != bad)
            .all(|n| n.step == NodeStep::Pending),
        "the failure stopped the wave"
    );
    // The node is back on kube-proxy.
    let ds: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    wait_for(
        "kube-proxy ready on all 3 nodes again",
        Duration::from_secs(60),
        || async { (ds.get("kube-proxy").await.ok()?.status?.number_ready == 3).then_some(()) },
    )
    .await
    .unwrap();
    // kube-proxy's own template and strategy are back; the nodes the plan
    // never reached still run their pods from before it, and the returned
    // pod came from that template: no rolling update replaces any of them.
    common::wait_rollout_released(&c).await;
    let after = common::kube_proxy_pods(&c).await;
    for n in c.plan().nodes.iter().filter(|n| n.name != bad) {
        assert_eq!(after.get(&n.name), before.get(&n.name), "{}", n.name);
    }
    load.wait_for_more(100).await.unwrap();
    assert_eq!(common::kube_proxy_pods(&c).await, after);

    retry_finishes_the_plan(&c, "probe-fails").await;
    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(&c).await.unwrap();
    assert_no_failures(&totals, 100);
}

/// Creates `default/local-only`, served only node-locally by nginx: the
/// node without an nginx pod has no endpoint for it, so a probe of it fails
/// there (and only there). Returns that node.
async fn a_service_one_node_cannot_reach(c: &Cluster) -> String {
    let pods: Api<Pod> = Api::namespaced(c.client(), "default");
    let web_nodes: Vec<String> = pods
        .list(&ListParams::default().labels("app=nginx"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let bad = c
        .plan()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| !web_nodes.contains(n))
        .unwrap();
    switchyard_e2e::addons::apply(
        &c.client(),
        &json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "local-only", "namespace": "default"},
        "spec": {"selector": {"app": "nginx"}, "internalTrafficPolicy": "Local",
                 "ports": [{"name": "p", "port": 80, "targetPort": 80, "protocol": "TCP"}]}}),
    )
    .await
    .unwrap();
    bad
}

/// The cause fixed (the Service answers on every node), the failed node is
/// retried through the spec (`kubectl switchyard retry`) and plan `name`
/// finishes.
async fn retry_finishes_the_plan(c: &Cluster, name: &str) {
    let cluster_wide = json!({"spec": {"internalTrafficPolicy": "Cluster"}});
    Api::<Service>::namespaced(c.client(), "default")
        .patch(
            "local-only",
            &PatchParams::default(),
            &Patch::Merge(&cluster_wide),
        )
        .await
        .unwrap();
    let (ok, out, err) = common::kubectl_switchyard(c, &["retry", name]).await;
    assert!(ok && out.contains("retry"), "{out}{err}");
    let retried = |p: &MigrationPlan| {
        p.status
            .as_ref()
            .is_some_and(|s| s.observed_retry == 1 && scenario::settled(p))
    };
    let p = scenario::follow_plan(c, name, Duration::from_secs(240), progress, retried)
        .await
        .unwrap();
    let s = p.status.unwrap().expanded();
    assert_eq!(s.phase, Phase::Succeeded, "{:?}", s.message);
    assert!(s.nodes.iter().all(|n| n.step == NodeStep::Done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_manual_procedure_fails_requests_for_contrast() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (c, _targets, load) = setup(ProxyMode::Iptables).await;
    let t0 = Instant::now();
    scenario::manual_procedure(&c).await.unwrap();
    let switched = t0.elapsed();
    // Let traffic run on the new datapath for a moment, measured by requests.
    let before: u64 = load.totals().unwrap().iter().map(|t| t.ok).sum();
    wait_for(
        "200 more successful requests",
        Duration::from_secs(30),
        || async {
            let now: u64 = load.totals().ok()?.iter().map(|t| t.ok).sum();
            (now >= before + 200).then_some(())
        },
    )
    .await
    .unwrap();
    let totals = load.stop(&c).await.unwrap();
    let failed: u64 = totals.iter().map(|t| t.failed).sum();
    let first = totals.iter().filter_map(|t| t.first_failure_ms).min();
    let last = totals.iter().filter_map(|t| t.last_failure_ms).max();
    let outage_ms = first.zip(last).map_or(0, |(f, l)| l - f);
    eprintln!(
        "  manual procedure: {failed} failed requests, outage {outage_ms} ms (switch took {:.1}s)",
        switched.as_secs_f64()
    );
    let report = c.state_dir().join("../manual-procedure.json");
    let _ = std::fs::write(
        &report,
        json!({"failed": failed, "outage_ms": outage_ms as u64}).to_string(),
    );
    assert!(
        failed > 0,
        "the manual procedure is expected to drop requests between the flush and the new datapath"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_plans_are_rejected_by_the_api_server_and_a_second_plan_is_refused() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let bins = switchyard_e2e::binaries::Binaries::locate().unwrap();
    let c = Cluster::start(ClusterConfig {
        nodes: 1,
        images: Some(scenario::images(&bins.project_bin).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    scenario::install(&c).await.unwrap();
    let bad = [
        (
            json!({"strategy": {"waveSize": 0}}),
            "waveSize must be a node count >= 1",
        ),
        (
            json!({"strategy": {"waveSize": "150%"}}),
            "waveSize must be a node count >= 1 or a percentage",
        ),
        (
            json!({"dryRun": true, "rollback": true}),
            "dryRun and rollback cannot both be set",
        ),
        (
            json!({"verification": {"probes": [{"name": "x", "service": {"namespace": "a", "name": "b"}, "port": 70000}]}}),
            "65535",
        ),
        (
            json!({"verification": {"probes": [{"name": "x", "service": {"namespace": "a", "name": "b"}, "port": 53, "protocol": "SCTP"}]}}),
            "Unsupported value",
        ),
        (
            json!({"verification": {"probes": [{"name": "x", "service": {"namespace": "a", "name": "b"}, "port": 53, "protocol": "UDP", "httpPath": "/"}]}}),
            "httpPath needs protocol TCP",
        ),
        (
            json!({"apiServer": "https://10.0.0.1"}),
            "apiServer must be host:port",
        ),
    ];
    let api: Api<MigrationPlan> = Api::all(c.client());
    for (i, (spec, message)) in bad.iter().enumerate() {
        let body = json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationPlan", "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        let err = api
            .patch(
                &format!("bad-{i}"),
                &PatchParams::apply("e2e"),
                &Patch::Apply(body),
            )
            .await
            .unwrap_err();
        match err {
            kube::Error::Api(s) => {
                assert_eq!(s.code, 422, "{spec}: {s:?}");
                assert!(
                    s.message.contains(message),
                    "{spec}: expected {message:?} in {:?}",
                    s.message
                );
            }
            other => panic!("{spec}: {other}"),
        }
    }
    // Two plans: the older one runs, the younger is refused in its status.
    scenario::apply_plan(&c, plan("first", json!({"paused": true})))
        .await
        .unwrap();
    scenario::follow_plan(&c, "first", Duration::from_secs(60), progress, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| matches!(s.phase, Phase::Migrating | Phase::Paused))
    })
    .await
    .unwrap();
    scenario::apply_plan(&c, plan("second", json!({})))
        .await
        .unwrap();
    let second = scenario::follow_plan(&c, "second", Duration::from_secs(60), progress, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.preflight.iter().any(|f| f.reason == "AnotherPlanActive"))
    })
    .await
    .unwrap();
    let s = second.status.unwrap();
    assert_eq!(s.phase, Phase::Preflight);
    let stalled = switchyard_api::conditions::get(&s.conditions, "Stalled").unwrap();
    assert!(
        stalled.status == "True" && stalled.message.contains("first"),
        "{stalled:?}"
    );
}

/// Scenarios 5 and 6: the operator is killed at every step boundary of
/// every node (its pod deleted whenever a node's step changes) and each
/// node's agent is killed while its node's datapath is active and kube-proxy
/// is being removed or its rules flushed (whichever step this poll sees
/// first: a step can pass between two polls); the migration still completes with
/// zero failed requests. (Each operator restart is a pod torn down and
/// created on a node: see `bridge_mac` in `e2e/src/network.rs` for what that
/// pod churn did to the lab's network before the bridges got fixed MACs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_operator_at_every_step_and_the_agents_mid_migration_fails_no_request() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (c, _targets, load) = setup(ProxyMode::Iptables).await;
    scenario::apply_plan(&c, plan("to-ebpf", json!({})))
        .await
        .unwrap();
    let plans: Api<MigrationPlan> = Api::all(c.client());
    let pods: Api<Pod> = Api::namespaced(c.client(), "switchyard-system");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen: std::collections::BTreeMap<String, NodeStep> = Default::default();
    let mut agents_killed = std::collections::BTreeSet::new();
    let (mut operator_kills, mut phase) = (0, Phase::Pending);
    while phase != Phase::Succeeded {
        assert!(
            Instant::now() < deadline,
            "migration did not finish in 600 s (phase {phase:?}, steps {seen:?})"
        );
        let Some(status) = plans.get("to-ebpf").await.ok().and_then(|p| p.status) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        phase = status.phase;
        assert!(
            !matches!(phase, Phase::Failed | Phase::Paused),
            "plan stopped: {:?}",
            status.message
        );
        let mut boundary = false;
        for n in &status.expanded().nodes {
            if seen.insert(n.name.clone(), n.step) != Some(n.step) {
                boundary = true;
                let mid = matches!(n.step, NodeStep::RemoveKubeProxy | NodeStep::FlushRules);
                if mid && agents_killed.insert(n.name.clone()) {
                    let lp = ListParams::default()
                        .labels("app.kubernetes.io/name=switchyard-agent")
                        .fields(&format!("spec.nodeName={}", n.name));
                    for p in pods.list(&lp).await.unwrap().items {
                        pods.delete(&p.metadata.name.unwrap(), &Default::default())
                            .await
                            .unwrap();
                    }
                }
            }
        }
        if boundary && phase != Phase::Succeeded {
            let lp = ListParams::default().labels("app.kubernetes.io/name=switchyard-operator");
            for p in pods.list(&lp).await.unwrap().items {
                if p.metadata.deletion_timestamp.is_none() {
                    pods.delete(&p.metadata.name.unwrap(), &Default::default())
                        .await
                        .unwrap();
                    operator_kills += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("  operator killed {operator_kills} times, agents killed on {agents_killed:?}");
    assert_eq!(agents_killed.len(), 3, "every node's agent was killed once");
    assert!(
        operator_kills >= 6,
        "the operator was killed at the step boundaries ({operator_kills})"
    );
    load.wait_for_more(100).await.unwrap();
    let totals = load.stop(&c).await.unwrap();
    assert_no_failures(&totals, 100);
    assert_no_kube_proxy_rules(&c).await;
}

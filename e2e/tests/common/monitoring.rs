//! The shipped monitoring (`config/monitoring/`) against a real Prometheus
//! in the lab: the scrape job finds every switchyard pod, the alerting
//! rules load and evaluate, and every query of the dashboard and every
//! alert expression has data — so a renamed metric or label cannot leave a
//! panel blank or an alert silently dead.

use std::time::Duration;

use switchyard_e2e::prometheus::{Prometheus, queries};
use switchyard_e2e::{Cluster, wait_for};

fn monitoring_file(name: &str) -> String {
    let dir = switchyard_e2e::binaries::e2e_dir().join("../config/monitoring");
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Starts Prometheus and waits until it scrapes the operator and every
/// node's agent.
pub async fn start_prometheus(c: &Cluster) -> Prometheus {
    let prometheus = Prometheus::start(c).await.unwrap();
    let want = c.plan().nodes.len() + 1;
    let scraped = wait_for(
        "every switchyard pod scraped",
        Duration::from_secs(60),
        || async {
            let targets = prometheus.targets().await.ok()?;
            let up = targets.iter().filter(|t| t.health == "up").count();
            (up == want && targets.len() == want).then_some(())
        },
    )
    .await;
    if let Err(e) = scraped {
        panic!("{e}: {:#?}", prometheus.targets().await);
    }
    prometheus
}

/// Each target is a switchyard pod labelled as the rules and the dashboard
/// expect, the rules evaluate without error, Prometheus saw the plan
/// migrating, and every dashboard query and alert expression has data.
pub async fn every_dashboard_query_and_alert_has_data(c: &Cluster, prometheus: &Prometheus) {
    assert_targets_labelled(c, prometheus).await;
    assert_rules_evaluate(prometheus).await;
    let long = Duration::from_secs(60);
    // Scraped during the migration, not only after it.
    let migrating = r#"max_over_time(switchyard_operator_plans{phase="Migrating"}[1h]) == 1"#;
    prometheus.wait_for_data(migrating, long).await.unwrap();
    let dashboard = queries::dashboard_queries(&monitoring_file("switchyard-dashboard.json"));
    let dashboard = dashboard.unwrap();
    for q in &dashboard {
        prometheus.wait_for_data(q, long).await.unwrap();
    }
    let alerts = queries::alert_expressions(&monitoring_file("switchyard-rules.yaml")).unwrap();
    for (alert, expr) in &alerts {
        let got = prometheus.wait_for_data(expr, long).await;
        assert!(got.is_ok(), "alert {alert}: no data for {expr}");
    }
    eprintln!(
        "  Prometheus: {} dashboard queries and {} alert expressions have data",
        dashboard.len(),
        alerts.len()
    );
}

async fn assert_targets_labelled(c: &Cluster, prometheus: &Prometheus) {
    let targets = prometheus.targets().await.unwrap();
    let mut nodes: Vec<&str> = Vec::new();
    for t in &targets {
        assert_eq!(t.health, "up", "{t:?}");
        for label in ["namespace", "pod", "container", "node"] {
            assert!(t.labels[label].is_string(), "target without {label}: {t:?}");
        }
        if t.labels["container"] == "agent" {
            nodes.push(t.labels["node"].as_str().unwrap_or_default());
        }
    }
    nodes.sort_unstable();
    let want: Vec<&str> = c.plan().nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, want, "one agent target a node");
}

async fn assert_rules_evaluate(prometheus: &Prometheus) {
    let rules = wait_for("every rule evaluated", Duration::from_secs(30), || async {
        let rules = prometheus.rules().await.ok()?;
        let evaluated = rules.iter().all(|(_, health, _)| health != "unknown");
        evaluated.then_some(rules)
    })
    .await
    .unwrap();
    assert!(rules.len() >= 7, "{rules:?}");
    for (name, health, error) in rules {
        assert_eq!(health, "ok", "rule {name}: {error}");
    }
}

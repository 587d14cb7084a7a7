//! What a dashboard and the alerting rules ask Prometheus (pure): every
//! query of a Grafana dashboard with its variables as "All" selects them,
//! and every alert expression turned into one that has a sample for each
//! series the alert watches, firing or not.

use promql_parser::parser::{self, BinModifier, Expr};
use serde_json::Value;

use crate::error::{Error, Result};

/// The dashboard's variables as "All" selects them, and Grafana's
/// `$__rate_interval` for the lab's 1 s scrape interval.
const VARIABLES: [(&str, &str); 3] = [
    ("$__rate_interval", "15s"),
    ("$plan", ".*"),
    ("$node", ".*"),
];

/// Every query of a Grafana dashboard: its panels' targets, and its
/// variables' `label_values` as the PromQL Grafana runs for them.
pub fn dashboard_queries(json: &str) -> Result<Vec<String>> {
    let dashboard: Value =
        serde_json::from_str(json).map_err(|e| Error::Serde(format!("dashboard: {e}")))?;
    let none = Vec::new();
    let panels = dashboard["panels"].as_array().unwrap_or(&none);
    let targets = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap_or(&none))
        .filter_map(|t| t["expr"].as_str());
    let mut queries: Vec<String> = targets
        .map(|expr| {
            VARIABLES
                .iter()
                .fold(expr.to_string(), |e, (var, value)| e.replace(var, value))
        })
        .collect();
    let variables = dashboard["templating"]["list"].as_array().unwrap_or(&none);
    for query in variables
        .iter()
        .filter_map(|v| v["query"]["query"].as_str())
    {
        queries.push(label_values(query)?);
    }
    Ok(queries)
}

/// Grafana's `label_values(metric, label)` as the PromQL it runs.
fn label_values(query: &str) -> Result<String> {
    let args = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .and_then(|q| q.split_once(','));
    let (metric, label) =
        args.ok_or_else(|| Error::Serde(format!("not a label_values query: {query}")))?;
    Ok(format!("group by ({}) ({})", label.trim(), metric.trim()))
}

/// Each alert of a Prometheus rule file: its name and its expression with
/// the top comparison made a `bool` one, which has a sample for every
/// series the alert watches (`promtool test rules` checks when it fires).
pub fn alert_expressions(yaml: &str) -> Result<Vec<(String, String)>> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| Error::Serde(format!("rule file: {e}")))?;
    let groups = rules["groups"].as_sequence().cloned().unwrap_or_default();
    let alerts = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| {
            Some((
                r["alert"].as_str()?.to_string(),
                r["expr"].as_str()?.to_string(),
            ))
        });
    alerts
        .map(|(alert, expr)| {
            let watched = every_watched_series(&expr)
                .map_err(|e| Error::Serde(format!("alert {alert}: {e}")))?;
            Ok((alert, watched))
        })
        .collect()
}

fn every_watched_series(expr: &str) -> std::result::Result<String, String> {
    let mut ast = parser::parse(expr)?;
    if let Expr::Binary(b) = &mut ast
        && b.op.is_comparison_operator()
    {
        b.modifier
            .get_or_insert_with(BinModifier::default)
            .return_bool = true;
    }
    Ok(ast.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_watched_through_a_bool_comparison() {
        let got = every_watched_series("rate(x_total{a!~\"b|c\"}[5m]) > 0");
        assert_eq!(got.as_deref(), Ok("rate(x_total{a!~\"b|c\"}[5m]) > bool 0"));
        let got = every_watched_series("a < b");
        assert_eq!(got.as_deref(), Ok("a < bool b"));
        // Not a comparison at the top: asked as it is.
        let got = every_watched_series("sum(a) by (b)");
        assert_eq!(got.as_deref(), Ok("sum by (b) (a)"));
        assert!(every_watched_series("rate(x[5m]) >").is_err());
    }

    #[test]
    fn dashboard_variables_are_substituted_and_their_queries_asked() {
        let json = r#"{
            "panels": [{"targets": [{"expr": "rate(m{node=~\"$node\"}[$__rate_interval])"}]}],
            "templating": {"list": [{"query": {"query": "label_values(m, node)"}}]}
        }"#;
        let got = dashboard_queries(json).unwrap_or_default();
        assert_eq!(got, ["rate(m{node=~\".*\"}[15s])", "group by (node) (m)"]);
        let bad = r#"{"templating": {"list": [{"query": {"query": "up"}}]}}"#;
        assert!(dashboard_queries(bad).is_err());
    }

    #[test]
    fn the_shipped_files_give_every_query() {
        let dir = crate::binaries::e2e_dir().join("../config/monitoring");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let queries = dashboard_queries(&read("switchyard-dashboard.json")).unwrap_or_default();
        assert!(queries.len() >= 20, "{queries:?}");
        assert!(queries.iter().all(|q| !q.contains('$')), "{queries:?}");
        let alerts = alert_expressions(&read("switchyard-rules.yaml")).unwrap_or_default();
        assert!(alerts.len() >= 7, "{alerts:?}");
        assert!(
            alerts.iter().all(|(_, e)| e.contains(" bool ")),
            "{alerts:?}"
        );
    }
}

//! `config/monitoring/`: the alerting rules are valid for Prometheus's own
//! `promtool` (built from its Go module by `e2e/hack/build-prometheus.sh
//! promtool`), each alert fires and stays quiet as `tests/` says, the PrometheusRule
//! carries the same groups as the plain rule file, and every metric the
//! rules read is one switchyard exports under that name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchyard_api::{MigrationPlanStatus, Phase, conditions};
use switchyard_operator::metrics::Metrics;
use switchyard_testkit::host;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn monitoring() -> PathBuf {
    repo().join("config/monitoring")
}

fn yaml(path: &Path) -> Result<serde_yaml::Value, Box<dyn std::error::Error>> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(path)?)?)
}

#[test]
fn the_prometheus_rule_holds_the_rule_files_groups() -> TestResult {
    let plain = yaml(&monitoring().join("switchyard-rules.yaml"))?;
    let object = yaml(&monitoring().join("prometheusrule.yaml"))?;
    assert_eq!(object["kind"], "PrometheusRule");
    assert!(plain["groups"].as_sequence().is_some_and(|g| !g.is_empty()));
    assert_eq!(plain["groups"], object["spec"]["groups"]);
    Ok(())
}

/// The rules' expressions.
fn rule_expressions() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let rules = yaml(&monitoring().join("switchyard-rules.yaml"))?;
    Ok(rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(str::to_string))
        .collect())
}

/// The dashboard's queries: its panels' targets and its variables.
fn dashboard_expressions() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(monitoring().join("switchyard-dashboard.json"))?;
    let dashboard: serde_json::Value = serde_json::from_str(&text)?;
    let none = Vec::new();
    let panels = dashboard["panels"].as_array().unwrap_or(&none);
    let targets = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap_or(&none))
        .filter_map(|t| t["expr"].as_str());
    let variables = dashboard["templating"]["list"].as_array().unwrap_or(&none);
    let variables = variables
        .iter()
        .filter_map(|v| v["query"]["query"].as_str());
    Ok(targets.chain(variables).map(str::to_string).collect())
}

/// Every `switchyard_*` name in `exprs`.
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        for (i, _) in expr.match_indices("switchyard_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The operator's exposition, with a plan in every series it has.
fn operator_exposition() -> String {
    let m = Metrics::default();
    let mut status = MigrationPlanStatus {
        phase: Phase::Failed,
        ..MigrationPlanStatus::default()
    };
    let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    conditions::set(
        &mut status.conditions,
        conditions::STALLED,
        true,
        "R",
        "m",
        None,
        now,
    );
    m.observe("p", &status, 0.1, 1);
    m.render()
}

/// Whether `text` has a sample line of the series `name`.
fn has_sample(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with([' ', '{']))
    })
}

#[test]
fn every_metric_the_rules_and_the_dashboard_read_is_exported() -> TestResult {
    let operator = operator_exposition();
    // The agent's and the datapath's are written by hand in these files.
    let sources = [
        "node-datapath/agent/src/server.rs",
        "node-datapath/agent/src/health.rs",
        "node-datapath/agent/src/flows.rs",
        "node-datapath/src/metrics.rs",
    ];
    let mut agent = String::new();
    for file in sources {
        agent += &std::fs::read_to_string(repo().join(file))?;
    }
    for (what, exprs, at_least) in [
        ("rules", rule_expressions()?, 7),
        ("dashboard", dashboard_expressions()?, 15),
    ] {
        let names = metric_names(&exprs);
        assert!(names.len() >= at_least, "{what}: {names:?}");
        for name in names {
            let exported = if name.starts_with("switchyard_operator_") {
                has_sample(&operator, &name)
            } else {
                agent.contains(&format!("\"{name}\"")) || agent.contains(&format!("{name}{{"))
            };
            assert!(exported, "the {what} read {name}, which nothing exports");
        }
    }
    Ok(())
}

/// `promtool check rules` and `promtool test rules`: the rules parse, their
/// templates render, and each alert fires (or not) as the test file says.
#[test]
fn promtool_checks_and_tests_the_rules() -> TestResult {
    let script = repo().join("e2e/hack/build-prometheus.sh");
    // A cached promtool needs no Go; building one does (as the lab's
    // Kubernetes binaries do).
    let out = Command::new("bash").arg(&script).arg("promtool").output()?;
    if !out.status.success() && !host::have("go") {
        host::skip(&host::current_test(), "needs Go to build promtool");
        return Ok(());
    }
    assert!(
        out.status.success(),
        "build-prometheus.sh promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promtool = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let run = |args: &[&str]| -> TestResult {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(monitoring())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        eprintln!("promtool {}:\n{text}", args.join(" "));
        assert!(
            out.status.success(),
            "promtool {} failed:\n{text}",
            args.join(" ")
        );
        Ok(())
    };
    run(&["check", "rules", "switchyard-rules.yaml"])?;
    run(&["test", "rules", "tests/switchyard-rules-test.yaml"])
}

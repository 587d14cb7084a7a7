//! `config/monitoring/`: the alerting rules are valid for Prometheus's own
//! `promtool` (built from its Go module by `e2e/hack/build-promtool.sh`),
//! each alert fires and stays quiet as `tests/` says, the PrometheusRule
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

/// Every `switchyard_*` name in the rules' expressions.
fn metric_names() -> Result<BTreeSet<String>, Box<dyn std::error::Error>> {
    let rules = yaml(&monitoring().join("switchyard-rules.yaml"))?;
    let exprs = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(str::to_string));
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
    Ok(names)
}

#[test]
fn every_metric_the_rules_read_is_exported() -> TestResult {
    // The operator's, from its real exposition.
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
    let operator = m.render();
    // The agent's and the datapath's are written by hand in these files.
    let agent = std::fs::read_to_string(repo().join("node-datapath/agent/src/server.rs"))?
        + &std::fs::read_to_string(repo().join("node-datapath/src/metrics.rs"))?;
    let names = metric_names()?;
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let exported = if name.starts_with("switchyard_operator_") {
            operator.contains(&format!("# TYPE {name} "))
                || operator.contains(&format!("\n{name}{{"))
        } else {
            agent.contains(&format!("\"{name}\"")) || agent.contains(&format!("{name}{{"))
        };
        assert!(exported, "the rules read {name}, which nothing exports");
    }
    Ok(())
}

/// `promtool check rules` and `promtool test rules`: the rules parse, their
/// templates render, and each alert fires (or not) as the test file says.
#[test]
fn promtool_checks_and_tests_the_rules() -> TestResult {
    let script = repo().join("e2e/hack/build-promtool.sh");
    // A cached promtool needs no Go; building one does (as the lab's
    // Kubernetes binaries do).
    let out = Command::new("bash").arg(&script).output()?;
    if !out.status.success() && !host::have("go") {
        host::skip(&host::current_test(), "needs Go to build promtool");
        return Ok(());
    }
    assert!(
        out.status.success(),
        "build-promtool.sh: {}",
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

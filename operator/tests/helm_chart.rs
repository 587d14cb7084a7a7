//! `config/helm/switchyard/`: the chart passes the real `helm lint` (Helm
//! built from its Go module by `e2e/hack/build-helm.sh`), renders with its
//! default values exactly the objects `kubectl kustomize config/` does
//! (compared as sets of objects, keyed by kind, namespace and name), its
//! values really change what it renders, its schema refuses a wrong type,
//! and its copies of the CRDs and alerting rules are the repository's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_yaml::Value;
use switchyard_testkit::host;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An object's identity in a rendered manifest.
type Key = (String, String, String);

/// The checkout under test (a target dir shared between checkouts may hold
/// this binary built from another one).
fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn chart() -> PathBuf {
    repo().join("config/helm/switchyard")
}

/// Runs one of e2e/hack's build scripts and returns what it prints (a
/// binary or a directory), or None when it cannot build for want of Go: a
/// cached build needs no Go, a fresh one does.
fn built_by(script: &str) -> Result<Option<PathBuf>, Box<dyn std::error::Error>> {
    let out = Command::new("bash")
        .arg(repo().join("e2e/hack").join(script))
        .output()?;
    if !out.status.success() && !host::have("go") {
        host::skip(&host::current_test(), &format!("needs Go to run {script}"));
        return Ok(None);
    }
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(PathBuf::from(String::from_utf8(out.stdout)?.trim())))
}

fn helm() -> Result<Option<PathBuf>, Box<dyn std::error::Error>> {
    built_by("build-helm.sh")
}

fn run(program: &Path, args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()?;
    eprintln!(
        "{} {}: {}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn stdout_of(program: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = run(program, args)?;
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A multi-document manifest as its objects, keyed by kind, namespace and
/// name; a key seen twice is a test failure (one would hide the other).
fn objects(manifest: &str) -> Result<BTreeMap<Key, Value>, Box<dyn std::error::Error>> {
    let mut objects = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let object = Value::deserialize(doc)?;
        if object.is_null() {
            continue;
        }
        let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let meta = &object["metadata"];
        let key = (
            field(&object["kind"]),
            field(&meta["namespace"]),
            field(&meta["name"]),
        );
        assert!(!key.0.is_empty() && !key.2.is_empty(), "{object:?}");
        assert!(
            objects.insert(key.clone(), object).is_none(),
            "{key:?} twice"
        );
    }
    Ok(objects)
}

/// `helm template` of the chart with extra arguments (`--set ...`), CRDs
/// included, as objects.
fn render(helm: &Path, args: &[&str]) -> Result<BTreeMap<Key, Value>, Box<dyn std::error::Error>> {
    let chart = chart();
    let chart = chart.to_str().ok_or("chart path is not UTF-8")?;
    let mut all = vec!["template", "switchyard", chart, "--include-crds"];
    all.extend_from_slice(args);
    objects(&stdout_of(helm, &all)?)
}

/// The same value with each integral float as an integer: kustomize writes
/// the CRDs' `minimum: 0.0` as `0`, Helm leaves it as it is.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 2f64.powi(53) => {
                // Exact: an integral float below 2^53 is an i64.
                #[allow(clippy::cast_possible_truncation)]
                Value::Number((f as i64).into())
            }
            _ => value.clone(),
        },
        Value::Sequence(items) => Value::Sequence(items.iter().map(normalized).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// Where two values first differ, as a path (`spec.template...`), or None.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Mapping(x), Value::Mapping(y)) => {
            let keys = x.keys().chain(y.keys());
            keys.map(|k| {
                let at = match k.as_str() {
                    Some(name) => format!("{path}.{name}"),
                    None => format!("{path}.{k:?}"),
                };
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => first_difference(v, w, &at),
                    (v, w) => Some(format!("{at}: {v:?} / {w:?}")),
                }
            })
            .find(Option::is_some)
            .flatten()
        }
        (Value::Sequence(x), Value::Sequence(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| format!("{path}: {a:?} / {b:?}")),
    }
}

fn key(kind: &str, namespace: &str, name: &str) -> Key {
    (kind.into(), namespace.into(), name.into())
}

#[test]
fn the_charts_copies_are_the_repositorys_files() -> TestResult {
    let pairs = [
        (
            "crds/migrationplans.switchyard.dev.yaml",
            "crds/migrationplans.switchyard.dev.yaml",
        ),
        (
            "crds/nodedatapaths.switchyard.dev.yaml",
            "crds/nodedatapaths.switchyard.dev.yaml",
        ),
        (
            "files/switchyard-rules.yaml",
            "config/monitoring/switchyard-rules.yaml",
        ),
        (
            "files/switchyard-dashboard.json",
            "config/monitoring/switchyard-dashboard.json",
        ),
        // The RBAC the e2e audit check proves (e2e/README.md).
        ("templates/rbac-agent.yaml", "config/rbac/agent.yaml"),
        ("templates/rbac-operator.yaml", "config/rbac/operator.yaml"),
    ];
    for (copy, original) in pairs {
        let copy_text = std::fs::read(chart().join(copy))?;
        let original_text = std::fs::read(repo().join(original))?;
        assert!(
            copy_text == original_text,
            "config/helm/switchyard/{copy} differs from {original}; copy it over (`make crds` does for the CRDs)"
        );
    }
    // The chart installs every CRD it holds: none may be left over.
    let crds = std::fs::read_dir(chart().join("crds"))?.count();
    assert_eq!(
        crds,
        switchyard_api::crds().len(),
        "config/helm/switchyard/crds/"
    );
    Ok(())
}

#[test]
fn helm_lint_passes_and_the_defaults_render_the_kustomize_base() -> TestResult {
    let Some(helm) = helm()? else { return Ok(()) };
    let Some(k8s) = built_by("build-k8s.sh")? else {
        return Ok(());
    };
    let chart = chart();
    stdout_of(
        &helm,
        &["lint", "--strict", chart.to_str().ok_or("not UTF-8")?],
    )?;

    let kustomize = objects(&stdout_of(&k8s.join("kubectl"), &["kustomize", "config"])?)?;
    let rendered = render(&helm, &[])?;
    let only = |a: &BTreeMap<Key, Value>, b: &BTreeMap<Key, Value>| -> Vec<Key> {
        a.keys().filter(|k| !b.contains_key(*k)).cloned().collect()
    };
    assert_eq!(
        only(&kustomize, &rendered),
        Vec::<Key>::new(),
        "only in kustomize"
    );
    assert_eq!(
        only(&rendered, &kustomize),
        Vec::<Key>::new(),
        "only in the chart"
    );
    assert!(kustomize.len() >= 25, "{} objects", kustomize.len());
    for (key, object) in &kustomize {
        let (want, got) = (normalized(object), normalized(&rendered[key]));
        let diff = first_difference(&want, &got, "");
        assert_eq!(diff, None, "{key:?}: kustomize / chart differ");
    }
    Ok(())
}

#[test]
fn values_change_what_the_chart_renders() -> TestResult {
    let Some(helm) = helm()? else { return Ok(()) };
    let set = [
        "--set=operator.image.repository=registry.example/sy/operator",
        "--set=operator.image.tag=v9.9.9",
        "--set=agent.image.tag=v9.9.9",
        "--set=agent.image.pullPolicy=Always",
        "--set=agent.apiServer.host=10.1.2.3",
        "--set=agent.apiServer.port=7445",
        "--set=agent.metricsPort=19964",
        "--set=agent.nodeSelector.kubernetes\\.io/os=linux",
        "--set=admissionPolicies.enabled=false",
    ];
    let objects = render(&helm, &set)?;
    let ns = "switchyard-system";
    let operator =
        &objects[&key("Deployment", ns, "switchyard-operator")]["spec"]["template"]["spec"];
    assert_eq!(
        operator["containers"][0]["image"],
        "registry.example/sy/operator:v9.9.9"
    );
    let agent = &objects[&key("DaemonSet", ns, "switchyard-agent")]["spec"]["template"]["spec"];
    let container = &agent["containers"][0];
    assert_eq!(container["image"], "switchyard/agent:v9.9.9");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["ports"][0]["containerPort"], 19964);
    assert!(
        container["args"]
            .as_sequence()
            .is_some_and(|a| a.contains(&"--metrics-addr=0.0.0.0:19964".into()))
    );
    assert_eq!(agent["nodeSelector"]["kubernetes.io/os"], "linux");
    let data = &objects[&key("ConfigMap", ns, "switchyard-agent")]["data"];
    // The override of the agents' own discovery of the API server.
    assert_eq!(data["SWITCHYARD_API_SERVER"], "10.1.2.3:7445");

    let kinds: Vec<&str> = objects.keys().map(|k| k.0.as_str()).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("ValidatingAdmissionPolicy")),
        "{kinds:?}"
    );
    Ok(())
}

/// The optional monitoring objects render the committed ones: the
/// PrometheusRule and the PodMonitor of `config/monitoring/`, and the
/// dashboard in a ConfigMap Grafana's sidecar loads.
#[test]
fn monitoring_values_render_the_committed_objects() -> TestResult {
    let Some(helm) = helm()? else { return Ok(()) };
    let set = [
        "--set=monitoring.prometheusRule.enabled=true",
        "--set=monitoring.podMonitor.enabled=true",
        "--set=monitoring.grafanaDashboard.enabled=true",
    ];
    let objects = render(&helm, &set)?;
    let ns = "switchyard-system";
    let committed = |file: &str| -> Result<Value, Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(repo().join("config/monitoring").join(file))?;
        Ok(serde_yaml::from_str(&text)?)
    };
    let rule = &objects[&key("PrometheusRule", ns, "switchyard")];
    assert_eq!(
        rule,
        &committed("prometheusrule.yaml")?,
        "the chart's PrometheusRule"
    );
    let monitor = &objects[&key("PodMonitor", ns, "switchyard")];
    assert_eq!(
        monitor,
        &committed("podmonitor.yaml")?,
        "the chart's PodMonitor"
    );
    let dashboard = &objects[&key("ConfigMap", ns, "switchyard-dashboard")];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["switchyard.json"]
        .as_str()
        .ok_or("no dashboard")?;
    let file = repo().join("config/monitoring/switchyard-dashboard.json");
    let committed = std::fs::read_to_string(file)?;
    assert_eq!(
        json.trim_end(),
        committed.trim_end(),
        "the chart's dashboard"
    );
    Ok(())
}

#[test]
fn the_schema_refuses_a_value_of_the_wrong_type() -> TestResult {
    let Some(helm) = helm()? else { return Ok(()) };
    let chart = chart();
    let chart = chart.to_str().ok_or("not UTF-8")?;
    for command in ["lint", "template"] {
        let out = run(
            &helm,
            &[command, chart, "--set=agent.apiServer.port=kubeprism"],
        )?;
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "helm {command} accepted a port that is no number"
        );
        assert!(
            text.contains("/agent/apiServer/port") && text.contains("want integer"),
            "helm {command} does not say which value is wrong: {text}"
        );
    }
    // A misspelt key is refused, not silently ignored.
    let out = run(&helm, &["lint", chart, "--set=agent.imag.tag=v1"])?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("'imag' not allowed"),
        "{text}"
    );
    Ok(())
}

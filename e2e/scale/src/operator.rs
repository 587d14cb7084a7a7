//! Starting the real operator binary the way its Deployment runs it: the
//! literal environment of the Deployment's container (`config/operator/`),
//! here out of cluster with a kubeconfig.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use switchyard_e2e::error::{Error, Result};
use switchyard_e2e::scenario::config_dir;

/// The `name`/`value` environment of the Deployment's container named
/// `operator` (entries taken `valueFrom` the pod are left out). Pure.
pub fn deployment_env(yaml: &str) -> Result<Vec<(String, String)>> {
    let d: Value = serde_yaml::from_str(yaml)
        .map_err(|e| Error::Config(format!("operator Deployment: {e}")))?;
    let containers = d
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Config("operator Deployment has no containers".into()))?;
    let container = containers
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("operator"))
        .ok_or_else(|| Error::Config("operator Deployment has no container `operator`".into()))?;
    let env = container.get("env").and_then(Value::as_array);
    Ok(env
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.get("name")?.as_str()?;
            let value = e.get("value")?.as_str()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect())
}

/// Spawns `binary` with the Deployment's environment, `kubeconfig` and
/// metrics on `127.0.0.1:port`, output to `log`; killed when dropped.
pub fn spawn(
    binary: &Path,
    kubeconfig: &Path,
    port: u16,
    log: &Path,
) -> Result<tokio::process::Child> {
    let manifest = config_dir().join("operator/deployment.yaml");
    let yaml = std::fs::read_to_string(&manifest).map_err(Error::io("reading", &manifest))?;
    let out = std::fs::File::create(log).map_err(Error::io("creating", log))?;
    let err = out.try_clone().map_err(Error::io("cloning", log))?;
    tokio::process::Command::new(binary)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .envs(deployment_env(&yaml)?)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io("spawning", binary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_literal_env_of_the_operator_container() {
        let yaml = std::fs::read_to_string(config_dir().join("operator/deployment.yaml"))
            .expect("config/operator/deployment.yaml");
        let env = deployment_env(&yaml).expect("the Deployment parses");
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("MALLOC_ARENA_MAX"), Some("2"));
        assert!(get("RUST_LOG").is_some());
        assert_eq!(get("POD_NAME"), None, "valueFrom entries are left out");

        let other =
            "spec: {template: {spec: {containers: [{name: sidecar, env: [{name: A, value: b}]}]}}}";
        assert!(deployment_env(other).is_err(), "no operator container");
    }
}

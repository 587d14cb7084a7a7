//! Starting the real operator binary the way its Deployment runs it: the
//! literal environment of the Deployment's container (`config/operator/`),
//! here out of cluster with a kubeconfig for its ServiceAccount, its
//! metrics endpoint on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use switchyard_e2e::cluster::{Cluster, wait_for};
use switchyard_e2e::error::{Error, Result};
use switchyard_e2e::scenario::{config_dir, kubectl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The operator's API identity (its ServiceAccount).
pub const OPERATOR_USER: &str = "system:serviceaccount:switchyard-system:switchyard-operator";

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

/// The operator binary running against the benchmark's cluster.
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    /// Its process id.
    pub pid: i32,
    /// Its output.
    pub log: PathBuf,
    /// When it was spawned (its startup requests are counted from here).
    pub started: DateTime<Utc>,
}

impl Running {
    /// Spawns `binary` as the operator's ServiceAccount, its output to
    /// `work/operator.log`, and waits until its `/readyz` answers (lease
    /// held, caches filled).
    pub async fn start(c: &Cluster, binary: &Path, work: &Path) -> Result<Self> {
        let kc = operator_kubeconfig(c, work).await?;
        let port = free_port()?;
        let log = work.join("operator.log");
        let started = Utc::now();
        let child = spawn(binary, &kc, port, &log)?;
        let pid = child.id().map_or(0, |p| p as i32);
        wait_for(
            "the operator's /readyz (lease held, caches filled)",
            Duration::from_secs(120),
            || async move { ready(port).await.then_some(()) },
        )
        .await?;
        Ok(Self {
            child,
            pid,
            log,
            started,
        })
    }

    /// The error for an operator that is gone before the plan finished.
    pub fn exited(&mut self) -> Error {
        Error::Exited {
            program: "switchyard-operator".into(),
            status: format!("{:?}", self.child.try_wait().ok().flatten()),
            log: self.log.clone(),
        }
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL.
    pub async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// A kubeconfig for the operator's ServiceAccount (a bound token from the
/// TokenRequest API) next to the cluster's admin kubeconfig.
async fn operator_kubeconfig(c: &Cluster, dir: &Path) -> Result<PathBuf> {
    let token = kubectl(
        c,
        &[
            "create",
            "token",
            "switchyard-operator",
            "-n",
            "switchyard-system",
            "--duration=12h",
        ],
    )
    .await?;
    let admin =
        std::fs::read_to_string(c.kubeconfig()).map_err(Error::io("reading", c.kubeconfig()))?;
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&admin).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let cluster = admin["clusters"][0]["cluster"].clone();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token.trim()}}],
        "contexts": [{"name": "operator", "context": {"cluster": "lab", "user": "operator"}}],
        "current-context": "operator",
    });
    let path = dir.join("operator.kubeconfig");
    let text = serde_yaml::to_string(&kc).map_err(|e| Error::Serde(e.to_string()))?;
    std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
    Ok(path)
}

/// `GET /readyz` on the operator's endpoint answers 200.
async fn ready(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    switchyard_e2e::request::parse_response(&buf).is_some_and(|r| r.status == 200)
}

fn free_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding", "127.0.0.1:0"))?;
    Ok(l.local_addr()
        .map_err(Error::io("reading", "local address"))?
        .port())
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
        assert_eq!(get("MALLOC_MMAP_THRESHOLD_"), Some("131072"));
        assert!(get("RUST_LOG").is_some());
        assert_eq!(get("POD_NAME"), None, "valueFrom entries are left out");

        let other =
            "spec: {template: {spec: {containers: [{name: sidecar, env: [{name: A, value: b}]}]}}}";
        assert!(deployment_env(other).is_err(), "no operator container");
    }
}

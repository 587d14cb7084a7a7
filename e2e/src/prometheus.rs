//! A real Prometheus server in the lab, as a cluster's monitoring stack
//! would run it: in the control-plane namespace (it reaches the API server,
//! the nodes and the pod network from there), finding the switchyard pods
//! through the API server with the shipped scrape job
//! (`config/monitoring/scrape-config.yaml`) and evaluating the shipped
//! alerting rules (`config/monitoring/switchyard-rules.yaml`). The tests ask
//! it what a dashboard or an alert would.

pub mod queries;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::binaries::e2e_dir;
use crate::cluster::{Cluster, wait_for};
use crate::control_plane::Process;
use crate::error::{Error, Result};
use crate::pki::Pki;
use crate::request::http_get_within;
use crate::topology::API_PORT;

/// Where Prometheus listens, inside the control-plane namespace.
const LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// How often it scrapes and evaluates the rules: short, so a rate over a
/// few seconds has samples.
const INTERVAL: &str = "1s";

/// One scrape target as Prometheus reports it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its labels after relabelling.
    pub labels: Value,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// The last scrape's error, empty when it succeeded.
    pub error: String,
}

/// A running Prometheus; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    process: Process,
    netns: PathBuf,
}

/// The lab's `prometheus.yml` (pure): the shipped scrape jobs, each
/// discovering pods with `kubeconfig`, and the rule file `rules`.
pub fn config(scrape_config: &str, kubeconfig: &Path, rules: &Path) -> Result<String> {
    let serde = |e: serde_yaml::Error| Error::Serde(format!("scrape config: {e}"));
    let shipped: serde_yaml::Value = serde_yaml::from_str(scrape_config).map_err(serde)?;
    let mut jobs = shipped["scrape_configs"]
        .as_sequence()
        .cloned()
        .ok_or_else(|| Error::Serde("scrape config: no scrape_configs".into()))?;
    for job in &mut jobs {
        let sds = job["kubernetes_sd_configs"].as_sequence_mut();
        for sd in sds.into_iter().flatten() {
            sd["kubeconfig_file"] = kubeconfig.display().to_string().into();
        }
    }
    let config = serde_json::json!({
        "global": { "scrape_interval": INTERVAL, "evaluation_interval": INTERVAL },
        "rule_files": [rules.display().to_string()],
        "scrape_configs": jobs,
    });
    serde_yaml::to_string(&config).map_err(serde)
}

impl Prometheus {
    /// Starts Prometheus for `cluster` (built from its Go module when the
    /// cache is cold) and waits until it is ready.
    pub async fn start(cluster: &Cluster) -> Result<Self> {
        let program = crate::binaries::build_prometheus()?;
        let dir = cluster.state_dir().join("prometheus");
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        let kubeconfig = dir.join("kubeconfig");
        let pki = Pki {
            dir: cluster.state_dir().join("pki"),
        };
        pki.write_kubeconfig(
            "admin",
            &format!("https://127.0.0.1:{API_PORT}"),
            &kubeconfig,
        )?;
        let monitoring = e2e_dir().join("../config/monitoring");
        let shipped = monitoring.join("scrape-config.yaml");
        let text = std::fs::read_to_string(&shipped).map_err(Error::io("reading", &shipped))?;
        let yml = dir.join("prometheus.yml");
        let rules = monitoring.join("switchyard-rules.yaml");
        let rendered = config(&text, &kubeconfig, &rules)?;
        std::fs::write(&yml, rendered).map_err(Error::io("writing", &yml))?;
        let args = [
            format!("--config.file={}", yml.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={LISTEN}"),
        ];
        let placement = cluster.control_plane_placement("monitoring")?;
        let netns = placement.netns.clone().unwrap_or_default();
        let log = cluster.state_dir().join("logs/prometheus.log");
        let process = Process::spawn(&program, &args, &placement, log)?;
        let mut prometheus = Self { process, netns };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..300 {
            self.process.check_running()?;
            if self.get("/-/ready").await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::Timeout {
            what: "Prometheus /-/ready".into(),
            seconds: 60,
        })
    }

    /// GET `path` on Prometheus's HTTP API: the body of a 200 answer.
    async fn get(&self, path: &str) -> Result<String> {
        let timeout = Duration::from_secs(10);
        let r = http_get_within(self.netns.clone(), LISTEN, path.into(), timeout).await?;
        if r.status != 200 {
            return Err(Error::Request {
                what: format!("Prometheus {path}"),
                detail: format!("{}: {}", r.status, r.body),
            });
        }
        Ok(r.body)
    }

    /// The `data` of an API answer at `path`.
    async fn data(&self, path: &str) -> Result<Value> {
        let body = self.get(path).await?;
        let mut answer: Value =
            serde_json::from_str(&body).map_err(|e| Error::Serde(format!("{path}: {e}")))?;
        Ok(answer["data"].take())
    }

    /// The instant vector `expr` evaluates to now (an error for a query
    /// Prometheus refuses).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let data = self.data(&format!("/api/v1/query?{query}")).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits (up to `timeout`) until `expr` has at least one sample.
    pub async fn wait_for_data(&self, expr: &str, timeout: Duration) -> Result<Vec<Value>> {
        wait_for(&format!("data for {expr}"), timeout, || async {
            self.query(expr).await.ok().filter(|r| !r.is_empty())
        })
        .await
    }

    /// The active scrape targets: each one's labels, health (`up`, …) and
    /// last scrape error.
    pub async fn targets(&self) -> Result<Vec<Target>> {
        let data = self.data("/api/v1/targets?state=active").await?;
        let targets = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let field = |t: &Value, k: &str| t[k].as_str().unwrap_or("").to_string();
        Ok(targets
            .into_iter()
            .map(|t| Target {
                health: field(&t, "health"),
                error: field(&t, "lastError"),
                labels: t["labels"].clone(),
            })
            .collect())
    }

    /// Every loaded rule: its name, health (`ok`, `err`, `unknown`) and
    /// last evaluation error.
    pub async fn rules(&self) -> Result<Vec<(String, String, String)>> {
        let data = self.data("/api/v1/rules").await?;
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        let rules = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default());
        let field = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
        Ok(rules
            .map(|r| {
                (
                    field(&r, "name"),
                    field(&r, "health"),
                    field(&r, "lastError"),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_job_discovers_pods_through_the_lab_kubeconfig() {
        let shipped =
            std::fs::read_to_string(e2e_dir().join("../config/monitoring/scrape-config.yaml"))
                .unwrap_or_else(|e| panic!("{e}"));
        let text = config(&shipped, Path::new("/lab/kc"), Path::new("/r.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let got: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let job = &got["scrape_configs"][0];
        assert_eq!(job["job_name"], "switchyard");
        assert_eq!(
            job["kubernetes_sd_configs"][0]["kubeconfig_file"],
            "/lab/kc"
        );
        assert_eq!(job["kubernetes_sd_configs"][0]["role"], "pod");
        assert_eq!(got["rule_files"][0], "/r.yaml");
        assert_eq!(got["global"]["scrape_interval"], INTERVAL);
    }

    #[test]
    fn a_scrape_config_without_jobs_is_an_error() {
        let e = config("global: {}\n", Path::new("/kc"), Path::new("/r"));
        assert!(matches!(e, Err(Error::Serde(m)) if m.contains("no scrape_configs")));
    }
}

//! Steady client traffic for the scenarios: one `switchyard-loadgen` pod per
//! node, each sending requests to every target Service, and their totals.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use serde::Deserialize;
use serde_json::json;

use crate::cluster::{Cluster, wait_for, wait_for_growth};
use crate::error::{Error, Result};

/// One load generator's totals for one target.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// The load generator (pod) these totals are from.
    #[serde(default)]
    pub pod: String,
    pub target: String,
    pub ok: u64,
    pub failed: u64,
    pub first_failure_ms: Option<u128>,
    pub last_failure_ms: Option<u128>,
    pub errors: Vec<String>,
}

/// A load generator's report file.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct LoadReport {
    pub(crate) pod: String,
    #[serde(default)]
    pub(crate) started_ms: u128,
    pub(crate) running: bool,
    pub(crate) targets: Vec<Totals>,
}

/// Reads a JSON report a generator wrote (atomically) to `f`.
pub(crate) fn read_report<T: serde::de::DeserializeOwned>(f: &Path) -> Result<T> {
    let text = std::fs::read_to_string(f).map_err(Error::io("reading", f))?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", f.display())))
}

/// A Service the load generator targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub udp: bool,
}

impl Target {
    /// `tcp://ip:port` or `udp://ip:port`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.udp { "udp" } else { "tcp" },
            self.ip,
            self.port
        )
    }
}

/// Load generators, one pod per node, each sending `rate` requests per
/// second to every target.
#[derive(Debug)]
pub struct Load {
    dir: PathBuf,
    pods: Vec<String>,
    /// Each generator's process start, once it first succeeded.
    started: Vec<u128>,
}

/// Where a load generator's pod goes.
enum Placed<'a> {
    /// Bound to the node, every taint tolerated (as from the start).
    Bound(&'a str),
    /// Left to the scheduler, restricted to the node, tolerating nothing:
    /// it runs as soon as any pod could there.
    Scheduled(&'a str),
}

/// Starts the load generators and waits until each has succeeded once on
/// every target.
pub async fn start_load(c: &Cluster, targets: &[Target], rate: u32) -> Result<Load> {
    let nodes: Vec<&str> = c.plan().nodes.iter().map(|n| n.name.as_str()).collect();
    let placed: Vec<Placed<'_>> = nodes.into_iter().map(Placed::Bound).collect();
    start(c, targets, rate, &placed, Duration::from_secs(60)).await
}

/// Starts one load generator the scheduler puts on `node` (a node that may
/// not take pods yet: a startup taint, a cordon) and waits up to `timeout`
/// until it has succeeded once on every target. Its totals count from its
/// very first request.
pub async fn start_load_scheduled(
    c: &Cluster,
    targets: &[Target],
    rate: u32,
    node: &str,
    timeout: Duration,
) -> Result<Load> {
    start(c, targets, rate, &[Placed::Scheduled(node)], timeout).await
}

/// A load generator's pod.
fn loadgen_pod(name: &str, args: &[String], placed: &Placed<'_>) -> serde_json::Value {
    let mut spec = json!({"terminationGracePeriodSeconds": 10,
        "containers": [{"name": "loadgen", "image": "switchyard/loadgen:dev", "args": args,
            "env": [{"name": "POD_NAME", "value": name}]}]});
    match placed {
        Placed::Bound(node) => {
            spec["nodeName"] = json!(node);
            spec["tolerations"] = json!([{"operator": "Exists"}]);
        }
        Placed::Scheduled(node) => {
            spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "loadgen"}},
        "spec": spec})
}

async fn start(
    c: &Cluster,
    targets: &[Target],
    rate: u32,
    placed: &[Placed<'_>],
    timeout: Duration,
) -> Result<Load> {
    let dir = c.state_dir().join("loadgen");
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut pods = Vec::new();
    for p in placed {
        let (Placed::Bound(node) | Placed::Scheduled(node)) = p;
        let name = format!("loadgen-{run}-{node}");
        let mut args: Vec<String> = targets
            .iter()
            .flat_map(|t| ["--target".to_string(), t.url()])
            .collect();
        args.extend([
            "--rate".into(),
            rate.to_string(),
            "--out".into(),
            dir.join(format!("{name}.json")).display().to_string(),
        ]);
        crate::addons::apply(&c.client(), &loadgen_pod(&name, &args, p)).await?;
        pods.push(name);
    }
    let mut load = Load {
        dir,
        pods,
        started: Vec::new(),
    };
    wait_for(
        "every load generator to succeed once on every target",
        timeout,
        || async {
            let all = load.totals().ok()?;
            (all.len() == load.pods.len() * targets.len() && all.iter().all(|t| t.ok > 0))
                .then_some(())
        },
    )
    .await?;
    load.started = load.read()?.iter().map(|r| r.started_ms).collect();
    Ok(load)
}

impl Load {
    fn read(&self) -> Result<Vec<LoadReport>> {
        self.pods
            .iter()
            .map(|p| read_report(&self.dir.join(format!("{p}.json"))))
            .collect()
    }

    /// The current totals of every generator and target.
    pub fn totals(&self) -> Result<Vec<Totals>> {
        Ok(self
            .read()?
            .into_iter()
            .flat_map(|r| {
                let pod = r.pod;
                r.targets.into_iter().map(move |t| Totals {
                    pod: pod.clone(),
                    ..t
                })
            })
            .collect())
    }

    /// Waits until every generator has finished `n` more requests to every
    /// target than now, so traffic covers what just happened and the time
    /// after it (a failure shortly after a switch is counted, not missed).
    pub async fn wait_for_more(&self, n: u64) -> Result<()> {
        wait_for_growth(
            &format!("{n} more requests from every load generator"),
            n,
            || self.totals(),
            |t: &Totals| t.ok + t.failed,
        )
        .await
    }

    /// Stops the generators (a stop file each polls for), waits for their
    /// final totals, deletes their pods and returns the totals.
    pub async fn stop(self, c: &Cluster) -> Result<Vec<Totals>> {
        let pods: Api<Pod> = Api::namespaced(c.client(), "default");
        let before = pod_restarts(&pods).await?;
        for p in &self.pods {
            let f = self.dir.join(format!("{p}.stop"));
            std::fs::write(&f, "").map_err(Error::io("writing", &f))?;
        }
        let waited = wait_for(
            "the load generators' final totals",
            Duration::from_secs(30),
            || async {
                let reports = self.read().ok()?;
                reports.iter().all(|r| !r.running).then_some(())
            },
        )
        .await;
        if let Err(e) = waited {
            let still: Vec<String> = self
                .pods
                .iter()
                .zip(self.read().unwrap_or_default())
                .filter(|(_, r)| r.running)
                .map(|(p, _)| p.clone())
                .collect();
            let states = pod_states(&pods).await?;
            return Err(Error::Config(format!(
                "{e}; still running: {still:?}; pods: {states:?}; before stopping: {before:?}"
            )));
        }
        let reports = self.read()?;
        let restarted: Vec<&str> = reports
            .iter()
            .zip(&self.started)
            .filter(|(r, s)| r.started_ms != **s)
            .map(|(r, _)| r.pod.as_str())
            .collect();
        if !restarted.is_empty() {
            return Err(Error::Config(format!(
                "load generators {restarted:?} restarted during the run, their totals are partial (pods: {before:?})"
            )));
        }
        crate::teardown::keep_logs(c.name(), c.state_dir());
        for p in &self.pods {
            pods.delete(p, &DeleteParams::default()).await?;
        }
        self.totals()
    }
}

/// The load generator pods.
async fn loadgen_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default().labels("app=loadgen"))
        .await?
        .items)
}

/// Each load generator pod with its containers' restarts (for error messages).
async fn pod_restarts(pods: &Api<Pod>) -> Result<Vec<String>> {
    Ok(loadgen_pods(pods)
        .await?
        .iter()
        .map(|p| {
            let restarts: i32 = p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
                .sum();
            format!(
                "{}: restarts {restarts}",
                p.metadata.name.clone().unwrap_or_default()
            )
        })
        .collect())
}

/// Each load generator pod with its phase and whether it is being deleted (for
/// error messages).
async fn pod_states(pods: &Api<Pod>) -> Result<Vec<String>> {
    Ok(loadgen_pods(pods)
        .await?
        .iter()
        .map(|p| {
            format!(
                "{}: {:?} deleting={}",
                p.metadata.name.clone().unwrap_or_default(),
                p.status.as_ref().and_then(|s| s.phase.clone()),
                p.metadata.deletion_timestamp.is_some()
            )
        })
        .collect())
}

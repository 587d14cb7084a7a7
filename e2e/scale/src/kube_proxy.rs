//! kube-proxy's own programming time (issue #7): a one-node lab cluster
//! running the real kube-proxy (iptables or nftables mode) against the real
//! API server; N selector-less ClusterIP Services, each with one
//! EndpointSlice of 10 endpoints; timed from the first create until every
//! ClusterIP is in the node's rules, then a cold full resync (kube-proxy
//! removed, its rules flushed, started again) and single-EndpointSlice
//! updates. kube-proxy's sync metrics, CPU and RSS come from its metrics
//! endpoint and `/proc`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_testkit::procfs;

use crate::kp_parse::{self, Histogram};
use crate::measure;
use switchyard_e2e::addons::ProxyMode;
use switchyard_e2e::cluster::{Cluster, ClusterConfig, wait_for};
use switchyard_e2e::error::{Error, Result};

/// `endpointslice.kubernetes.io/managed-by` of the benchmark's slices.
pub const MANAGED_BY: &str = "kube-proxy-bench.switchyard.dev";
/// Namespace of the benchmark's Services.
pub const NAMESPACE: &str = "default";
/// Endpoints per Service.
pub const ENDPOINTS: usize = 10;
/// Creates in flight at once.
pub const CONCURRENCY: usize = 16;
const PAUSE_LABEL: &str = "switchyard.dev/kube-proxy-bench-paused";

/// Name of Service `i`.
pub fn service_name(i: usize) -> String {
    format!("kp-{i:05}")
}

/// Address of endpoint `k` of Service `i` (never reached: rule data only).
pub fn endpoint_ip(i: usize, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200 + k as u8, (i / 250) as u8, (i % 250) as u8 + 1)
}

/// The selector-less ClusterIP Service `i`.
pub fn service_object(i: usize) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(i), "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap_or_default()
}

/// Service `i`'s EndpointSlice with [`ENDPOINTS`] ready endpoints.
pub fn slice_object(i: usize) -> EndpointSlice {
    let eps: Vec<_> = (0..ENDPOINTS)
        .map(|k| json!({"addresses": [endpoint_ip(i, k).to_string()], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{}-1", service_name(i)), "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": service_name(i),
                                "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap_or_else(|_| EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Vec::new(),
        metadata: Default::default(),
        ports: None,
    })
}

/// One mode and Service count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KpResult {
    pub mode: String,
    pub services: usize,
    /// Seconds for the API writes (N Services + N EndpointSlices).
    pub create_secs: f64,
    /// First create → every ClusterIP in the rules, seconds.
    pub programmed_secs: f64,
    /// kube-proxy's sync histograms over the create phase (deltas).
    pub create_syncs: BTreeMap<String, Histogram>,
    /// kube-proxy CPU (utime+stime) over the create phase, seconds.
    pub create_cpu_secs: f64,
    /// New kube-proxy process start → every ClusterIP in the flushed rules, seconds.
    pub resync_secs: f64,
    /// The resync had not finished when the wait timed out: `resync_secs`
    /// is the time waited, the other resync figures are as of then.
    #[serde(default)]
    pub resync_unfinished: bool,
    /// The new process's sync histograms when its rules were complete.
    pub resync_syncs: BTreeMap<String, Histogram>,
    /// The new process's CPU until its rules were complete, seconds.
    pub resync_cpu_secs: f64,
    /// Peak RSS (`VmHWM`) of the first and of the restarted process, MiB.
    pub peak_rss_mib: f64,
    pub resync_peak_rss_mib: f64,
    /// EndpointSlice patch sent → new endpoint in the rules, seconds, per run.
    pub incremental_secs: Vec<f64>,
    /// kube-proxy's sync histograms over the incremental runs (deltas).
    pub incremental_syncs: BTreeMap<String, Histogram>,
    /// Seconds one rules read (`iptables-save -t nat` / `nft list table`) took at N.
    pub rules_read_secs: f64,
    /// Lines of the rules dump at N.
    pub rules_lines: usize,
}

/// The node's kube-proxy rules as text.
async fn rules(c: &Cluster, node: &str, mode: ProxyMode) -> Result<String> {
    match mode {
        ProxyMode::Iptables => c.iptables_save(node, "nat").await,
        ProxyMode::Nftables => {
            let out = c
                .exec_on_node(node, &["nft", "list", "table", "ip", "kube-proxy"])
                .await?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }
}

/// Polls the rules every 20 ms until `done` holds; returns when it held.
async fn poll_rules(
    c: &Cluster,
    node: &str,
    mode: ProxyMode,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = rules(c, node, mode).await.unwrap_or_default();
        let at = Instant::now();
        if done(&text) {
            return Ok(at);
        }
        if at > deadline {
            return Err(Error::Timeout {
                what: what.into(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_in(text: &str, vips: &[Ipv4Addr]) -> bool {
    let have = kp_parse::addresses(text);
    vips.iter().all(|v| have.contains(v))
}

/// The running kube-proxy pod's name and process id.
async fn kube_proxy_pid(c: &Cluster) -> Option<(String, i32)> {
    let pods: Api<Pod> = Api::namespaced(c.client(), "kube-system");
    let lp = ListParams::default().labels("k8s-app=kube-proxy");
    for p in pods.list(&lp).await.ok()?.items {
        let name = p.metadata.name.clone()?;
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Ok(rec) = c.pod("kube-system", &name) else {
            continue;
        };
        if let Some(pid) = pid_in(&rec.cgroup, "kube-proxy") {
            return Some((name, pid));
        }
    }
    None
}

/// A process named `comm` in cgroup `dir` or below.
fn pid_in(dir: &Path, comm: &str) -> Option<i32> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if c.trim() == comm {
            return Some(pid);
        }
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| pid_in(&e.path(), comm))
}

async fn sync_metrics(c: &Cluster, node: &str) -> BTreeMap<String, Histogram> {
    match c
        .http_get_from_node(node, Ipv4Addr::LOCALHOST, 10249, "/metrics")
        .await
    {
        Ok(r) if r.status == 200 => kp_parse::sync_histograms(&kp_parse::metrics(&r.body)),
        Ok(r) => {
            tracing::warn!(status = r.status, "kube-proxy /metrics");
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "kube-proxy /metrics");
            BTreeMap::new()
        }
    }
}

fn delta(
    after: &BTreeMap<String, Histogram>,
    before: &BTreeMap<String, Histogram>,
) -> BTreeMap<String, Histogram> {
    after
        .iter()
        .map(|(k, h)| {
            (
                k.clone(),
                h.since(before.get(k).copied().unwrap_or_default()),
            )
        })
        .collect()
}

/// How long ago process `pid` started.
fn age(pid: i32) -> Option<Duration> {
    let stat = procfs::read_stat(pid)?;
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let started = procfs::stat_start_ticks(&stat)? as f64 / procfs::ticks_per_sec();
    Some(Duration::from_secs_f64(
        (procfs::uptime_secs(&up)? - started).max(0.0),
    ))
}

/// Creates the Services and their slices; returns the ClusterIPs in creation order.
async fn create_all(c: &Cluster, n: usize) -> Result<Vec<Ipv4Addr>> {
    let svcs: Api<Service> = Api::namespaced(c.client(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(c.client(), NAMESPACE);
    let pp = PostParams::default();
    futures::stream::iter((0..n).map(|i| {
        let (svcs, slices, pp) = (svcs.clone(), slices.clone(), pp.clone());
        async move {
            let s = svcs.create(&pp, &service_object(i)).await?;
            slices.create(&pp, &slice_object(i)).await?;
            s.spec
                .and_then(|s| s.cluster_ip)
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .ok_or_else(|| Error::NotFound(format!("ClusterIP of {}", service_name(i))))
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect()
    .await
}

async fn set_paused(c: &Cluster, paused: bool) -> Result<()> {
    let ds: Api<DaemonSet> = Api::namespaced(c.client(), "kube-system");
    let v = if paused { json!("true") } else { json!(null) };
    let patch = json!({"spec": {"template": {"spec": {"nodeSelector": {PAUSE_LABEL: v}}}}});
    ds.patch("kube-proxy", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Removes kube-proxy's rules from the node (it leaves them on exit).
async fn flush(c: &Cluster, node: &str, mode: ProxyMode) -> Result<()> {
    let cmds: &[&[&str]] = match mode {
        ProxyMode::Iptables => &[
            &["iptables", "-t", "nat", "-F"],
            &["iptables", "-t", "nat", "-X"],
        ],
        ProxyMode::Nftables => &[&["nft", "delete", "table", "ip", "kube-proxy"]],
    };
    for argv in cmds {
        let out = c.exec_on_node(node, argv).await?;
        if !out.status.success() {
            return Err(Error::Command {
                command: argv.join(" "),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    Ok(())
}

/// The default longest wait for one step with `n` Services.
pub fn default_timeout(n: usize) -> Duration {
    Duration::from_secs(300 + n as u64 / 10)
}

/// One full measurement: cluster up, create, resync, incremental, down;
/// `timeout` bounds each wait for kube-proxy.
pub async fn run_once(
    mode: ProxyMode,
    n: usize,
    incremental_runs: usize,
    timeout: Duration,
) -> Result<KpResult> {
    let cluster = Cluster::start(ClusterConfig {
        nodes: 1,
        proxy_mode: mode,
        rbac_audit: false,
        ..ClusterConfig::default()
    })
    .await?;
    let r = measure_on(&cluster, mode, n, incremental_runs, timeout).await;
    cluster.teardown();
    r
}

/// The node and kube-proxy mode one measurement runs on, and the longest
/// wait for kube-proxy.
#[derive(Clone, Copy, Debug)]
struct On<'a> {
    c: &'a Cluster,
    node: &'a str,
    mode: ProxyMode,
    timeout: Duration,
}

impl On<'_> {
    /// Polls the node's rules until `done` holds.
    async fn poll(&self, what: &str, done: impl Fn(&str) -> bool) -> Result<Instant> {
        poll_rules(self.c, self.node, self.mode, what, self.timeout, done).await
    }
}

/// The create phase: kube-proxy's samples before and after, the times.
#[derive(Debug)]
struct Created {
    vips: Vec<Ipv4Addr>,
    create_secs: f64,
    programmed_secs: f64,
    m0: BTreeMap<String, Histogram>,
    m1: BTreeMap<String, Histogram>,
    p0: measure::ProcSample,
    p1: measure::ProcSample,
    rules_read_secs: f64,
    rules_lines: usize,
}

/// The full resync of a new kube-proxy process.
#[derive(Debug)]
struct Resynced {
    secs: f64,
    unfinished: bool,
    syncs: BTreeMap<String, Histogram>,
    p2: measure::ProcSample,
}

async fn measure_on(
    c: &Cluster,
    mode: ProxyMode,
    n: usize,
    incr: usize,
    timeout: Duration,
) -> Result<KpResult> {
    let node = c
        .plan()
        .nodes
        .first()
        .map(|n| n.name.clone())
        .ok_or_else(|| Error::Config("no node".into()))?;
    let on = On {
        c,
        node: node.as_str(),
        mode,
        timeout,
    };
    let pid = first_sync(c, on.node).await?;
    let created = create_phase(on, n, pid).await?;
    let incremental_secs = incremental(on, n, incr).await?;
    let m2 = sync_metrics(c, on.node).await;
    let peak_rss_mib = measure::sample(pid).unwrap_or_default().hwm_kib as f64 / 1024.0;
    let resynced = full_resync(on, pid, &created.vips).await?;
    Ok(KpResult {
        mode: mode.as_str().into(),
        services: n,
        create_secs: created.create_secs,
        programmed_secs: created.programmed_secs,
        create_syncs: delta(&created.m1, &created.m0),
        create_cpu_secs: created.p1.cpu_secs - created.p0.cpu_secs,
        resync_secs: resynced.secs,
        resync_unfinished: resynced.unfinished,
        resync_syncs: resynced.syncs,
        resync_cpu_secs: resynced.p2.cpu_secs,
        peak_rss_mib,
        resync_peak_rss_mib: resynced.p2.hwm_kib as f64 / 1024.0,
        incremental_secs,
        incremental_syncs: delta(&m2, &created.m1),
        rules_read_secs: created.rules_read_secs,
        rules_lines: created.rules_lines,
    })
}

/// Waits for kube-proxy's process and its initial sync (the `kubernetes`
/// Service); returns its process id.
async fn first_sync(c: &Cluster, node: &str) -> Result<i32> {
    let (_, pid) = wait_for("kube-proxy's process", Duration::from_secs(60), || {
        kube_proxy_pid(c)
    })
    .await?;
    wait_for(
        "kube-proxy's first sync",
        Duration::from_secs(60),
        || async {
            let m = sync_metrics(c, node).await;
            m.get("kubeproxy_sync_proxy_rules_duration_seconds")
                .is_some_and(|h| h.count >= 1.0)
                .then_some(())
        },
    )
    .await?;
    Ok(pid)
}

/// Creates the `n` Services and slices and waits for every ClusterIP in
/// the rules; then times one rules read.
async fn create_phase(on: On<'_>, n: usize, pid: i32) -> Result<Created> {
    let (c, node) = (on.c, on.node);
    let m0 = sync_metrics(c, node).await;
    let p0 = measure::sample(pid).unwrap_or_default();

    let t0 = Instant::now();
    let vips = create_all(c, n).await?;
    let create_secs = t0.elapsed().as_secs_f64();
    tracing::info!(n, secs = create_secs, "Services and EndpointSlices created");
    let done = on
        .poll("every ClusterIP in kube-proxy's rules", |t| {
            all_in(t, &vips)
        })
        .await?;
    let programmed_secs = (done - t0).as_secs_f64();
    let p1 = measure::sample(pid).unwrap_or_default();
    let m1 = sync_metrics(c, node).await;
    let read0 = Instant::now();
    let text = rules(c, node, on.mode).await?;
    let rules_read_secs = read0.elapsed().as_secs_f64();
    let rules_lines = text.lines().count();
    tracing::info!(n, secs = programmed_secs, "programmed");
    Ok(Created {
        vips,
        create_secs,
        programmed_secs,
        m0,
        m1,
        p0,
        p1,
        rules_read_secs,
        rules_lines,
    })
}

/// Incremental: swaps one endpoint of one slice among `n`, `runs` times;
/// seconds from each write to the new endpoint in the rules.
async fn incremental(on: On<'_>, n: usize, runs: usize) -> Result<Vec<f64>> {
    let slices: Api<EndpointSlice> = Api::namespaced(on.c.client(), NAMESPACE);
    let mut incremental_secs = Vec::new();
    for r in 0..runs {
        let i = (r * 7919 + n / 2) % n;
        let fresh = Ipv4Addr::new(10, 222, r as u8, 1);
        let mut s = slice_object(i);
        if let Some(e) = s.endpoints.first_mut() {
            e.addresses = vec![fresh.to_string()];
        }
        let name = format!("{}-1", service_name(i));
        let t = Instant::now();
        slices
            .replace(&name, &PostParams::default(), &{
                let mut cur = slices.get(&name).await?;
                cur.endpoints = s.endpoints;
                cur
            })
            .await?;
        let seen = on
            .poll("the swapped endpoint in the rules", |txt| {
                kp_parse::has_endpoint(txt, fresh)
            })
            .await?;
        incremental_secs.push((seen - t).as_secs_f64());
    }
    Ok(incremental_secs)
}

/// Full resync: takes kube-proxy (process `pid`) off the node, flushes its
/// rules, starts it again and times the new process to every ClusterIP.
async fn full_resync(on: On<'_>, pid: i32, vips: &[Ipv4Addr]) -> Result<Resynced> {
    let (c, node, mode, timeout) = (on.c, on.node, on.mode, on.timeout);
    set_paused(c, true).await?;
    wait_for("the old kube-proxy to exit", timeout, || async {
        (!Path::new(&format!("/proc/{pid}")).exists() && kube_proxy_pid(c).await.is_none())
            .then_some(())
    })
    .await?;
    flush(c, node, mode).await?;
    let empty = rules(c, node, mode).await.unwrap_or_default();
    if vips.iter().any(|v| kp_parse::addresses(&empty).contains(v)) {
        return Err(Error::Config(
            "kube-proxy's rules survived the flush".into(),
        ));
    }
    set_paused(c, false).await?;
    let (_, pid2) = wait_for("the new kube-proxy's process", timeout, || {
        kube_proxy_pid(c)
    })
    .await?;
    let started = Instant::now() - age(pid2).unwrap_or_default();
    // A resync that outlasts the timeout is a result too (kube-proxy's
    // iptables mode at 10 000 Services on the nft backend): recorded as
    // unfinished after the time waited, with what the process had done.
    let (secs, unfinished) = match on
        .poll("every ClusterIP after the restart", |t| all_in(t, vips))
        .await
    {
        Ok(done2) => ((done2 - started).as_secs_f64(), false),
        Err(Error::Timeout { .. }) => {
            let waited = started.elapsed().as_secs_f64();
            tracing::warn!(n = vips.len(), secs = waited, "resync unfinished");
            (waited, true)
        }
        Err(e) => return Err(e),
    };
    let p2 = measure::sample(pid2).unwrap_or_default();
    let syncs = sync_metrics(c, node).await;
    Ok(Resynced {
        secs,
        unfinished,
        syncs,
        p2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn objects_are_selectorless_services_with_labelled_slices() {
        let s = service_object(42);
        assert_eq!(s.metadata.name.as_deref(), Some("kp-00042"));
        let spec = s.spec.unwrap_or_default();
        assert!(spec.selector.is_none());
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let e = slice_object(42);
        let labels = e.metadata.labels.unwrap_or_default();
        assert_eq!(labels["kubernetes.io/service-name"], "kp-00042");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
        assert!(
            MANAGED_BY.len() <= 63
                && MANAGED_BY
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "a label value (no '/')"
        );
        assert_eq!(e.endpoints.len(), ENDPOINTS);
        let ips: HashSet<_> = (0..10_000)
            .flat_map(|i| (0..ENDPOINTS).map(move |k| endpoint_ip(i, k)))
            .collect();
        assert_eq!(
            ips.len(),
            10_000 * ENDPOINTS,
            "endpoint addresses are distinct"
        );
    }
}

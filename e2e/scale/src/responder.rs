//! The fast fake node side of the operator scale benchmark: one task plays
//! every simulated node's switchyard agent (creates its `NodeDatapath`,
//! answers spec changes with the status a healthy agent reports, renews its
//! node's Lease as the agent does) and one plays the kubelet for the
//! kube-proxy pods bound to simulated nodes ([`crate::kubelet`]).
//!
//! The answers are decided by the pure [`answer`]; the tasks only move
//! objects between it and the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use switchyard_api::{
    AGENT_LEASE_DURATION_SECS, AGENT_LEASE_NAMESPACE, Capabilities, CleanupResult, DatapathMode,
    INGRESS_ATTACH_TYPE, IngressStatus, NodeDatapath, NodeDatapathSpec, NodeDatapathStatus,
    ProbeOutcome, ProbeResult,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use switchyard_e2e::error::Result;

/// Field manager of the simulated agents' status writes.
pub const AGENT_MANAGER: &str = "switchyard-agent-sim";
/// Requests the responder keeps in flight at once.
pub(crate) const CONCURRENCY: usize = 32;

/// Counters of what the responder wrote (its API traffic is not the
/// operator's and is excluded from the operator's request counts).
#[derive(Debug, Default)]
pub struct Counters {
    /// NodeDatapath status writes answering a spec change.
    pub answers: AtomicU64,
    /// Lease renewals (the agents' heartbeats).
    pub heartbeats: AtomicU64,
    /// Pod status writes and deletions (the kubelet's part).
    pub pod_writes: AtomicU64,
    /// Writes that failed (retried by the next event or renewal).
    pub errors: AtomicU64,
}

/// The capabilities a capable node reports.
pub fn capable(kernel: &str) -> Capabilities {
    Capabilities {
        kernel: kernel.to_string(),
        btf: true,
        cgroup2: Some("/sys/fs/cgroup".into()),
        bpffs: Some("/sys/fs/bpf".into()),
        attach_types: [
            "connect4",
            "sendmsg4",
            "recvmsg4",
            "getpeername4",
            "sock_release",
        ]
        .iter()
        .map(|h| format!("cgroup/{h}"))
        .chain([INGRESS_ATTACH_TYPE.to_string()])
        .collect(),
        missing: Vec::new(),
        ingress_missing: Vec::new(),
        iptables_backends: vec!["nft".into()],
        nftables: true,
        ipvs: false,
    }
}

/// The status a freshly started, capable agent reports (datapath off).
pub fn initial(services: u32, now: Timestamp) -> NodeDatapathStatus {
    let mut s = NodeDatapathStatus {
        agent_version: Some("simulated".into()),
        capabilities: Some(capable("simulated")),
        active_mode: Some(DatapathMode::Off),
        heartbeat: Some(Time(now)),
        ingress: Some(IngressStatus {
            interfaces: vec!["eth0".into()],
            ..IngressStatus::default()
        }),
        ..NodeDatapathStatus::default()
    };
    set_sync(&mut s, services, now);
    s
}

fn set_sync(s: &mut NodeDatapathStatus, services: u32, now: Timestamp) {
    s.sync.services_seen = services;
    s.sync.services_programmed = services;
    s.sync.backends_programmed = services;
    s.sync.frontends_programmed = services;
    s.sync.progress = format!("{services}/{services}");
    s.sync.last_sync_time = Some(Time(now));
}

fn ready(s: &mut NodeDatapathStatus, mode: DatapathMode, now: Timestamp) {
    let (reason, message) = match mode {
        DatapathMode::Active => ("Active", "datapath active and synced"),
        DatapathMode::Off => ("Off", "datapath off"),
    };
    let cond = Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: None,
    };
    s.conditions.retain(|c| c.type_ != "Ready");
    s.conditions.push(cond);
}

/// What a healthy agent reports after reading `spec`, given what it
/// reported last: the mode in effect follows the spec with every Service
/// programmed, a new cleanup request succeeds (no leftovers), a new probe
/// request passes every probe with the requested consecutive successes.
/// `None` when the spec asks for nothing new.
pub fn answer(
    spec: &NodeDatapathSpec,
    current: &NodeDatapathStatus,
    services: u32,
    now: Timestamp,
) -> Option<NodeDatapathStatus> {
    let mut s = current.clone();
    if s.active_mode != Some(spec.mode) {
        s.active_mode = Some(spec.mode);
        set_sync(&mut s, services, now);
        ready(&mut s, spec.mode, now);
    }
    if let Some(req) = &spec.cleanup
        && s.cleanup
            .as_ref()
            .is_none_or(|c| c.observed_generation < req.generation)
    {
        s.cleanup = Some(CleanupResult {
            observed_generation: req.generation,
            succeeded: true,
            removed: 0,
            message: Some("removed 0 kube-proxy objects (simulated node)".into()),
            completed_at: Some(Time(now)),
        });
    }
    if let Some(req) = &spec.probe
        && s.probe
            .as_ref()
            .is_none_or(|p| p.observed_generation < req.generation)
    {
        s.probe = Some(ProbeResult {
            observed_generation: req.generation,
            passed: true,
            results: req
                .probes
                .iter()
                .map(|p| ProbeOutcome {
                    name: p.name.clone(),
                    target: format!("{}/{}:{}", p.service.namespace, p.service.name, p.port),
                    passed: true,
                    successes: req.consecutive_successes,
                    failures: 0,
                    ..ProbeOutcome::default()
                })
                .collect(),
            completed_at: Some(Time(now)),
        });
    }
    if let Some(req) = &spec.peer_probe
        && s.peer_probe
            .as_ref()
            .is_none_or(|p| p.observed_generation < req.generation)
    {
        s.peer_probe = Some(ProbeResult {
            observed_generation: req.generation,
            passed: true,
            results: req
                .targets
                .iter()
                .map(|t| ProbeOutcome {
                    name: t.name.clone(),
                    node: Some(t.node.clone()),
                    target: format!("{}:{}/{:?}", t.address, t.port, t.protocol),
                    passed: true,
                    successes: req.consecutive_successes,
                    ..ProbeOutcome::default()
                })
                .collect(),
            completed_at: Some(Time(now)),
        });
    }
    (s != *current).then(|| {
        s.heartbeat = Some(Time(now));
        s
    })
}

/// The simulated nodes' agents and kubelets.
#[derive(Debug)]
pub struct Responder {
    /// What it wrote.
    pub counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

type Statuses = Arc<HashMap<String, Mutex<NodeDatapathStatus>>>;

async fn write_status(api: &Api<NodeDatapath>, node: &str, s: &NodeDatapathStatus) -> Result<()> {
    let body = json!({
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "NodeDatapath",
        "status": s,
    });
    api.patch_status(
        node,
        &PatchParams::apply(AGENT_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

/// Node `node`'s Lease, renewed at `now` (held by the node, as the agent
/// holds it).
fn lease(node: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(AGENT_LEASE_DURATION_SECS),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Each node's Lease as last written (its resourceVersion makes the next
/// renewal one conditional update, as the agent's).
type Leases = Arc<HashMap<String, Mutex<Lease>>>;

impl Responder {
    /// Creates every node's NodeDatapath with a capable, fresh status and
    /// its Lease (as each agent does when it starts), then starts answering.
    pub async fn start(
        client: Client,
        nodes: &[String],
        services: u32,
        heartbeat: Duration,
    ) -> Result<Self> {
        let api: Api<NodeDatapath> = Api::all(client.clone());
        let lease_api: Api<Lease> = Api::namespaced(client.clone(), AGENT_LEASE_NAMESPACE);
        let now = Timestamp::now();
        let statuses: Statuses = Arc::new(
            nodes
                .iter()
                .map(|n| (n.clone(), Mutex::new(initial(services, now))))
                .collect(),
        );
        futures::stream::iter(nodes.iter().map(|n| {
            let api = api.clone();
            let statuses = statuses.clone();
            async move {
                let obj = NodeDatapath::new(n, NodeDatapathSpec::default());
                let pp = PostParams {
                    field_manager: Some(AGENT_MANAGER.into()),
                    ..PostParams::default()
                };
                match api.create(&pp, &obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                let Some(status) = statuses.get(n) else {
                    return Ok(());
                };
                let st = status.lock().await;
                write_status(&api, n, &st).await
            }
        }))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        let leases: Leases = Arc::new(
            futures::stream::iter(nodes.iter().map(|n| {
                let api = lease_api.clone();
                async move {
                    let pp = PostParams {
                        field_manager: Some(AGENT_MANAGER.into()),
                        ..PostParams::default()
                    };
                    let written = match api.create(&pp, &lease(n, now)).await {
                        Ok(l) => l,
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            let mut current = api.get(n).await?;
                            current.spec = lease(n, now).spec;
                            api.replace(n, &pp, &current).await?
                        }
                        Err(e) => return Err(switchyard_e2e::Error::from(e)),
                    };
                    Ok((n.clone(), Mutex::new(written)))
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<HashMap<_, _>>()
            .await?,
        );

        let counters = Arc::new(Counters::default());
        let node_ips: Arc<BTreeMap<String, String>> = Arc::new(
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), crate::node_ip(i)))
                .collect(),
        );
        let tasks = vec![
            tokio::spawn(answer_specs(
                api.clone(),
                statuses.clone(),
                services,
                counters.clone(),
            )),
            tokio::spawn(heartbeats(
                lease_api,
                leases,
                nodes.to_vec(),
                heartbeat,
                counters.clone(),
            )),
            tokio::spawn(crate::kubelet::run(client, node_ips, counters.clone())),
        ];
        Ok(Self { counters, tasks })
    }
}

async fn answer_specs(
    api: Api<NodeDatapath>,
    statuses: Statuses,
    services: u32,
    counters: Arc<Counters>,
) {
    watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .for_each_concurrent(CONCURRENCY, |ev| {
            let (api, statuses, counters) = (api.clone(), statuses.clone(), counters.clone());
            async move {
                let Ok(ndp) = ev else { return };
                let name = ndp.name_any();
                let Some(slot) = statuses.get(&name) else {
                    return;
                };
                // Held across the write so a node's answers land in order.
                let mut st = slot.lock().await;
                if let Some(next) = answer(&ndp.spec, &st, services, Timestamp::now()) {
                    match write_status(&api, &name, &next).await {
                        Ok(()) => {
                            *st = next;
                            counters.answers.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(node = %name, error = %e, "simulated agent status");
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
        .await;
}

/// Each node renews its Lease every `period` (as the agent's heartbeat
/// does), spread evenly over the period; no status is written.
async fn heartbeats(
    api: Api<Lease>,
    leases: Leases,
    nodes: Vec<String>,
    period: Duration,
    counters: Arc<Counters>,
) {
    let slots = period.as_secs().max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // As the agent: a slot renewed late is not followed by the missed
    // slots at once (a backlog would burst into the window at rest).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    loop {
        tick.tick().await;
        let slot_now = n % slots;
        n += 1;
        let due: Vec<String> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| i % slots == slot_now)
            .map(|(_, node)| node.clone())
            .collect();
        let beats = due.into_iter().map(|node| {
            let (api, leases, counters) = (api.clone(), leases.clone(), counters.clone());
            renew(api, leases, node, counters)
        });
        futures::stream::iter(beats)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }
}

/// One renewal: the Lease last written with a new `renewTime` (read again
/// first when the last renewal failed).
async fn renew(api: Api<Lease>, leases: Leases, node: String, counters: Arc<Counters>) {
    let Some(slot) = leases.get(&node) else {
        return;
    };
    let mut last = slot.lock().await;
    let mut next = last.clone();
    if let Some(spec) = next.spec.as_mut() {
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
    let pp = PostParams {
        field_manager: Some(AGENT_MANAGER.into()),
        ..PostParams::default()
    };
    match api.replace(&node, &pp, &next).await {
        Ok(written) => {
            *last = written;
            counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(current) = api.get(&node).await {
                *last = current;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_api::{CleanupRequest, Probe, ProbeProtocol, ProbeRequest, ServiceRef};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_agent_follows_the_spec_once_per_request() {
        let s0 = initial(3, t(100));
        assert!(s0.capabilities.as_ref().is_some_and(Capabilities::capable));
        let off = NodeDatapathSpec::default();
        assert_eq!(answer(&off, &s0, 3, t(101)), None, "nothing new asked");

        let mut spec = NodeDatapathSpec {
            mode: DatapathMode::Active,
            ..NodeDatapathSpec::default()
        };
        let s1 = answer(&spec, &s0, 3, t(102)).expect("activates");
        assert_eq!(s1.active_mode, Some(DatapathMode::Active));
        assert_eq!(s1.sync.services_programmed, s1.sync.services_seen);
        assert_eq!(s1.heartbeat, Some(Time(t(102))));
        assert_eq!(answer(&spec, &s1, 3, t(103)), None, "idempotent");

        spec.cleanup = Some(CleanupRequest {
            generation: 2,
            dry_run: false,
        });
        spec.probe = Some(ProbeRequest {
            generation: 1,
            probes: vec![Probe {
                name: "api-server".into(),
                service: ServiceRef {
                    namespace: "default".into(),
                    name: "kubernetes".into(),
                },
                port: 443,
                protocol: ProbeProtocol::TCP,
                http_path: None,
            }],
            timeout_seconds: 5,
            consecutive_successes: 3,
        });
        let s2 = answer(&spec, &s1, 3, t(104)).expect("answers both requests");
        let c = s2.cleanup.as_ref().expect("cleanup answered");
        assert!(c.succeeded && c.observed_generation == 2);
        let p = s2.probe.as_ref().expect("probe answered");
        assert!(p.passed && p.observed_generation == 1 && p.results[0].successes == 3);
        assert_eq!(answer(&spec, &s2, 3, t(105)), None);

        let s3 = answer(&NodeDatapathSpec::default(), &s2, 3, t(106)).expect("turns off");
        assert_eq!(s3.active_mode, Some(DatapathMode::Off));
    }
}

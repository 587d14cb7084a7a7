//! The kube I/O shell around the planner. Per reconcile it gathers the
//! objects (most from the caches its watches fill, a few read fresh), asks
//! the planner, records the status (status subresource, server-side
//! apply), then applies the actions.
//!
//! - `watches`: the watches into the caches, and which events reconcile;
//! - `cached`, `pods`: what a cache keeps of each object;
//! - `triggers`: which changes are worth a reconcile;
//! - `observe`: the objects turned into the planner's snapshot (pure);
//! - `apply`, `events`: the actions written back, Events among them;
//! - `kube_proxy`, `external`, `api_endpoints`, `finalizer`, `leader`:
//!   what each of those reads or writes of one kind of object.

pub mod api_endpoints;
pub mod apply;
pub mod cached;
pub mod events;
pub mod expectations;
pub mod external;
pub mod finalizer;
pub mod kube_proxy;
pub mod leader;
pub mod observe;
pub mod pods;
pub mod triggers;
pub mod watches;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::IgnoredAny;
use switchyard_api::{
    API_VERSION, FIELD_MANAGER, MigrationPlan, MigrationPlanStatus, NodeDatapath,
};
use tracing::{Instrument, info, info_span, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::planner::{self, Input};

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the operator (backups, lease).
    pub namespace: String,
    /// Namespace watched for kube-proxy's DaemonSet and pods.
    pub kube_proxy_namespace: String,
    /// Where to serve Hubble's Peer API ([`crate::peer`]), if anywhere.
    pub peer_addr: Option<std::net::SocketAddr>,
}

/// Shared state of the reconciles.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub events: events::Publisher,
    pub metrics: Arc<Metrics>,
    nodes: Store<cached::SlimNode>,
    datapaths: Store<NodeDatapath>,
    /// The agents' liveness Leases.
    leases: Store<Lease>,
    /// The DaemonSets of the watched kube-proxy namespace.
    daemon_sets: Store<DaemonSet>,
    /// The pods of the watched kube-proxy namespace, slimmed.
    pods: Store<pods::SlimPod>,
    plans: Store<MigrationPlan>,
    /// Every Service, slimmed to its external frontends' fields.
    services: Store<Service>,
    /// The `default/kubernetes` EndpointSlices: the API server's endpoints.
    kubernetes: Store<EndpointSlice>,
    /// The node writes the caches have not shown yet.
    expectations: expectations::Expectations,
    /// The plan statuses recorded that the plan cache has not shown yet.
    recorded: expectations::Expectations<()>,
    /// The API server endpoints ConfigMap the agents mount.
    api_endpoints: api_endpoints::Publisher,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish()
    }
}

/// Fails with [`Error::CrdsMissing`] when the API server does not know the CRDs.
pub async fn check_crds(client: &Client) -> Result<()> {
    let lp = ListParams::default().limit(1);
    for r in [
        Api::<MigrationPlan>::all(client.clone())
            .list_metadata(&lp)
            .await
            .map(|_| ()),
        Api::<NodeDatapath>::all(client.clone())
            .list_metadata(&lp)
            .await
            .map(|_| ()),
    ] {
        match r {
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(Error::CrdsMissing),
            r => r?,
        }
    }
    Ok(())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let (nodes, nodes_w) = reflector::store();
    let (datapaths, datapaths_w) = reflector::store();
    let (services, services_w) = reflector::store();
    let (leases, leases_w) = reflector::store();
    // The server ends each watch after 45 s, inside the client's 60 s read
    // timeout, so an idle watch is never mistaken for a dead connection.
    let wc = watcher::Config::default().timeout(45);
    let nodes_changed = Arc::new(tokio::sync::Notify::new());
    let mut triggers = watches::inputs(&client, &wc, nodes_w, datapaths_w, &nodes_changed);
    let (daemon_sets, daemon_sets_w) = reflector::store();
    let (kube_proxy_pods, pods_w) = reflector::store();
    triggers.push(watches::kube_proxy(
        &client,
        &settings.kube_proxy_namespace,
        &wc,
        daemon_sets_w,
        pods_w,
    ));
    triggers.push(watches::services(&client, &wc, services_w));
    triggers.push(watches::leases(&client, &wc, leases_w));
    let (kubernetes, kubernetes_w) = reflector::store();
    let endpoint_changes = watches::kubernetes_endpoints(&client, &wc, kubernetes_w);

    let (plans, plans_w) = reflector::store();
    let plan_events = watches::plans(&client, &wc, plans_w);
    let controller = Controller::for_stream(plan_events, plans.clone())
        .reconcile_all_on(triggers)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Context {
        events: events::Publisher::new(client.clone(), std::env::var("POD_NAME").ok()),
        client,
        settings,
        metrics: metrics.clone(),
        nodes: nodes.clone(),
        datapaths: datapaths.clone(),
        leases,
        daemon_sets,
        pods: kube_proxy_pods,
        plans,
        services,
        kubernetes,
        expectations: expectations::Expectations::default(),
        recorded: expectations::Expectations::default(),
        api_endpoints: api_endpoints::Publisher::new(),
    });
    if let Some(addr) = ctx.settings.peer_addr {
        crate::peer::spawn(addr, nodes.clone(), datapaths.clone(), nodes_changed);
    }
    spawn_readiness(ctx.clone());
    tokio::spawn(publish_on(endpoint_changes, ctx.clone()));

    controller
        .run(reconcile, error_policy, ctx)
        .for_each(after_reconcile)
        .await;
    Ok(())
}

/// After each reconcile: its failure logged, the heap it freed returned.
fn after_reconcile<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> future::Ready<()> {
    if let Err(e) = r {
        warn!(error = %e, "reconcile failed");
    }
    switchyard_daemon::release_freed_memory();
    future::ready(())
}

/// Ready once every cache is filled. The initial lists were decoded
/// before being slimmed: give that heap back at once, not at the first
/// reconcile (there is none until a plan exists).
fn spawn_readiness(ctx: Arc<Context>) {
    tokio::spawn(async move {
        if caches_filled(&ctx).await {
            switchyard_daemon::release_freed_memory();
            ctx.metrics
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

/// Waits for every cache's first list; `false` if a watch was dropped.
/// [`caches_synced`] asks the same without waiting.
async fn caches_filled(ctx: &Context) -> bool {
    ctx.nodes.wait_until_ready().await.is_ok()
        && ctx.datapaths.wait_until_ready().await.is_ok()
        && ctx.services.wait_until_ready().await.is_ok()
        && ctx.leases.wait_until_ready().await.is_ok()
        && ctx.daemon_sets.wait_until_ready().await.is_ok()
        && ctx.pods.wait_until_ready().await.is_ok()
        && ctx.kubernetes.wait_until_ready().await.is_ok()
}

/// The status subresource apply body.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    api_version: &'static str,
    kind: &'static str,
    status: &'a MigrationPlanStatus,
}

/// Publishes the API server's endpoints on every change of them, from the
/// start: an agent that starts while no plan exists (or kube-proxy is gone)
/// finds them mounted. A failed write is retried with the next change or
/// reconcile.
async fn publish_on(changes: futures::stream::BoxStream<'static, ()>, ctx: Arc<Context>) {
    changes
        .for_each(|()| {
            let ctx = ctx.clone();
            async move {
                if let Err(e) = publish_api_endpoints(&ctx).await {
                    warn!(error = %e, "publishing the API server endpoints failed");
                }
            }
        })
        .await;
}

/// Writes `switchyard-api-endpoints` when what it should say changed: the
/// plans' `spec.apiServer` first, then the observed endpoints.
async fn publish_api_endpoints(ctx: &Context) -> Result<()> {
    let slices = ctx.kubernetes.state();
    let plans = ctx.plans.state();
    let slices: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
    let plans: Vec<&MigrationPlan> = plans.iter().map(|p| p.as_ref()).collect();
    let endpoints = api_endpoints::with_hint(
        api_endpoints::hint(&plans).as_deref(),
        &api_endpoints::observed(&slices),
    );
    ctx.api_endpoints
        .publish(&ctx.client, &ctx.settings.namespace, &endpoints)
        .await
}

fn error_policy(plan: Arc<MigrationPlan>, err: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(plan = %plan.name_any(), error = %err, "reconcile error; retrying");
    ctx.metrics.error(&plan.name_any());
    Requeue::requeue(Duration::from_secs(2))
}

async fn reconcile(plan: Arc<MigrationPlan>, ctx: Arc<Context>) -> Result<Requeue> {
    let name = plan.name_any();
    let span = info_span!("reconcile", plan = %name);
    reconcile_inner(plan, ctx).instrument(span).await
}

async fn reconcile_inner(plan: Arc<MigrationPlan>, ctx: Arc<Context>) -> Result<Requeue> {
    if !caches_synced(&ctx) {
        tracing::debug!("caches not synced yet; waiting");
        return Ok(Requeue::requeue(Duration::from_millis(200)));
    }
    if !finalizer::has(&plan) {
        if plan.metadata.deletion_timestamp.is_some() {
            return Ok(Requeue::await_change());
        }
        // Before anything is touched: from now on deleting the plan
        // waits for what `spec.onDeletion` says.
        finalizer::add(&ctx.client, &plan).await?;
        return Ok(Requeue::await_change());
    }
    let name = plan.name_any();
    let version = plan.resource_version();
    if ctx
        .recorded
        .pending(&name, &(), version.as_deref(), Instant::now())
    {
        // The status last recorded is not in the cache yet: deciding on
        // the one before would decide again what was decided then. Its
        // watch event reconciles the plan.
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let started = Instant::now();
    let snapshot = gather(&plan, &ctx).await?;
    // Before any step that could take kube-proxy away: the agents need the
    // list to reconnect without the ClusterIP (and a plan's apiServer).
    publish_api_endpoints(&ctx).await?;
    // The planner decides on every node's progress; the status records
    // most of it per wave (see `MigrationPlanStatus::compacted`).
    let current = plan.status.clone().unwrap_or_default();
    let decision = decide(&plan, &current.expanded(), &snapshot)?;
    if record(&ctx.client, &name, &current, &decision.status.compacted()).await? {
        ctx.recorded.wrote(&name, &(), version, Instant::now());
    }
    act(&plan, &ctx, &decision.actions).await?;
    if decision.release {
        finalizer::remove(&ctx.client, &plan).await?;
        ctx.metrics.forget(&name);
        return Ok(Requeue::await_change());
    }
    ctx.metrics.observe(
        &name,
        &decision.status,
        started.elapsed().as_secs_f64(),
        decision.actions.len(),
    );
    Ok(match decision.requeue_after_secs {
        0 => Requeue::requeue(Duration::from_millis(50)),
        s => Requeue::requeue(Duration::from_secs(s)),
    })
}

/// Never decide on a partial view: a node missing from a cache that is
/// still filling would look gone, a NodeDatapath missing would look
/// unprogrammed, a Lease missing would look like a dead agent (a freshly
/// started or restarted operator).
fn caches_synced(ctx: &Context) -> bool {
    caches_filled(ctx).now_or_never() == Some(true)
}

/// The snapshot the planner decides on. Cached: nodes, datapaths, the
/// agents' Leases, plans, Services (kube-dns among them), kube-proxy's
/// DaemonSet and pods. Read fresh: kube-proxy's ConfigMap, whether kubeadm
/// manages the cluster, the plan's backup.
async fn gather(plan: &MigrationPlan, ctx: &Context) -> Result<planner::Snapshot> {
    let client = &ctx.client;
    let kp = &plan.spec.kube_proxy;
    let (ds, pods) = kube_proxy_objects(plan, ctx).await?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &kp.namespace)
        .get_opt(&kp.config_map)
        .await?;
    let kubeadm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get_metadata_opt("kubeadm-config")
        .await?
        .is_some();
    let backup = Api::<ConfigMap>::namespaced(client.clone(), &ctx.settings.namespace)
        .get_opt(&planner::backup_name(&plan.name_any()))
        .await?;
    let nodes = ctx.nodes.state();
    let datapaths = ctx.datapaths.state();
    let leases = ctx.leases.state();
    let plans = ctx.plans.state();
    let services = ctx.services.state();
    let endpoints = ctx.kubernetes.state();
    let observed = observe::Observed {
        nodes: nodes.iter().map(|n| n.as_ref()).collect(),
        datapaths: datapaths.iter().map(|d| d.as_ref()).collect(),
        leases: leases.iter().map(|l| l.as_ref()).collect(),
        plans: plans.iter().map(|p| p.as_ref()).collect(),
        kube_proxy_daemon_set: ds.as_deref(),
        kube_proxy_config_map: cm.as_ref(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        kubeadm_config: kubeadm,
        backup: backup.as_ref(),
        kubernetes_endpoints: endpoints.iter().map(|s| s.as_ref()).collect(),
        cluster_dns: ctx
            .services
            .get(&reflector::ObjectRef::new("kube-dns").within("kube-system"))
            .is_some(),
        services: services.iter().map(|s| s.as_ref()).collect(),
    };
    Ok(observe::snapshot(plan, &observed))
}

/// kube-proxy's DaemonSet and the pods of its namespace: from the caches
/// when the plan names the watched namespace, read fresh otherwise (a
/// plan naming another one, which the operator's Role must then allow).
async fn kube_proxy_objects(
    plan: &MigrationPlan,
    ctx: &Context,
) -> Result<(Option<Arc<DaemonSet>>, Vec<Arc<pods::SlimPod>>)> {
    let kp = &plan.spec.kube_proxy;
    if kp.namespace == ctx.settings.kube_proxy_namespace {
        let key = reflector::ObjectRef::new(&kp.daemon_set).within(&kp.namespace);
        return Ok((ctx.daemon_sets.get(&key), ctx.pods.state()));
    }
    let ds = Api::<DaemonSet>::namespaced(ctx.client.clone(), &kp.namespace)
        .get_opt(&kp.daemon_set)
        .await?;
    let pods = match ds.as_ref().and_then(match_labels) {
        Some(selector) => pods::list(&ctx.client, &kp.namespace, &selector).await?,
        None => Vec::new(),
    };
    Ok((ds.map(Arc::new), pods.into_iter().map(Arc::new).collect()))
}

/// A DaemonSet's label selector, as a list selector (`None` without one).
fn match_labels(ds: &DaemonSet) -> Option<String> {
    let labels = ds.spec.as_ref()?.selector.match_labels.as_ref()?;
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The planner's decision, at the current time.
fn decide(
    plan: &MigrationPlan,
    current: &MigrationPlanStatus,
    snapshot: &planner::Snapshot,
) -> Result<planner::Decision> {
    Ok(planner::plan(Input {
        plan_name: &plan.name_any(),
        generation: plan.metadata.generation,
        spec: &plan.spec,
        status: current,
        snapshot,
        now: Timestamp::now(),
        deleting: plan.metadata.deletion_timestamp.is_some(),
    })?)
}

/// Records the decided status (status subresource, server-side apply)
/// when it differs from the current one: before any action is applied.
/// Whether it wrote.
async fn record(
    client: &Client,
    name: &str,
    current: &MigrationPlanStatus,
    decided: &MigrationPlanStatus,
) -> Result<bool> {
    if decided == current {
        return Ok(false);
    }
    // Serialized straight from the typed status, without building a
    // `serde_json::Value` of it.
    let body = StatusBody {
        api_version: API_VERSION,
        kind: "MigrationPlan",
        status: decided,
    };
    // The answer is the whole plan again (status and managed fields):
    // only its success matters, so it is parsed without being kept.
    let request = kube::core::Request::new(MigrationPlan::url_path(&(), None))
        .patch_subresource(
            "status",
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request::<IgnoredAny>(request).await?;
    if decided.phase != current.phase {
        info!(from = ?current.phase, to = ?decided.phase, "phase changed");
    }
    Ok(true)
}

/// Applies the decided actions, in the planner's order.
async fn act(plan: &MigrationPlan, ctx: &Context, actions: &[planner::Action]) -> Result<()> {
    let applier = apply::Applier {
        client: ctx.client.clone(),
        plan,
        namespace: &ctx.settings.namespace,
        events: &ctx.events,
        nodes: &ctx.nodes,
        datapaths: &ctx.datapaths,
        expectations: &ctx.expectations,
    };
    applier.apply_all(actions).await
}

//! The kube I/O shell around the planner: watches plans, Nodes,
//! NodeDatapaths, the agents' Leases and kube-proxy; per reconcile gathers the objects, asks the
//! planner, records the status (status subresource, server-side apply), then
//! applies the actions.

pub mod api_endpoints;
pub mod apply;
pub mod external;
pub mod finalizer;
pub mod kube_proxy;
pub mod leader;
pub mod observe;
pub mod pods;
pub mod triggers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::IgnoredAny;
use switchyard_api::{
    AGENT_LEASE_NAMESPACE, API_VERSION, FIELD_MANAGER, MigrationPlan, MigrationPlanStatus,
    NodeDatapath,
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
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    nodes: Store<Node>,
    datapaths: Store<NodeDatapath>,
    /// The agents' liveness Leases.
    leases: Store<Lease>,
    plans: Store<MigrationPlan>,
    /// Every Service, slimmed to its external frontends' fields.
    services: Store<Service>,
    /// The `default/kubernetes` EndpointSlices: the API server's endpoints.
    kubernetes: Store<EndpointSlice>,
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
    let mut triggers = watch_inputs(
        &client,
        &settings,
        &wc,
        nodes_w,
        datapaths_w,
        &nodes_changed,
    );
    triggers.push(watch_services(&client, &wc, services_w));
    triggers.push(watch_leases(&client, &wc, leases_w));
    let (kubernetes, kubernetes_w) = reflector::store();
    let endpoint_changes = watch_kubernetes_endpoints(&client, &wc, kubernetes_w);

    // The plans' own watch, slimmed like the others: the server-side applied
    // status leaves managed fields as big as the status (every node's entry).
    let (plans, plans_w) = reflector::store();
    let plan_events = watcher(Api::<MigrationPlan>::all(client.clone()), wc)
        .default_backoff()
        .modify(|p: &mut MigrationPlan| p.managed_fields_mut().clear())
        .reflect(plans_w)
        .applied_objects();
    let controller = Controller::for_stream(plan_events, plans.clone())
        .reconcile_all_on(triggers)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client,
        settings,
        metrics: metrics.clone(),
        nodes: nodes.clone(),
        datapaths: datapaths.clone(),
        leases,
        plans,
        services,
        kubernetes,
        api_endpoints: api_endpoints::Publisher::new(),
    });
    if let Some(addr) = ctx.settings.peer_addr {
        crate::peer::spawn(addr, nodes.clone(), datapaths.clone(), nodes_changed);
    }
    spawn_readiness(nodes, datapaths, metrics);
    tokio::spawn(publish_on(endpoint_changes, ctx.clone()));

    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| {
            if let Err(e) = r {
                warn!(error = %e, "reconcile failed");
            }
            switchyard_daemon::release_freed_memory();
            future::ready(())
        })
        .await;
    Ok(())
}

/// The watches of what the planner reads besides the plans (Nodes and
/// NodeDatapaths into the caches, kube-proxy's DaemonSet and pods), as one
/// stream of triggers: each change worth a decision reconciles every plan.
/// `changed` is signalled on every Node and NodeDatapath event.
fn watch_inputs(
    client: &Client,
    settings: &Settings,
    wc: &watcher::Config,
    nodes_w: reflector::store::Writer<Node>,
    datapaths_w: reflector::store::Writer<NodeDatapath>,
    changed: &Arc<tokio::sync::Notify>,
) -> futures::stream::SelectAll<futures::stream::BoxStream<'static, ()>> {
    let mut node_changes = triggers::Changes::new(triggers::node_inputs);
    let signal = changed.clone();
    let node_events = watcher(Api::<Node>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(triggers::slim_node)
        .reflect(nodes_w)
        .inspect(move |_| signal.notify_one())
        .filter_map(move |e| future::ready(e.is_ok_and(|e| node_changes.on(&e)).then_some(())));
    let mut datapath_changes = triggers::Changes::new(triggers::datapath_inputs);
    let signal = changed.clone();
    let datapath_events = watcher(Api::<NodeDatapath>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(|d: &mut NodeDatapath| d.managed_fields_mut().clear())
        .reflect(datapaths_w)
        .inspect(move |_| signal.notify_one())
        .filter_map(move |e| future::ready(e.is_ok_and(|e| datapath_changes.on(&e)).then_some(())));
    let kp_ns = &settings.kube_proxy_namespace;
    let ds_events = watcher(
        Api::<PartialObjectMeta<DaemonSet>>::namespaced(client.clone(), kp_ns),
        wc.clone(),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(ok_unit);
    let pod_events = watcher(
        Api::<PartialObjectMeta<Pod>>::namespaced(client.clone(), kp_ns),
        wc.clone(),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(ok_unit);
    futures::stream::select_all([
        node_events.boxed(),
        datapath_events.boxed(),
        ds_events.boxed(),
        pod_events.boxed(),
    ])
}

/// The Services' watch into their cache (slimmed). It triggers nothing:
/// preflight and Verify, which read it, look again on their own requeue.
fn watch_services(
    client: &Client,
    wc: &watcher::Config,
    services_w: reflector::store::Writer<Service>,
) -> futures::stream::BoxStream<'static, ()> {
    watcher(Api::<Service>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(external::slim_service)
        .reflect(services_w)
        .filter_map(|_| future::ready(None))
        .boxed()
}

/// The agents' Leases into their cache (slimmed). Renewals trigger nothing
/// (a thousand agents renew a hundred times a second); a Lease created or
/// taken over by another holder does. An expired Lease is noticed as a
/// silent agent is: the planner requeues itself while it waits.
fn watch_leases(
    client: &Client,
    wc: &watcher::Config,
    leases_w: reflector::store::Writer<Lease>,
) -> futures::stream::BoxStream<'static, ()> {
    watcher(
        Api::<Lease>::namespaced(client.clone(), AGENT_LEASE_NAMESPACE),
        wc.clone(),
    )
    .default_backoff()
    .modify(|l: &mut Lease| l.managed_fields_mut().clear())
    .reflect(leases_w)
    .applied_objects()
    .predicate_filter(triggers::lease_holder, PredicateConfig::default())
    .filter_map(ok_unit)
    .boxed()
}

/// Ready once the node and datapath caches are filled. The initial lists
/// were decoded whole before being slimmed: give that heap back at once,
/// not at the first reconcile (there is none until a plan exists).
fn spawn_readiness(nodes: Store<Node>, datapaths: Store<NodeDatapath>, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        if nodes.wait_until_ready().await.is_ok() && datapaths.wait_until_ready().await.is_ok() {
            switchyard_daemon::release_freed_memory();
            metrics
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

/// The status subresource apply body.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    api_version: &'static str,
    kind: &'static str,
    status: &'a MigrationPlanStatus,
}

/// A watch event as a bare trigger; watch errors are retried by the backoff.
/// The `default/kubernetes` EndpointSlices into their cache; each change
/// is published to the agents ([`publish_on`]), plan or no plan.
fn watch_kubernetes_endpoints(
    client: &Client,
    wc: &watcher::Config,
    writer: reflector::store::Writer<EndpointSlice>,
) -> futures::stream::BoxStream<'static, ()> {
    let wc = wc.clone().labels("kubernetes.io/service-name=kubernetes");
    watcher(
        Api::<EndpointSlice>::namespaced(client.clone(), "default"),
        wc,
    )
    .default_backoff()
    .modify(|s: &mut EndpointSlice| s.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects()
    .filter_map(ok_unit)
    .boxed()
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

fn ok_unit<T>(r: Result<T, watcher::Error>) -> future::Ready<Option<()>> {
    future::ready(r.ok().map(|_| ()))
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
    let started = Instant::now();
    let name = plan.name_any();
    let snapshot = gather(&plan, &ctx).await?;
    // Before any step that could take kube-proxy away: the agents need the
    // list to reconnect without the ClusterIP (and a plan's apiServer).
    publish_api_endpoints(&ctx).await?;
    // The planner decides on every node's progress; the status records
    // most of it per wave (see `MigrationPlanStatus::compacted`).
    let current = plan.status.clone().unwrap_or_default();
    let decision = decide(&plan, &current.expanded(), &snapshot)?;
    record(&ctx.client, &name, &current, &decision.status.compacted()).await?;
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
    filled(&ctx.nodes)
        && filled(&ctx.datapaths)
        && filled(&ctx.services)
        && filled(&ctx.leases)
        && filled(&ctx.kubernetes)
}

/// The cache's first list is in.
fn filled<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

/// The snapshot the planner decides on. Cached: nodes, datapaths, the
/// agents' Leases, plans.
/// Read fresh: kube-proxy's objects and the few single objects the planner
/// needs.
async fn gather(plan: &MigrationPlan, ctx: &Context) -> Result<planner::Snapshot> {
    let client = &ctx.client;
    let kp = &plan.spec.kube_proxy;
    let ds = Api::<DaemonSet>::namespaced(client.clone(), &kp.namespace)
        .get_opt(&kp.daemon_set)
        .await?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &kp.namespace)
        .get_opt(&kp.config_map)
        .await?;
    let kubeadm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get_metadata_opt("kubeadm-config")
        .await?
        .is_some();
    let pods = kube_proxy_pods(client, &kp.namespace, ds.as_ref()).await?;
    let backup = Api::<ConfigMap>::namespaced(client.clone(), &ctx.settings.namespace)
        .get_opt(&planner::backup_name(&plan.name_any()))
        .await?;
    let dns = Api::<Service>::namespaced(client.clone(), "kube-system")
        .get_metadata_opt("kube-dns")
        .await?
        .is_some();
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
        kube_proxy_daemon_set: ds.as_ref(),
        kube_proxy_config_map: cm.as_ref(),
        pods: pods.iter().collect(),
        kubeadm_config: kubeadm,
        backup: backup.as_ref(),
        kubernetes_endpoints: endpoints.iter().map(|s| s.as_ref()).collect(),
        cluster_dns: dns,
        services: services.iter().map(|s| s.as_ref()).collect(),
    };
    Ok(observe::snapshot(plan, &observed))
}

/// kube-proxy's pods: those its DaemonSet's selector matches (none without
/// a DaemonSet or a label selector).
async fn kube_proxy_pods(
    client: &Client,
    namespace: &str,
    ds: Option<&DaemonSet>,
) -> Result<Vec<Pod>> {
    let labels = ds
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.selector.match_labels.as_ref());
    let Some(labels) = labels else {
        return Ok(Vec::new());
    };
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    pods::list(client, namespace, &selector).await
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
async fn record(
    client: &Client,
    name: &str,
    current: &MigrationPlanStatus,
    decided: &MigrationPlanStatus,
) -> Result<()> {
    if decided == current {
        return Ok(());
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
    Ok(())
}

/// Applies the decided actions, in the planner's order.
async fn act(plan: &MigrationPlan, ctx: &Context, actions: &[planner::Action]) -> Result<()> {
    let applier = apply::Applier {
        client: ctx.client.clone(),
        plan,
        namespace: &ctx.settings.namespace,
        recorder: &ctx.recorder,
    };
    applier.apply_all(actions).await
}

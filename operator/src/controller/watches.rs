//! The watches that fill the operator's caches, and which of their events
//! reconcile the plans. Each cache keeps what [`super::cached`] says of its
//! kind; the watch errors are retried with the default backoff.

use std::sync::Arc;

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use switchyard_api::{AGENT_LEASE_NAMESPACE, MigrationPlan, NodeDatapath};

use super::{cached, external, pods, triggers};

/// The plans' own watch into their cache, slimmed like the others: the
/// server-side applied status leaves managed fields as big as the status.
pub fn plans(
    client: &Client,
    wc: &watcher::Config,
    plans_w: reflector::store::Writer<MigrationPlan>,
) -> futures::stream::BoxStream<'static, Result<MigrationPlan, watcher::Error>> {
    watcher(Api::<MigrationPlan>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(|p: &mut MigrationPlan| p.managed_fields_mut().clear())
        .reflect(plans_w)
        .applied_objects()
        .boxed()
}

/// The watches of the Nodes and NodeDatapaths into their caches, as one
/// stream of triggers: each change worth a decision reconciles every plan.
/// `changed` is signalled on every Node and NodeDatapath event.
pub fn inputs(
    client: &Client,
    wc: &watcher::Config,
    nodes_w: reflector::store::Writer<cached::SlimNode>,
    datapaths_w: reflector::store::Writer<NodeDatapath>,
    changed: &Arc<tokio::sync::Notify>,
) -> futures::stream::SelectAll<futures::stream::BoxStream<'static, ()>> {
    let mut node_changes = triggers::Changes::new(triggers::node_inputs);
    let signal = changed.clone();
    let node_events = watcher(Api::<cached::SlimNode>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(cached::slim_node)
        .reflect(nodes_w)
        .inspect(move |_| signal.notify_one())
        .filter_map(move |e| future::ready(e.is_ok_and(|e| node_changes.on(&e)).then_some(())));
    let mut datapath_changes = triggers::Changes::new(triggers::datapath_inputs);
    let signal = changed.clone();
    let datapath_events = watcher(Api::<NodeDatapath>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(cached::slim_datapath)
        .reflect(datapaths_w)
        .inspect(move |_| signal.notify_one())
        .filter_map(move |e| future::ready(e.is_ok_and(|e| datapath_changes.on(&e)).then_some(())));
    futures::stream::select_all([node_events.boxed(), datapath_events.boxed()])
}

/// The DaemonSets and pods of kube-proxy's namespace into their caches
/// (without managed fields; pods slimmed as they are decoded): every
/// change of them reconciles every plan.
pub fn kube_proxy(
    client: &Client,
    namespace: &str,
    wc: &watcher::Config,
    daemon_sets_w: reflector::store::Writer<DaemonSet>,
    pods_w: reflector::store::Writer<pods::SlimPod>,
) -> futures::stream::BoxStream<'static, ()> {
    let ds_events = watcher(
        Api::<DaemonSet>::namespaced(client.clone(), namespace),
        wc.clone(),
    )
    .default_backoff()
    .modify(|d: &mut DaemonSet| d.managed_fields_mut().clear())
    .reflect(daemon_sets_w)
    .touched_objects()
    .filter_map(ok_unit);
    let pod_events = watcher(
        Api::<pods::SlimPod>::namespaced(client.clone(), namespace),
        wc.clone(),
    )
    .default_backoff()
    .modify(pods::slim)
    .reflect(pods_w)
    .touched_objects()
    .filter_map(ok_unit);
    futures::stream::select(ds_events, pod_events).boxed()
}

/// The Services' watch into their cache (slimmed). It triggers nothing:
/// preflight and Verify, which read it, look again on their own requeue.
pub fn services(
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
pub fn leases(
    client: &Client,
    wc: &watcher::Config,
    leases_w: reflector::store::Writer<Lease>,
) -> futures::stream::BoxStream<'static, ()> {
    watcher(
        Api::<Lease>::namespaced(client.clone(), AGENT_LEASE_NAMESPACE),
        wc.clone(),
    )
    .default_backoff()
    .modify(cached::slim_lease)
    .reflect(leases_w)
    .applied_objects()
    .predicate_filter(triggers::lease_holder, PredicateConfig::default())
    .filter_map(ok_unit)
    .boxed()
}

/// The `default/kubernetes` EndpointSlices into their cache; each change
/// is published to the agents ([`publish_on`]), plan or no plan.
pub fn kubernetes_endpoints(
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

/// A watch event as a bare trigger; watch errors are retried by the backoff.
fn ok_unit<T>(r: Result<T, watcher::Error>) -> future::Ready<Option<()>> {
    future::ready(r.ok().map(|_| ()))
}

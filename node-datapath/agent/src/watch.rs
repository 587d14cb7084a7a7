//! The agent's inputs from the API server: its Node, its own NodeDatapath
//! (created if missing, then watched for its spec), and the Services and
//! EndpointSlices it serves, projected into compact stores as they arrive.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use switchyard_api::{NodeDatapath, NodeDatapathSpec};
use tokio::sync::{Notify, mpsc, watch};
use tracing::warn;

use crate::agent::FIELD_MANAGER;
use crate::error::{Error, Result};
use crate::store::{self as cache, Applied, Services, Slices, Store};
use crate::sync::{Pending, Touched};

/// The Node this agent runs on.
pub(crate) async fn get_node(client: &Client, name: &str) -> Result<Node> {
    match Api::<Node>::all(client.clone()).get_opt(name).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(Error::NodeMissing(name.to_owned())),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::NodeMissing(name.to_owned())),
        Err(e) if !matches!(e, kube::Error::Api(_)) => Err(Error::ApiUnreachable(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The stores the Service and EndpointSlice watches keep, and what they
/// tell the sync: every change is recorded in `pending` and wakes it.
pub(crate) struct Watches {
    pub(crate) services: Services,
    pub(crate) slices: Slices,
    pub(crate) pending: Pending,
    pub(crate) wake: Arc<Notify>,
}

/// Starts the Service and EndpointSlice watches; each receiver turns true
/// at its watch's first complete list.
pub(crate) fn services_and_slices(client: &Client) -> (Watches, [watch::Receiver<bool>; 2]) {
    let w = Watches {
        services: Services::default(),
        slices: Slices::default(),
        pending: Pending::default(),
        wake: Arc::new(Notify::new()),
    };
    let services_ready = spawn_watch(
        Api::<Service>::all(client.clone()),
        Project {
            store: w.services.clone(),
            wake: w.wake.clone(),
            pending: w.pending.clone(),
            project: cache::service_entry,
            touched: Touched::of_service,
        },
    );
    let slices_ready = spawn_watch(
        Api::<EndpointSlice>::all(client.clone()),
        Project {
            store: w.slices.clone(),
            wake: w.wake.clone(),
            pending: w.pending.clone(),
            project: cache::slice_entry,
            touched: Touched::of_slice,
        },
    );
    (w, [services_ready, slices_ready])
}

/// Our own NodeDatapath's spec, on every change.
pub(crate) fn own_spec(api: Api<NodeDatapath>, node: &str) -> mpsc::Receiver<NodeDatapathSpec> {
    let (tx, rx) = mpsc::channel::<NodeDatapathSpec>(8);
    let own = watcher::Config::default()
        .timeout(45)
        .fields(&format!("metadata.name={node}"));
    let stream = watcher(api, own).default_backoff().applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ndp) => {
                    if tx.send(ndp.spec).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "watching own NodeDatapath"),
            }
        }
    });
    rx
}

/// How a watch projects objects into its store and reports what it
/// touched.
struct Project<K, T> {
    store: Store<T>,
    wake: Arc<Notify>,
    pending: Pending,
    project: fn(&K) -> (cache::Key, T),
    touched: fn(&Applied<T>) -> Option<Touched>,
}

/// Watches `api`, keeping `p.store` equal to its objects (projected; the
/// object itself is dropped after its event). The receiver turns true at
/// the first complete list.
fn spawn_watch<K, T>(api: Api<K>, p: Project<K, T>) -> watch::Receiver<bool>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    T: Send + Sync + 'static,
{
    let (ready_tx, ready_rx) = watch::channel(false);
    let stream = watcher(api, watcher::Config::default().timeout(45)).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(watcher::Event::Apply(o)) => {
                    let (k, v) = (p.project)(&o);
                    cache::Event::Apply(k, v)
                }
                Ok(watcher::Event::Delete(o)) => cache::Event::Delete(cache::key(o.meta())),
                Ok(watcher::Event::Init) => cache::Event::Init,
                Ok(watcher::Event::InitApply(o)) => {
                    let (k, v) = (p.project)(&o);
                    cache::Event::InitApply(k, v)
                }
                Ok(watcher::Event::InitDone) => cache::Event::InitDone,
                Err(e) => {
                    warn!(error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let applied = p.store.apply(ev);
            if matches!(applied, Applied::Relisted) {
                ready_tx.send_replace(true);
            }
            let Some(t) = (p.touched)(&applied) else {
                continue;
            };
            p.pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(t);
            p.wake.notify_one();
        }
    });
    ready_rx
}

/// Creates our NodeDatapath if it does not exist (mode Off), returns it.
pub(crate) async fn ensure_object(api: &Api<NodeDatapath>, node: &str) -> Result<NodeDatapath> {
    if let Some(n) = api.get_opt(node).await? {
        return Ok(n);
    }
    let obj = NodeDatapath::new(node, NodeDatapathSpec::default());
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            },
            &obj,
        )
        .await
    {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(node).await?),
        // Creating into a resource type the API server does not know.
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::CrdMissing),
        Err(e) => Err(e.into()),
    }
}

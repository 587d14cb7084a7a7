//! The agent's API client, moving between the API server's endpoints: every
//! request goes to the current endpoint; one that fails below HTTP (refused,
//! reset, timed out) moves the client to the next endpoint known, and the
//! caller's own retry (the watches' backoff, the next heartbeat) lands
//! there. Endpoints known, in order: those of the `default/kubernetes`
//! EndpointSlice in the agent's own store (the apiserver keeps it current,
//! so an endpoint that goes away drops out and a new one appears), the
//! mounted `switchyard-api-endpoints`, then the in-cluster address. The
//! client also leaves the in-cluster address (the `kubernetes` ClusterIP) as
//! soon as a direct endpoint is known: the ClusterIP is served by kube-proxy
//! or by this agent's own datapath, and neither is always there.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use tracing::warn;

use super::{in_cluster_env, next_after, read_mounted};
use crate::store::Slices;

/// Where the direct endpoints come from once the agent runs: its store of
/// EndpointSlices, set when its watches start.
#[derive(Clone, Debug, Default)]
pub struct Learned(Arc<RwLock<Option<Slices>>>);

impl Learned {
    /// Follow the `default/kubernetes` EndpointSlice in `slices` from now on.
    pub fn follow(&self, slices: Slices) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(slices);
    }

    fn endpoints(&self) -> Vec<String> {
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map_or_else(Vec::new, |slices| {
            slices
                .get("default", "kubernetes")
                .map(|s| super::slice_endpoints(&s))
                .unwrap_or_default()
        })
    }
}

struct Current {
    addr: String,
    client: kube::Client,
}

struct Inner {
    base: kube::Config,
    file: PathBuf,
    in_cluster: Option<String>,
    learned: Learned,
    current: Mutex<Current>,
}

/// A `tower::Service` for [`kube::Client::new`]: one client per endpoint,
/// the current one used.
#[derive(Clone)]
pub struct Failover(Arc<Inner>);

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cur = self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Failover")
            .field("current", &cur.addr)
            .finish()
    }
}

impl Failover {
    /// Starts on `client`, connected to `addr`.
    pub fn new(
        base: kube::Config,
        file: PathBuf,
        learned: Learned,
        addr: String,
        client: kube::Client,
    ) -> Self {
        Self(Arc::new(Inner {
            base,
            file,
            in_cluster: in_cluster_env(),
            learned,
            current: Mutex::new(Current { addr, client }),
        }))
    }

    /// The endpoints known now, in the order they are tried.
    fn known(&self) -> Vec<String> {
        let mut out = self.0.learned.endpoints();
        for e in read_mounted(&self.0.file) {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        if let Some(addr) = self.0.in_cluster.clone().filter(|a| !out.contains(a)) {
            out.push(addr);
        }
        out
    }

    /// The client to send on: the current one, unless it is on the
    /// in-cluster address and a direct endpoint is known.
    fn pick(&self) -> (String, kube::Client) {
        let mut cur = self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.0.in_cluster.as_deref() == Some(cur.addr.as_str()) {
            let known = self.known();
            if let Some(direct) = known.iter().find(|e| **e != cur.addr) {
                self.switch(&mut cur, direct, "a direct API server endpoint is known");
            }
        }
        (cur.addr.clone(), cur.client.clone())
    }

    /// `failed` failed below HTTP: move to the next endpoint known, unless
    /// another request has moved already.
    fn fail_over(&self, failed: &str, error: &kube::Error) {
        let mut cur = self
            .0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cur.addr != failed {
            return;
        }
        let known = self.known();
        match next_after(&known, failed, &[failed.to_string()]) {
            Some(next) => self.switch(&mut cur, next, &error.to_string()),
            None => {
                warn!(api_server = failed, %error, "API server endpoint failed; no other endpoint known")
            }
        }
    }

    fn switch(&self, cur: &mut Current, to: &str, why: &str) {
        match super::client_for(&self.0.base, to) {
            Ok(client) => {
                warn!(from = %cur.addr, to, why, "switching API server endpoint");
                *cur = Current {
                    addr: to.to_string(),
                    client,
                };
            }
            Err(e) => warn!(api_server = to, error = %e, "cannot build a client for the endpoint"),
        }
    }
}

/// Failed before any HTTP answer: the endpoint, not the request, is at fault.
fn below_http(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

impl tower::Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (addr, client) = this.pick();
            let result = client.send(request).await;
            if let Err(e) = &result
                && below_http(e)
            {
                this.fail_over(&addr, e);
            }
            result
        })
    }
}

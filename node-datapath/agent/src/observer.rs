//! Hubble's Observer gRPC API over the agent's flows: `GetFlows` (the
//! newest N, then new ones with `follow`; whitelist and blacklist filters)
//! and `ServerStatus`. Any Hubble client can read a node's flows from it
//! (`kubectl switchyard observe` reads the same events, filtered by the same
//! [`filter`], as JSON lines from the agent's HTTP port: [`http`]); the messages are switchyard's subset of Hubble's (`proto/`), with
//! Hubble's names and numbers. Plaintext: bind it to an address only
//! trusted clients reach (the default is loopback).

pub mod convert;
pub mod filter;
pub mod http;
pub mod json;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{
    BroadcastStream, TcpListenerStream, errors::BroadcastStreamRecvError,
};
use tonic::{Request, Response, Status};

use crate::flows::Flow;
use crate::flows::reader::FlowHub;
use filter::Filters;
use proto::flow as pb;
use proto::observer::observer_server::{Observer, ObserverServer};
use proto::observer::{
    GetFlowsRequest, GetFlowsResponse, ServerStatusRequest, ServerStatusResponse,
    get_flows_response::ResponseTypes,
};

/// The generated messages and service (build.rs).
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    pub mod flow {
        tonic::include_proto!("flow");
    }
    pub mod observer {
        tonic::include_proto!("observer");
    }
}

/// The default address of the API (`--observer-addr`); Hubble's per-node
/// server listens on port 4244 too.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4244";

/// The port other hosts reach the API on, when `addr` is not the node's
/// loopback: hubble-relay dials it on the node's address.
pub fn reachable_port(addr: std::net::SocketAddr) -> Option<u16> {
    (!addr.ip().is_loopback()).then_some(addr.port())
}

/// The Observer service of one node's flows.
#[derive(Debug, Clone)]
pub struct FlowObserver {
    hub: Arc<FlowHub>,
    node: Arc<str>,
}

impl FlowObserver {
    pub fn new(hub: Arc<FlowHub>, node: &str) -> Self {
        Self {
            hub,
            node: node.into(),
        }
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

fn response(node: &str, r: ResponseTypes, time: std::time::SystemTime) -> GetFlowsResponse {
    GetFlowsResponse {
        response_types: Some(r),
        node_name: node.to_owned(),
        time: Some(convert::timestamp(time)),
    }
}

fn lost(node: &str, source: pb::LostEventSource, n: u64) -> GetFlowsResponse {
    let event = pb::LostEvent {
        source: source as i32,
        num_events_lost: n,
        cpu: None,
    };
    response(
        node,
        ResponseTypes::LostEvents(event),
        std::time::SystemTime::now(),
    )
}

/// What a reader of the flows gets: flows, and counts of events lost
/// before the ones that follow.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Flow(Arc<Flow>),
    Lost(pb::LostEventSource, u64),
}

/// The events of one request, for both the gRPC API and the HTTP one: the
/// events the kernel could not report (if any), the newest `number` flows
/// `filters` keeps (0: all), then, with `follow`, each new one it keeps.
pub(crate) fn events(
    hub: &FlowHub,
    filters: Filters,
    number: usize,
    follow: bool,
) -> Pin<Box<dyn Stream<Item = Event> + Send>> {
    let (last, rx) = hub.last_and_follow(number, |f| filters.matches(f));
    let mut head = Vec::with_capacity(last.len() + 1);
    // Events the kernel could not report, before the flows around them.
    let kernel_lost = hub.kernel_lost();
    if kernel_lost > 0 {
        head.push(Event::Lost(
            pb::LostEventSource::PerfEventRingBuffer,
            kernel_lost,
        ));
    }
    head.extend(last.into_iter().map(Event::Flow));
    let head = futures::stream::iter(head);
    if !follow {
        return Box::pin(head);
    }
    let tail = BroadcastStream::new(rx).filter_map(move |r| {
        let out = match r {
            Ok(f) => filters.matches(&f).then_some(Event::Flow(f)),
            // This follower fell behind the agent's queue.
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                Some(Event::Lost(pb::LostEventSource::ObserverEventsQueue, n))
            }
        };
        std::future::ready(out)
    });
    Box::pin(head.chain(tail))
}

#[tonic::async_trait]
impl Observer for FlowObserver {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let req = request.into_inner();
        let filters = Filters::new(&req.whitelist, &req.blacklist)
            .map_err(Status::invalid_argument)?
            .since(req.since.as_ref().map(convert::system_time));
        let number = usize::try_from(req.number).unwrap_or(usize::MAX);
        let node = self.node.clone();
        let stream = events(&self.hub, filters, number, req.follow).map(move |e| {
            Ok(match e {
                Event::Flow(f) => {
                    let flow = ResponseTypes::Flow(convert::flow(&f, &node));
                    response(&node, flow, f.time)
                }
                Event::Lost(source, n) => lost(&node, source, n),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let (kept, max, counts) = self.hub.status();
        Ok(Response::new(ServerStatusResponse {
            num_flows: kept as u64,
            max_flows: max as u64,
            seen_flows: counts.seen,
            uptime_ns: u64::try_from(self.hub.uptime().as_nanos()).unwrap_or(u64::MAX),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}

/// The service name Hubble servers report the Observer's health under.
pub const HEALTH_SERVICE_NAME: &str = "hubble.server.Observer";

/// Serves the API on `listener` until the future is dropped.
pub async fn serve_on(
    listener: TcpListener,
    observer: FlowObserver,
) -> Result<(), tonic::transport::Error> {
    // `hubble status` first asks the standard health service about the
    // name Hubble servers register the Observer under.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(HEALTH_SERVICE_NAME, tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ObserverServer::new(observer))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
}

/// Binds `addr` and serves the API there; failures are logged (serving
/// Services does not depend on it).
pub async fn serve(addr: SocketAddr, observer: FlowObserver) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "the Observer API cannot listen");
            return;
        }
    };
    tracing::info!(%addr, "serving the Observer API");
    if let Err(e) = serve_on(listener, observer).await {
        tracing::warn!(%addr, error = %e, "the Observer API stopped");
    }
}

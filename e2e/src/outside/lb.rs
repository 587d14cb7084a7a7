//! The lab's LoadBalancer implementation at work: a task of the lab that
//! watches Services and Nodes, gives each LoadBalancer Service an IP from
//! the pool (the status subresource), health-checks every eligible node
//! from the router namespace once a second, and routes each LoadBalancer IP
//! from the router to the nodes in rotation (ECMP). Every take-out is
//! recorded with its node, Service, time and the failures seen, so tests
//! can tell whether a healthy node was ever taken out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinHandle;

use super::model::{Change, Health, LbService, allocate, eligible_node, route_args};
use crate::request::http_get_within;
use crate::sys;

/// How often every node is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A check that has no answer within this time failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(900);

/// A node taken out of a Service's rotation by failed health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOut {
    /// The node.
    pub node: String,
    /// The Service (`namespace/name`).
    pub service: String,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The consecutive failures that took it out, oldest first.
    pub failures: Vec<String>,
}

/// A check that failed while its node was in rotation: the load balancer
/// saw a healthy node fail (not yet a take-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strike {
    /// The node.
    pub node: String,
    /// The Service (`namespace/name`).
    pub service: String,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What the check saw.
    pub failure: String,
}

/// Most strikes kept (the oldest are dropped; `strikes_total` counts all).
const STRIKES_KEPT: usize = 1000;

/// What the LoadBalancer currently does for one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// Its LoadBalancer IP.
    pub ip: Option<Ipv4Addr>,
    /// Nodes that receive its traffic.
    pub in_rotation: BTreeSet<String>,
}

/// The LoadBalancer's observable state.
#[derive(Debug, Clone, Default)]
pub struct LbState {
    /// Per Service (`namespace/name`).
    pub services: BTreeMap<String, ServiceState>,
    /// Every take-out since the start, oldest first.
    pub take_outs: Vec<TakeOut>,
    /// Checks failed by nodes in rotation, oldest first (the last
    /// [`STRIKES_KEPT`]).
    pub strikes: Vec<Strike>,
    /// Every strike since the start.
    pub strikes_total: u64,
    /// Health-check rounds completed.
    pub rounds: u64,
}

/// The running LoadBalancer; stops when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    state: Arc<Mutex<LbState>>,
    /// The control loop and the two watches feeding it.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl LoadBalancer {
    /// Starts the LoadBalancer (inside a tokio runtime); `router_netns` is
    /// the router's network namespace (checks are sent and routes
    /// programmed there).
    pub fn start(client: kube::Client, router_netns: String) -> Self {
        let state = Arc::new(Mutex::new(LbState::default()));
        let (services, watch_services) = reflect(Api::<Service>::all(client.clone()));
        let (nodes, watch_nodes) = reflect(Api::<Node>::all(client.clone()));
        let ctl = Controller {
            client,
            router_netns,
            state: state.clone(),
            assigned: BTreeMap::new(),
            health: BTreeMap::new(),
            routes: BTreeMap::new(),
        };
        let main = tokio::spawn(run(ctl, services, nodes));
        Self {
            state,
            tasks: vec![main, watch_services, watch_nodes],
        }
    }

    /// A snapshot of the current state.
    pub fn state(&self) -> LbState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every take-out so far.
    pub fn take_outs(&self) -> Vec<TakeOut> {
        self.state().take_outs
    }

    /// Checks failed by nodes in rotation, and how many there were in all.
    pub fn strikes(&self) -> (Vec<Strike>, u64) {
        let st = self.state();
        (st.strikes, st.strikes_total)
    }

    /// The state of Service `namespace/name`.
    pub fn service(&self, key: &str) -> Option<ServiceState> {
        self.state().services.get(key).cloned()
    }
}

/// A store of `api`'s objects kept current by a watch (the returned task).
fn reflect<K>(api: Api<K>) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    (reader, task)
}

/// What one run keeps between rounds.
struct Controller {
    client: kube::Client,
    router_netns: String,
    state: Arc<Mutex<LbState>>,
    /// IPs assigned but perhaps not yet seen in the watched status.
    assigned: BTreeMap<String, Ipv4Addr>,
    /// Per (Service, node).
    health: BTreeMap<(String, String), Health>,
    /// Routes as programmed: LoadBalancer IP → nexthops.
    routes: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
}

async fn run(mut ctl: Controller, services: Store<Service>, nodes: Store<Node>) {
    if services.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let svcs: Vec<LbService> = services
            .state()
            .iter()
            .filter_map(|s| LbService::from_service(s))
            .collect();
        let eligible: Vec<(String, Ipv4Addr)> = nodes
            .state()
            .iter()
            .filter_map(|n| eligible_node(n))
            .collect();
        let svcs = ctl.assign_ips(svcs).await;
        ctl.check_health(&svcs, &eligible).await;
        ctl.program_routes(&svcs, &eligible).await;
        ctl.publish(&svcs);
    }
}

impl Controller {
    /// Gives every Service without an IP the lowest free pool address and
    /// writes it to the Service's status; returns the Services with the IPs
    /// they have now.
    async fn assign_ips(&mut self, mut svcs: Vec<LbService>) -> Vec<LbService> {
        let keys: BTreeSet<&String> = svcs.iter().map(|s| &s.key).collect();
        self.assigned.retain(|k, _| keys.contains(k));
        for s in &mut svcs {
            if let Some(ip) = s.ip {
                self.assigned.insert(s.key.clone(), ip);
            }
        }
        for s in svcs.iter_mut().filter(|s| s.ip.is_none()) {
            if let Some(ip) = self.assigned.get(&s.key) {
                s.ip = Some(*ip);
                continue;
            }
            let used: BTreeSet<Ipv4Addr> = self.assigned.values().copied().collect();
            let Some(ip) = allocate(&used) else {
                tracing::warn!(service = %s.key, "LoadBalancer pool exhausted");
                continue;
            };
            match self.write_status(&s.key, ip).await {
                Ok(()) => {
                    self.assigned.insert(s.key.clone(), ip);
                    s.ip = Some(ip);
                }
                Err(e) => {
                    tracing::warn!(service = %s.key, error = %e, "writing LoadBalancer status")
                }
            }
        }
        svcs
    }

    async fn write_status(&self, key: &str, ip: Ipv4Addr) -> Result<(), kube::Error> {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        Ok(())
    }

    /// One round of checks: every eligible node for every Service with an
    /// IP, concurrently; counts the results and records take-outs.
    async fn check_health(&mut self, svcs: &[LbService], eligible: &[(String, Ipv4Addr)]) {
        let netns = sys::netns_path(&self.router_netns);
        let pairs: Vec<(String, String, SocketAddr)> = svcs
            .iter()
            .filter(|s| s.ip.is_some())
            .flat_map(|s| {
                eligible.iter().map(|(node, ip)| {
                    let addr = SocketAddr::from((*ip, s.health_port));
                    (s.key.clone(), node.clone(), addr)
                })
            })
            .collect();
        let results =
            futures::future::join_all(pairs.iter().map(|(_, _, addr)| probe(netns.clone(), *addr)))
                .await;
        let live: BTreeSet<(String, String)> = pairs
            .iter()
            .map(|(s, n, _)| (s.clone(), n.clone()))
            .collect();
        // A node that left (deleted, excluded) starts afresh when it returns.
        self.health.retain(|k, _| live.contains(k));
        for ((service, node, _), result) in pairs.into_iter().zip(results) {
            let health = self
                .health
                .entry((service.clone(), node.clone()))
                .or_default();
            if let (true, Err(failure)) = (health.in_rotation(), &result) {
                strike(&self.state, &service, &node, failure);
            }
            if let Some(Change::TakeOut(failures)) = health.observe(result) {
                tracing::info!(%service, %node, ?failures, "LoadBalancer took a node out");
                if let Ok(mut st) = self.state.lock() {
                    st.take_outs.push(TakeOut {
                        node,
                        service,
                        at: chrono::Utc::now(),
                        failures,
                    });
                }
            }
        }
    }

    /// Routes each Service's IP to its nodes in rotation; removes the
    /// routes of IPs no longer assigned.
    async fn program_routes(&mut self, svcs: &[LbService], eligible: &[(String, Ipv4Addr)]) {
        let mut desired: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = BTreeMap::new();
        for s in svcs {
            let Some(ip) = s.ip else { continue };
            let hops = eligible
                .iter()
                .filter(|(node, _)| self.in_rotation(&s.key, node))
                .map(|(_, addr)| *addr)
                .collect();
            desired.insert(ip, hops);
        }
        let mut commands = Vec::new();
        for (ip, hops) in &desired {
            if self.routes.get(ip) != Some(hops) {
                commands.push(route_args(*ip, hops));
            }
        }
        for ip in self.routes.keys().filter(|ip| !desired.contains_key(ip)) {
            commands.push(format!("route del {ip}/32"));
        }
        if commands.is_empty() {
            return;
        }
        let ns = self.router_netns.clone();
        let applied = tokio::task::spawn_blocking(move || {
            commands
                .iter()
                .try_for_each(|c| sys::ip(&format!("-n {ns} {c}")).map(drop))
        })
        .await;
        match applied {
            Ok(Ok(())) => self.routes = desired,
            Ok(Err(e)) => tracing::warn!(error = %e, "programming LoadBalancer routes"),
            Err(e) => tracing::warn!(error = %e, "route task"),
        }
    }

    fn in_rotation(&self, service: &str, node: &str) -> bool {
        self.health
            .get(&(service.to_string(), node.to_string()))
            .is_some_and(Health::in_rotation)
    }

    fn publish(&self, svcs: &[LbService]) {
        let services = svcs
            .iter()
            .map(|s| {
                let in_rotation = self
                    .health
                    .iter()
                    .filter(|((svc, _), h)| *svc == s.key && h.in_rotation())
                    .map(|((_, node), _)| node.clone())
                    .collect();
                (
                    s.key.clone(),
                    ServiceState {
                        ip: s.ip,
                        in_rotation,
                    },
                )
            })
            .collect();
        if let Ok(mut st) = self.state.lock() {
            st.services = services;
            st.rounds += 1;
        }
    }
}

/// Records a check failed by a node in rotation.
fn strike(state: &Mutex<LbState>, service: &str, node: &str, failure: &str) {
    if let Ok(mut st) = state.lock() {
        st.strikes_total += 1;
        st.strikes.push(Strike {
            node: node.to_string(),
            service: service.to_string(),
            at: chrono::Utc::now(),
            failure: failure.to_string(),
        });
        if st.strikes.len() > STRIKES_KEPT {
            st.strikes.remove(0);
        }
    }
}

/// One health check as a cloud load balancer sends it: HTTP GET
/// `/healthz`, passed on 200.
async fn probe(netns: PathBuf, addr: SocketAddr) -> Result<(), String> {
    let url = format!("http://{addr}/healthz");
    match http_get_within(netns, addr, "/healthz".into(), CHECK_TIMEOUT).await {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!(
            "{url}: HTTP {} {}",
            r.status,
            r.body.chars().take(120).collect::<String>().trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

//! kube-proxy's health ports, served by the agent once kube-proxy has left
//! the node, with kube-proxy's semantics (`pkg/proxy/healthcheck`): cloud
//! load balancers check them to decide which nodes get traffic.
//!
//! - `:10256/healthz` and `/livez`: 200 while the datapath serves and its
//!   last sync succeeded, else 503; body
//!   `{"lastUpdated", "currentTime", "nodeEligible"}`;
//! - every `healthCheckNodePort` (externalTrafficPolicy: Local): 200 with
//!   the node's local endpoint count when it has one, else 503; body
//!   `{"service": {"namespace", "name"}, "localEndpoints",
//!   "serviceProxyHealthy"}`.
//!
//! The ports are handed over without a moment of refused connections: the
//! agent listens on ports of its own and the datapath's sk_lookup program
//! steers new connections of each health port to them
//! ([`switchyard_node_datapath::HealthSockets`]), whether kube-proxy still
//! listens there or not. While the datapath serves (north-south on), the
//! agent answers; when it is being switched off (kube-proxy is back by
//! then), each steering entry is removed before its listener closes, so the
//! next connection reaches kube-proxy's listener.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use switchyard_lb::{DesiredState, Scope};
use switchyard_node_datapath::HealthSockets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::store::Services;

/// kube-proxy's default `healthzBindAddress` port.
pub const PROXY_HEALTH_PORT: u16 = 10256;
/// How often listeners are reconciled (and failed binds retried).
pub const RECONCILE: Duration = Duration::from_millis(250);

/// One eTP=Local Service's health port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

/// What the health ports answer.
#[derive(Clone, Debug, Default)]
pub struct HealthState {
    /// The datapath serves this node (the ports are bound only then).
    pub serving: bool,
    /// The last sync succeeded.
    pub healthy: bool,
    pub last_updated: Option<SystemTime>,
    /// healthCheckNodePort → its Service.
    pub services: BTreeMap<u16, ServiceHealth>,
}

/// The shared state and the listeners answering from it.
#[derive(Debug)]
pub struct Health {
    bpffs_dir: PathBuf,
    state: Mutex<HealthState>,
    steering: Mutex<Steering>,
    answered: Arc<Answered>,
}

/// Health checks answered, by port and status code: what a cloud load
/// balancer was told (kube-proxy counts its own as `kubeproxy_healthz_total`).
#[derive(Debug, Default)]
pub struct Answered {
    /// `[proxy port, service ports]` × `[200, 503]`.
    counts: [[AtomicU64; 2]; 2],
}

impl Answered {
    fn record(&self, port: u16, code: u16) {
        let kind = usize::from(port != PROXY_HEALTH_PORT);
        self.counts[kind][usize::from(code != 200)].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends `switchyard_agent_health_checks_total` to `out`.
    pub fn render(&self, out: &mut String) {
        let name = "switchyard_agent_health_checks_total";
        out.push_str(&format!(
            "# HELP {name} Health checks answered on kube-proxy's health ports, by port (proxy: {PROXY_HEALTH_PORT}; service: a healthCheckNodePort) and status code.\n# TYPE {name} counter\n"
        ));
        for (kind, port) in ["proxy", "service"].into_iter().enumerate() {
            for (c, code) in ["200", "503"].into_iter().enumerate() {
                let v = self.counts[kind][c].load(Ordering::Relaxed);
                out.push_str(&format!("{name}{{port=\"{port}\",code=\"{code}\"}} {v}\n"));
            }
        }
    }
}

/// The steering map and the listener serving each port.
#[derive(Debug, Default)]
struct Steering {
    sockets: Option<HealthSockets>,
    listeners: BTreeMap<u16, JoinHandle<()>>,
}

/// The health ports of `services` with this node's local endpoint counts
/// (from the ingress-scope frontends of `desired`).
pub fn service_ports(services: &Services, desired: &DesiredState) -> BTreeMap<u16, ServiceHealth> {
    let mut local: BTreeMap<(&str, &str), BTreeSet<_>> = BTreeMap::new();
    for (fe, st) in &desired.frontends {
        if fe.scope == Scope::Ingress {
            let key = (&*st.service.namespace, &*st.service.name);
            local
                .entry(key)
                .or_default()
                .extend(st.backends.iter().map(|b| b.key.ip));
        }
    }
    let index = services.read();
    let mut out = BTreeMap::new();
    for (_, svc) in index.iter() {
        let Some(port) = svc.health_check_node_port.filter(|_| svc.external_local) else {
            continue;
        };
        let key = (&*svc.namespace, &*svc.name);
        out.insert(
            port,
            ServiceHealth {
                namespace: svc.namespace.to_string(),
                name: svc.name.to_string(),
                local_endpoints: local.get(&key).map_or(0, BTreeSet::len),
            },
        );
    }
    out
}

fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The status and JSON body `port` answers with.
pub fn answer(state: &HealthState, port: u16, now: SystemTime) -> (u16, serde_json::Value) {
    if port == PROXY_HEALTH_PORT {
        let body = json!({
            "lastUpdated": state.last_updated.map(rfc3339).unwrap_or_default(),
            "currentTime": rfc3339(now),
            "nodeEligible": true,
        });
        return (if state.healthy { 200 } else { 503 }, body);
    }
    let Some(svc) = state.services.get(&port) else {
        return (503, json!({}));
    };
    let body = json!({
        "service": {"namespace": svc.namespace, "name": svc.name},
        "localEndpoints": svc.local_endpoints,
        "serviceProxyHealthy": state.healthy,
    });
    let ok = svc.local_endpoints > 0 && state.healthy;
    (if ok { 200 } else { 503 }, body)
}

impl Health {
    /// Health ports steered through the datapath pinned under `bpffs_dir`,
    /// counting their answers in `answered`.
    pub fn new(bpffs_dir: PathBuf, answered: Arc<Answered>) -> Self {
        Self {
            bpffs_dir,
            state: Mutex::default(),
            steering: Mutex::default(),
            answered,
        }
    }

    /// Replaces what the ports answer.
    pub fn set(&self, state: HealthState) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// The ports steered to the agent's listeners now.
    pub fn steered(&self) -> BTreeSet<u16> {
        self.steering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .listeners
            .keys()
            .copied()
            .collect()
    }

    fn snapshot(&self) -> HealthState {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Binds the ports that should be served and are free, and closes
    /// those that should not be, every [`RECONCILE`], forever.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RECONCILE);
        loop {
            tick.tick().await;
            self.reconcile().await;
        }
    }

    async fn reconcile(self: &Arc<Self>) {
        let state = self.snapshot();
        let mut want: BTreeSet<u16> = BTreeSet::new();
        if state.serving {
            want.insert(PROXY_HEALTH_PORT);
            want.extend(state.services.keys());
        }
        let mut steering = std::mem::take(
            &mut *self
                .steering
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.release_unwanted(&mut steering, &want);
        if state.serving && steering.sockets.is_none() {
            match HealthSockets::open(&self.bpffs_dir) {
                Ok(s) => steering.sockets = Some(s),
                Err(e) => debug!(error = %e, "health-port steering not available yet"),
            }
        }
        if !state.serving {
            steering.sockets = None;
        }
        want.retain(|p| !steering.listeners.contains_key(p));
        for port in want {
            if let Err(e) = self.take_over(&mut steering, port).await {
                warn!(port, error = %e, "cannot take the health port over; retrying");
            }
        }
        *self
            .steering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = steering;
    }

    /// Gives back every port not in `want`: its steering entry first, then
    /// its listener.
    fn release_unwanted(&self, steering: &mut Steering, want: &BTreeSet<u16>) {
        let Steering { sockets, listeners } = steering;
        listeners.retain(|port, task| {
            if want.contains(port) && !task.is_finished() {
                return true;
            }
            if let Some(s) = sockets.as_mut()
                && let Err(e) = s.release(*port)
            {
                warn!(port, error = %e, "cannot remove the health port's steering");
            }
            info!(port, "health port given back");
            task.abort();
            false
        });
    }

    /// Listens on a port of our own and steers `port` to it.
    async fn take_over(self: &Arc<Self>, steering: &mut Steering, port: u16) -> Result<()> {
        let Some(sockets) = steering.sockets.as_mut() else {
            return Ok(());
        };
        let listener = TcpListener::bind(("0.0.0.0", 0))
            .await
            .map_err(|e| Error::Config(format!("listening for health port {port}: {e}")))?;
        sockets.steer(port, &listener)?;
        info!(port, "health port taken over");
        let task = tokio::spawn(self.clone().serve(listener, port));
        steering.listeners.insert(port, task);
        Ok(())
    }

    async fn serve(self: Arc<Self>, listener: TcpListener, port: u16) {
        while let Ok((conn, _)) = listener.accept().await {
            let health = self.clone();
            tokio::spawn(async move { health.respond(conn, port).await });
        }
    }

    async fn respond(&self, mut conn: TcpStream, port: u16) {
        // The path does not matter (kube-proxy answers every path alike),
        // but the whole request head is read first: closing a socket with
        // unread data resets the connection, and a client still writing
        // its request would see a broken pipe instead of the answer.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut conn)).await;
        let (code, body) = answer(&self.snapshot(), port, SystemTime::now());
        self.answered.record(port, code);
        let body = body.to_string();
        let reason = if code == 200 {
            "OK"
        } else {
            "Service Unavailable"
        };
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes()).await;
        let _ = conn.write_all(body.as_bytes()).await;
        let _ = conn.shutdown().await;
        // Until the client closes, so nothing it sent is left unread.
        let mut sink = [0u8; 512];
        let drain = async { while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, drain).await;
    }
}

/// How long a health check may take to send its request (and to close).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read.
const MAX_HEAD: usize = 8192;

/// Reads an HTTP request head: up to the blank line, the end of the
/// stream, or [`MAX_HEAD`] bytes.
async fn read_head(conn: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(local_endpoints: usize) -> ServiceHealth {
        ServiceHealth {
            namespace: "web".into(),
            name: "ingress".into(),
            local_endpoints,
        }
    }

    /// A client that sends its request head in three writes gets the
    /// answer, not a reset: the head is read whole before answering (an
    /// answer after the first piece closes a socket the client still
    /// writes to, and its next write fails).
    #[tokio::test]
    async fn a_request_written_in_pieces_is_answered() {
        let answered = Arc::new(Answered::default());
        let health = Arc::new(Health::new(PathBuf::from("/nonexistent"), answered.clone()));
        health.set(HealthState {
            serving: true,
            healthy: true,
            last_updated: None,
            services: BTreeMap::new(),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(health.serve(listener, PROXY_HEALTH_PORT));
        let mut conn = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for piece in ["GET /healthz HTTP/1.0\r\n", "Host: node\r\n", "\r\n"] {
            conn.write_all(piece.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("writing {piece:?}: {e}"));
            // The next piece comes later, as from a slow client.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\"nodeEligible\":true"), "{answer}");
        let mut metrics = String::new();
        answered.render(&mut metrics);
        let line = "switchyard_agent_health_checks_total{port=\"proxy\",code=\"200\"} 1\n";
        assert!(metrics.contains(line), "{metrics}");
    }

    #[test]
    fn proxy_health_follows_the_last_sync() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut st = HealthState {
            serving: true,
            healthy: true,
            last_updated: Some(now),
            services: BTreeMap::new(),
        };
        let (code, body) = answer(&st, PROXY_HEALTH_PORT, now);
        assert_eq!(code, 200);
        assert_eq!(body["nodeEligible"], true);
        assert_eq!(body["lastUpdated"], body["currentTime"]);
        st.healthy = false;
        assert_eq!(answer(&st, PROXY_HEALTH_PORT, now).0, 503);
    }

    #[test]
    fn a_service_port_is_healthy_only_with_local_endpoints() {
        let now = SystemTime::UNIX_EPOCH;
        let mut st = HealthState {
            serving: true,
            healthy: true,
            last_updated: None,
            services: BTreeMap::from([(31000, svc(2)), (31001, svc(0))]),
        };
        let (code, body) = answer(&st, 31000, now);
        assert_eq!((code, body["localEndpoints"].as_u64()), (200, Some(2)));
        assert_eq!(body["service"]["name"], "ingress");
        assert_eq!(answer(&st, 31001, now).0, 503);
        st.healthy = false;
        assert_eq!(answer(&st, 31000, now).0, 503);
        assert_eq!(answer(&st, 31002, now).0, 503, "unknown port");
    }
}

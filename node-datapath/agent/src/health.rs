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
//! The agent binds a port only while its datapath serves, and only once
//! kube-proxy released it: a bind that fails (kube-proxy still listens) is
//! retried every [`RECONCILE`]; the listeners close when the datapath goes
//! off, so kube-proxy can take the ports back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use switchyard_lb::{DesiredState, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info};

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
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
    listeners: Mutex<BTreeMap<u16, JoinHandle<()>>>,
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
    /// Replaces what the ports answer.
    pub fn set(&self, state: HealthState) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
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
        let mut listeners = std::mem::take(
            &mut *self
                .listeners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        listeners.retain(|port, task| {
            let keep = want.contains(port) && !task.is_finished();
            if !keep {
                info!(port, "health port released");
                task.abort();
            }
            keep
        });
        want.retain(|p| !listeners.contains_key(p));
        for port in want {
            match TcpListener::bind(("0.0.0.0", port)).await {
                Ok(l) => {
                    info!(port, "health port taken over");
                    listeners.insert(port, tokio::spawn(self.clone().serve(l, port)));
                }
                Err(e) => debug!(port, error = %e, "health port busy; retrying"),
            }
        }
        *self
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = listeners;
    }

    async fn serve(self: Arc<Self>, listener: TcpListener, port: u16) {
        while let Ok((conn, _)) = listener.accept().await {
            let health = self.clone();
            tokio::spawn(async move { health.respond(conn, port).await });
        }
    }

    async fn respond(&self, mut conn: TcpStream, port: u16) {
        // The request itself does not matter (kube-proxy answers every
        // path alike); read its head so the client sees a clean close.
        let mut buf = [0u8; 2048];
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
        let (code, body) = answer(&self.snapshot(), port, SystemTime::now());
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

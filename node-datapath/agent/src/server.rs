//! `/metrics`, `/healthz`, `/readyz` of the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use switchyard_api::SyncStatus;

use crate::error::{Error, Result};

/// What the loop publishes for the endpoint.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once the first sync and status write are done.
    pub ready: AtomicBool,
    metrics: Mutex<Metrics>,
}

#[derive(Debug, Default)]
struct Metrics {
    datapath: String,
    sync: SyncStatus,
    syncs: u64,
}

impl Shared {
    pub fn set_datapath_metrics(&self, text: String) {
        if let Ok(mut m) = self.metrics.lock() {
            m.datapath = text;
        }
    }

    pub fn set_sync(&self, s: &SyncStatus) {
        if let Ok(mut m) = self.metrics.lock() {
            if m.sync.last_sync_time != s.last_sync_time {
                m.syncs += 1;
            }
            m.sync = s.clone();
        }
    }

    /// Prometheus text: the datapath's counters plus the sync gauges.
    pub fn render(&self) -> String {
        let Ok(m) = self.metrics.lock() else {
            return String::new();
        };
        let s = &m.sync;
        let mut out = m.datapath.clone();
        let gauges = [
            (
                "switchyard_agent_services_seen",
                "Services the datapath should serve",
                u64::from(s.services_seen),
            ),
            (
                "switchyard_agent_services_programmed",
                "Services programmed into the maps",
                u64::from(s.services_programmed),
            ),
            (
                "switchyard_agent_backends_programmed",
                "Backends in the maps",
                u64::from(s.backends_programmed),
            ),
            (
                "switchyard_agent_frontends_programmed",
                "Frontends in the maps",
                u64::from(s.frontends_programmed),
            ),
            (
                "switchyard_agent_last_sync_duration_milliseconds",
                "Duration of the last map sync",
                s.last_sync_millis,
            ),
        ];
        for (name, help, v) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP switchyard_agent_syncs_total Map syncs completed.\n# TYPE switchyard_agent_syncs_total counter\nswitchyard_agent_syncs_total {}\n",
            m.syncs
        ));
        out
    }
}

/// Serves until the task is dropped.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|source| Error::Serve { addr, source })?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&req, &shared)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, shared.render()),
        "/healthz" => (StatusCode::OK, "ok\n".into()),
        "/readyz" if shared.ready.load(Ordering::Relaxed) => (StatusCode::OK, "ready\n".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: first sync pending\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sync_gauges_after_datapath_counters() {
        let s = Shared::default();
        s.set_datapath_metrics(
            "switchyard_datapath_drop_count_total{reason=\"no_backend\"} 2\n".into(),
        );
        s.set_sync(&SyncStatus {
            services_seen: 7,
            services_programmed: 5,
            ..SyncStatus::default()
        });
        let text = s.render();
        assert!(text.starts_with("switchyard_datapath_drop_count_total"));
        assert!(text.contains("switchyard_agent_services_seen 7\n"));
        assert!(text.contains("switchyard_agent_services_programmed 5\n"));
        assert!(text.contains("switchyard_agent_syncs_total 0\n"));
    }
}

//! The agent's probes: its own (requested by its NodeDatapath's spec) and
//! those a peer's Verify asks it to run against another node.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use switchyard_api::{NodeDatapathSpec, ProbeRequest, ProbeResult};
use tokio::sync::mpsc;

use super::State;
use crate::probe::{self, Target};
use crate::sync::Syncer;

/// Probe requests in flight, by generation, and where their results go.
pub(super) struct Probing {
    pub(super) own: Option<i64>,
    pub(super) own_tx: mpsc::Sender<ProbeResult>,
    pub(super) peer: Option<i64>,
    pub(super) peer_tx: mpsc::Sender<ProbeResult>,
}

impl State {
    /// A new spec: apply it, start the probes it newly requests, report.
    pub(super) async fn on_spec(&mut self, spec: NodeDatapathSpec, probing: &mut Probing) {
        self.apply_spec(spec.clone()).await;
        let own = spec.probe.filter(|r| Some(r.generation) != probing.own);
        if let Some(req) = own.filter(|r| self.probe_pending(r.generation)) {
            probing.own = Some(req.generation);
            self.start_probes(req, probing.own_tx.clone());
        }
        let peer = spec
            .peer_probe
            .filter(|r| Some(r.generation) != probing.peer);
        if let Some(req) = peer.filter(|r| self.peer_probe_pending(r.generation)) {
            probing.peer = Some(req.generation);
            let tx = probing.peer_tx.clone();
            tokio::spawn(async move { tx.send(probe::run_peer(req).await).await });
        }
        self.report().await;
    }

    fn probe_pending(&self, generation: i64) -> bool {
        self.status
            .probe
            .as_ref()
            .is_none_or(|p| p.observed_generation < generation)
    }

    fn peer_probe_pending(&self, generation: i64) -> bool {
        self.status
            .peer_probe
            .as_ref()
            .is_none_or(|p| p.observed_generation < generation)
    }

    fn start_probes(&self, req: ProbeRequest, tx: mpsc::Sender<ProbeResult>) {
        let targets: Vec<Result<Target, (String, String)>> = req
            .probes
            .iter()
            .map(|p| {
                match Syncer::cluster_ip(&self.services, &p.service.namespace, &p.service.name) {
                    Some(ip) => Ok(Target {
                        name: p.name.clone(),
                        addr: std::net::SocketAddrV4::new(ip, p.port as u16),
                        protocol: p.protocol,
                        http_path: p.http_path.clone(),
                    }),
                    None => Err((
                        p.name.clone(),
                        format!(
                            "Service {}/{} not found or has no ClusterIP",
                            p.service.namespace, p.service.name
                        ),
                    )),
                }
            })
            .collect();
        let timeout = Duration::from_secs(u64::from(req.timeout_seconds));
        let needed = req.consecutive_successes;
        tokio::spawn(async move {
            let runs = targets.into_iter().map(|t| async move {
                match t {
                    Ok(t) => probe::run(&t, needed, timeout).await,
                    Err((name, why)) => switchyard_api::ProbeOutcome {
                        name,
                        failures: 1,
                        last_error: Some(why),
                        ..Default::default()
                    },
                }
            });
            let results = futures::future::join_all(runs).await;
            let passed = results.iter().all(|r| r.passed);
            let _ = tx
                .send(ProbeResult {
                    observed_generation: req.generation,
                    passed,
                    results,
                    completed_at: Some(Time(Timestamp::now())),
                })
                .await;
        });
    }
}

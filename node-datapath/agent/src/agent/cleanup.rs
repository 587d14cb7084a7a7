//! kube-proxy's leftovers on this node: the cleanup the operator requests
//! once kube-proxy has left the node, and the scan the status reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::sync::atomic::Ordering;
use switchyard_api::CleanupRequest;

use tracing::{info, warn};

use super::State;
use crate::status;

impl State {
    /// Acts on the spec's cleanup request once per generation, and only
    /// with the eBPF datapath active: a request this agent cannot have been
    /// meant to act on (a new machine under a migrated node's name, a spec
    /// from before) would otherwise remove the rules that serve the node.
    /// A dry run (a scan) is always answered.
    pub(super) async fn handle_cleanup(&mut self, req: Option<CleanupRequest>) {
        let Some(req) = req.filter(|c| {
            self.status
                .cleanup
                .as_ref()
                .is_none_or(|r| r.observed_generation < c.generation)
        }) else {
            return;
        };
        if self.datapath.is_some() || req.dry_run {
            self.cleanup(req.generation, req.dry_run).await;
        } else {
            self.status.cleanup = Some(status::cleanup_refused(req.generation));
        }
    }

    /// Removes kube-proxy's leftovers (or, dry run, lists them) and reports
    /// the result under `generation`.
    async fn cleanup(&mut self, generation: i64, dry_run: bool) {
        let opts = crate::kube_proxy::cleanup_options(&self.syncer.service_ips(&self.node_ips));
        let report = tokio::task::spawn_blocking(move || {
            if dry_run {
                switchyard_cleanup::scan(&opts)
            } else {
                switchyard_cleanup::clean(&opts)
            }
        })
        .await;
        if !dry_run && self.shared.stopping.load(Ordering::Relaxed) {
            // The signal that stops this agent reaches the iptables and nft
            // processes of the cleanup too: what they did not finish is no
            // answer. The generation stays unanswered; the next agent on
            // this node does the cleanup again (it is idempotent).
            warn!(
                generation,
                "kube-proxy cleanup cut short by the agent's shutdown; left to the next agent"
            );
            return;
        }
        match report {
            Ok(r) => {
                let mut result = status::cleanup_result(generation, &r);
                result.completed_at = Some(Time(Timestamp::now()));
                info!(
                    generation,
                    removed = result.removed,
                    succeeded = result.succeeded,
                    "kube-proxy cleanup"
                );
                self.status.leftovers = status::leftovers(&r);
                self.status.cleanup = Some(result);
            }
            Err(e) => self.degraded("CleanupFailed", &e.to_string()),
        }
    }

    /// What of kube-proxy is left on the node, for the status (the removed
    /// counts of the last cleanup kept).
    pub(super) async fn scan_leftovers(&mut self) {
        let opts = switchyard_cleanup::Options::default();
        if let Ok(r) = tokio::task::spawn_blocking(move || switchyard_cleanup::scan(&opts)).await {
            let mut found = status::leftovers(&r);
            // Keep the removed counts of the last cleanup.
            for f in &mut found {
                if let Some(prev) = self
                    .status
                    .leftovers
                    .iter()
                    .find(|p| p.backend == f.backend)
                {
                    f.removed = prev.removed;
                }
            }
            self.status.leftovers = found;
        }
    }
}

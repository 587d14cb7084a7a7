//! What idle agents cost the API server: switchyard installed from
//! `config/` on a 3-node cluster, no plan, no Service changing; the agents'
//! requests over one idle minute with the datapath off, then one with it
//! active on every node, counted from the API server's audit log.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use switchyard_api::{DatapathMode, NodeDatapath};
use switchyard_e2e::audit::{self, AGENT_USER};
use switchyard_e2e::scenario;
use switchyard_e2e::{Cluster, ClusterConfig, skip_unless_root, wait_for};

/// The agents' distinct requests in audit log `lines`, per
/// `verb resource[/subresource]`.
fn agent_requests(lines: &str) -> BTreeMap<String, u64> {
    let mut seen = HashSet::new();
    let mut out = BTreeMap::new();
    for line in lines.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let user = ev["user"]["username"].as_str().unwrap_or_default();
        let id = ev["auditID"].as_str().unwrap_or_default().to_string();
        if user != AGENT_USER || !seen.insert(id) {
            continue;
        }
        let resource = match (
            ev["objectRef"]["resource"].as_str(),
            ev["objectRef"]["subresource"].as_str(),
        ) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.to_string(),
            _ => "(non-resource)".to_string(),
        };
        let verb = ev["verb"].as_str().unwrap_or_default();
        *out.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    out
}

/// What the agents did over one idle minute (after `settle`).
struct IdleMinute {
    requests: BTreeMap<String, u64>,
    /// NodeDatapath status writes per agent and minute.
    status_writes: f64,
    /// Lease updates and creations per agent and minute.
    lease_writes: f64,
}

async fn idle_minute(audit_log: &Path, nodes: usize, settle: Duration) -> IdleMinute {
    tokio::time::sleep(settle).await;
    let from = std::fs::read_to_string(audit_log).unwrap_or_default().len();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let log = std::fs::read_to_string(audit_log).unwrap();
    let minutes = window.elapsed().as_secs_f64() / 60.0;
    let requests = agent_requests(&log[from..]);
    let per_agent_minute = |pred: &dyn Fn(&str) -> bool| -> f64 {
        let n: u64 = requests
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, n)| n)
            .sum();
        n as f64 / nodes as f64 / minutes
    };
    let status_writes = per_agent_minute(&|k| {
        k.ends_with(" nodedatapaths/status") && (k.starts_with("patch") || k.starts_with("update"))
    });
    let lease_writes = per_agent_minute(&|k| {
        k.ends_with(" leases") && (k.starts_with("update") || k.starts_with("create"))
    });
    IdleMinute {
        requests,
        status_writes,
        lease_writes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_agents_write_no_status_and_renew_their_leases() {
    if skip_unless_root() {
        return;
    }
    let bins = switchyard_e2e::binaries::Binaries::locate().unwrap();
    // The lab's own audit log of switchyard's identities (the RBAC check's).
    let c = Cluster::start(ClusterConfig {
        nodes: 3,
        images: Some(scenario::images(&bins.project_bin).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let audit_log = audit::records::log_path(c.state_dir());
    scenario::install(&c).await.unwrap();
    let nodes: Vec<String> = c.plan().nodes.iter().map(|n| n.name.clone()).collect();
    // Start-up writes (creation, capabilities, first sync) settle first.
    let off = idle_minute(&audit_log, nodes.len(), Duration::from_secs(20)).await;
    eprintln!(
        "idle agents, datapath off, {} nodes: {:?}",
        nodes.len(),
        off.requests
    );

    // The same with every node's datapath active (beside kube-proxy).
    let ndp: Api<NodeDatapath> = Api::all(c.client());
    for n in &nodes {
        ndp.patch(
            n,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Active"}})),
        )
        .await
        .unwrap();
    }
    wait_for(
        "every node's datapath to be active and programmed",
        Duration::from_secs(60),
        || {
            let ndp = ndp.clone();
            async move {
                let list = ndp.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .all(|d| {
                        d.status.as_ref().is_some_and(|s| {
                            s.active_mode == Some(DatapathMode::Active)
                                && s.sync.services_programmed >= s.sync.services_seen
                        })
                    })
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let active = idle_minute(&audit_log, nodes.len(), Duration::from_secs(5)).await;
    eprintln!(
        "idle agents, datapath active, {} nodes: {:?}",
        nodes.len(),
        active.requests
    );
    for (what, m) in [("off", &off), ("active", &active)] {
        eprintln!(
            "per idle agent and minute, datapath {what}: {:.1} NodeDatapath status writes, {:.1} Lease writes",
            m.status_writes, m.lease_writes
        );
    }
    c.teardown();
    // The agents' liveness: every heartbeat (10 s) renews the node's Lease.
    for m in [&off, &active] {
        assert!(
            m.lease_writes >= 3.0,
            "Leases not renewed: {:?}",
            m.requests
        );
    }
}

//! Pure conversions from what the agent observed into the `NodeDatapath`
//! status types.

use std::collections::BTreeMap;

use switchyard_abi::Counter;
use switchyard_api::{
    Capabilities, CleanupResult, INGRESS_ATTACH_TYPE, IngressStatus, LeftoverSummary,
    NodeDatapathStatus,
};
use switchyard_cleanup::Report;
use switchyard_node_datapath::DatapathStats;
use switchyard_node_datapath::capabilities::Capabilities as Probed;

/// Whether `next` says something `written` (the status last written) does
/// not: everything but the time of the write counts.
pub fn changed(written: Option<&NodeDatapathStatus>, next: &NodeDatapathStatus) -> bool {
    written.is_none_or(|w| {
        NodeDatapathStatus {
            heartbeat: None,
            ..w.clone()
        } != NodeDatapathStatus {
            heartbeat: None,
            ..next.clone()
        }
    })
}

/// Names kept per backend in `status.leftovers[].objects`.
const MAX_OBJECT_NAMES: usize = 50;

/// The node's capabilities as the API reports them.
pub fn capabilities(c: &Probed, nftables: bool) -> Capabilities {
    let mut missing = Vec::new();
    if c.cgroup2_mount.is_none() {
        missing.push("cgroup v2 mount".to_string());
    }
    if c.bpffs_mount.is_none() {
        missing.push("bpffs mount (/sys/fs/bpf)".to_string());
    }
    if !c.bpf_privileges {
        missing.push("CAP_BPF+CAP_NET_ADMIN (or CAP_SYS_ADMIN)".to_string());
    }
    for h in c.hooks.iter().filter(|h| !h.attachable) {
        missing.push(format!(
            "cgroup/{} attach ({})",
            h.hook,
            h.error.as_deref().unwrap_or("not attachable")
        ));
    }
    let ingress_loads = c.ingress.as_ref().is_some_and(|i| i.attachable);
    let ingress_missing = match &c.ingress {
        None => vec!["not tried: CAP_BPF+CAP_NET_ADMIN (or CAP_SYS_ADMIN)".to_string()],
        Some(i) if !i.attachable => vec![format!(
            "tc/ingress load ({})",
            i.error.as_deref().unwrap_or("not loadable")
        )],
        Some(_) => Vec::new(),
    };
    Capabilities {
        kernel: c.kernel_release.clone(),
        btf: c.btf,
        cgroup2: c.cgroup2_mount.clone(),
        bpffs: c.bpffs_mount.clone(),
        attach_types: c
            .hooks
            .iter()
            .filter(|h| h.attachable)
            .map(|h| format!("cgroup/{}", h.hook))
            .chain(ingress_loads.then(|| INGRESS_ATTACH_TYPE.to_string()))
            .collect(),
        missing,
        ingress_missing,
        iptables_backends: c.iptables_backends.clone(),
        nftables,
        ipvs: std::path::Path::new("/proc/net/ip_vs").exists(),
    }
}

/// Traffic from outside the node as the agent can serve it: the ingress
/// program's `interfaces`, whether it is `attached` to them, and why it
/// cannot serve, when it cannot: `blocked` (conntrack's hooks could not be
/// kept), no interface, or a program that does not load here.
pub fn ingress(
    interfaces: &[String],
    attached: bool,
    blocked: Option<&str>,
    caps: &Capabilities,
) -> IngressStatus {
    let unavailable = if let Some(why) = blocked {
        Some(why.to_string())
    } else if interfaces.is_empty() {
        Some("no interface holds the Node's addresses (set --ingress-interfaces)".to_string())
    } else if !caps.ingress_loads() {
        Some(format!(
            "the ingress program does not load: {}",
            caps.ingress_missing.join(", ")
        ))
    } else {
        None
    };
    IngressStatus {
        interfaces: interfaces.to_vec(),
        attached,
        unavailable,
    }
}

/// Per-backend leftovers from a scan or clean report.
pub fn leftovers(r: &Report) -> Vec<LeftoverSummary> {
    r.backends
        .iter()
        .filter(|b| b.available)
        .map(|b| LeftoverSummary {
            backend: b.backend.to_string(),
            found: b.found.count as u32,
            removed: b.removed.count as u32,
            objects: b
                .found
                .names
                .iter()
                .take(MAX_OBJECT_NAMES)
                .cloned()
                .collect(),
        })
        .collect()
}

/// The answer to a cleanup request.
pub fn cleanup_result(generation: i64, r: &Report) -> CleanupResult {
    let errors: Vec<String> = r
        .backends
        .iter()
        .flat_map(|b| b.errors.iter().map(move |e| format!("{}: {e}", b.backend)))
        .collect();
    let remaining: usize = r
        .backends
        .iter()
        .map(|b| b.found.count.saturating_sub(b.removed.count))
        .sum();
    let succeeded = errors.is_empty() && remaining == 0;
    let message = if succeeded {
        format!("removed {} kube-proxy objects", r.removed_count())
    } else if errors.is_empty() {
        format!("{remaining} kube-proxy objects are still present after the cleanup")
    } else {
        errors.join("; ")
    };
    CleanupResult {
        observed_generation: generation,
        succeeded,
        removed: r.removed_count() as u32,
        message: Some(message),
        completed_at: None,
    }
}

/// The answer to a cleanup request while the eBPF datapath is off: nothing
/// removed (kube-proxy's rules are what serves the node).
pub fn cleanup_refused(generation: i64) -> CleanupResult {
    CleanupResult {
        observed_generation: generation,
        succeeded: false,
        removed: 0,
        message: Some(
            "refused: the eBPF datapath is not active on this node, kube-proxy's rules are \
             what serves it"
                .into(),
        ),
        completed_at: None,
    }
}

/// Drop counters by reason (only the counters that count drops).
pub fn drops(stats: &DatapathStats) -> BTreeMap<String, u64> {
    Counter::ALL
        .iter()
        .filter(|c| c.is_drop())
        .map(|c| (c.reason().to_string(), stats.get(*c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_cleanup::{Backend, BackendReport, Objects};
    use switchyard_node_datapath::capabilities::HookProbe;

    fn probed() -> Probed {
        Probed {
            kernel_release: "6.18.0".into(),
            btf: true,
            cgroup2_mount: Some("/sys/fs/cgroup".into()),
            bpffs_mount: None,
            bpf_privileges: true,
            hooks: vec![
                HookProbe {
                    hook: "connect4".into(),
                    attachable: true,
                    error: None,
                },
                HookProbe {
                    hook: "recvmsg4".into(),
                    attachable: false,
                    error: Some("EINVAL".into()),
                },
            ],
            ingress: Some(HookProbe {
                hook: "ingress".into(),
                attachable: false,
                error: Some("kfunc bpf_skb_ct_alloc not found".into()),
            }),
            iptables_backends: vec!["nft".into()],
        }
    }

    #[test]
    fn only_a_change_besides_the_write_time_is_worth_a_write() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use k8s_openapi::jiff::Timestamp;
        let at = |s: i64| {
            Some(Time(
                Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH),
            ))
        };
        let mut written = NodeDatapathStatus {
            agent_version: Some("0.1.0".into()),
            heartbeat: at(100),
            ..NodeDatapathStatus::default()
        };
        assert!(changed(None, &written), "nothing written yet");
        let mut next = written.clone();
        next.heartbeat = at(110);
        assert!(!changed(Some(&written), &next), "an idle tick");
        next.sync.services_seen = 3;
        assert!(changed(Some(&written), &next));
        written.drops.insert("no_backend".into(), 1);
        next = written.clone();
        next.drops.insert("no_backend".into(), 2);
        assert!(changed(Some(&written), &next), "a counter moved");
    }

    #[test]
    fn capabilities_name_what_is_missing() {
        let c = capabilities(&probed(), true);
        assert_eq!(c.attach_types, vec!["cgroup/connect4"]);
        assert_eq!(
            c.missing,
            vec![
                "bpffs mount (/sys/fs/bpf)",
                "cgroup/recvmsg4 attach (EINVAL)"
            ]
        );
        assert!(!c.capable());
        assert!(!c.ingress_loads());
        assert_eq!(
            c.ingress_missing,
            vec!["tc/ingress load (kfunc bpf_skb_ct_alloc not found)"]
        );
    }

    #[test]
    fn ingress_says_why_it_cannot_serve() {
        let mut p = probed();
        let blocked = capabilities(&p, true);
        let eth0 = vec!["eth0".to_string()];
        let st = ingress(&eth0, false, None, &blocked);
        assert!(st.unavailable.unwrap().contains("bpf_skb_ct_alloc"));
        p.ingress = Some(HookProbe {
            hook: "ingress".into(),
            attachable: true,
            error: None,
        });
        let caps = capabilities(&p, true);
        assert!(caps.ingress_loads() && caps.ingress_missing.is_empty());
        assert!(caps.attach_types.contains(&INGRESS_ATTACH_TYPE.to_string()));
        let ok = ingress(&eth0, true, None, &caps);
        assert_eq!((ok.attached, ok.unavailable), (true, None));
        let none = ingress(&[], false, None, &caps);
        assert!(none.unavailable.unwrap().contains("no interface"));
        let nft = ingress(&eth0, false, Some("nft -f -: no such file"), &caps);
        assert_eq!(nft.unavailable.as_deref(), Some("nft -f -: no such file"));
    }

    fn backend(b: Backend, found: &[&str], removed: &[&str], errors: &[&str]) -> BackendReport {
        let names = |v: &[&str]| Objects::new(v.iter().map(|s| s.to_string()).collect());
        BackendReport {
            backend: b,
            available: true,
            notes: vec![],
            found: names(found),
            removed: names(removed),
            kept: vec![],
            errors: errors.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn cleanup_succeeds_only_when_everything_found_is_gone() {
        let ok = Report {
            listing_only: false,
            backends: vec![
                backend(Backend::IptablesNft, &["a", "b"], &["a", "b"], &[]),
                backend(Backend::Nftables, &[], &[], &[]),
            ],
            conntrack: None,
        };
        let r = cleanup_result(3, &ok);
        assert!(r.succeeded && r.removed == 2 && r.observed_generation == 3);
        assert_eq!(leftovers(&ok)[0].backend, "iptables-nft");

        let partial = Report {
            backends: vec![backend(Backend::IptablesLegacy, &["a", "b"], &["a"], &[])],
            ..ok.clone()
        };
        let r = cleanup_result(4, &partial);
        assert!(!r.succeeded);
        assert!(
            r.message
                .unwrap()
                .contains("1 kube-proxy objects are still present")
        );

        let failed = Report {
            backends: vec![backend(
                Backend::Nftables,
                &["t"],
                &["t"],
                &["nft: permission denied"],
            )],
            ..ok
        };
        let r = cleanup_result(5, &failed);
        assert!(!r.succeeded);
        assert_eq!(
            r.message.as_deref(),
            Some("nftables: nft: permission denied")
        );
    }

    #[test]
    fn drops_by_reason() {
        let mut stats = DatapathStats::default();
        stats.counters[Counter::DropNoBackend as usize] = 4;
        stats.counters[Counter::ConnectTranslated as usize] = 100;
        let d = drops(&stats);
        assert_eq!(d["no_backend"], 4);
        assert!(!d.contains_key("connect_translated"));
        assert_eq!(d.len(), Counter::ALL.iter().filter(|c| c.is_drop()).count());
    }
}

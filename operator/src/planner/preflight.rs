//! Preflight: what must hold before any node is touched. Errors block the
//! plan (re-evaluated on every reconcile, so fixing the cause unblocks it);
//! warnings are reported and do not block.

use k8s_openapi::jiff::Timestamp;
use switchyard_api::{
    AGENT_LEASE_NAMESPACE, Finding, MigrationPlanSpec, NodePortAddresses, Phase, Severity,
};

use super::snapshot::{DatapathObs, IngressObs, Snapshot};

/// Services named in a finding's message before "and N more".
const LISTED_SERVICES: usize = 10;

fn finding(severity: Severity, reason: &str, object: Option<String>, message: String) -> Finding {
    Finding {
        severity,
        reason: reason.into(),
        message,
        object,
    }
}

/// The direct API server address for the agents: the plan's, else the
/// first `default/kubernetes` endpoint.
pub fn api_server(spec: &MigrationPlanSpec, snap: &Snapshot) -> Option<String> {
    spec.api_server
        .clone()
        .or_else(|| snap.api_server_endpoints.first().cloned())
}

/// kube-proxy's mode as the plan reports it (`""` in the config means iptables).
pub fn kube_proxy_mode(snap: &Snapshot) -> Option<String> {
    let cm = snap.kube_proxy.config_map.as_ref()?;
    Some(match cm.mode.as_deref() {
        None | Some("") => "iptables".to_string(),
        Some(m) => m.to_string(),
    })
}

/// The NodePort addresses kube-proxy serves, from its ConfigMap, resolved
/// for its mode as kube-proxy resolves them: nftables mode defaults to the
/// node's primary address and never serves localhost NodePorts; iptables
/// mode serves every local address by default, and `127.0.0.1` when
/// `iptables.localhostNodePorts` (default true) is on and a CIDR (or the
/// default, everything) contains the loopback network.
pub fn node_port_addresses(snap: &Snapshot) -> Option<NodePortAddresses> {
    let cm = snap.kube_proxy.config_map.as_ref()?;
    cm.mode.as_ref()?;
    let mode = kube_proxy_mode(snap).unwrap_or_default();
    let mut cidrs = cm.node_port_addresses.clone();
    if mode == "nftables" && cidrs.is_empty() {
        cidrs.push(NODE_PORT_ADDRESSES_PRIMARY.to_string());
    }
    let localhost = mode == "iptables"
        && cm.localhost_node_ports.unwrap_or(true)
        && covers_ipv4_loopback(&cidrs);
    Some(NodePortAddresses { cidrs, localhost })
}

/// `nodePortAddresses`' special value: the node's primary address only.
pub const NODE_PORT_ADDRESSES_PRIMARY: &str = "primary";

/// Whether `cidrs` (kube-proxy's `nodePortAddresses`) cover the loopback
/// network as kube-proxy decides it: an IPv4 CIDR on a loopback address or
/// containing 127.0.0.0, or no IPv4 CIDR at all (which means every
/// address). `primary` is never loopback.
fn covers_ipv4_loopback(cidrs: &[String]) -> bool {
    if cidrs.iter().any(|c| c == NODE_PORT_ADDRESSES_PRIMARY) {
        return false;
    }
    let v4: Vec<(std::net::Ipv4Addr, u8)> = cidrs
        .iter()
        .filter_map(|c| c.split_once('/'))
        .filter_map(|(a, l)| Some((a.parse().ok()?, l.parse().ok().filter(|l| *l <= 32)?)))
        .collect();
    let loopback = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 0));
    v4.is_empty()
        || v4.iter().any(|(a, l)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*l)).unwrap_or(0);
            a.is_loopback() || u32::from(*a) & mask == loopback & mask
        })
}

/// Static preflight over the snapshot for the `targets` nodes.
pub fn check(
    spec: &MigrationPlanSpec,
    snap: &Snapshot,
    targets: &[String],
    now: Timestamp,
) -> Vec<Finding> {
    use Severity::Error;
    let mut out = Vec::new();

    if targets.is_empty() {
        out.push(finding(
            Error,
            "NoNodesSelected",
            None,
            "the node selector matches no node; nothing to migrate".into(),
        ));
    }
    kube_proxy_findings(spec, snap, &mut out);
    if api_server(spec, snap).is_none() {
        out.push(finding(Error, "ApiServerUnknown", None,
            "no direct API server address: set spec.apiServer or make sure the default/kubernetes EndpointSlice has an endpoint".into()));
    }
    agent_findings(snap, targets, now, &mut out);
    out.extend(external_frontends(snap, targets, now));
    unsupported_findings(spec, snap, &mut out);
    other_plan_findings(snap, &mut out);
    out.sort();
    out
}

/// kube-proxy's DaemonSet (present, managed by a tool) and ConfigMap (present, a
/// supported mode).
fn kube_proxy_findings(spec: &MigrationPlanSpec, snap: &Snapshot, out: &mut Vec<Finding>) {
    use Severity::{Error, Warning};
    let kp = &spec.kube_proxy;
    match &snap.kube_proxy.daemon_set {
        None => out.push(finding(Error, "KubeProxyDaemonSetMissing",
            Some(format!("DaemonSet/{}/{}", kp.namespace, kp.daemon_set)),
            format!("kube-proxy DaemonSet {}/{} not found: is kube-proxy already removed, or named differently (spec.kubeProxy)?", kp.namespace, kp.daemon_set))),
        Some(ds) => {
            for manager in &ds.managed_by {
                out.push(finding(Warning, "KubeProxyManaged",
                    Some(format!("DaemonSet/{}/{}", kp.namespace, kp.daemon_set)),
                    format!("the kube-proxy DaemonSet is managed by {manager}, which may revert the node exclusion or re-create kube-proxy; exclude it from that tool first")));
            }
        }
    }
    match kube_proxy_mode(snap).as_deref() {
        None => out.push(finding(Error, "KubeProxyConfigMissing",
            Some(format!("ConfigMap/{}/{}", kp.namespace, kp.config_map)),
            format!("kube-proxy ConfigMap {}/{} not found: it is needed to know kube-proxy's mode and for the backup", kp.namespace, kp.config_map))),
        Some("iptables" | "nftables" | "ipvs") => {}
        Some(other) => out.push(finding(Error, "KubeProxyModeUnsupported", None,
            format!("kube-proxy mode {other:?} is not supported (iptables, nftables, ipvs)"))),
    }
}

/// Each target node's agent: present, reporting, and capable of the datapath.
fn agent_findings(snap: &Snapshot, targets: &[String], now: Timestamp, out: &mut Vec<Finding>) {
    use Severity::Error;
    for node in targets {
        let object = Some(format!("Node/{node}"));
        match snap.datapaths.get(node) {
            None => out.push(finding(
                Error,
                "AgentMissing",
                object,
                format!(
                    "no NodeDatapath for node {node}: the switchyard agent is not running there"
                ),
            )),
            Some(dp) if !dp.fresh(now) => {
                out.push(finding(Error, "AgentStale", object, stale(node, dp, now)))
            }
            Some(dp) => match &dp.missing_capabilities {
                None => out.push(finding(
                    Error,
                    "AgentCapabilitiesUnknown",
                    object,
                    format!("the agent on node {node} has not reported its capabilities yet"),
                )),
                Some(missing) if !missing.is_empty() => out.push(finding(
                    Error,
                    "AgentIncapable",
                    object,
                    format!(
                        "node {node} cannot run the datapath: missing {}",
                        missing.join(", ")
                    ),
                )),
                Some(_) => {}
            },
        }
    }
}

/// Services the datapath cannot serve: an error unless the plan allows them.
fn unsupported_findings(spec: &MigrationPlanSpec, snap: &Snapshot, out: &mut Vec<Finding>) {
    use Severity::{Error, Warning};
    if !snap.unsupported_services.is_empty() {
        let severity = if spec.allow_unsupported {
            Warning
        } else {
            Error
        };
        out.push(finding(
            severity,
            "UnsupportedServices",
            None,
            format!(
                "the datapath cannot serve: {}{}",
                snap.unsupported_services.join("; "),
                if spec.allow_unsupported {
                    " (allowUnsupported is set)"
                } else {
                    " (set spec.allowUnsupported to proceed anyway)"
                }
            ),
        ));
    }
}

/// Another plan running, or an older one about to. A plan that failed and
/// has every node back on kube-proxy holds nothing and blocks nothing.
fn other_plan_findings(snap: &Snapshot, out: &mut Vec<Finding>) {
    for other in &snap.other_plans {
        let contending = other.older && matches!(other.phase, Phase::Pending | Phase::Preflight);
        let released = other.phase == Phase::Failed && !other.holds_nodes;
        if (other.phase.is_active() && !released) || contending {
            out.push(finding(
                Severity::Error,
                "AnotherPlanActive",
                Some(format!("MigrationPlan/{}", other.name)),
                format!(
                    "MigrationPlan {} is {:?}; only one plan may run at a time",
                    other.name, other.phase
                ),
            ));
        }
    }
}

/// Why the agent on `node` counts as dead: its Lease is missing, or was
/// not renewed within its duration.
fn stale(node: &str, dp: &DatapathObs, now: Timestamp) -> String {
    let lease = format!("Lease {AGENT_LEASE_NAMESPACE}/{node}");
    match dp.lease {
        None => format!(
            "the agent on node {node} does not renew its {lease}: it is not running, or is an older agent"
        ),
        Some(l) => format!(
            "the agent on node {node} last renewed its {lease} {}s ago (its duration is {}s)",
            now.as_second() - l.renewed.as_second(),
            l.duration_secs
        ),
    }
}

/// `a/x, b/y, … and 3 more`: the first [`LISTED_SERVICES`] names.
pub(crate) fn listed(names: &[String]) -> String {
    let shown = names.len().min(LISTED_SERVICES);
    let mut text = names[..shown].join(", ");
    if names.len() > shown {
        text.push_str(&format!(" and {} more", names.len() - shown));
    }
    text
}

/// Traffic from outside the nodes: the Services it reaches (for the
/// record), and an error for each target node that could not serve them
/// once kube-proxy left it (no interface for the ingress program, or the
/// program does not load there). Nothing when no Service has an external
/// frontend. Nodes whose agent is missing or stale have their own finding.
fn external_frontends(snap: &Snapshot, targets: &[String], now: Timestamp) -> Vec<Finding> {
    if snap.external_services.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = snap
        .external_services
        .iter()
        .map(|s| format!("{} ({})", s.name, s.kinds.join(", ")))
        .collect();
    let mut out = vec![finding(
        Severity::Info,
        "ExternalServices",
        None,
        format!(
            "{} Services are reached from outside the nodes: {}; each node serves them through its ingress program once kube-proxy left it, and Verify probes a NodePort and the health port from another node",
            names.len(),
            listed(&names)
        ),
    )];
    for node in targets {
        let Some(dp) = snap.datapaths.get(node) else {
            continue;
        };
        if !dp.fresh(now) {
            continue;
        }
        let why = match &dp.ingress {
            IngressObs::Ready => continue,
            IngressObs::Unknown => {
                "its agent has not reported whether it can serve traffic from outside the node"
                    .to_string()
            }
            IngressObs::Unavailable(why) => why.clone(),
        };
        out.push(finding(
            Severity::Error,
            "IngressUnavailable",
            Some(format!("Node/{node}")),
            format!(
                "node {node} cannot serve the {} Services reached from outside it once kube-proxy leaves it: {why}",
                names.len()
            ),
        ));
    }
    out
}

/// Whether any finding blocks the plan.
pub fn blocking(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

//! Pure conversion of Kubernetes objects into the planner's [`Snapshot`].
//! The controller fetches the objects; everything it concludes from them
//! happens here, unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use switchyard_api::{
    AGENT_LEASE_DURATION_SECS, KUBE_PROXY_EXCLUDED_LABEL, MigrationPlan, NodeDatapath, NodeStep,
    Phase,
};

use super::cached::SlimNode;
use super::external;
use super::pods::SlimPod;
use crate::planner::{
    AgentLease, ConfigMapObs, DaemonSetObs, DatapathObs, KubeProxyObs, NodeObs, OtherPlan, PodObs,
    RequestOutcome, Snapshot,
};

/// Drop reasons kube-proxy has too (it REJECTs a Service without endpoints
/// and ignores unknown ports): counted, but not attributable to the switch.
const SAME_AS_KUBE_PROXY: [&str; 2] = ["no_backend", "unknown_service_port"];

/// The objects one reconcile looks at.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    pub nodes: Vec<&'a SlimNode>,
    pub datapaths: Vec<&'a NodeDatapath>,
    /// The agents' Leases (in [`switchyard_api::AGENT_LEASE_NAMESPACE`],
    /// named after their nodes).
    pub leases: Vec<&'a Lease>,
    pub plans: Vec<&'a MigrationPlan>,
    pub kube_proxy_daemon_set: Option<&'a DaemonSet>,
    pub kube_proxy_config_map: Option<&'a ConfigMap>,
    /// Pods in the kube-proxy namespace (filtered to the DaemonSet's here).
    pub pods: Vec<&'a SlimPod>,
    pub kubeadm_config: bool,
    pub backup: Option<&'a ConfigMap>,
    pub kubernetes_endpoints: Vec<&'a EndpointSlice>,
    pub cluster_dns: bool,
    /// Every Service (slimmed: see [`super::external::slim_service`]).
    pub services: Vec<&'a Service>,
}

/// Builds the planner's view for plan `me`.
pub fn snapshot(me: &MigrationPlan, o: &Observed<'_>) -> Snapshot {
    let nodes = o
        .nodes
        .iter()
        .map(|n| (n.name_any(), node_obs(n)))
        .collect();
    let leases: BTreeMap<String, AgentLease> = o
        .leases
        .iter()
        .filter_map(|l| Some((l.name_any(), agent_lease(l)?)))
        .collect();
    let datapaths = o
        .datapaths
        .iter()
        .map(|d| {
            let lease = leases.get(&d.name_any()).copied();
            (d.name_any(), datapath_obs(d, lease))
        })
        .collect();
    let mut unsupported: Vec<_> = o
        .datapaths
        .iter()
        .filter_map(|d| d.status.as_ref())
        .flat_map(|st| st.sync.unsupported.iter().cloned())
        .collect();
    unsupported.sort();
    unsupported.dedup();

    Snapshot {
        nodes,
        kube_proxy: kube_proxy_obs(o),
        datapaths,
        backup_exists: o
            .backup
            .is_some_and(crate::controller::kube_proxy::backup_complete),
        other_plans: other_plans(me, &o.plans),
        api_server_endpoints: super::api_endpoints::observed(&o.kubernetes_endpoints),
        unsupported_services: unsupported,
        cluster_dns: o.cluster_dns,
        external_services: external::external_services(&o.services),
    }
}

fn node_obs(n: &SlimNode) -> NodeObs {
    let labels: BTreeMap<String, String> = n.labels().clone();
    NodeObs {
        kube_proxy_excluded: labels.contains_key(KUBE_PROXY_EXCLUDED_LABEL),
        unschedulable: n.unschedulable(),
        labels,
        internal_ip: external::internal_ip(n),
        startup_taint: super::triggers::has_startup_taint(n),
        created: n.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

/// kube-proxy's DaemonSet, its pods (by node) and its ConfigMap.
fn kube_proxy_obs(o: &Observed<'_>) -> KubeProxyObs {
    let ds = o.kube_proxy_daemon_set;
    let daemon_set = ds.map(|ds| DaemonSetObs {
        excludes_label: crate::controller::kube_proxy::excludes_label(ds),
        rollout_held: crate::controller::kube_proxy::rollout_held(ds),
        pods_current: crate::controller::kube_proxy::pods_current(ds),
        managed_by: managers(ds, o.kubeadm_config),
    });
    let pods = ds
        .map(|ds| {
            o.pods
                .iter()
                .filter(|p| owned_by(p, ds))
                .filter_map(|p| Some((p.node_name()?.to_string(), PodObs { ready: p.ready() })))
                .collect()
        })
        .unwrap_or_default();
    KubeProxyObs {
        daemon_set,
        config_map: o.kube_proxy_config_map.map(config_map_obs),
        pods,
    }
}

/// What the planner reads of a NodeDatapath, with its agent's Lease.
fn datapath_obs(d: &NodeDatapath, lease: Option<AgentLease>) -> DatapathObs {
    let st = d.status.clone().unwrap_or_default();
    let ingress = external::ingress(&st);
    DatapathObs {
        spec_mode: d.spec.mode,
        active_mode: st.active_mode,
        lease,
        missing_capabilities: st.capabilities.map(|c| c.missing),
        services_seen: st.sync.services_seen,
        services_programmed: st.sync.services_programmed,
        cleanup: st.cleanup.map(|c| RequestOutcome {
            observed_generation: c.observed_generation,
            succeeded: c.succeeded,
            message: c.message,
        }),
        probe: st.probe.map(|p| RequestOutcome {
            observed_generation: p.observed_generation,
            succeeded: p.passed,
            message: (!p.passed).then(|| probe_failures(&p)),
        }),
        drops: st
            .drops
            .iter()
            .filter(|(reason, _)| !SAME_AS_KUBE_PROXY.contains(&reason.as_str()))
            .map(|(_, n)| n)
            .sum(),
        ingress,
        peer_probe_requested: d.spec.peer_probe.as_ref().map_or(0, |r| r.generation),
        peer_probe: st.peer_probe.as_ref().map(external::peer_probe),
    }
}

/// What the planner reads of an agent's Lease: when it was renewed and for
/// how long (`None` when it was never renewed).
pub fn agent_lease(l: &Lease) -> Option<AgentLease> {
    let spec = l.spec.as_ref()?;
    Some(AgentLease {
        renewed: spec.renew_time.as_ref()?.0,
        duration_secs: i64::from(
            spec.lease_duration_seconds
                .unwrap_or(AGENT_LEASE_DURATION_SECS),
        ),
    })
}

fn probe_failures(p: &switchyard_api::ProbeResult) -> String {
    let failed: Vec<String> = p
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "probe {:?} to {} failed ({} ok, {} failed{})",
                r.name,
                r.target,
                r.successes,
                r.failures,
                r.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if failed.is_empty() {
        "probes failed".into()
    } else {
        failed.join("; ")
    }
}

fn owned_by(p: &SlimPod, ds: &DaemonSet) -> bool {
    let uid = ds.uid();
    p.owner_references()
        .iter()
        .any(|o| o.kind == "DaemonSet" && (Some(&o.uid) == uid.as_ref() || o.name == ds.name_any()))
}

/// What the planner reads of kube-proxy's `config.conf` (a
/// KubeProxyConfiguration); `mode: None` when there is none to read.
pub fn config_map_obs(cm: &ConfigMap) -> ConfigMapObs {
    let conf = cm
        .data
        .as_ref()
        .and_then(|d| d.get("config.conf"))
        .and_then(|c| serde_yaml::from_str::<serde_yaml::Value>(c).ok());
    let Some(conf) = conf else {
        return ConfigMapObs::default();
    };
    let strings = |v: Option<&serde_yaml::Value>| -> Vec<String> {
        v.and_then(|v| v.as_sequence())
            .map(|s| {
                s.iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    ConfigMapObs {
        mode: Some(
            conf.get("mode")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string(),
        ),
        node_port_addresses: strings(conf.get("nodePortAddresses")),
        localhost_node_ports: conf
            .get("iptables")
            .and_then(|i| i.get("localhostNodePorts"))
            .and_then(|l| l.as_bool()),
    }
}

/// Tools that manage the DaemonSet and would revert our changes.
fn managers(ds: &DaemonSet, kubeadm: bool) -> Vec<String> {
    let labels = ds.labels();
    let annotations = ds.annotations();
    let mut out = Vec::new();
    if annotations.contains_key("argocd.argoproj.io/tracking-id")
        || labels.contains_key("argocd.argoproj.io/instance")
    {
        out.push("Argo CD".to_string());
    }
    if labels
        .get("app.kubernetes.io/managed-by")
        .is_some_and(|v| v == "Helm")
    {
        out.push("Helm".to_string());
    }
    if labels
        .get("addonmanager.kubernetes.io/mode")
        .is_some_and(|v| v == "Reconcile")
    {
        out.push("the addon manager (addonmanager.kubernetes.io/mode=Reconcile)".to_string());
    }
    if kubeadm {
        out.push("kubeadm (`kubeadm upgrade` re-creates kube-proxy unless its ConfigMap is gone or the addon/kube-proxy phase is skipped)".to_string());
    }
    out
}

fn other_plans(me: &MigrationPlan, plans: &[&MigrationPlan]) -> Vec<OtherPlan> {
    let key = |p: &MigrationPlan| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    };
    plans
        .iter()
        .filter(|p| p.name_any() != me.name_any())
        .map(|p| OtherPlan {
            name: p.name_any(),
            phase: p.status.as_ref().map_or(Phase::Pending, |s| s.phase),
            older: key(p) < key(me),
            holds_nodes: p.status.as_ref().is_some_and(|s| {
                s.expanded().nodes.iter().any(|n| {
                    !matches!(
                        n.step,
                        NodeStep::Pending | NodeStep::RolledBack | NodeStep::Gone
                    )
                })
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::pods::{SlimCondition, SlimSpec, SlimStatus};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;
    use switchyard_api::{MigrationPlanSpec, MigrationPlanStatus};

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn plan(name: &str, created: i64, phase: Phase) -> MigrationPlan {
        let mut p = MigrationPlan::new(name, MigrationPlanSpec::default());
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        p.status = Some(MigrationPlanStatus {
            phase,
            ..MigrationPlanStatus::default()
        });
        p
    }

    fn pod(node: &str, owner: &str, ready: bool) -> SlimPod {
        SlimPod {
            metadata: ObjectMeta {
                owner_references: Some(vec![OwnerReference {
                    kind: "DaemonSet".into(),
                    name: owner.into(),
                    uid: format!("uid-{owner}"),
                    api_version: "apps/v1".into(),
                    ..OwnerReference::default()
                }]),
                ..meta(&format!("{owner}-{node}"))
            },
            spec: Some(SlimSpec {
                node_name: Some(node.into()),
            }),
            status: Some(SlimStatus {
                conditions: vec![SlimCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                }],
            }),
        }
    }

    #[test]
    fn reads_kube_proxy_pods_mode_and_managers() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                uid: Some("uid-kube-proxy".into()),
                annotations: Some(
                    [(
                        "argocd.argoproj.io/tracking-id".to_string(),
                        "x".to_string(),
                    )]
                    .into(),
                ),
                ..meta("kube-proxy")
            },
            ..DaemonSet::default()
        };
        let cm = ConfigMap {
            metadata: meta("kube-proxy"),
            data: Some([("config.conf".to_string(), "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n".to_string())].into()),
            ..ConfigMap::default()
        };
        let pods = [
            pod("a", "kube-proxy", true),
            pod("b", "kube-proxy", false),
            pod("c", "other", true),
        ];
        let me = plan("p", 10, Phase::Pending);
        let o = Observed {
            kube_proxy_daemon_set: Some(&ds),
            kube_proxy_config_map: Some(&cm),
            pods: pods.iter().collect(),
            kubeadm_config: true,
            ..Observed::default()
        };
        let s = snapshot(&me, &o);
        assert_eq!(
            s.kube_proxy.config_map.as_ref().unwrap().mode.as_deref(),
            Some("nftables")
        );
        assert_eq!(
            s.kube_proxy.pods.len(),
            2,
            "pods of other DaemonSets are not kube-proxy's"
        );
        assert!(s.kube_proxy.ready_on("a") && !s.kube_proxy.ready_on("b"));
        let managers = s.kube_proxy.daemon_set.unwrap().managed_by;
        assert_eq!(managers.len(), 2);
        assert!(managers[0].contains("Argo CD") && managers[1].contains("kubeadm"));

        let empty = ConfigMap {
            metadata: meta("kube-proxy"),
            data: Some([("config.conf".to_string(), "mode: \"\"\n".to_string())].into()),
            ..ConfigMap::default()
        };
        assert_eq!(config_map_obs(&empty).mode.as_deref(), Some(""));
    }

    #[test]
    fn plans_endpoints_and_nodes() {
        let me = plan("b", 20, Phase::Pending);
        let older = plan("a", 10, Phase::Migrating);
        let younger = plan("c", 30, Phase::Preflight);
        let mut node = SlimNode::named("n1");
        node.metadata.labels =
            Some([(KUBE_PROXY_EXCLUDED_LABEL.to_string(), "true".to_string())].into());
        node.spec = Some(crate::controller::cached::SlimNodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let slice = EndpointSlice {
            metadata: meta("kubernetes"),
            address_type: "IPv4".into(),
            endpoints: vec![
                Endpoint {
                    addresses: vec!["172.31.255.1".into()],
                    ..Endpoint::default()
                },
                Endpoint {
                    addresses: vec!["172.31.255.9".into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(false),
                        ..Default::default()
                    }),
                    ..Endpoint::default()
                },
            ],
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: Some(6443),
                ..Default::default()
            }]),
        };
        let o = Observed {
            nodes: vec![&node],
            plans: vec![&me, &older, &younger],
            kubernetes_endpoints: vec![&slice],
            ..Observed::default()
        };
        let s = snapshot(&me, &o);
        assert_eq!(
            s.other_plans,
            vec![
                OtherPlan {
                    name: "a".into(),
                    phase: Phase::Migrating,
                    older: true,
                    holds_nodes: false,
                },
                OtherPlan {
                    name: "c".into(),
                    phase: Phase::Preflight,
                    older: false,
                    holds_nodes: false,
                },
            ]
        );
        assert_eq!(s.api_server_endpoints, vec!["172.31.255.1:6443"]);
        let n = &s.nodes["n1"];
        assert!(n.unschedulable && n.kube_proxy_excluded);
        assert!(!s.backup_exists);
    }

    #[test]
    fn each_datapath_reads_the_lease_named_after_its_node() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        use switchyard_api::NodeDatapathSpec;

        let lease = |name: &str, renewed: Option<i64>, duration: Option<i32>| Lease {
            metadata: meta(name),
            spec: Some(LeaseSpec {
                holder_identity: Some(name.into()),
                renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
        };
        let dps: Vec<NodeDatapath> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| NodeDatapath::new(n, NodeDatapathSpec::default()))
            .collect();
        let leases = [
            lease("a", Some(1000), Some(40)),
            lease("b", None, Some(40)),
            lease("c", Some(1000), None),
        ];
        let me = plan("p", 10, Phase::Pending);
        let o = Observed {
            datapaths: dps.iter().collect(),
            leases: leases.iter().collect(),
            ..Observed::default()
        };
        let s = snapshot(&me, &o);
        let at = Timestamp::from_second(1000).unwrap();
        assert_eq!(
            s.datapaths["a"].lease,
            Some(AgentLease {
                renewed: at,
                duration_secs: 40
            })
        );
        assert_eq!(s.datapaths["b"].lease, None, "never renewed");
        assert_eq!(
            s.datapaths["c"].lease.map(|l| l.duration_secs),
            Some(i64::from(AGENT_LEASE_DURATION_SECS)),
            "no duration: the agents' own"
        );
        assert_eq!(s.datapaths["d"].lease, None, "no Lease");
    }
}

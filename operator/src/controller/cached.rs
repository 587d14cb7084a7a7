//! What the operator's caches keep of each object, and why.
//!
//! At 5 000 nodes the caches hold 5 000 Nodes, NodeDatapaths, agent Leases
//! and kube-proxy pods: they are most of the operator's memory. Each keeps
//! what the planner, the triggers and the Peer API read and nothing else.
//! A Node is decoded straight into [`SlimNode`] (serde skips a real
//! kubelet's image list and conditions while parsing); a NodeDatapath and
//! a Lease keep their own types, emptied by [`slim_datapath`] and
//! [`slim_lease`] of the fields nothing reads. The tests check that what
//! the snapshot concludes from an object is the same before and after.
//! The measurements are in `BENCHMARKS.md`, "Operator at scale".

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{NodeAddress, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use switchyard_api::{Capabilities, INGRESS_ATTACH_TYPE, NodeDatapath};

/// Implements [`kube::Resource`] for a slim decoding of a built-in kind, so
/// that it can be listed, watched and cached as the kind itself.
macro_rules! cached_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use cached_resource;

/// A Node reduced to what the operator reads: its name, labels and
/// creation time, whether it is cordoned, its taints and its addresses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimNode {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SlimNodeSpec>,
    #[serde(default)]
    pub status: Option<SlimNodeStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimNodeSpec {
    pub unschedulable: Option<bool>,
    pub taints: Option<Vec<Taint>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SlimNodeStatus {
    pub addresses: Option<Vec<NodeAddress>>,
}

cached_resource!(SlimNode, "Node", "nodes", k8s_openapi::ClusterResourceScope);

impl SlimNode {
    /// A node named `name`, nothing else set.
    #[cfg(test)]
    pub fn named(name: &str) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Self::default()
        }
    }

    /// Cordoned (`spec.unschedulable`).
    pub fn unschedulable(&self) -> bool {
        self.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    }

    /// Its taints (none without a spec).
    pub fn taints(&self) -> &[Taint] {
        self.spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
    }

    /// Its addresses (none without a status).
    pub fn addresses(&self) -> &[NodeAddress] {
        self.status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default()
    }
}

/// Keeps of a Node's metadata its name, labels, creation time and
/// version (which tells whether a write shows yet: `super::expectations`).
pub fn slim_node(n: &mut SlimNode) {
    let m = std::mem::take(&mut n.metadata);
    n.metadata = ObjectMeta {
        name: m.name,
        labels: m.labels,
        creation_timestamp: m.creation_timestamp,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    };
}

/// Empties what nothing in the operator reads of a NodeDatapath: managed
/// fields, the agent's conditions, version, heartbeat and leftovers, and
/// of its capabilities all but what is missing and whether the ingress
/// program loads.
pub fn slim_datapath(d: &mut NodeDatapath) {
    d.metadata.managed_fields = None;
    d.metadata.annotations = None;
    let Some(st) = d.status.as_mut() else {
        return;
    };
    st.conditions = Vec::new();
    st.agent_version = None;
    st.heartbeat = None;
    st.leftovers = Vec::new();
    if let Some(caps) = st.capabilities.take() {
        let ingress = caps.ingress_loads();
        st.capabilities = Some(Capabilities {
            missing: caps.missing,
            ingress_missing: caps.ingress_missing,
            attach_types: ingress
                .then(|| INGRESS_ATTACH_TYPE.to_string())
                .into_iter()
                .collect(),
            ..Capabilities::default()
        });
    }
}

/// Keeps of an agent's Lease its name and spec (holder, duration, renewal).
pub fn slim_lease(l: &mut Lease) {
    let m = std::mem::take(&mut l.metadata);
    l.metadata = ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        ..ObjectMeta::default()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::observe::{Observed, snapshot};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;
    use switchyard_api::{MigrationPlan, MigrationPlanSpec};

    /// A Node as a real kubelet reports it.
    fn kubelet_node() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "n1", "uid": "u", "resourceVersion": "7",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"kubernetes.io/hostname": "n1", "switchyard.dev/kube-proxy-excluded": "true"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
            },
            "spec": {
                "podCIDR": "10.244.1.0/24", "unschedulable": true,
                "taints": [{"key": switchyard_api::STARTUP_TAINT, "effect": "NoSchedule"}],
            },
            "status": {
                "addresses": [{"type": "InternalIP", "address": "172.31.255.11"},
                              {"type": "Hostname", "address": "n1"}],
                "conditions": [{"type": "Ready", "status": "True", "message": "kubelet is posting ready status"}],
                "images": [{"names": ["registry.k8s.io/kube-proxy:v1.34.4"], "sizeBytes": 30000000}],
                "nodeInfo": {"kubeletVersion": "v1.34.4", "machineID": "m", "systemUUID": "s",
                             "bootID": "b", "kernelVersion": "6.18", "osImage": "Debian",
                             "containerRuntimeVersion": "containerd://2", "kubeProxyVersion": "",
                             "operatingSystem": "linux", "architecture": "amd64"},
            },
        })
    }

    fn plan() -> MigrationPlan {
        MigrationPlan::new("p", MigrationPlanSpec::default())
    }

    #[test]
    fn a_slim_node_reads_as_the_whole_node_and_keeps_nothing_else() {
        let mut slim: SlimNode = serde_json::from_value(kubelet_node()).expect("a node decodes");
        slim_node(&mut slim);
        let whole: Node = serde_json::from_value(kubelet_node()).expect("a node decodes");
        let observed = Observed {
            nodes: vec![&slim],
            ..Observed::default()
        };
        let node = &snapshot(&plan(), &observed).nodes["n1"];
        assert!(node.kube_proxy_excluded && node.unschedulable && node.startup_taint);
        assert_eq!(node.internal_ip.as_deref(), Some("172.31.255.11"));
        assert_eq!(
            node.labels,
            whole.metadata.labels.clone().unwrap_or_default()
        );
        assert_eq!(node.created, whole.metadata.creation_timestamp.map(|t| t.0));
        assert!(slim.metadata.annotations.is_none() && slim.metadata.managed_fields.is_none());
        assert!(slim.metadata.uid.is_none());
        assert_eq!(slim.metadata.resource_version.as_deref(), Some("7"));
    }

    /// A NodeDatapath as an agent reports it mid-migration.
    fn reported_datapath() -> NodeDatapath {
        serde_json::from_value(json!({
            "apiVersion": "switchyard.dev/v1alpha1", "kind": "NodeDatapath",
            "metadata": {"name": "n1", "managedFields": [{"manager": "agent"}]},
            "spec": {"mode": "Active", "peerProbe": {"generation": 3, "targets": [],
                                               "timeoutSeconds": 2, "consecutiveSuccesses": 3}},
            "status": {
                "agentVersion": "0.1.0", "activeMode": "Active", "observerPort": 4244,
                "heartbeat": "2026-01-02T03:04:05Z",
                "capabilities": {"kernel": "6.18", "btf": true, "cgroup2": "/sys/fs/cgroup",
                                 "attachTypes": ["cgroup/connect4", INGRESS_ATTACH_TYPE],
                                 "missing": [], "iptablesBackends": ["nft"], "nftables": true},
                "sync": {"servicesSeen": 10, "servicesProgrammed": 9, "backendsProgrammed": 30,
                         "frontendsProgrammed": 12, "unsupported": ["default/sctp"]},
                "leftovers": [{"backend": "iptables-nft", "found": 3, "removed": 0, "objects": ["KUBE-SERVICES"]}],
                "cleanup": {"observedGeneration": 2, "succeeded": false, "removed": 1, "message": "busy"},
                "probe": {"observedGeneration": 2, "passed": false, "results": [
                    {"name": "dns", "target": "10.96.0.10:53/UDP", "passed": true, "successes": 3, "failures": 0},
                    {"name": "api", "target": "10.96.0.1:443/TCP", "passed": false, "successes": 0,
                     "failures": 3, "lastError": "refused"}]},
                "peerProbe": {"observedGeneration": 3, "passed": true, "results": [
                    {"name": "healthz", "node": "n2", "target": "172.31.255.12:10256/TCP", "passed": true,
                     "successes": 3, "failures": 0}]},
                "ingress": {"interfaces": ["eth0"], "attached": true},
                "drops": {"no_backend": 2, "ct_full": 1},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                                "message": "every Service programmed", "lastTransitionTime": "2026-01-02T03:04:05Z"}],
            },
        }))
        .expect("a datapath decodes")
    }

    #[test]
    fn a_slim_datapath_reads_as_the_whole_one() {
        let whole = reported_datapath();
        let mut slim = whole.clone();
        slim_datapath(&mut slim);
        let of = |d: &NodeDatapath| {
            snapshot(
                &plan(),
                &Observed {
                    datapaths: vec![d],
                    ..Observed::default()
                },
            )
        };
        assert_eq!(of(&slim), of(&whole));
        let st = slim.status.as_ref().expect("a status");
        assert!(st.conditions.is_empty() && st.leftovers.is_empty() && st.heartbeat.is_none());
        assert_eq!(st.observer_port, Some(4244), "the Peer API reads it");
        let node = SlimNode::named("n1");
        assert_eq!(
            crate::peer::peers([&node], [&slim]),
            crate::peer::peers([&node], [&whole])
        );
    }

    #[test]
    fn a_slim_lease_keeps_its_name_and_spec() {
        let mut lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "n1", "namespace": "switchyard-system", "uid": "u",
                         "managedFields": [{"manager": "agent"}]},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                     "renewTime": "2026-01-02T03:04:05.000000Z"},
        }))
        .expect("a lease decodes");
        let spec = lease.spec.clone();
        slim_lease(&mut lease);
        assert_eq!(lease.spec, spec);
        assert_eq!(lease.metadata.name.as_deref(), Some("n1"));
        assert!(lease.metadata.managed_fields.is_none() && lease.metadata.uid.is_none());
    }
}

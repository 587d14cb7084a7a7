//! Which watch events are worth a reconcile: a hash of exactly what the
//! planner reads from each object, so updates that change nothing it reads
//! (an agent's Lease renewal, a kubelet's node status report) are dropped
//! instead of starting a full reconcile of every plan. A silent agent is
//! still noticed: the planner requeues itself while it waits.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use switchyard_api::{NodeDatapath, STARTUP_TAINT};

use super::cached::SlimNode;

/// Which events of one watch change what the planner reads: an object that
/// appears or changes in a field it reads, one that is deleted (a Node
/// leaving the cluster), and the end of a relist (objects deleted while the
/// watch was down send no event). Per object it keeps the hash `inputs`
/// gives.
#[derive(Debug)]
pub struct Changes<K> {
    inputs: fn(&K) -> Option<u64>,
    seen: HashMap<String, u64>,
    /// During a relist: what it has listed so far.
    relisting: Option<HashMap<String, u64>>,
}

impl<K: ResourceExt> Changes<K> {
    pub fn new(inputs: fn(&K) -> Option<u64>) -> Self {
        Self {
            inputs,
            seen: HashMap::new(),
            relisting: None,
        }
    }

    /// Whether `event` is worth a reconcile.
    pub fn on(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(o) => {
                let h = (self.inputs)(o).unwrap_or_default();
                self.seen.insert(o.name_any(), h) != Some(h)
            }
            Event::Delete(o) => {
                self.seen.remove(&o.name_any());
                true
            }
            Event::Init => {
                self.relisting = Some(HashMap::new());
                false
            }
            Event::InitApply(o) => {
                let h = (self.inputs)(o).unwrap_or_default();
                self.relisting
                    .get_or_insert_default()
                    .insert(o.name_any(), h);
                false
            }
            Event::InitDone => {
                self.seen = self.relisting.take().unwrap_or_default();
                true
            }
        }
    }
}

/// Hash of a Node's labels, cordon state, InternalIP, startup taint and
/// creation time (all the planner reads).
pub fn node_inputs(n: &SlimNode) -> Option<u64> {
    let mut h = DefaultHasher::new();
    n.labels().hash(&mut h);
    n.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .hash(&mut h);
    super::external::internal_ip(n).hash(&mut h);
    n.unschedulable().hash(&mut h);
    has_startup_taint(n).hash(&mut h);
    Some(h.finish())
}

/// Whether the node carries the taint it registers with in a cluster
/// without kube-proxy ([`STARTUP_TAINT`]).
pub fn has_startup_taint(n: &SlimNode) -> bool {
    n.taints().iter().any(|t| t.key == STARTUP_TAINT)
}

/// Hash of an agent Lease's holder: renewals do not trigger, a new Lease
/// (an agent started) or a new holder does.
pub fn lease_holder(l: &Lease) -> Option<u64> {
    let mut h = DefaultHasher::new();
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .hash(&mut h);
    Some(h.finish())
}

/// Hash of a NodeDatapath's spec and status without the time of the write.
pub fn datapath_inputs(d: &NodeDatapath) -> Option<u64> {
    let mut status = d.status.clone().unwrap_or_default();
    status.heartbeat = None;
    let text = serde_json::to_string(&(&d.spec, &status)).ok()?;
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cached::{SlimNodeSpec, SlimNodeStatus};
    use k8s_openapi::api::core::v1::NodeAddress;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use switchyard_api::{DatapathMode, NodeDatapathSpec, NodeDatapathStatus};

    #[test]
    fn node_status_reports_do_not_trigger_but_cordon_and_labels_do() {
        let mut n = SlimNode::named("a");
        let base = node_inputs(&n);
        n.status = Some(SlimNodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "Hostname".into(),
                address: "a".into(),
            }]),
        });
        assert_eq!(
            node_inputs(&n),
            base,
            "an address the planner does not read"
        );
        n.spec = Some(SlimNodeSpec {
            unschedulable: Some(true),
            ..SlimNodeSpec::default()
        });
        let cordoned = node_inputs(&n);
        assert_ne!(cordoned, base);
        n.labels_mut().insert("x".into(), "y".into());
        assert_ne!(node_inputs(&n), cordoned);
    }

    #[test]
    fn a_node_deleted_or_recreated_triggers_and_a_status_report_does_not() {
        let mut changes = Changes::new(node_inputs);
        let mut n = SlimNode::named("a");
        assert!(!changes.on(&Event::Init));
        assert!(!changes.on(&Event::InitApply(n.clone())));
        assert!(changes.on(&Event::InitDone));
        n.status = Some(SlimNodeStatus {
            addresses: Some(Vec::new()),
        });
        assert!(!changes.on(&Event::Apply(n.clone())), "a status report");
        assert!(changes.on(&Event::Delete(n.clone())), "the node left");
        assert!(
            changes.on(&Event::Apply(n.clone())),
            "back: new to the watch"
        );
        n.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        assert!(changes.on(&Event::Apply(n)), "another machine, same name");
    }

    #[test]
    fn heartbeats_do_not_trigger_but_progress_does() {
        let mut d = NodeDatapath::new("a", NodeDatapathSpec::default());
        d.status = Some(NodeDatapathStatus {
            heartbeat: Some(Time(Timestamp::UNIX_EPOCH)),
            ..NodeDatapathStatus::default()
        });
        let base = datapath_inputs(&d);
        if let Some(s) = d.status.as_mut() {
            s.heartbeat = Some(Time(Timestamp::now()));
        }
        assert_eq!(datapath_inputs(&d), base);
        if let Some(s) = d.status.as_mut() {
            s.active_mode = Some(DatapathMode::Active);
        }
        let active = datapath_inputs(&d);
        assert_ne!(active, base);
        d.spec.mode = DatapathMode::Active;
        assert_ne!(datapath_inputs(&d), active);
    }
}

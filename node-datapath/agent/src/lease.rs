//! The agent's liveness, the kubelet's node-lease way: a
//! `coordination.k8s.io/v1` Lease named after the node in
//! [`AGENT_LEASE_NAMESPACE`], held by the node, renewed every heartbeat.
//! Created when missing; after that each renewal is one update of the Lease
//! last written (conditional on its resourceVersion), which changes only
//! `renewTime`. The NodeDatapath status is written only when it changes.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use switchyard_api::{AGENT_LEASE_DURATION_SECS, AGENT_LEASE_NAMESPACE};

use crate::agent::FIELD_MANAGER;
use crate::error::Result;

/// This node's Lease and the last version of it the agent wrote.
#[derive(Debug)]
pub struct NodeLease {
    api: Api<Lease>,
    node: String,
    /// The Lease as the last successful write returned it; `None` at start
    /// and after a failed write (the next renewal reads it again).
    last: Option<Lease>,
}

/// The Lease renewed at `now`: held by `node` for
/// [`AGENT_LEASE_DURATION_SECS`], acquired when `previous` was held by
/// someone else (or is new), the rest of `previous` kept (pure).
pub fn renewed(previous: Option<&Lease>, node: &str, now: Timestamp) -> Lease {
    let mut lease = previous.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(AGENT_LEASE_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(node) {
        spec = LeaseSpec {
            holder_identity: Some(node.to_string()),
            acquire_time: Some(MicroTime(now)),
            lease_transitions: spec.lease_transitions.map(|t| t + 1),
            ..spec
        };
    }
    spec.lease_duration_seconds = Some(AGENT_LEASE_DURATION_SECS);
    spec.renew_time = Some(MicroTime(now));
    lease.spec = Some(spec);
    lease
}

impl NodeLease {
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            api: Api::namespaced(client, AGENT_LEASE_NAMESPACE),
            node: node.to_string(),
            last: None,
        }
    }

    /// Renews the Lease: one update of the Lease last written; on the first
    /// renewal, or after a failure (a conflict: someone else wrote it; it
    /// was deleted), reads it and creates it when missing.
    pub async fn renew(&mut self) -> Result<()> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        if let Some(last) = self.last.take() {
            let next = renewed(Some(&last), &self.node, Timestamp::now());
            match self.api.replace(&self.node, &pp, &next).await {
                Ok(lease) => {
                    self.last = Some(lease);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let current = self.api.get_opt(&self.node).await?;
        let next = renewed(current.as_ref(), &self.node, Timestamp::now());
        let written = match current {
            Some(_) => self.api.replace(&self.node, &pp, &next).await?,
            None => self.api.create(&pp, &next).await?,
        };
        self.last = Some(written);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_new_lease_is_held_by_the_node_and_renewal_moves_only_renew_time() {
        let first = renewed(None, "node1", t(100));
        assert_eq!(first.metadata.name.as_deref(), Some("node1"));
        assert_eq!(
            first.metadata.namespace.as_deref(),
            Some(AGENT_LEASE_NAMESPACE)
        );
        let spec = first.spec.clone().unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("node1"));
        assert_eq!(spec.lease_duration_seconds, Some(AGENT_LEASE_DURATION_SECS));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(100))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(100))));

        let mut stored = first.clone();
        stored.metadata.resource_version = Some("7".into());
        let next = renewed(Some(&stored), "node1", t(110));
        let mut expected = stored.clone();
        if let Some(s) = expected.spec.as_mut() {
            s.renew_time = Some(MicroTime(t(110)));
        }
        assert_eq!(next, expected, "only renewTime moves; resourceVersion kept");
    }

    #[test]
    fn a_lease_held_by_someone_else_is_taken_over() {
        let mut other = renewed(None, "node1", t(100));
        other.spec = Some(LeaseSpec {
            holder_identity: Some("someone".into()),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        });
        let spec = renewed(Some(&other), "node1", t(200))
            .spec
            .unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("node1"));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(200))));
        assert_eq!(spec.lease_transitions, Some(3));
    }
}

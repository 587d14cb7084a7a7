//! The ConfigMap `switchyard-api-endpoints` in the operator's namespace:
//! the API server's direct endpoints (`host:port`, one a line), kept current
//! from the `default/kubernetes` EndpointSlices. The agent DaemonSet mounts
//! it, so an agent that starts after kube-proxy is gone (a restart, a node
//! that joins) finds the API server without the `kubernetes` ClusterIP and
//! without asking the API first.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use switchyard_api::{FIELD_MANAGER, MigrationPlan};
use tracing::info;

use crate::error::Result;

/// The ConfigMap's name (the agent DaemonSet mounts it by this name).
pub const CONFIG_MAP: &str = "switchyard-api-endpoints";
/// The key holding the endpoints, one `host:port` a line.
pub const KEY: &str = "endpoints";

/// The ConfigMap for `endpoints`; `None` when there are none, so a
/// momentary empty view never blanks a list the agents still need.
pub fn config_map(namespace: &str, endpoints: &[String]) -> Option<ConfigMap> {
    if endpoints.is_empty() {
        return None;
    }
    let mut text = endpoints.join("\n");
    text.push('\n');
    Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "switchyard".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), text)])),
        ..ConfigMap::default()
    })
}

/// The API server's endpoints in the `default/kubernetes` EndpointSlices:
/// `ip:port` of each endpoint not known unready, the port named `https`
/// (else the first), sorted.
pub fn observed(slices: &[&EndpointSlice]) -> Vec<String> {
    let mut out = Vec::new();
    for s in slices {
        let port = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| s.ports.iter().flatten().next())
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for e in &s.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            out.extend(e.addresses.iter().map(|a| format!("{a}:{port}")));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `spec.apiServer` the agents are given first: that of the first plan
/// by name that sets one and is not being deleted.
pub fn hint(plans: &[&MigrationPlan]) -> Option<String> {
    let mut named: Vec<(String, &str)> = plans
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.name_any(), p.spec.api_server.as_deref()?)))
        .collect();
    named.sort();
    named.first().map(|(_, addr)| addr.to_string())
}

/// The endpoints to publish: the plan's `spec.apiServer` first when set
/// (a load balancer or other address the user prefers), then the observed
/// ones, without repeats.
pub fn with_hint(hint: Option<&str>, observed: &[String]) -> Vec<String> {
    let mut out: Vec<String> = hint.map(str::to_string).into_iter().collect();
    out.extend(
        observed
            .iter()
            .filter(|e| Some(e.as_str()) != hint)
            .cloned(),
    );
    out
}

/// Writes the ConfigMap (server-side apply) when the endpoints differ from
/// those this process last wrote.
#[derive(Debug)]
pub struct Publisher {
    last: Mutex<Vec<String>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new()
    }
}

impl Publisher {
    pub fn new() -> Self {
        Self {
            last: Mutex::new(Vec::new()),
        }
    }

    fn changed(&self, endpoints: &[String]) -> bool {
        self.last
            .lock()
            .map(|last| last.as_slice() != endpoints)
            .unwrap_or(true)
    }

    pub async fn publish(
        &self,
        client: &Client,
        namespace: &str,
        endpoints: &[String],
    ) -> Result<()> {
        let Some(cm) = config_map(namespace, endpoints) else {
            return Ok(());
        };
        if !self.changed(endpoints) {
            return Ok(());
        }
        Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .patch(
                CONFIG_MAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await?;
        info!(
            configmap = CONFIG_MAP,
            ?endpoints,
            "published the API server endpoints"
        );
        if let Ok(mut last) = self.last.lock() {
            *last = endpoints.to_vec();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoints_are_one_a_line() {
        let eps = vec!["10.0.0.1:6443".to_string(), "10.0.0.2:6443".to_string()];
        let cm = config_map("switchyard-system", &eps).expect("a ConfigMap");
        assert_eq!(cm.metadata.name.as_deref(), Some(CONFIG_MAP));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("switchyard-system"));
        let data = cm.data.expect("data");
        assert_eq!(data[KEY], "10.0.0.1:6443\n10.0.0.2:6443\n");
    }

    #[test]
    fn the_plans_api_server_is_published_first() {
        let observed = vec!["10.0.0.1:6443".to_string(), "10.0.0.2:6443".to_string()];
        assert_eq!(with_hint(None, &observed), observed);
        assert_eq!(
            with_hint(Some("10.0.0.2:6443"), &observed),
            vec!["10.0.0.2:6443".to_string(), "10.0.0.1:6443".to_string()]
        );
        assert_eq!(
            with_hint(Some("lb.example:6443"), &[]),
            vec!["lb.example:6443".to_string()]
        );
    }

    #[test]
    fn the_first_plan_by_name_that_sets_an_api_server_gives_the_hint() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use k8s_openapi::jiff::Timestamp;
        use switchyard_api::MigrationPlanSpec;
        let plan = |name: &str, addr: Option<&str>, deleting: bool| {
            let mut p = MigrationPlan::new(
                name,
                MigrationPlanSpec {
                    api_server: addr.map(str::to_string),
                    ..MigrationPlanSpec::default()
                },
            );
            p.metadata.deletion_timestamp = deleting.then_some(Time(Timestamp::UNIX_EPOCH));
            p
        };
        let (a, b, c) = (
            plan("a", Some("10.0.0.9:6443"), true),
            plan("b", None, false),
            plan("c", Some("lb.example:6443"), false),
        );
        assert_eq!(hint(&[&c, &b, &a]).as_deref(), Some("lb.example:6443"));
        assert_eq!(hint(&[&b, &a]), None);
    }

    #[test]
    fn no_endpoints_write_nothing() {
        assert!(config_map("switchyard-system", &[]).is_none());
    }

    #[test]
    fn only_a_change_is_written_again() {
        let p = Publisher::new();
        let eps = vec!["10.0.0.1:6443".to_string()];
        assert!(p.changed(&eps));
        *p.last.lock().expect("lock") = eps.clone();
        assert!(!p.changed(&eps));
        assert!(p.changed(&["10.0.0.2:6443".to_string()]));
    }
}

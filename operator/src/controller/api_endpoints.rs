//! The ConfigMap `switchyard-api-endpoints` in the operator's namespace:
//! the API server's direct endpoints (`host:port`, one a line), kept current
//! from the `default/kubernetes` EndpointSlices. The agent DaemonSet mounts
//! it, so an agent that starts after kube-proxy is gone (a restart, a node
//! that joins) finds the API server without the `kubernetes` ClusterIP and
//! without asking the API first.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use switchyard_api::FIELD_MANAGER;
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

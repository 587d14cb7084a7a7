//! The plugin's one error type. Each message is what `kubectl switchyard`
//! prints after `error: ` before exiting 1.

/// Everything that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Worded as kubectl words a missing object, so scripts that grep for it
    /// keep working.
    #[error("migrationplan {0:?} not found")]
    PlanNotFound(String),
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("no cluster configuration found (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("encoding the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("encoding the output as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error(
        "no running switchyard agent pod{0} (pods labelled app.kubernetes.io/name=switchyard-agent in switchyard-system)"
    )]
    NoAgents(String),
    #[error("flows of node {node} (agent pod {pod}): {}", agent_hint(source))]
    Agent {
        node: String,
        pod: String,
        source: kube::Error,
    },
    #[error("flows of node {node}: a line is not JSON: {source}")]
    BadLine {
        node: String,
        source: serde_json::Error,
    },
    #[error("flows of node {node}: reading the answer: {source}")]
    Stream {
        node: String,
        source: std::io::Error,
    },
    #[error("building a request: {0}")]
    Request(String),
}

/// An agent's error, with what a refusal means.
fn agent_hint(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            format!("{e} (observe needs `get` on `pods/proxy` in the switchyard-system namespace)")
        }
        _ => e.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"code": code, "message": "nope"}))
                .unwrap_or_default();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_refused_proxy_request_names_the_grant_observe_needs() {
        let agent = |code| Error::Agent {
            node: "node1".into(),
            pod: "switchyard-agent-x".into(),
            source: api_error(code),
        };
        let refused = agent(403).to_string();
        assert!(refused.starts_with("flows of node node1 (agent pod switchyard-agent-x): "));
        assert!(
            refused.contains("needs `get` on `pods/proxy` in the switchyard-system namespace"),
            "{refused}"
        );
        assert!(!agent(503).to_string().contains("pods/proxy"));
    }
}

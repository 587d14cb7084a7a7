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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

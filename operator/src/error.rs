//! The operator's one error type.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "the switchyard CRDs are not installed (MigrationPlan/NodeDatapath in {} unknown to the API server); apply crds/ or `kubectl apply -k config/` first",
        switchyard_api::API_VERSION
    )]
    CrdsMissing,
    #[error("plan: {0}")]
    Plan(#[from] crate::planner::PlanError),
    #[error("encoding {what}: {source}")]
    Yaml {
        what: &'static str,
        source: serde_yaml::Error,
    },
    #[error("annotation {name}: {source}")]
    Annotation {
        name: &'static str,
        source: serde_json::Error,
    },
    #[error("kube-proxy backup ConfigMap {0} is missing or incomplete")]
    BackupMissing(String),
    #[error("{kind} {name} has no {field}")]
    MissingField {
        kind: &'static str,
        name: String,
        field: &'static str,
    },
    #[error("lost the leader lease {0}")]
    LeaseLost(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

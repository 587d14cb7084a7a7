//! The agent's one error type.

/// Everything that stops the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "cannot reach the API server ({0}); the agent dials the endpoints the operator publishes in the ConfigMap switchyard-api-endpoints (mounted), else SWITCHYARD_API_SERVER, else the in-cluster address while kube-proxy serves it"
    )]
    ApiUnreachable(String),
    #[error("the NodeDatapath CRD is not installed: apply crds/ first")]
    CrdMissing,
    #[error("node {0} not found: is NODE_NAME set to this node's name?")]
    NodeMissing(String),
    #[error("datapath: {0}")]
    Datapath(#[from] switchyard_node_datapath::DatapathError),
    #[error("load-balancer state: {0}")]
    Lb(#[from] switchyard_lb::LbError),
    #[error("map write {applied} of a sync failed: {source}")]
    MapWrite {
        applied: usize,
        source: switchyard_node_datapath::DatapathError,
    },
    #[error("kube config: {0}")]
    Config(String),
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

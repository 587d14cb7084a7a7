//! The thin I/O shell: the API server reads and writes the commands need.

use std::path::Path;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use switchyard_api::{AGENT_LEASE_NAMESPACE, MigrationPlan, NodeDatapath};

use crate::error::{Error, Result};

/// A client as kubectl would build one from the same flags: the given
/// kubeconfig file or the default chain, and the given context or the
/// current one; `streaming`: no read timeout (an answer may be quiet for
/// long).
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    streaming: bool,
) -> Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let mut config = match (kubeconfig, context) {
        (Some(path), _) => {
            Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await?,
        (None, None) => Config::infer().await?,
    };
    if streaming {
        config.read_timeout = None;
    }
    tracing::debug!(cluster = %config.cluster_url, "connecting");
    Ok(Client::try_from(config)?)
}

/// One plan; [`Error::PlanNotFound`] when there is none of that name.
pub async fn plan(client: &Client, name: &str) -> Result<MigrationPlan> {
    let api: Api<MigrationPlan> = Api::all(client.clone());
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::PlanNotFound(name.to_string()))
}

/// Every plan.
pub async fn plans(client: &Client) -> Result<Vec<MigrationPlan>> {
    let api: Api<MigrationPlan> = Api::all(client.clone());
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Every NodeDatapath and every agent Lease.
pub async fn datapaths(client: &Client) -> Result<(Vec<NodeDatapath>, Vec<Lease>)> {
    let api: Api<NodeDatapath> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), AGENT_LEASE_NAMESPACE);
    let lp = ListParams::default();
    let (dps, leases) = tokio::try_join!(api.list(&lp), leases.list(&lp))?;
    Ok((dps.items, leases.items))
}

/// A JSON merge patch of a plan's spec (the fields a user owns; the
/// operator writes only the status).
pub async fn patch_plan(
    client: &Client,
    name: &str,
    patch: &serde_json::Value,
) -> Result<MigrationPlan> {
    let api: Api<MigrationPlan> = Api::all(client.clone());
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Err(kube::Error::Api(s)) if s.is_not_found() => Err(Error::PlanNotFound(name.into())),
        other => Ok(other?),
    }
}

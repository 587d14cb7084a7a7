//! Waiting until the API server's authorizer applies what `config/rbac`
//! grants. RBAC reads bindings from an informer: for a moment after they
//! are created they may not apply yet. A real node takes seconds to start
//! a DaemonSet's pod; the lab, milliseconds: an agent started with the
//! rest of `config/` can be refused its first requests (a `403` the RBAC
//! check counts). The lab's install applies RBAC first and waits here.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::rbac::{Grant, grants};
use crate::cluster::wait_for;
use crate::error::{Error, Result};

/// Every `*.yaml` of directory `dir`, as one stream of YAML documents.
pub fn read_yaml_dir(dir: &Path) -> Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io("reading", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        out.push_str(&std::fs::read_to_string(&f).map_err(Error::io("reading", &f))?);
        out.push_str("\n---\n");
    }
    Ok(out)
}

/// Whether the authorizer allows grant `g` now.
async fn allowed(reviews: &Api<SubjectAccessReview>, g: &Grant) -> Result<bool> {
    let (resource, subresource) = match g.resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (g.resource.clone(), None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(g.user.clone()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(g.group.clone()),
                resource: Some(resource),
                subresource,
                verb: Some(g.verb.clone()),
                namespace: g.namespace.clone(),
                name: g.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Waits (up to 30 s) until the authorizer allows every grant of the RBAC
/// YAML in `rbac_dir` (`config/rbac`).
pub async fn wait_effective(client: &kube::Client, rbac_dir: &Path) -> Result<()> {
    let all = grants(&read_yaml_dir(rbac_dir)?)?;
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    wait_for(
        "switchyard's RBAC to apply",
        Duration::from_secs(30),
        || async {
            for g in &all {
                if !allowed(&reviews, g).await.ok()? {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
}

//! The rules RBAC grants each switchyard identity (read from the YAML of
//! `config/rbac`), and which of them no recorded request exercised.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde::Deserialize;

use super::{Request, USERS};
use crate::error::{Error, Result};

/// One granted (user, API group, resource, verb, namespace, name): a rule
/// with several of each is several grants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// The user the binding names.
    pub user: String,
    /// The API group (`""` for the core group).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// The verb.
    pub verb: String,
    /// The namespace a RoleBinding scopes it to; `None`: every namespace
    /// and the cluster-scoped objects (a ClusterRoleBinding).
    pub namespace: Option<String>,
    /// The object named by `resourceNames`; `None`: any object.
    pub name: Option<String>,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        let who = self.user.rsplit(':').next().unwrap_or(&self.user);
        write!(f, "{who}: {} {group}/{}", self.verb, self.resource)?;
        match &self.namespace {
            Some(ns) => write!(f, " in {ns}")?,
            None => write!(f, " cluster-wide")?,
        }
        if let Some(n) = &self.name {
            write!(f, " named {n}")?;
        }
        Ok(())
    }
}

impl Grant {
    /// Whether request `r` used this grant: it was not refused, and this
    /// grant [covers](Grant::covers) it. A server-side apply that created
    /// its object (`patch` answered `201`) was also authorized as a
    /// `create` of that object.
    pub fn exercised_by(&self, r: &Request) -> bool {
        let created = self.verb == "create" && r.verb == "patch" && r.code == 201;
        !r.forbidden() && r.code != 401 && (self.covers(r) || (created && self.scope_covers(r)))
    }

    /// Whether this grant allows request `r` (user, group, resource, verb,
    /// namespace and name).
    pub fn covers(&self, r: &Request) -> bool {
        r.verb == self.verb && self.scope_covers(r)
    }

    /// Whether `r` is within this grant, the verb aside.
    fn scope_covers(&self, r: &Request) -> bool {
        r.user == self.user
            && r.group == self.group
            && r.rbac_resource() == self.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| r.namespace.as_ref() == Some(ns))
            && self
                .name
                .as_ref()
                .is_none_or(|n| r.name.as_ref() == Some(n))
    }
}

/// The grants no request in `requests` exercised.
pub fn unused<'a>(grants: &'a [Grant], requests: &[Request]) -> Vec<&'a Grant> {
    grants
        .iter()
        .filter(|g| !requests.iter().any(|r| g.exercised_by(r)))
        .collect()
}

/// The resource requests allowed (not refused) that no grant covers:
/// allowed by a role other than switchyard's, or made before these rules
/// (records of an older run).
pub fn ungranted<'a>(grants: &[Grant], requests: &'a [Request]) -> Vec<&'a Request> {
    requests
        .iter()
        .filter(|r| !r.resource.is_empty() && !r.forbidden() && r.code != 401)
        .filter(|r| !grants.iter().any(|g| g.covers(r)))
        .collect()
}

/// The objects of RBAC YAML documents.
#[derive(Debug, Default)]
struct Objects {
    cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    /// (namespace, name) → rules.
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    bindings: Vec<RoleBinding>,
}

#[derive(Debug, Deserialize)]
struct Kind {
    #[serde(default)]
    kind: String,
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_yaml::Value) -> Result<T> {
    serde_yaml::from_value(v).map_err(|e| Error::Serde(format!("RBAC object: {e}")))
}

impl Objects {
    fn add(&mut self, doc: serde_yaml::Value) -> Result<()> {
        let kind: Kind = parse(doc.clone())?;
        match kind.kind.as_str() {
            "ClusterRole" => {
                let r: ClusterRole = parse(doc)?;
                let name = r.metadata.name.unwrap_or_default();
                self.cluster_roles.insert(name, r.rules.unwrap_or_default());
            }
            "Role" => {
                let r: Role = parse(doc)?;
                let key = (
                    r.metadata.namespace.unwrap_or_default(),
                    r.metadata.name.unwrap_or_default(),
                );
                self.roles.insert(key, r.rules.unwrap_or_default());
            }
            "ClusterRoleBinding" => self.cluster_bindings.push(parse(doc)?),
            "RoleBinding" => self.bindings.push(parse(doc)?),
            _ => {}
        }
        Ok(())
    }
}

/// The user a binding subject names (ServiceAccounts and users).
fn user(s: &Subject, binding_ns: Option<&str>) -> Option<String> {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().or(binding_ns)?;
            Some(format!("system:serviceaccount:{ns}:{}", s.name))
        }
        "User" => Some(s.name.clone()),
        _ => None,
    }
}

/// Every grant of `rules` to `users`, in `namespace` (`None`: cluster-wide).
fn expand(rules: &[PolicyRule], users: &[String], namespace: Option<&str>, out: &mut Vec<Grant>) {
    for rule in rules {
        let names: Vec<Option<String>> = match rule.resource_names.as_deref() {
            Some(n) if !n.is_empty() => n.iter().cloned().map(Some).collect(),
            _ => vec![None],
        };
        for user in users {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        for name in &names {
                            out.push(Grant {
                                user: user.clone(),
                                group: group.clone(),
                                resource: resource.clone(),
                                verb: verb.clone(),
                                namespace: namespace.map(str::to_string),
                                name: name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The grants to the switchyard identities in RBAC YAML `docs` (several
/// `---`-separated documents; other kinds are ignored), sorted.
pub fn grants(docs: &str) -> Result<Vec<Grant>> {
    let mut objects = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(docs) {
        let v = serde_yaml::Value::deserialize(doc)
            .map_err(|e| Error::Serde(format!("RBAC YAML: {e}")))?;
        if !v.is_null() {
            objects.add(v)?;
        }
    }
    let ours = |subjects: &Option<Vec<Subject>>, ns: Option<&str>| -> Vec<String> {
        subjects
            .iter()
            .flatten()
            .filter_map(|s| user(s, ns))
            .filter(|u| USERS.contains(&u.as_str()))
            .collect()
    };
    let mut out = Vec::new();
    for b in &objects.cluster_bindings {
        let users = ours(&b.subjects, None);
        if let Some(rules) = objects.cluster_roles.get(&b.role_ref.name) {
            expand(rules, &users, None, &mut out);
        }
    }
    for b in &objects.bindings {
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let users = ours(&b.subjects, Some(&ns));
        let rules = match b.role_ref.kind.as_str() {
            "ClusterRole" => objects.cluster_roles.get(&b.role_ref.name),
            _ => objects.roles.get(&(ns.clone(), b.role_ref.name.clone())),
        };
        expand(
            rules.map_or(&[][..], Vec::as_slice),
            &users,
            Some(&ns),
            &mut out,
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Grants the e2e scenarios do not exercise, kept on purpose: each with
/// why (the display form of the [`Grant`], the reason).
const ALLOWED_UNUSED: &[(&str, &str)] = &[(
    // The agent creates its NodeDatapath when it starts, so in the
    // scenarios the operator's server-side apply always finds it.
    "switchyard-operator: create switchyard.dev/nodedatapaths cluster-wide",
    "a NodeDatapath deleted while a plan runs: the operator's server-side apply of its \
     spec recreates it (the agent creates one only when it starts)",
)];

/// Why `g` may stay unused, if it may.
pub fn allowed_unused(g: &Grant) -> Option<&'static str> {
    let shown = g.to_string();
    ALLOWED_UNUSED
        .iter()
        .find(|(s, _)| *s == shown)
        .map(|(_, why)| *why)
}

//! The switchyard identities' API requests as the lab's API server saw
//! them (its audit log), and the RBAC check built on them: no request
//! refused (`403`) and no granted rule the e2e scenarios never exercise.
//!
//! - this module (pure): the audit policy and the compact [`Request`]
//!   records read from audit events (JSON lines);
//! - [`rbac`] (pure): the rules `config/rbac` grants each identity and
//!   which of them no request exercised;
//! - [`records`]: the lab's audit flags, and the record files one e2e run
//!   shares (one per cluster), which `switchyard-rbac-check` reads;
//! - [`authorizer`]: waiting until the API server applies those grants.

pub mod authorizer;
pub mod rbac;
pub mod records;

use serde::{Deserialize, Serialize};

/// The agent's user (its ServiceAccount).
pub const AGENT_USER: &str = "system:serviceaccount:switchyard-system:switchyard-agent";
/// The operator's user (its ServiceAccount).
pub const OPERATOR_USER: &str = "system:serviceaccount:switchyard-system:switchyard-operator";
/// The identities whose requests are logged and checked.
pub const USERS: [&str; 2] = [AGENT_USER, OPERATOR_USER];
/// The User-Agent of a test's own client acting as a switchyard identity
/// ([`crate::identity::client_with_token`]): its requests (some refused on
/// purpose) are the test's, not switchyard's, and are not recorded.
pub const TEST_USER_AGENT: &str = "switchyard-e2e-test";
/// The audit annotation holding the authorizer's decision.
const DECISION: &str = "authorization.k8s.io/decision";

/// The audit policy: Metadata for the switchyard identities, nothing for
/// anyone else (the log stays small); RequestReceived is omitted (the
/// later stages carry the response code).
pub fn policy() -> String {
    let users = USERS.map(|u| format!("\"{u}\"")).join(", ");
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Metadata\n  users: [{users}]\n- level: None\n"
    )
}

/// One request of a switchyard identity, as much as RBAC looks at, and
/// the response code. Records are compact and deduplicated: the same
/// request a thousand times is one record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The user name.
    pub user: String,
    /// The authorizer's verb (`get`, `list`, `watch`, `patch`, …).
    pub verb: String,
    /// The API group (`""` for the core group).
    #[serde(default)]
    pub group: String,
    /// The resource (empty for a non-resource URL).
    #[serde(default)]
    pub resource: String,
    /// The subresource (`status`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// The namespace, if the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name, if the request named one (a non-resource
    /// request's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The response code.
    pub code: u16,
    /// Refused by the authorizer (RBAC): its decision `forbid`. A `403`
    /// from admission (a ValidatingAdmissionPolicy) is not: RBAC allowed
    /// that request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

impl Request {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// Refused by the authorizer.
    pub fn forbidden(&self) -> bool {
        self.refused
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} {} {group}/{}",
            self.user,
            self.verb,
            self.rbac_resource()
        )?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " named {n}")?;
        }
        write!(f, " → {}", self.code)
    }
}

/// The fields of an audit event the records need.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    verb: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    response_status: Option<Status>,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    subresource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    code: u16,
}

/// The switchyard identities' requests in audit log `lines` (one JSON
/// event per line), sorted and deduplicated. Lines that are not events,
/// events of other users and events without a response (a stage before
/// the response) are skipped, and so are a test's own requests
/// ([`TEST_USER_AGENT`]). Without the authorizer's decision (an older API
/// server), a `403` counts as refused.
pub fn requests<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Request> {
    let mut out: Vec<Request> = lines
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| USERS.contains(&e.user.username.as_str()))
        .filter(|e| !e.user_agent.starts_with(TEST_USER_AGENT))
        .filter_map(|e| {
            let code = e.response_status.as_ref()?.code;
            let refused = match e.annotations.get(DECISION) {
                Some(d) => d == "forbid",
                None => code == 403,
            };
            let o = e.object_ref;
            Some(Request {
                user: e.user.username,
                verb: e.verb,
                group: o.as_ref().map(|o| o.api_group.clone()).unwrap_or_default(),
                resource: o.as_ref().map(|o| o.resource.clone()).unwrap_or_default(),
                subresource: o.as_ref().and_then(|o| o.subresource.clone()),
                namespace: o.as_ref().and_then(|o| o.namespace.clone()),
                name: match &o {
                    Some(o) => o.name.clone(),
                    None => Some(e.request_uri),
                },
                code,
                refused,
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;

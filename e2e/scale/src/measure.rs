//! What the operator scale benchmark reads: a process's CPU time and peak
//! RSS from `/proc` (parsed by `switchyard_testkit::procfs`), and the API server's audit log (one JSON event per
//! line) counted per verb and resource. The parsers are pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_testkit::procfs;

/// CPU time and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_secs: f64,
    /// Resident set size now, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size, KiB (`VmHWM`).
    pub hwm_kib: u64,
    /// Resident anonymous memory now (the heap, stacks), KiB (`RssAnon`).
    pub anon_kib: u64,
    /// Resident file pages now (the binary's code and data), KiB (`RssFile`).
    pub file_kib: u64,
}

/// Samples process `pid` (None once it is gone).
pub fn sample(pid: i32) -> Option<ProcSample> {
    let stat = procfs::read_stat(pid)?;
    let status = procfs::read_status(pid)?;
    Some(ProcSample {
        cpu_secs: procfs::stat_cpu_ticks(&stat)? as f64 / procfs::ticks_per_sec(),
        rss_kib: procfs::status_kib(&status, "VmRSS")?,
        hwm_kib: procfs::status_kib(&status, "VmHWM")?,
        anon_kib: procfs::status_kib(&status, "RssAnon")?,
        file_kib: procfs::status_kib(&status, "RssFile")?,
    })
}

/// Requests of one user counted from an audit log.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestCounts {
    /// Distinct requests (audit IDs).
    pub total: u64,
    /// Per `verb resource[/subresource]`.
    pub by_kind: BTreeMap<String, u64>,
}

/// One audit event, the fields the count needs.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    verb: String,
    user: AuditUser,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    request_received_timestamp: DateTime<Utc>,
}

#[derive(Debug, serde::Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Debug, serde::Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

/// Counts the distinct requests of `user` received in `[from, to)` from
/// audit log `lines` (a request logged at several stages counts once;
/// unparsable lines are skipped).
pub fn count_requests<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    user: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> RequestCounts {
    let mut seen = std::collections::HashSet::new();
    let mut out = RequestCounts::default();
    for line in lines {
        let Ok(ev) = serde_json::from_str::<AuditEvent>(line) else {
            continue;
        };
        if ev.user.username != user
            || ev.request_received_timestamp < from
            || ev.request_received_timestamp >= to
            || !seen.insert(ev.audit_id)
        {
            continue;
        }
        let resource = match &ev.object_ref {
            Some(ObjectRef {
                resource: Some(r),
                subresource: Some(s),
            }) => format!("{r}/{s}"),
            Some(ObjectRef {
                resource: Some(r), ..
            }) => r.clone(),
            _ => "(non-resource)".into(),
        };
        out.total += 1;
        *out.by_kind
            .entry(format!("{} {resource}", ev.verb))
            .or_default() += 1;
    }
    out
}

/// The audit policy: Metadata for `user`, nothing for anyone else; the
/// RequestReceived stage is omitted (a request is counted by its ID).
pub fn audit_policy(user: &str) -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Metadata\n  users: [\"{user}\"]\n- level: None\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, user: &str, verb: &str, res: &str, sub: Option<&str>, at: &str) -> String {
        serde_json::json!({"kind": "Event", "level": "Metadata", "auditID": id, "stage": "ResponseComplete",
            "verb": verb, "user": {"username": user}, "requestReceivedTimestamp": at,
            "objectRef": {"resource": res, "subresource": sub}})
        .to_string()
    }

    #[test]
    fn counts_each_request_once_per_user_and_window() {
        let op = "system:serviceaccount:switchyard-system:switchyard-operator";
        let lines = [
            ev("a", op, "list", "pods", None, "2026-01-01T00:00:01.5Z"),
            ev("a", op, "list", "pods", None, "2026-01-01T00:00:01.5Z"),
            ev("b", op, "patch", "nodes", None, "2026-01-01T00:00:02Z"),
            ev(
                "c",
                op,
                "patch",
                "migrationplans",
                Some("status"),
                "2026-01-01T00:00:03Z",
            ),
            ev("d", "admin", "patch", "nodes", None, "2026-01-01T00:00:02Z"),
            ev("e", op, "get", "leases", None, "2026-01-01T00:00:09Z"),
            "not json".to_string(),
        ];
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
        let c = count_requests(
            lines.iter().map(String::as_str),
            op,
            at("2026-01-01T00:00:01Z"),
            at("2026-01-01T00:00:05Z"),
        );
        assert_eq!(c.total, 3);
        assert_eq!(c.by_kind["list pods"], 1);
        assert_eq!(c.by_kind["patch migrationplans/status"], 1);
        assert!(!c.by_kind.contains_key("get leases"), "outside the window");
    }

    #[test]
    fn policy_names_the_user() {
        let p: serde_yaml::Value = serde_yaml::from_str(&audit_policy("u")).unwrap_or_default();
        assert_eq!(p["rules"][0]["users"][0].as_str(), Some("u"));
        assert_eq!(p["rules"][1]["level"].as_str(), Some("None"));
    }
}

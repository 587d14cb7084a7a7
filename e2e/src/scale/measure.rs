//! What the operator scale benchmark reads: a process's CPU time and peak
//! RSS from `/proc`, and the API server's audit log (one JSON event per
//! line) counted per verb and resource. The parsers are pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

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

/// utime + stime in clock ticks from `/proc/<pid>/stat` (fields 14 and 15;
/// the command name in field 2 may contain spaces and parentheses).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Samples process `pid` (None once it is gone).
pub fn sample(pid: i32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcSample {
        cpu_secs: parse_stat_ticks(&stat)? as f64 / hz,
        rss_kib: parse_status_kib(&status, "VmRSS")?,
        hwm_kib: parse_status_kib(&status, "VmHWM")?,
        anon_kib: parse_status_kib(&status, "RssAnon")?,
        file_kib: parse_status_kib(&status, "RssFile")?,
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

    #[test]
    fn stat_survives_odd_command_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 153 47 0 0 20 0 9 0 1234 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(200));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let s = "Name:\top\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\nRssAnon:\t   19000 kB\nRssFile:\t   11000 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(40960));
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(30000));
        assert_eq!(parse_status_kib(s, "RssAnon"), Some(19000));
        assert_eq!(parse_status_kib(s, "RssFile"), Some(11000));
        assert_eq!(parse_status_kib(s, "VmSwap"), None);
    }

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

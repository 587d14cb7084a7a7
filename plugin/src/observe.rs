//! `observe`, the pure part: the agents' `/v1/flows` query from the flags,
//! the nodes' answers merged by time, and each flow as a line of output.
//! The agents answer with Hubble's JSON, one object a line
//! (`{"flow":{…},"node_name":…,"time":…}`, or `{"lost_events":{…},…}`);
//! [`fetch`] is the I/O.

pub mod fetch;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::cli::{FlowOutput, FlowVerdict, ObserveArgs};

/// `%`-escapes what a query value may not hold as is.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query string of the agents' `/v1/flows` for `args` (without `?`),
/// run at `now`.
pub fn query(args: &ObserveArgs, now: Timestamp) -> String {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(v) = args.verdict {
        let v = match v {
            FlowVerdict::Forwarded => "FORWARDED",
            FlowVerdict::Dropped => "DROPPED",
        };
        q.push(("verdict", v.into()));
    }
    let strings = [
        ("from_namespace", &args.from_namespace),
        ("from_pod", &args.from_pod),
        ("to_namespace", &args.to_namespace),
        ("to_service", &args.to_service),
    ];
    q.extend(
        strings
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v.clone()))),
    );
    // With -f and no --last (or --last 0): only new flows (as `hubble
    // observe -f`); an agent's limit=0 would be every flow it keeps.
    match (args.last, args.follow) {
        (None | Some(0), true) => q.push(("since", now.to_string())),
        (Some(n), _) => q.push(("limit", n.to_string())),
        (None, false) => {}
    }
    if args.follow {
        q.push(("follow", "true".into()));
    }
    q.iter()
        .map(|(k, v)| format!("{k}={}", escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One line of an agent's answer (blank lines are none).
pub fn parse_line(line: &str) -> Result<Option<Value>, serde_json::Error> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line).map(Some)
}

fn time(v: &Value) -> &str {
    v["time"].as_str().unwrap_or("")
}

/// Every node's answer as one list in time order (the agents write
/// RFC 3339 UTC times with nanoseconds, which sort as text), then the
/// newest `last` of them.
pub fn merge(nodes: Vec<Vec<Value>>, last: Option<usize>) -> Vec<Value> {
    let mut all: Vec<Value> = nodes.into_iter().flatten().collect();
    all.sort_by(|a, b| time(a).cmp(time(b)));
    if let Some(n) = last {
        let skip = all.len().saturating_sub(n);
        all.drain(..skip);
    }
    all
}

/// Hubble's words for the drop reasons the agents report.
fn reason(f: &Value) -> Option<String> {
    let r = f["drop_reason_desc"].as_str()?;
    Some(match r {
        "SERVICE_BACKEND_NOT_FOUND" => "Service backend not found".into(),
        "IS_A_CLUSTERIP" => "Is a ClusterIP".into(),
        other => other.to_owned(),
    })
}

fn when(f: &Value) -> String {
    f["time"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or_else(
            || "-".into(),
            |t| t.strftime("%b %e %H:%M:%S%.3f").to_string(),
        )
}

/// The client's pod, else (a flow from outside the node) its address.
fn source(f: &Value) -> String {
    let s = &f["source"];
    let port = f["l4"]["TCP"]["source_port"]
        .as_u64()
        .or_else(|| f["l4"]["UDP"]["source_port"].as_u64());
    match (
        s["namespace"].as_str(),
        s["pod_name"].as_str(),
        f["IP"]["source"].as_str(),
        port,
    ) {
        (Some(ns), Some(pod), _, _) => format!("{ns}/{pod}"),
        (_, _, Some(ip), Some(port)) => format!("{ip}:{port}"),
        (_, _, Some(ip), None) => ip.to_owned(),
        _ => "(unknown)".into(),
    }
}

fn destination(f: &Value) -> String {
    let ip = f["IP"]["destination"].as_str().unwrap_or("?");
    let l4 = &f["l4"];
    let port = l4["TCP"]["destination_port"]
        .as_u64()
        .or_else(|| l4["UDP"]["destination_port"].as_u64());
    match port {
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_owned(),
    }
}

fn service(f: &Value) -> Option<String> {
    let s = &f["destination_service"];
    Some(format!(
        "{}/{}",
        s["namespace"].as_str()?,
        s["name"].as_str()?
    ))
}

fn verdict(f: &Value) -> String {
    f["verdict"].as_str().unwrap_or("?").to_owned()
}

/// A lost-events line as a warning (`None`: not one).
pub fn lost_warning(v: &Value) -> Option<String> {
    let l = v.get("lost_events")?;
    Some(format!(
        "warning: {}: {} flow events lost ({})",
        v["node_name"].as_str().unwrap_or("?"),
        l["num_events_lost"],
        l["source"].as_str().unwrap_or("?")
    ))
}

/// Hubble's compact line: `TIME [NODE]: SRC -> DST to-service SVC VERDICT (REASON)`.
pub fn compact(v: &Value) -> String {
    let f = &v["flow"];
    let mut line = format!(
        "{} [{}]: {} -> {}",
        when(f),
        f["node_name"].as_str().unwrap_or("?"),
        source(f),
        destination(f)
    );
    if let Some(s) = service(f) {
        line += &format!(" to-service {s}");
    }
    line += &format!(" {}", verdict(f));
    if let Some(r) = reason(f) {
        line += &format!(" ({r})");
    }
    line
}

/// Table columns.
pub const TABLE_HEADER: [&str; 7] = [
    "TIME",
    "NODE",
    "SOURCE",
    "DESTINATION",
    "SERVICE",
    "VERDICT",
    "REASON",
];

/// A flow's cells under [`TABLE_HEADER`].
pub fn row(v: &Value) -> [String; 7] {
    let f = &v["flow"];
    [
        when(f),
        f["node_name"].as_str().unwrap_or("?").to_owned(),
        source(f),
        destination(f),
        service(f).unwrap_or_else(|| "-".into()),
        verdict(f),
        reason(f).unwrap_or_else(|| "-".into()),
    ]
}

/// Rows aligned in columns, header first.
pub fn table(rows: &[[String; 7]]) -> String {
    let header = TABLE_HEADER.map(str::to_owned);
    let mut widths = [0usize; 7];
    for r in std::iter::once(&header).chain(rows) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += cells.join("   ").trim_end();
        out.push('\n');
    }
    out
}

/// A flow (or lost-events line) as `output` prints it on its own, with
/// its newline; `None` for a lost-events line outside JSON (those are
/// warnings on stderr, [`lost_warning`]).
pub fn line(v: &Value, output: FlowOutput) -> Option<String> {
    match output {
        FlowOutput::Json => Some(v.to_string() + "\n"),
        _ if v.get("flow").is_none() => None,
        FlowOutput::Compact => Some(compact(v) + "\n"),
        FlowOutput::Table => Some(row(v).join("   ") + "\n"),
    }
}

#[cfg(test)]
mod tests;

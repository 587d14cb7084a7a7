//! Pure: Hubble's flow as the JSON `hubble observe -o json` prints, one
//! object a line: `{"flow":{…},"node_name":…,"time":…}`. Field names are
//! the proto's (its JSON names where it has them: `IP`, `l4.TCP`, `Type`),
//! enums by name, 64-bit integers as strings, times in RFC 3339 with
//! nanoseconds; unset fields are left out, as protojson leaves them. Lost events are
//! `{"lost_events":{"source":…,"num_events_lost":N},…}`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::proto::flow as pb;

/// RFC 3339 in UTC with nanoseconds (`2026-12-06T15:04:05.000000001Z`):
/// such times sort as text.
pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    DateTime::<Utc>::from_timestamp(t.seconds, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn name_of<E: TryFrom<i32>>(v: i32, name: fn(&E) -> &'static str) -> Value {
    E::try_from(v).map_or_else(|_| json!(v), |e| json!(name(&e)))
}

fn endpoint(e: &pb::Endpoint) -> Value {
    json!({"namespace": e.namespace, "pod_name": e.pod_name})
}

fn l4(l: &pb::Layer4) -> Value {
    let port = |s: u32, d: u32| {
        let mut m = Map::new();
        if s != 0 {
            m.insert("source_port".into(), json!(s));
        }
        m.insert("destination_port".into(), json!(d));
        Value::Object(m)
    };
    match &l.protocol {
        Some(pb::layer4::Protocol::Tcp(t)) => {
            json!({"TCP": port(t.source_port, t.destination_port)})
        }
        Some(pb::layer4::Protocol::Udp(u)) => {
            json!({"UDP": port(u.source_port, u.destination_port)})
        }
        None => json!({}),
    }
}

fn ip(i: &pb::Ip) -> Value {
    let mut m = Map::new();
    if !i.source.is_empty() {
        m.insert("source".into(), json!(i.source));
    }
    m.insert("destination".into(), json!(i.destination));
    m.insert(
        "ipVersion".into(),
        name_of(i.ip_version, pb::IpVersion::as_str_name),
    );
    Value::Object(m)
}

/// The flow object (`"flow": {…}`).
pub fn flow(f: &pb::Flow) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    if let Some(t) = &f.time {
        put("time", json!(rfc3339(t)));
    }
    put("uuid", json!(f.uuid));
    put("verdict", name_of(f.verdict, pb::Verdict::as_str_name));
    if f.drop_reason != 0 {
        put("drop_reason", json!(f.drop_reason));
    }
    if let Some(i) = &f.ip {
        put("IP", ip(i));
    }
    if let Some(l) = &f.l4 {
        put("l4", l4(l));
    }
    if let Some(s) = &f.source {
        put("source", endpoint(s));
    }
    if let Some(d) = &f.destination {
        put("destination", endpoint(d));
    }
    put("Type", name_of(f.r#type, pb::FlowType::as_str_name));
    put("node_name", json!(f.node_name));
    if let Some(s) = &f.destination_service {
        put(
            "destination_service",
            json!({"name": s.name, "namespace": s.namespace}),
        );
    }
    put(
        "traffic_direction",
        name_of(f.traffic_direction, pb::TrafficDirection::as_str_name),
    );
    if f.drop_reason_desc != 0 {
        put(
            "drop_reason_desc",
            name_of(f.drop_reason_desc, pb::DropReason::as_str_name),
        );
    }
    // Zero values are left out, as protojson leaves them (a flow from
    // outside the node has no socket).
    if f.sock_xlate_point != 0 {
        put(
            "sock_xlate_point",
            name_of(f.sock_xlate_point, pb::SocketTranslationPoint::as_str_name),
        );
    }
    // protojson writes 64-bit integers as strings (JSON numbers lose
    // precision past 2^53).
    if f.socket_cookie != 0 {
        put("socket_cookie", json!(f.socket_cookie.to_string()));
    }
    if f.cgroup_id != 0 {
        put("cgroup_id", json!(f.cgroup_id.to_string()));
    }
    Value::Object(m)
}

/// One line of output for a flow observed on `node`.
pub fn flow_line(f: &pb::Flow, node: &str) -> String {
    let time = f.time.as_ref().map(rfc3339);
    let v = json!({"flow": flow(f), "node_name": node, "time": time});
    v.to_string() + "\n"
}

/// One line of output for events lost on `node`.
pub fn lost_line(
    source: pb::LostEventSource,
    n: u64,
    node: &str,
    now: &prost_types::Timestamp,
) -> String {
    let v = json!({
        "lost_events": {"source": source.as_str_name(), "num_events_lost": n},
        "node_name": node,
        "time": rfc3339(now),
    });
    v.to_string() + "\n"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use switchyard_abi::Counter;

    use super::*;
    use crate::flows::{PodName, Verdict};
    use crate::observer::convert::{self, tests::sample};

    #[test]
    fn a_dropped_flow_prints_as_hubble_prints_it() {
        let mut f = sample(Verdict::Dropped(Counter::DropNoBackend), ("app", "db"));
        f.source = Some(PodName {
            namespace: Arc::from("app"),
            name: Arc::from("client"),
        });
        let line = flow_line(&convert::flow(&f, "node1"), "node1");
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        let fl = &v["flow"];
        assert_eq!(fl["time"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(v["time"], fl["time"]);
        assert_eq!(fl["verdict"], "DROPPED");
        assert_eq!(fl["drop_reason"], 158);
        assert_eq!(fl["drop_reason_desc"], "SERVICE_BACKEND_NOT_FOUND");
        assert_eq!(
            fl["IP"],
            json!({"destination": "10.96.0.10", "ipVersion": "IPv4"})
        );
        assert_eq!(fl["l4"], json!({"TCP": {"destination_port": 80}}));
        assert_eq!(
            fl["source"],
            json!({"namespace": "app", "pod_name": "client"})
        );
        assert!(fl.get("destination").is_none());
        assert_eq!(
            fl["destination_service"],
            json!({"name": "db", "namespace": "app"})
        );
        assert_eq!(fl["Type"], "SOCK");
        // As the real `hubble observe -o json` prints this flow from the
        // Observer API (the e2e compares the two): 64-bit integers as
        // strings, no `is_reply` (the API leaves it unset).
        assert_eq!(
            (&fl["socket_cookie"], &fl["cgroup_id"]),
            (
                &json!(f.sock_cookie.to_string()),
                &json!(f.cgroup_id.to_string())
            )
        );
        assert!(fl.get("is_reply").is_none());
        assert_eq!(fl["traffic_direction"], "EGRESS");
        assert_eq!(
            (&fl["node_name"], &v["node_name"]),
            (&json!("node1"), &json!("node1"))
        );
    }

    #[test]
    fn a_forwarded_flow_has_no_drop_reason_and_unknown_enums_are_numbers() {
        let mut pb = convert::flow(&sample(Verdict::Forwarded, ("a", "b")), "n");
        let v = flow(&pb);
        assert_eq!(v["verdict"], "FORWARDED");
        assert!(v.get("drop_reason").is_none() && v.get("drop_reason_desc").is_none());
        assert!(v.get("source").is_none());
        pb.verdict = 99;
        assert_eq!(flow(&pb)["verdict"], 99);
    }
}

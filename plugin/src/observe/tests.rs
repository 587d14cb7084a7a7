#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::fetch::{Agent, agents_of};
use super::*;

const NOW: Timestamp = Timestamp::constant(1_796_569_200, 0);

fn dropped(time: &str, node: &str) -> Value {
    json!({"flow": {
        "time": time, "verdict": "DROPPED", "drop_reason": 158,
        "IP": {"destination": "10.96.0.10", "ipVersion": "IPv4"},
        "l4": {"TCP": {"destination_port": 80}},
        "source": {"namespace": "app", "pod_name": "client"},
        "Type": "SOCK", "node_name": node,
        "destination_service": {"name": "db", "namespace": "app"},
        "traffic_direction": "EGRESS",
        "drop_reason_desc": "SERVICE_BACKEND_NOT_FOUND",
    }, "node_name": node, "time": time})
}

#[test]
fn flags_become_the_agents_query() {
    let args = ObserveArgs {
        from_namespace: Some("app".into()),
        to_service: Some("app/db".into()),
        verdict: Some(FlowVerdict::Dropped),
        last: Some(20),
        ..ObserveArgs::default()
    };
    assert_eq!(
        query(&args, NOW),
        "verdict=DROPPED&from_namespace=app&to_service=app%2Fdb&limit=20"
    );
    assert_eq!(query(&ObserveArgs::default(), NOW), "");
    let follow = ObserveArgs {
        from_pod: Some("client 1".into()),
        follow: true,
        ..ObserveArgs::default()
    };
    let q = query(&follow, NOW);
    // Following without --last: only flows from now on.
    assert_eq!(
        q,
        "from_pod=client%201&since=2026-12-06T15%3A00%3A00Z&follow=true"
    );
    let last = ObserveArgs {
        last: Some(0),
        follow: true,
        ..ObserveArgs::default()
    };
    assert_eq!(
        query(&last, NOW),
        "since=2026-12-06T15%3A00%3A00Z&follow=true"
    );
    let last = ObserveArgs {
        last: Some(3),
        follow: true,
        ..ObserveArgs::default()
    };
    assert_eq!(query(&last, NOW), "limit=3&follow=true");
}

#[test]
fn nodes_merge_by_time_and_last_keeps_the_newest() {
    let n1 = vec![
        dropped("2026-12-06T15:00:00.000000001Z", "node1"),
        dropped("2026-12-06T15:00:02.000000000Z", "node1"),
    ];
    let n2 = vec![dropped("2026-12-06T15:00:01.500000000Z", "node2")];
    let nodes = |m: &[Value]| -> Vec<String> {
        m.iter()
            .map(|v| v["node_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = merge(vec![n1.clone(), n2.clone()], None);
    assert_eq!(nodes(&all), ["node1", "node2", "node1"]);
    let last = merge(vec![n1, n2], Some(2));
    assert_eq!(nodes(&last), ["node2", "node1"]);
    assert!(merge(vec![], Some(3)).is_empty());
}

#[test]
fn a_drop_prints_compact_as_hubble_and_in_a_table() {
    let v = dropped("2026-12-06T15:04:05.123456789Z", "node1");
    assert_eq!(
        compact(&v),
        "Dec  6 15:04:05.123 [node1]: app/client -> 10.96.0.10:80 to-service app/db DROPPED (Service backend not found)"
    );
    let t = table(&[row(&v)]);
    let mut lines = t.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, TABLE_HEADER);
    let cells: Vec<&str> = lines.next().unwrap().split("   ").map(str::trim).collect();
    assert!(
        cells.contains(&"app/client") && cells.contains(&"DROPPED"),
        "{t}"
    );
    assert_eq!(*cells.last().unwrap(), "Service backend not found");
    // JSON is the agent's line as it came.
    let j = line(&v, FlowOutput::Json).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), v);
}

#[test]
fn unknown_clients_and_lost_events_say_so() {
    let mut v = dropped("2026-12-06T15:04:05Z", "node2");
    v["flow"].as_object_mut().unwrap().remove("source");
    v["flow"]["verdict"] = json!("FORWARDED");
    v["flow"]
        .as_object_mut()
        .unwrap()
        .remove("drop_reason_desc");
    assert!(compact(&v).ends_with("(unknown) -> 10.96.0.10:80 to-service app/db FORWARDED"));
    // A flow from outside the node: no pod, the client's address.
    v["flow"]["IP"]["source"] = json!("203.0.113.7");
    v["flow"]["l4"]["TCP"]["source_port"] = json!(40001);
    assert!(compact(&v).contains(": 203.0.113.7:40001 -> 10.96.0.10:80 to-service app/db"));
    let lost = json!({"lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": 7},
        "node_name": "node2", "time": "2026-12-06T15:04:05Z"});
    assert_eq!(
        lost_warning(&lost).unwrap(),
        "warning: node2: 7 flow events lost (PERF_EVENT_RING_BUFFER)"
    );
    assert_eq!(line(&lost, FlowOutput::Compact), None);
    assert!(line(&lost, FlowOutput::Json).is_some());
    assert_eq!(lost_warning(&v), None);
    assert_eq!(parse_line("  ").unwrap(), None);
    assert!(parse_line("{oops").is_err());
}

#[test]
fn agents_are_the_running_pods_on_the_asked_node() {
    let pod = |name: &str, node: &str, phase: &str, port: Option<i32>| -> Pod {
        let ports = port.map(|p| json!([{"name": "metrics", "containerPort": p}]));
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "ports": ports}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    };
    let pods = [
        pod("agent-b", "node2", "Running", Some(9999)),
        pod("agent-a", "node1", "Running", None),
        pod("agent-c", "node3", "Pending", Some(9964)),
    ];
    let a = |pod: &str, node: &str, port| Agent {
        pod: pod.into(),
        node: node.into(),
        port,
    };
    assert_eq!(
        agents_of(&pods, None),
        [a("agent-a", "node1", 9964), a("agent-b", "node2", 9999)]
    );
    assert_eq!(
        agents_of(&pods, Some("node2")),
        [a("agent-b", "node2", 9999)]
    );
    assert!(agents_of(&pods, Some("node3")).is_empty());
}

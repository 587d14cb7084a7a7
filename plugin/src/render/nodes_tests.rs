use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use switchyard_api::{
    Capabilities, DatapathMode, IngressStatus, NodeDatapathSpec, NodeDatapathStatus, SyncStatus,
};

use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap_or_default()
}

fn datapath(name: &str, mode: DatapathMode, status: Option<NodeDatapathStatus>) -> NodeDatapath {
    let mut d = NodeDatapath::new(
        name,
        NodeDatapathSpec {
            mode,
            ..NodeDatapathSpec::default()
        },
    );
    d.status = status;
    d
}

fn lease(node: &str, renewed: Option<i64>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: Some(40),
            ..LeaseSpec::default()
        }),
    }
}

fn active_status() -> NodeDatapathStatus {
    NodeDatapathStatus {
        agent_version: Some("0.1.0".into()),
        active_mode: Some(DatapathMode::Active),
        capabilities: Some(Capabilities {
            kernel: "6.12.0".into(),
            ..Capabilities::default()
        }),
        sync: SyncStatus {
            services_seen: 7,
            services_programmed: 5,
            ..SyncStatus::default()
        },
        ingress: Some(IngressStatus {
            interfaces: vec!["eth0".into(), "eth1".into()],
            attached: true,
            unavailable: None,
        }),
        drops: [("no_backend".to_string(), 2), ("map_full".to_string(), 0)].into(),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Synced".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at(0)),
        }],
        ..NodeDatapathStatus::default()
    }
}

fn rows() -> Vec<NodeRow> {
    let dps = [
        datapath("node1", DatapathMode::Active, Some(active_status())),
        datapath("node2", DatapathMode::Off, None),
        datapath("node3", DatapathMode::Off, None),
    ];
    // node1 renewed 3 s ago, node2 a minute ago, node3 has none.
    let leases = [lease("node1", Some(97)), lease("node2", Some(40))];
    node_rows(&dps, &leases, at(100))
}

#[test]
fn rows_take_the_lease_age_and_sum_the_drops() {
    let rows = rows();
    let node1 = rows.first().cloned().unwrap_or_default();
    assert_eq!(node1.drops, 2);
    assert_eq!(node1.heartbeat_age_seconds, Some(3.0));
    assert!(node1.agent_alive);
    let node2 = rows.get(1).cloned().unwrap_or_default();
    assert_eq!(node2.heartbeat_age_seconds, Some(60.0));
    assert!(
        !node2.agent_alive,
        "a Lease older than its 40 s is a dead agent"
    );
    let node3 = rows.get(2).cloned().unwrap_or_default();
    assert_eq!(node3.heartbeat_age_seconds, None);
    assert!(!node3.agent_alive);
}

#[test]
fn the_table_shows_modes_services_drops_and_heartbeat() {
    assert_eq!(
        nodes_table(&rows(), Width::Table),
        "NODE    MODE     ACTIVE      SERVICES   DROPS   READY     HEARTBEAT\n\
         node1   Active   Active      5/7        2       True      3s ago\n\
         node2   Off      <unknown>   0/0        0       Unknown   60s ago (expired)\n\
         node3   Off      <unknown>   0/0        0       Unknown   <no lease>\n"
    );
}

#[test]
fn wide_adds_agent_kernel_ingress_and_the_drop_reasons_that_counted() {
    let out = nodes_table(&rows(), Width::Wide);
    let node1 = out.lines().nth(1).unwrap_or_default();
    assert!(
        node1.ends_with("0.1.0   6.12.0   eth0,eth1   no_backend=2"),
        "{node1}"
    );
}

#[test]
fn json_rows_use_the_api_field_style() {
    let json = serde_json::to_value(rows()).unwrap_or_default();
    assert_eq!(json[0]["servicesProgrammed"], 5);
    assert_eq!(json[0]["agentAlive"], true);
    assert_eq!(json[1]["activeMode"], serde_json::Value::Null);
    assert_eq!(json[2].get("heartbeatAgeSeconds"), None);
}

#[test]
fn no_datapaths_says_what_is_missing() {
    assert!(nodes_table(&[], Width::Table).starts_with("No NodeDatapaths found"));
}

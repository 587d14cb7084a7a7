//! Flows from outside the node, as `kubectl switchyard observe` reads them:
//! each agent's `/v1/flows` through the API server's pod proxy.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;
use switchyard_e2e::Cluster;
use switchyard_e2e::ingress::Ingress;
use switchyard_e2e::topology::CLIENT_IP;

/// `node`'s agent's flows for the query `query`.
async fn flows_on(c: &Cluster, node: &str, query: &str) -> Vec<Value> {
    let pods: Api<Pod> = Api::namespaced(c.client(), "switchyard-system");
    let lp = ListParams::default()
        .labels("app.kubernetes.io/name=switchyard-agent")
        .fields(&format!("spec.nodeName={node}"));
    let pod = pods.list(&lp).await.unwrap().items.remove(0);
    let name = pod.metadata.name.unwrap();
    let path =
        format!("/api/v1/namespaces/switchyard-system/pods/{name}:9964/proxy/v1/flows?{query}");
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let text = c.client().request_text(req).await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Three requests from the external client to the first node's TCP
/// NodePort are three flows on that node: coming in from the client's
/// address, to `default/web-nodeport`, forwarded to a backend.
pub async fn each_connection_from_outside_is_one_flow(c: &Cluster, ingress: &Ingress) {
    let (node, ip) = ingress.nodes[0].clone();
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let outside = c.outside().unwrap();
    for _ in 0..3 {
        let r = outside
            .http_get(SocketAddr::from((ip, ingress.node_port)), "/")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let query = format!("since={since}&to_service=default/web-nodeport");
    let flows = switchyard_e2e::wait_for(
        "the flows to reach the agent",
        std::time::Duration::from_secs(10),
        || async {
            let f = flows_on(c, &node, &query).await;
            (f.len() >= 3).then_some(f)
        },
    )
    .await
    .unwrap();
    assert_eq!(flows.len(), 3, "{flows:#?}");
    for line in &flows {
        let f = &line["flow"];
        assert_eq!(f["verdict"], "FORWARDED", "{f}");
        assert_eq!(f["traffic_direction"], "INGRESS", "{f}");
        assert_eq!(f["Type"], "L3_L4", "{f}");
        assert_eq!(f["IP"]["source"], CLIENT_IP.to_string(), "{f}");
        assert_eq!(f["node_name"], node, "{f}");
        assert_eq!(
            f["l4"]["TCP"]["destination_port"], 80,
            "the backend's port: {f}"
        );
    }
    eprintln!(
        "  3 connections from {CLIENT_IP} to {node}'s NodePort: 3 INGRESS flows to default/web-nodeport"
    );
}

//! The agent's `GET /v1/flows` on its real HTTP server (no BPF needed):
//! flow events fed to the hub as the ring reader would, a client pod named
//! from a cgroup directory, filtered answers as JSON lines, a bad query
//! refused, and a followed answer streaming a flow that happens later.

#![allow(clippy::unwrap_used)] // test code

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_abi::{Counter, FlowEvent, IPPROTO_TCP, event_hook, event_verdict};
use switchyard_agent::flows::PodName;
use switchyard_agent::flows::reader::{FlowHub, clock_now};
use switchyard_agent::server::Shared;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 11);
const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 10);
const UID: &str = "0b7c2d4e-1111-4222-8333-944455556666";

/// A record as the socket programs write it, a moment ago.
fn record(vip: Ipv4Addr, verdict: u8, cgroup_id: u64, cookie: u64) -> Vec<u8> {
    let forwarded = verdict == event_verdict::FORWARDED;
    FlowEvent {
        ktime_ns: clock_now().monotonic_ns,
        cgroup_id,
        sock_cookie: cookie,
        netns_cookie: 1,
        frontend_addr: u32::from(vip).to_be(),
        frontend_port: 80u16.to_be(),
        backend_addr: if forwarded { 0x0a00_0001u32.to_be() } else { 0 },
        backend_port: if forwarded { 8080u16.to_be() } else { 0 },
        proto: IPPROTO_TCP,
        verdict,
        hook: event_hook::CONNECT4,
        drop_reason: if forwarded {
            0
        } else {
            Counter::DropNoBackend as u8
        },
    }
    .to_bytes()
    .to_vec()
}

async fn start(hub: Arc<FlowHub>) -> SocketAddr {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let shared = Arc::new(Shared::with_flows(hub, "node1"));
    tokio::spawn(switchyard_daemon::serve(addr, shared));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "not listening");
        tokio::task::yield_now().await;
    }
    addr
}

async fn send(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut out = String::new();
    send(addr, path)
        .await
        .read_to_string(&mut out)
        .await
        .unwrap();
    out
}

/// The JSON lines of a (chunked) answer.
fn flows(answer: &str) -> Vec<Value> {
    answer
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Reads from a followed answer until it holds `n` flows (10 s at most).
async fn read_flows(s: &mut TcpStream, buf: &mut String, n: usize) -> Vec<Value> {
    let read = async {
        while flows(buf).len() < n {
            let mut chunk = [0u8; 4096];
            let got = s.read(&mut chunk).await.unwrap();
            assert!(got > 0, "the answer ended: {buf}");
            buf.push_str(&String::from_utf8_lossy(&chunk[..got]));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("{n} flows: {buf}"));
    flows(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_over_http_are_named_filtered_and_followed() {
    let root = std::env::temp_dir().join(format!("sy-flows-http-{}", std::process::id()));
    let pod_cgroup = root.join(format!("kubepods/besteffort/pod{UID}"));
    std::fs::create_dir_all(&pod_cgroup).unwrap();
    let pod_id = std::fs::metadata(&pod_cgroup).unwrap().ino();
    let hub = Arc::new(FlowHub::new(16, true));
    hub.set_services(common::services(
        &[(WEB_VIP, "web"), (EMPTY_VIP, "empty")],
        0,
    ));
    hub.pods(|p| {
        p.set_root(root.clone());
        let client = PodName {
            namespace: "app".into(),
            name: "client".into(),
        };
        p.set_pods(HashMap::from([(UID.to_owned(), client)]));
    });
    let fwd = record(WEB_VIP, event_verdict::FORWARDED, 12345, 1);
    let drop = record(EMPTY_VIP, event_verdict::DROPPED, pod_id, 2);
    hub.ingest([&fwd[..], &drop[..]], &clock_now());
    let addr = start(hub.clone()).await;

    let all = get(addr, "/v1/flows").await;
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.contains("application/x-ndjson"), "{all}");
    assert_eq!(flows(&all).len(), 2, "{all}");

    let q = "/v1/flows?verdict=DROPPED&from_namespace=app&to_service=shop%2Fempty";
    let dropped = flows(&get(addr, q).await);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    let f = &dropped[0]["flow"];
    assert_eq!(f["verdict"], "DROPPED");
    assert_eq!(f["drop_reason_desc"], "SERVICE_BACKEND_NOT_FOUND");
    assert_eq!(f["source"]["namespace"], "app");
    assert_eq!(f["source"]["pod_name"], "client");
    assert_eq!(f["destination_service"]["name"], "empty");
    assert_eq!(
        (&f["node_name"], &f["Type"]),
        (&"node1".into(), &"SOCK".into())
    );
    // The forwarded flow's cgroup is no pod's: it matches no pod filter.
    assert!(flows(&get(addr, "/v1/flows?from_namespace=app&verdict=FORWARDED").await).is_empty());

    let bad = get(addr, "/v1/flows?verdict=SOMETIMES").await;
    assert!(
        bad.starts_with("HTTP/1.1 400") && bad.contains("verdict"),
        "{bad}"
    );

    // Following: the last drop, then the next one as it happens.
    let mut s = send(addr, "/v1/flows?to_service=shop/empty&limit=1&follow=true").await;
    let mut buf = String::new();
    let first = read_flows(&mut s, &mut buf, 1).await;
    assert_eq!(first[0]["flow"]["socket_cookie"], "2");
    let later = record(EMPTY_VIP, event_verdict::DROPPED, pod_id, 3);
    let other = record(WEB_VIP, event_verdict::FORWARDED, pod_id, 4);
    hub.ingest([&other[..], &later[..]], &clock_now());
    let both = read_flows(&mut s, &mut buf, 2).await;
    assert_eq!(both[1]["flow"]["socket_cookie"], "3", "{buf}");
    assert_eq!(both[1]["flow"]["source"]["pod_name"], "client");
    let _ = std::fs::remove_dir_all(&root);
}

//! Privileged: the Observer API end to end on the real datapath. The
//! socket programs are attached to a test cgroup; a client process in it
//! connects to a Service with a backend and to one without; a gRPC client
//! of the agent's server then reads exactly those two flows. Run as root:
//! `cargo test -p switchyard-agent --test observer`.

#![allow(clippy::unwrap_used)] // test code

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use switchyard_abi::{Backend, IPPROTO_TCP, RevNat, SCOPE_NODE, SvcKey, SvcValue, svc_flags};
use switchyard_agent::flows::reader::FlowHub;
use switchyard_agent::observer::proto::flow as pb;
use switchyard_agent::observer::proto::observer::{
    GetFlowsRequest, GetFlowsResponse, ServerStatusRequest, get_flows_response::ResponseTypes,
    observer_client::ObserverClient,
};
use switchyard_agent::observer::{FlowObserver, serve_on};
use switchyard_lb::maps::{LbMaps, MapOp};
use switchyard_node_datapath::{Capacities, Datapath, DatapathConfig, capabilities, off};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 11);

/// A cgroup with the datapath attached and its pins; removed on drop.
struct Node {
    cgroup: PathBuf,
    bpffs_dir: PathBuf,
    dp: Datapath,
}

impl Node {
    /// `None` (the test is skipped) without root, cgroup2 or bpffs.
    fn new(name: &str, events_ring: u32) -> Option<Self> {
        if switchyard_testkit::skip_unless_root("loading BPF programs") {
            return None;
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let (Some(cg2), Some(bpffs)) = (
            capabilities::mount_of(&mounts, "cgroup2"),
            capabilities::mount_of(&mounts, "bpf"),
        ) else {
            let test = switchyard_testkit::current_test();
            switchyard_testkit::skip(&test, "needs cgroup2 and bpffs mounts");
            return None;
        };
        let id = format!("sy-observer-{}-{name}", std::process::id());
        let cgroup = PathBuf::from(cg2).join(&id);
        let bpffs_dir = PathBuf::from(bpffs).join(&id);
        std::fs::create_dir(&cgroup).unwrap();
        let config = DatapathConfig {
            bpffs_dir: bpffs_dir.clone(),
            capacities: Capacities {
                services: 64,
                backends: 64,
                rev_nat: 64,
                sock_rev_nat: 64,
                affinity: 64,
                events_ring,
            },
            ..DatapathConfig::new(&cgroup)
        };
        let dp = Datapath::start(&config).unwrap_or_else(|e| panic!("datapath start: {e}"));
        Some(Self {
            cgroup,
            bpffs_dir,
            dp,
        })
    }

    /// Runs bash in the cgroup: it opens a TCP connection to `to`; returns
    /// whether it connected.
    fn connect(&self, to: SocketAddrV4) -> bool {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/{}/{}",
            self.cgroup.display(),
            to.ip(),
            to.port()
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        out.status.success()
    }

    /// Like [`Node::connect`], `n` times from one bash (its connections
    /// are refused or closed at once).
    fn connect_times(&self, to: SocketAddrV4, n: u32) {
        let script = format!(
            "echo $$ > {}/cgroup.procs && for i in $(seq {n}); do : 3<>/dev/tcp/{}/{}; done 2>/dev/null; true",
            self.cgroup.display(),
            to.ip(),
            to.port()
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = off(&self.bpffs_dir) {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// VIP:80 onto `backend`, EMPTY_VIP:80 with no backend (both TCP).
fn program(dp: &Datapath, backend: SocketAddrV4) {
    let key = |ip| SvcKey::new(ip, 80, IPPROTO_TCP, SCOPE_NODE, 0);
    let master = |count, rev_nat_index| SvcValue {
        count,
        rev_nat_index,
        flags: svc_flags::CLUSTER_IP,
        ..Default::default()
    };
    let ops = [
        MapOp::UpsertBackend(
            1,
            Backend::new(*backend.ip(), backend.port(), IPPROTO_TCP, 0),
        ),
        MapOp::UpsertRevNat(1, RevNat::new(VIP, 80)),
        MapOp::UpsertRevNat(2, RevNat::new(EMPTY_VIP, 80)),
        MapOp::UpsertService(
            key(VIP).with_slot(1),
            SvcValue {
                backend_id: 1,
                ..Default::default()
            },
        ),
        MapOp::UpsertService(key(VIP), master(1, 1)),
        MapOp::UpsertService(key(EMPTY_VIP), master(0, 2)),
    ];
    dp.lb_maps()
        .unwrap()
        .apply_all(&ops)
        .map_err(|(i, e)| format!("op {i}: {e}"))
        .unwrap();
}

fn flows_of(responses: Vec<GetFlowsResponse>) -> Vec<pb::Flow> {
    responses
        .into_iter()
        .map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => f,
            other => panic!("not a flow: {other:?}"),
        })
        .collect()
}

async fn get_flows(
    client: &mut ObserverClient<tonic::transport::Channel>,
    req: GetFlowsRequest,
) -> Vec<pb::Flow> {
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        out.push(r);
    }
    flows_of(out)
}

/// Waits (on the hub's count, up to 10 s) until `n` flows were seen.
async fn wait_seen(hub: &FlowHub, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.status().2.seen < n {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", hub.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_and_a_dropped_connection_are_two_flows_over_grpc() {
    let Some(node) = Node::new("flows", 65_536) else {
        return;
    };
    let backend_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(backend) = backend_listener.local_addr().unwrap() else {
        unreachable!("bound an IPv4 address")
    };
    program(&node.dp, backend);
    let hub = Arc::new(FlowHub::new(16, true));
    hub.set_services(common::services(
        &[(VIP, "web"), (EMPTY_VIP, "empty")],
        svc_flags::CLUSTER_IP,
    ));
    hub.attach(&node.bpffs_dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_on(listener, FlowObserver::new(hub.clone(), "node1")));
    let mut client = ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    assert!(node.connect(SocketAddrV4::new(VIP, 80)));
    assert!(!node.connect(SocketAddrV4::new(EMPTY_VIP, 80)));
    wait_seen(&hub, 2).await;

    let all = GetFlowsRequest {
        number: 100,
        ..Default::default()
    };
    let flows = get_flows(&mut client, all.clone()).await;
    assert_eq!(flows.len(), 2, "{flows:#?}");
    let (fwd, drop) = (&flows[0], &flows[1]);
    assert_eq!(fwd.verdict, pb::Verdict::Forwarded as i32);
    assert_eq!(
        fwd.ip.as_ref().unwrap().destination,
        backend.ip().to_string()
    );
    let web = fwd.destination_service.as_ref().unwrap();
    assert_eq!((web.namespace.as_str(), web.name.as_str()), ("shop", "web"));
    assert_eq!(drop.verdict, pb::Verdict::Dropped as i32);
    assert_eq!(
        drop.drop_reason_desc,
        pb::DropReason::ServiceBackendNotFound as i32
    );
    assert_eq!(drop.destination_service.as_ref().unwrap().name, "empty");
    let cgroup_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&node.cgroup).unwrap());
    assert!(
        flows
            .iter()
            .all(|f| f.cgroup_id == cgroup_id && f.node_name == "node1")
    );

    // A whitelist of DROPPED: the drop only.
    let dropped = GetFlowsRequest {
        whitelist: vec![pb::FlowFilter {
            verdict: vec![pb::Verdict::Dropped as i32],
            ..Default::default()
        }],
        ..all.clone()
    };
    assert_eq!(get_flows(&mut client, dropped).await, vec![drop.clone()]);

    let status = client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.num_flows, status.max_flows, status.seen_flows),
        (2, 16, 2)
    );

    // Following: the last flow, then a new one as it happens.
    let follow = GetFlowsRequest {
        number: 1,
        follow: true,
        ..Default::default()
    };
    let mut stream = client.get_flows(follow).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(flows_of(vec![first]), vec![drop.clone()]);
    assert!(node.connect(SocketAddrV4::new(VIP, 80)));
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    let next = flows_of(vec![next.unwrap().unwrap().unwrap()]);
    assert_eq!(next[0].verdict, pb::Verdict::Forwarded as i32);
    assert_ne!(next[0].socket_cookie, fwd.socket_cookie);
    server.abort();
    hub.detach();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_ring_lost_come_first_with_their_count() {
    let Some(node) = Node::new("lost", 4096) else {
        return;
    };
    let backend = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    program(&node.dp, backend);
    // Nobody reads yet: the one-page ring keeps 73 refusals of 56 bytes
    // (with its record header), the rest are lost and counted.
    node.connect_times(SocketAddrV4::new(EMPTY_VIP, 80), 200);
    let hub = Arc::new(FlowHub::new(256, true));
    hub.set_services(common::services(
        &[(VIP, "web"), (EMPTY_VIP, "empty")],
        svc_flags::CLUSTER_IP,
    ));
    hub.attach(&node.bpffs_dir).unwrap();
    wait_seen(&hub, 73).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_on(listener, FlowObserver::new(hub.clone(), "node1")));
    let mut client = ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let req = GetFlowsRequest {
        number: 1,
        ..Default::default()
    };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(ResponseTypes::LostEvents(lost)) = first.response_types else {
        panic!("not lost events first: {first:?}")
    };
    assert_eq!(lost.num_events_lost, 200 - 73);
    assert_eq!(lost.source, pb::LostEventSource::PerfEventRingBuffer as i32);
    let flow = stream.message().await.unwrap().unwrap();
    assert!(matches!(flow.response_types, Some(ResponseTypes::Flow(_))));
    assert!(stream.message().await.unwrap().is_none());
    assert_eq!(hub.status().2.seen, 73);
    server.abort();
    hub.detach();
}

//! Privileged: a TCP connection kube-proxy's nftables rules DNATed (and
//! masqueraded) to a Service's endpoint keeps working after `clean` deletes
//! kube-proxy's table — as the API server connections of a node's pods must
//! while the node switches to the eBPF datapath.
//!
//! Two network namespaces joined by a veth: the node (192.168.8.1) with
//! kube-proxy's nftables-mode table, where `kubernetes` (10.96.0.1:443) is
//! DNATed to the API server (192.168.8.2:6443) in the other one. The node
//! namespace has nothing else that uses connection tracking, like a node where
//! kube-proxy's table is the only nftables user. Without root it prints why it
//! skips.

// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

mod netns;

use netns::{Netns, preconditions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use switchyard_cleanup::{Backend, Options, clean};

const NFT_KUBE_PROXY: &str = include_str!("fixtures/nftables-mode.nft");
const NODE_IP: &str = "192.168.8.1";
const API_SERVER: &str = "192.168.8.2:6443";
const CLUSTER_IP: &str = "10.96.0.1:443";
/// How long one echo may take; on a veth it takes microseconds.
const ECHO_DEADLINE: Duration = Duration::from_secs(5);

/// Runs `f` on a thread that has entered the namespace; sockets it creates stay
/// in that namespace.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// The node and its API server, cabled, kube-proxy's table loaded on the node.
fn lab() -> (Netns, Netns) {
    let node = Netns::new("nat-node");
    let api = Netns::new("nat-api");
    node.run(
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &api.name,
        ],
        None,
    );
    for (ns, addr) in [(&node, NODE_IP), (&api, "192.168.8.2")] {
        ns.run(
            "ip",
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            None,
        );
        ns.run("ip", &["link", "set", "eth0", "up"], None);
        ns.run("ip", &["link", "set", "lo", "up"], None);
    }
    // ClusterIPs are routed off the node; kube-proxy's DNAT re-routes them.
    node.run(
        "ip",
        &["route", "add", "10.96.0.0/16", "via", "192.168.8.2"],
        None,
    );
    node.run("nft", &["-f", "-"], Some(NFT_KUBE_PROXY));
    (node, api)
}

/// One byte there and back over an established connection, each way bounded
/// by [`ECHO_DEADLINE`]. `Err` names the side that did not get its byte.
fn echo(client: &mut TcpStream, server: &mut TcpStream, byte: u8) -> Result<(), String> {
    for s in [&*client, &*server] {
        s.set_read_timeout(Some(ECHO_DEADLINE)).unwrap();
    }
    let mut buf = [0u8; 1];
    client.write_all(&[byte]).unwrap();
    server
        .read_exact(&mut buf)
        .map_err(|e| format!("the API server did not get the request: {e}"))?;
    server.write_all(&buf).unwrap();
    client
        .read_exact(&mut buf)
        .map_err(|e| format!("the client did not get the reply: {e}"))?;
    if buf[0] == byte {
        Ok(())
    } else {
        Err(format!("echoed {} instead of {byte}", buf[0]))
    }
}

fn nft_only(node: &Netns) -> Options {
    Options {
        iptables: false,
        ipvs: false,
        ..node.options()
    }
}

fn clean_kube_proxy_tables(node: &Netns) {
    let report = clean(&nft_only(node));
    assert!(!report.has_errors(), "errors: {report:#?}");
    let mut removed = report
        .backend(Backend::Nftables)
        .unwrap()
        .removed
        .names
        .clone();
    removed.sort();
    assert_eq!(removed, vec!["table ip kube-proxy", "table ip6 kube-proxy"]);
}

#[test]
fn a_dnated_connection_survives_the_kube_proxy_table_deletion() {
    if !preconditions(
        "a_dnated_connection_survives_the_kube_proxy_table_deletion",
        &["nft"],
    ) {
        return;
    }
    let (node, api) = lab();
    let listener = in_netns(&api, || TcpListener::bind(API_SERVER).unwrap());
    let cluster_ip: SocketAddr = CLUSTER_IP.parse().unwrap();
    let mut client = in_netns(&node, move || {
        TcpStream::connect_timeout(&cluster_ip, ECHO_DEADLINE).unwrap()
    });
    let (mut server, peer) = listener.accept().unwrap();
    // kube-proxy translated it: the API server sees the node, the client the ClusterIP.
    assert_eq!(peer.ip().to_string(), NODE_IP);
    assert_eq!(client.peer_addr().unwrap(), cluster_ip);
    echo(&mut client, &mut server, 1).unwrap();

    clean_kube_proxy_tables(&node);
    let left = node.run("nft", &["list", "tables"], None);
    assert!(!left.contains("kube-proxy"), "{left}");
    echo(&mut client, &mut server, 2)
        .unwrap_or_else(|e| panic!("after the cleanup: {e}; the node has\n{left}"));

    // kube-proxy comes back (a rollback) and goes again: the connection still
    // works, and a second cleanup leaves one conntrack-holding rule, not two.
    node.run("nft", &["-f", "-"], Some(NFT_KUBE_PROXY));
    clean_kube_proxy_tables(&node);
    echo(&mut client, &mut server, 3).unwrap();
    let hold = node.run(
        "nft",
        &[
            "list",
            "chain",
            "ip",
            switchyard_cleanup::nft::NAT_KEEPALIVE_TABLE,
            switchyard_cleanup::nft::CONNTRACK_HOLD_CHAIN,
        ],
        None,
    );
    assert_eq!(hold.matches("ct state").count(), 1, "{hold}");
}

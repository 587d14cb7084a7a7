//! A client network outside the simulated node, for the ingress tests:
//! traffic that arrives on an interface of the node from elsewhere.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use switchyard_testkit::netns::NetNs;

use super::{HELPER, Lab, LoopingClient, Svc, run, started};
use switchyard_abi::{IPPROTO_TCP, IPPROTO_UDP, SCOPE_NODE, svc_flags};
use switchyard_lb::maps::LbMaps;
use switchyard_node_datapath::{Datapath, DatapathConfig};

/// The node's address on its external interface (`ext0`), where the
/// outside client ([`Outside`]) reaches it.
pub const NODE_EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// The outside client's address.
pub const OUTSIDE_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

/// A client network outside a [`Lab`] node: namespace `<id>-out` whose
/// `eth0` (10.2.0.2) is wired to the node's `ext0` (10.2.0.1); the node
/// forwards, and holds the conntrack and NAT hooks the ingress program
/// relies on (the agent's keepalive table does that on a real node).
pub struct Outside {
    pub ns: String,
    _guard: NetNs,
}

impl Outside {
    pub fn new(lab: &Lab) -> Self {
        let ns = format!("{}-out", lab.id);
        let guard = NetNs::add(&ns).unwrap();
        let node = lab.node_ns.as_str();
        run(
            "ip",
            &[
                "link", "add", "ext0", "netns", node, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
        );
        run(
            "ip",
            &["-n", node, "addr", "add", "10.2.0.1/24", "dev", "ext0"],
        );
        run("ip", &["-n", node, "link", "set", "ext0", "up"]);
        run(
            "ip",
            &["-n", &ns, "addr", "add", "10.2.0.2/24", "dev", "eth0"],
        );
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        run(
            "ip",
            &["-n", &ns, "route", "add", "default", "via", "10.2.0.1"],
        );
        run(
            "ip",
            &[
                "netns",
                "exec",
                node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        nft(node, KEEPALIVE);
        Self { ns, _guard: guard }
    }

    fn client_cmd(&self, mode: &str, target: &str) -> Command {
        let mut c = Command::new(HELPER);
        let ns = format!("/run/netns/{}", self.ns);
        c.args(["client", "--netns", &ns, "--mode", mode, "--target", target]);
        c.args(["--timeout-ms", "1000"]);
        c
    }

    /// Runs `count` requests from the outside client.
    pub fn client(&self, mode: &str, target: &str, count: u32) -> serde_json::Value {
        super::run_client(self.client_cmd(mode, target), count)
    }

    /// A long-lived flow (`tcp-hold` or `udp-hold`): one socket, a request
    /// every 20 ms until stopped; returns once the first request was made.
    pub fn hold(&self, lab: &Lab, mode: &str, target: &str) -> LoopingClient {
        self.looping(lab, mode, target, 20)
    }

    /// A client making a request of `mode` every `interval_ms` until
    /// stopped; returns once the first request was made.
    pub fn looping(&self, lab: &Lab, mode: &str, target: &str, interval_ms: u32) -> LoopingClient {
        let mut cmd = self.client_cmd(mode, target);
        cmd.args(["--interval-ms", &interval_ms.to_string()]);
        LoopingClient::start(cmd, &format!("{}-hold", lab.id), "hold client")
    }
}

/// What the agent's keepalive table holds: NAT base chains (the NAT hooks)
/// and one rule that needs connection tracking (its hooks).
pub const KEEPALIVE: &str = "table ip sy-test-keepalive {
  chain prerouting { type nat hook prerouting priority -100; policy accept; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; }
  chain conntrack { ct state established counter; }
}";

/// Applies an nft script in namespace `ns`.
pub fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft -f - in {ns}: {script}"
    );
}

/// Runs `f` on a thread inside network namespace `ns` (interface names
/// resolve there; the tc attach of the ingress program needs that).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    switchyard_testkit::netns::in_netns(ns, f).unwrap()
}

/// The TCP and UDP NodePort [`program_nodeport`] programs.
pub const NODE_PORT: u16 = 30080;

/// `NODE_EXTERNAL_IP:NODE_PORT`.
pub fn nodeport() -> String {
    format!("{NODE_EXTERNAL_IP}:{NODE_PORT}")
}

/// The lab's datapath with the ingress program on `ext0`, started inside
/// the node's namespace.
pub fn start_with_ingress(lab: &Lab) -> Datapath {
    let config = DatapathConfig {
        ingress_interfaces: vec!["ext0".into()],
        ..lab.config()
    };
    in_netns(&lab.node_ns, || started(Datapath::start(&config)))
}

/// A node whose two backends serve on 8080 and answer with the client address they
/// see, an outside client, and the datapath started with its ingress program.
pub fn telling_source_lab() -> (Lab, Outside, Datapath) {
    let mut lab = Lab::new(2);
    let out = Outside::new(&lab);
    lab.serve_with(1, 8080, &["--tell-source", "true"]);
    lab.serve_with(2, 8080, &["--tell-source", "true"]);
    let dp = start_with_ingress(&lab);
    (lab, out, dp)
}

/// NodePort `NODE_PORT` (TCP and UDP) on the node's external address,
/// served by backends 1 and 2 on 8080, with `flags` on the node-scope
/// master.
pub fn program_nodeport(dp: &Datapath, flags: u8) {
    let mut maps = dp.lb_maps().unwrap();
    let backends = [
        (1, Lab::backend_addr(1), 8080),
        (2, Lab::backend_addr(2), 8080),
    ];
    for (proto, rev_nat) in [(IPPROTO_TCP, 1), (IPPROTO_UDP, 2)] {
        let scope = (SCOPE_NODE, rev_nat, svc_flags::NODEPORT | flags);
        maps.apply_all(
            &Svc::new(NODE_EXTERNAL_IP, NODE_PORT, proto)
                .at(scope)
                .backends(&backends)
                .ops(),
        )
        .unwrap();
    }
}

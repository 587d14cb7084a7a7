//! Evidence that kube-proxy serves this node: its rules name every ClusterIP,
//! and something listens on every health port the agent answers for it.
//! The agent turns its datapath off only with this evidence, so a node is
//! never left with neither datapath (a running kube-proxy pod may not have
//! programmed anything yet) and a load balancer's health check never meets
//! a closed port (kube-proxy opens a `healthCheckNodePort` only once it has
//! synced its Service).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

/// What kube-proxy programmed, as text: `iptables-save` of both backends
/// and the nftables `kube-proxy` table (whichever exist).
fn programmed() -> String {
    let mut text = String::new();
    for (program, args) in [
        ("iptables-nft-save", &[][..]),
        ("iptables-legacy-save", &[][..]),
        ("nft", &["list", "table", "ip", "kube-proxy"][..]),
    ] {
        if let Ok(out) = Command::new(program).args(args).output()
            && out.status.success()
        {
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    text
}

/// Whether `rules` (see [`programmed`]) mention `vip`: `-d VIP/32` in
/// iptables mode, `VIP . tcp . PORT` map elements in nftables mode.
pub fn mentions(rules: &str, vip: Ipv4Addr) -> bool {
    rules.contains(&format!("{vip}/32")) || rules.contains(&format!("{vip} . "))
}

/// `Ok` when kube-proxy's rules cover every ClusterIP in `vips`, else the
/// first one missing.
pub fn serves(vips: &[Ipv4Addr]) -> Result<(), String> {
    let rules = programmed();
    match vips.iter().find(|v| !mentions(&rules, **v)) {
        None => Ok(()),
        Some(v) => Err(format!("ClusterIP {v}")),
    }
}

/// The ports of the sockets listening in a `/proc/net/tcp` or `tcp6`
/// table (state `0A`).
pub fn listening(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let port = local.rsplit_once(':')?.1;
            (state == "0A").then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

/// `Ok` when a socket listens on each of `ports` in this network namespace
/// (the agent's own health listeners use other ports), else those that
/// nobody listens on.
pub fn listens(ports: &BTreeSet<u16>) -> Result<(), String> {
    let mut open = BTreeSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            open.extend(listening(&text));
        }
    }
    let closed: Vec<String> = ports
        .iter()
        .filter(|p| !open.contains(p))
        .map(u16::to_string)
        .collect();
    match closed.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "health port {} (nothing listens yet)",
            closed.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_told_from_connected_ones() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:2810 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0B FF1FAC:7A6C 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0BFF1FAC:C350 01FF1FAC:2810 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
        assert_eq!(listening(table), BTreeSet::from([10256]));
        let table6 = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:7A6C 00000000000000000000000000000000:0000 0A 00000000:00000000
";
        assert_eq!(listening(table6), BTreeSet::from([31340]));
    }

    #[test]
    fn a_port_nobody_listens_on_is_named() {
        let ours = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap_or_else(|e| panic!("{e}"));
        let port = ours.local_addr().map(|a| a.port()).unwrap_or_default();
        assert_eq!(listens(&BTreeSet::from([port])), Ok(()));
        drop(ours);
        let err = listens(&BTreeSet::from([port])).unwrap_err();
        assert!(err.contains(&port.to_string()), "{err}");
    }

    #[test]
    fn finds_vips_in_both_modes() {
        let iptables = "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y\n";
        let nft = "\tmap service-ips {\n\t\telements = { 10.96.0.10 . udp . 53 : goto service-ZXJ-kube-system/kube-dns/udp/dns }\n";
        assert!(mentions(iptables, Ipv4Addr::new(10, 96, 0, 1)));
        assert!(!mentions(iptables, Ipv4Addr::new(10, 96, 0, 10)));
        assert!(mentions(nft, Ipv4Addr::new(10, 96, 0, 10)));
        assert!(
            !mentions(nft, Ipv4Addr::new(10, 96, 0, 1)),
            "10.96.0.1 is a prefix of 10.96.0.10 only without the separator"
        );
    }
}

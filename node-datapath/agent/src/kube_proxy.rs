//! Evidence that kube-proxy serves this node: its rules (iptables and
//! nftables modes) or its IPVS virtual servers (ipvs mode, whose iptables
//! rules match ipsets and name no ClusterIP) cover every ClusterIP, and
//! something listens on every health port the agent answers for it.
//! The agent turns its datapath off only with this evidence, so a node is
//! never left with neither datapath (a running kube-proxy pod may not have
//! programmed anything yet) and a load balancer's health check never meets
//! a closed port (kube-proxy opens a `healthCheckNodePort` only once it has
//! synced its Service).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// What kube-proxy programmed.
#[derive(Debug, Default)]
pub struct Programmed {
    /// `iptables-save` of both backends and the nftables `kube-proxy`
    /// table (whichever exist), as text.
    pub rules: String,
    /// The addresses of the IPVS virtual servers (`ipvsadm -S -n`).
    pub ipvs: BTreeSet<IpAddr>,
}

impl Programmed {
    /// Whether kube-proxy's rules or virtual servers cover ClusterIP `vip`.
    pub fn covers(&self, vip: Ipv4Addr) -> bool {
        mentions(&self.rules, vip) || self.ipvs.contains(&IpAddr::V4(vip))
    }

    /// Adds the virtual servers of `ipvsadm -S -n` output (unreadable
    /// output adds none: then ipvs mode shows no evidence).
    pub fn add_ipvs(&mut self, ipvsadm_save: &str) {
        if let Ok(servers) = switchyard_cleanup::ipvs::parse_ipvsadm_save(ipvsadm_save) {
            self.ipvs.extend(servers.iter().map(|s| s.addr));
        }
    }
}

/// The output of `program args` when it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What kube-proxy programmed on this node, in any mode. `ipvsadm` runs
/// only where the `ip_vs` module is loaded (it would load it otherwise).
fn programmed() -> Programmed {
    let mut p = Programmed::default();
    for (program, args) in [
        ("iptables-nft-save", &[][..]),
        ("iptables-legacy-save", &[][..]),
        ("nft", &["list", "table", "ip", "kube-proxy"][..]),
    ] {
        p.rules.extend(output(program, args));
    }
    if std::path::Path::new("/proc/net/ip_vs").exists()
        && let Some(text) = output("ipvsadm", &["-S", "-n"])
    {
        p.add_ipvs(&text);
    }
    p
}

/// Whether `rules` (see [`programmed`]) mention `vip`: `-d VIP/32` in
/// iptables mode, `VIP . tcp . PORT` map elements in nftables mode.
pub fn mentions(rules: &str, vip: Ipv4Addr) -> bool {
    rules.contains(&format!("{vip}/32")) || rules.contains(&format!("{vip} . "))
}

/// `Ok` when kube-proxy's rules cover every ClusterIP in `vips`, else the
/// first one missing.
pub fn serves(vips: &[Ipv4Addr]) -> Result<(), String> {
    let programmed = programmed();
    match vips.iter().find(|v| !programmed.covers(**v)) {
        None => Ok(()),
        Some(v) => Err(format!("ClusterIP {v}")),
    }
}

/// What a cleanup removes: kube-proxy's leftovers in every mode, the IPVS
/// virtual servers among them only on `service_ips` (ClusterIPs, external
/// and LoadBalancer IPs: ipvs mode's; another tool's virtual servers stay).
/// Conntrack entries stay: connections kube-proxy translated keep going.
pub fn cleanup_options(service_ips: &[Ipv4Addr]) -> switchyard_cleanup::Options {
    switchyard_cleanup::Options {
        service_ips: service_ips.iter().copied().map(IpAddr::V4).collect(),
        ..switchyard_cleanup::Options::default()
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

    /// `ipvsadm -S -n` on a node kube-proxy 1.34 serves in ipvs mode (the
    /// `kubernetes` and `kube-dns` Services, a NodePort on the node's
    /// address), and its iptables rules, which match ipsets.
    const IPVSADM_SAVE: &str = "\
-A -t 10.96.0.1:443 -s rr
-a -t 10.96.0.1:443 -r 172.18.0.2:6443 -m -w 1
-A -t 10.96.0.10:53 -s rr
-a -t 10.96.0.10:53 -r 10.244.0.3:53 -m -w 1
-A -u 10.96.0.10:53 -s rr
-a -u 10.96.0.10:53 -r 10.244.0.3:53 -m -w 1
-A -t 172.18.0.2:30080 -s rr
-a -t 172.18.0.2:30080 -r 10.244.1.5:80 -m -w 1
";
    const IPVS_MODE_RULES: &str = "\
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
";

    #[test]
    fn the_cleanup_removes_only_the_virtual_servers_of_service_addresses() {
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let opts = cleanup_options(&[vip]);
        assert_eq!(opts.service_ips, vec![IpAddr::V4(vip)]);
        assert!(opts.ipvs && opts.iptables && opts.nftables && !opts.flush_conntrack);
        let observed = switchyard_cleanup::ipvs::IpvsObserved {
            virtual_servers: Some(
                switchyard_cleanup::ipvs::parse_ipvsadm_save(IPVSADM_SAVE).unwrap(),
            ),
            ..Default::default()
        };
        let services = switchyard_cleanup::ipvs::ServiceAddresses {
            ips: opts.service_ips.clone(),
            cidrs: opts.service_cidrs.clone(),
        };
        let plan = switchyard_cleanup::ipvs::plan(&observed, &services);
        let removed: Vec<String> = plan
            .delete_virtual_servers
            .iter()
            .map(|v| v.endpoint())
            .collect();
        assert_eq!(removed, ["10.96.0.10:53", "10.96.0.10:53"]);
    }

    #[test]
    fn ipvs_mode_serves_the_clusterips_of_its_virtual_servers() {
        let mut p = Programmed {
            rules: IPVS_MODE_RULES.into(),
            ..Programmed::default()
        };
        let dns = Ipv4Addr::new(10, 96, 0, 10);
        assert!(!p.covers(dns), "ipvs mode's rules name no ClusterIP");
        p.add_ipvs(IPVSADM_SAVE);
        assert!(p.covers(dns) && p.covers(Ipv4Addr::new(10, 96, 0, 1)));
        assert!(
            !p.covers(Ipv4Addr::new(10, 96, 0, 99)),
            "a Service not yet synced"
        );
        let mut garbled = Programmed::default();
        garbled.add_ipvs("-A -t not-an-address -s rr\n");
        assert!(garbled.ipvs.is_empty());
    }

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

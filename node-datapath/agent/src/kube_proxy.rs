//! Evidence that kube-proxy serves this node: its rules name every ClusterIP.
//! The agent turns its datapath off only with this evidence, so a node is
//! never left with neither datapath (a running kube-proxy pod may not have
//! programmed anything yet).

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

#[cfg(test)]
mod tests {
    use super::*;

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

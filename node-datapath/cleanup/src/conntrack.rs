//! Conntrack entries to service addresses. Connections NATed by IPVS (or kube-proxy's
//! iptables DNAT) keep their conntrack entry after the rules are gone, so return
//! packets can keep bypassing the new datapath; deleting the entries whose original
//! destination is a service IP makes those flows start anew through it.

use serde::Serialize;
use std::net::IpAddr;

/// Deleting every conntrack entry whose original destination is `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConntrackDeletion {
    /// Original destination address (a service IP).
    pub dst: IpAddr,
}

impl ConntrackDeletion {
    fn family_args(&self) -> Vec<String> {
        // conntrack defaults to IPv4; IPv6 entries need the family spelled out.
        let family = if self.dst.is_ipv6() { "ipv6" } else { "ipv4" };
        vec![
            "-f".into(),
            family.into(),
            "-d".into(),
            self.dst.to_string(),
        ]
    }

    /// `conntrack` arguments listing the matching entries.
    pub fn list_args(&self) -> Vec<String> {
        let mut a = vec!["-L".to_string()];
        a.extend(self.family_args());
        a
    }

    /// `conntrack` arguments deleting the matching entries.
    pub fn delete_args(&self) -> Vec<String> {
        let mut a = vec!["-D".to_string()];
        a.extend(self.family_args());
        a
    }
}

/// One deletion per distinct service IP, sorted.
pub fn plan(service_ips: &[IpAddr]) -> Vec<ConntrackDeletion> {
    let mut v: Vec<ConntrackDeletion> = service_ips
        .iter()
        .map(|ip| ConntrackDeletion { dst: *ip })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Counts entries in `conntrack -L` output (one entry per non-empty line; the summary
/// goes to stderr).
pub fn count_entries(list_output: &str) -> usize {
    list_output.lines().filter(|l| !l.trim().is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedups_and_spells_the_family() {
        let ips: Vec<IpAddr> = vec![
            "10.96.0.10".parse().unwrap(),
            "fd00::a".parse().unwrap(),
            "10.96.0.10".parse().unwrap(),
        ];
        let p = plan(&ips);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].delete_args(),
            vec!["-D", "-f", "ipv4", "-d", "10.96.0.10"]
        );
        assert_eq!(p[1].list_args(), vec!["-L", "-f", "ipv6", "-d", "fd00::a"]);
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn counts_listing_lines() {
        let out = "udp      17 29 src=10.0.0.2 dst=10.96.0.10 sport=5 dport=53 src=10.244.0.3 dst=10.0.0.2 sport=53 dport=5 mark=0 use=1\ntcp      6 86399 ESTABLISHED src=10.0.0.2 dst=10.96.0.1 sport=4 dport=443 src=172.18.0.2 dst=10.0.0.2 sport=6443 dport=4 [ASSURED] mark=0 use=1\n";
        assert_eq!(count_entries(out), 2);
        assert_eq!(count_entries(""), 0);
    }
}

//! ipvs mode, planned from observed state (`pkg/proxy/ipvs/cleanup.go`, 1.34):
//! IPVS virtual servers, the `kube-ipvs0` dummy interface, the ipvs chains (handled by
//! the iptables planner, see [`crate::iptables::owners`]) and kube-proxy's ipsets.
//!
//! Deliberate differences from upstream:
//! * upstream flushes *every* IPVS virtual server, which deletes services other tools
//!   own (kube-vip, lvscare). We delete only virtual servers whose address is a given
//!   service IP or lies in a given service CIDR; the rest are reported as kept.
//! * upstream destroys only the IPv4 ipset names; its IPv6 proxier names the same sets
//!   `KUBE-6-…` (truncated to 31 characters). Those are equally kube-proxy's and are
//!   destroyed too.
//!
//! Ipsets are destroyed last: the kernel refuses to destroy a set an iptables rule still
//! uses, so the iptables cleanup of every backend runs first.

use crate::Error;
use crate::addr::Cidr;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The dummy interface the ipvs proxier binds service addresses to.
pub const DUMMY_DEVICE: &str = "kube-ipvs0";

/// The ipsets the ipvs proxier creates (IPv4 names).
pub const KUBE_PROXY_IPSETS: &[&str] = &[
    "KUBE-LOOP-BACK",
    "KUBE-CLUSTER-IP",
    "KUBE-EXTERNAL-IP",
    "KUBE-EXTERNAL-IP-LOCAL",
    "KUBE-LOAD-BALANCER",
    "KUBE-LOAD-BALANCER-FW",
    "KUBE-LOAD-BALANCER-LOCAL",
    "KUBE-LOAD-BALANCER-SOURCE-IP",
    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    "KUBE-NODE-PORT-TCP",
    "KUBE-NODE-PORT-LOCAL-TCP",
    "KUBE-NODE-PORT-UDP",
    "KUBE-NODE-PORT-LOCAL-UDP",
    "KUBE-NODE-PORT-SCTP-HASH",
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
    "KUBE-HEALTH-CHECK-NODE-PORT",
    "KUBE-IPVS-IPS",
];

/// The IPv6 proxier's name for an ipset: `KUBE-` becomes `KUBE-6-`, cut to 31 bytes.
pub fn ipv6_ipset_name(v4: &str) -> String {
    let mut name = match v4.strip_prefix("KUBE-") {
        Some(rest) => format!("KUBE-6-{rest}"),
        None => v4.to_string(),
    };
    name.truncate(31);
    name
}

/// Whether this ipset is one kube-proxy's ipvs mode creates (either family).
pub fn is_kube_proxy_ipset(name: &str) -> bool {
    KUBE_PROXY_IPSETS
        .iter()
        .any(|v4| *v4 == name || ipv6_ipset_name(v4) == name)
}

/// Transport protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// `-t`
    Tcp,
    /// `-u`
    Udp,
    /// `--sctp-service`
    Sctp,
}

/// One IPVS virtual server (address-based; kube-proxy never creates fwmark services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VirtualServer {
    /// Protocol.
    pub proto: Proto,
    /// Virtual address.
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
}

impl VirtualServer {
    /// `ADDR:PORT` as ipvsadm writes it (`[v6]:port` for IPv6).
    pub fn endpoint(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }

    /// Arguments for `ipvsadm` deleting this virtual server.
    pub fn delete_args(&self) -> Vec<String> {
        let flag = match self.proto {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
            Proto::Sctp => "--sctp-service",
        };
        vec!["-D".into(), flag.into(), self.endpoint()]
    }
}

impl std::fmt::Display for VirtualServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        };
        write!(f, "virtual-server {p} {}", self.endpoint())
    }
}

fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.parse().ok()?, port.parse().ok()?))
}

/// Parses `ipvsadm -S -n` (save format): the `-A` lines are the virtual servers;
/// fwmark services (`-f`) are skipped.
pub fn parse_ipvsadm_save(text: &str) -> Result<Vec<VirtualServer>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"-A") {
            continue;
        }
        let bad = |m: &str| Error::Parse {
            what: "ipvsadm -Sn",
            line: i + 1,
            message: format!("{m}: {line:?}"),
        };
        let proto = match words.get(1) {
            Some(&"-t") | Some(&"--tcp-service") => Proto::Tcp,
            Some(&"-u") | Some(&"--udp-service") => Proto::Udp,
            Some(&"--sctp-service") => Proto::Sctp,
            Some(&"-f") | Some(&"--fwmark-service") => continue,
            _ => return Err(bad("unknown service kind")),
        };
        let (addr, port) = words
            .get(2)
            .and_then(|e| parse_endpoint(e))
            .ok_or_else(|| bad("bad service address"))?;
        out.push(VirtualServer { proto, addr, port });
    }
    Ok(out)
}

/// Parses `ipset list -n` (one set name per line).
pub fn parse_ipset_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Deserialize)]
struct JsonLink {
    ifname: String,
}

/// Parses `ip -j link show` into interface names.
pub fn parse_link_names(text: &str) -> Result<Vec<String>, Error> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let links: Vec<JsonLink> = serde_json::from_str(text).map_err(|source| Error::Json {
        what: "ip -j link show",
        source,
    })?;
    Ok(links.into_iter().map(|l| l.ifname).collect())
}

/// What was observed of ipvs mode; `None` where the tool to observe it is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsObserved {
    /// IPVS virtual servers (`None`: `ipvsadm` unavailable).
    pub virtual_servers: Option<Vec<VirtualServer>>,
    /// All ipset names (`None`: `ipset` unavailable).
    pub ipsets: Option<Vec<String>>,
    /// All interface names (`None`: `ip` unavailable).
    pub links: Option<Vec<String>>,
}

/// Which addresses are service addresses (ClusterIPs, external/LB IPs) for IPVS purposes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAddresses {
    /// Individual service IPs.
    pub ips: Vec<IpAddr>,
    /// Service CIDRs (e.g. the cluster's `--service-cluster-ip-range`).
    pub cidrs: Vec<Cidr>,
}

impl ServiceAddresses {
    /// Whether `ip` is a service address.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ips.contains(ip) || self.cidrs.iter().any(|c| c.contains(ip))
    }
}

/// The ipvs removals, in execution order: virtual servers, the dummy device, then (after
/// the iptables cleanup) the ipsets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpvsPlan {
    /// Virtual servers on service addresses.
    pub delete_virtual_servers: Vec<VirtualServer>,
    /// Virtual servers that are not on a service address (someone else's).
    pub kept_virtual_servers: Vec<VirtualServer>,
    /// `kube-ipvs0`, when present.
    pub delete_link: Option<String>,
    /// kube-proxy's ipsets that exist.
    pub destroy_ipsets: Vec<String>,
}

impl IpvsPlan {
    /// Whether nothing is to be removed.
    pub fn is_empty(&self) -> bool {
        self.delete_virtual_servers.is_empty()
            && self.delete_link.is_none()
            && self.destroy_ipsets.is_empty()
    }

    /// Report names of everything the plan removes.
    pub fn object_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .delete_virtual_servers
            .iter()
            .map(ToString::to_string)
            .collect();
        names.extend(self.delete_link.iter().map(|l| format!("link {l}")));
        names.extend(self.destroy_ipsets.iter().map(|s| format!("ipset {s}")));
        names
    }
}

/// Plans the ipvs-mode removals from observed state.
pub fn plan(observed: &IpvsObserved, services: &ServiceAddresses) -> IpvsPlan {
    let mut p = IpvsPlan::default();
    for vs in observed.virtual_servers.iter().flatten() {
        if services.contains(&vs.addr) {
            p.delete_virtual_servers.push(*vs);
        } else {
            p.kept_virtual_servers.push(*vs);
        }
    }
    p.delete_virtual_servers.sort();
    p.delete_virtual_servers.dedup();
    p.kept_virtual_servers.sort();
    p.kept_virtual_servers.dedup();
    if observed.links.iter().flatten().any(|l| l == DUMMY_DEVICE) {
        p.delete_link = Some(DUMMY_DEVICE.to_string());
    }
    p.destroy_ipsets = observed
        .ipsets
        .iter()
        .flatten()
        .filter(|s| is_kube_proxy_ipset(s))
        .cloned()
        .collect();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 172.18.0.2:6443 -m -w 1\n-A -u 10.96.0.10:53 -s rr\n-A -t 192.168.1.250:6443 -s rr\n-A -t [fd00:10:96::1]:443 -s rr\n-A -f 7 -s rr\n-A --sctp-service 10.96.5.5:9999 -s rr\n";

    fn observed() -> IpvsObserved {
        IpvsObserved {
            virtual_servers: Some(parse_ipvsadm_save(SAVE).unwrap()),
            ipsets: Some(parse_ipset_names(
                "KUBE-CLUSTER-IP\nKUBE-6-CLUSTER-IP\nKUBE-LOOP-BACK\ncali40all-ipam-pools\nKUBE-NODE-PORT-LOCAL-SCTP-HASH\nKUBE-6-NODE-PORT-LOCAL-SCTP-HAS\nKUBE-MY-OWN\n",
            )),
            links: Some(vec!["lo".into(), "eth0".into(), "kube-ipvs0".into()]),
        }
    }

    #[test]
    fn parses_ipvsadm_save() {
        let v = parse_ipvsadm_save(SAVE).unwrap();
        assert_eq!(v.len(), 5, "fwmark and real-server lines skipped: {v:?}");
        assert_eq!(v[3].addr, "fd00:10:96::1".parse::<IpAddr>().unwrap());
        assert_eq!(v[4].proto, Proto::Sctp);
        assert!(parse_ipvsadm_save("-A -x 1.2.3.4:5\n").is_err());
        assert!(parse_ipvsadm_save("-A -t nothing\n").is_err());
    }

    #[test]
    fn removes_only_virtual_servers_on_service_addresses() {
        let services = ServiceAddresses {
            ips: vec!["10.96.5.5".parse().unwrap()],
            cidrs: vec![
                "10.96.0.0/16".parse().unwrap(),
                "fd00:10:96::/112".parse().unwrap(),
            ],
        };
        let p = plan(&observed(), &services);
        let del: Vec<String> = p
            .delete_virtual_servers
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            del,
            vec![
                "virtual-server tcp 10.96.0.1:443",
                "virtual-server tcp [fd00:10:96::1]:443",
                "virtual-server udp 10.96.0.10:53",
                "virtual-server sctp 10.96.5.5:9999",
            ]
        );
        // kube-vip's control-plane VIP is not a service address: it stays.
        assert_eq!(
            p.kept_virtual_servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["virtual-server tcp 192.168.1.250:6443"]
        );
        assert_eq!(p.delete_link.as_deref(), Some("kube-ipvs0"));
        assert_eq!(
            p.destroy_ipsets,
            vec![
                "KUBE-CLUSTER-IP",
                "KUBE-6-CLUSTER-IP",
                "KUBE-LOOP-BACK",
                "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
                "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
            ]
        );
        assert_eq!(
            p.delete_virtual_servers[1].delete_args(),
            vec!["-D", "-t", "[fd00:10:96::1]:443"]
        );
    }

    #[test]
    fn without_service_addresses_no_virtual_server_is_removed() {
        let p = plan(&observed(), &ServiceAddresses::default());
        assert!(p.delete_virtual_servers.is_empty());
        assert_eq!(p.kept_virtual_servers.len(), 5);
    }

    #[test]
    fn unobservable_parts_plan_nothing() {
        let p = plan(&IpvsObserved::default(), &ServiceAddresses::default());
        assert!(p.is_empty());
        let none = IpvsObserved {
            links: Some(vec!["eth0".into()]),
            ipsets: Some(vec!["other".into()]),
            virtual_servers: Some(vec![]),
        };
        assert!(plan(&none, &ServiceAddresses::default()).is_empty());
    }

    #[test]
    fn ipv6_names_are_truncated_like_kube_proxy() {
        assert_eq!(ipv6_ipset_name("KUBE-CLUSTER-IP"), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            ipv6_ipset_name("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert!(!is_kube_proxy_ipset("KUBE-6-MY-OWN"));
    }

    #[test]
    fn parses_ip_link_json() {
        let j = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"]},{"ifindex":3,"ifname":"kube-ipvs0"}]"#;
        assert_eq!(parse_link_names(j).unwrap(), vec!["lo", "kube-ipvs0"]);
        assert!(parse_link_names("[{").is_err());
    }
}

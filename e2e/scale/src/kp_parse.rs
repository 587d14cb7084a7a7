//! What the kube-proxy programming benchmark reads, parsed purely: the
//! addresses in kube-proxy's rules (`iptables-save` / `nft list table`),
//! and the Prometheus text of its metrics endpoint (a process's start time
//! is `switchyard_testkit::procfs`'s).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

/// Every IPv4 address written as a whole token (`10.96.0.1`, `10.96.0.1/32`)
/// in `rules`: ClusterIPs in both modes (`-d 10.96.0.1/32` in iptables,
/// `10.96.0.1 . tcp . 80` in nftables). Endpoint addresses appear as
/// `ip:port` and are not included.
pub fn addresses(rules: &str) -> HashSet<Ipv4Addr> {
    rules
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter_map(|t| t.strip_suffix("/32").unwrap_or(t).parse().ok())
        .collect()
}

/// True when endpoint `ip` is a DNAT destination (`ip:port`) in `rules`.
pub fn has_endpoint(rules: &str, ip: Ipv4Addr) -> bool {
    let pat = format!("{ip}:");
    rules.match_indices(&pat).any(|(i, _)| {
        // Not the tail of a longer address (1.2.3.4: inside 11.2.3.4:).
        i == 0 || !rules[..i].ends_with(|c: char| c.is_ascii_digit() || c == '.')
    })
}

/// Samples of a Prometheus text exposition, keyed by `name{labels}` as
/// written (comments and unparsable lines skipped).
pub fn metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.trim();
            // The value follows the series (whose labels may hold spaces).
            let end = l.rfind('}').map_or(0, |i| i + 1);
            let (series, rest) = l.split_at(end.max(l.find(' ').unwrap_or(l.len())));
            let value = rest.split_whitespace().next()?.parse().ok()?;
            (!series.is_empty()).then(|| (series.to_string(), value))
        })
        .collect()
}

/// One histogram's count and sum of observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    pub count: f64,
    /// Seconds.
    pub sum: f64,
}

impl Histogram {
    /// Observations since `before`.
    pub fn since(self, before: Histogram) -> Histogram {
        Histogram {
            count: self.count - before.count,
            sum: self.sum - before.sum,
        }
    }

    /// Mean observation, seconds (0 without any).
    pub fn mean(self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }
}

/// kube-proxy's IPv4 sync-duration histograms (`kubeproxy_sync_*duration_seconds`,
/// series labelled `ip_family="IPv4"` as 1.34 exports them, or unlabelled),
/// by name without the `_count`/`_sum` suffix.
pub fn sync_histograms(m: &BTreeMap<String, f64>) -> BTreeMap<String, Histogram> {
    let mut out: BTreeMap<String, Histogram> = BTreeMap::new();
    for (series, v) in m {
        let series = series
            .strip_suffix("{ip_family=\"IPv4\"}")
            .unwrap_or(series);
        if !series.starts_with("kubeproxy_sync_") || series.contains('{') {
            continue;
        }
        if let Some(name) = series.strip_suffix("_count") {
            if name.ends_with("duration_seconds") {
                out.entry(name.to_string()).or_default().count = *v;
            }
        } else if let Some(name) = series.strip_suffix("_sum")
            && name.ends_with("duration_seconds")
        {
            out.entry(name.to_string()).or_default().sum = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_in_both_modes_but_not_endpoints() {
        let ipt = "-A KUBE-SERVICES -d 10.96.3.7/32 -p tcp -m comment --comment \"default/s cluster IP\" -m tcp --dport 80 -j KUBE-SVC-X\n\
                   -A KUBE-SEP-Y -p tcp -m tcp -j DNAT --to-destination 10.200.0.1:80\n";
        let nft = "\tmap service-ips {\n\t\telements = { 10.96.0.10 . tcp . 80 : goto service-A,\n\t\t\t     10.96.0.11 . tcp . 80 : goto service-B }\n";
        let a = addresses(ipt);
        assert!(a.contains(&Ipv4Addr::new(10, 96, 3, 7)));
        assert!(!a.contains(&Ipv4Addr::new(10, 200, 0, 1)));
        let b = addresses(nft);
        assert!(b.contains(&Ipv4Addr::new(10, 96, 0, 10)));
        assert!(b.contains(&Ipv4Addr::new(10, 96, 0, 11)));
        assert!(!b.contains(&Ipv4Addr::new(10, 96, 0, 1)));
    }

    #[test]
    fn endpoint_destinations_match_whole_addresses() {
        let ipt = "-j DNAT --to-destination 11.2.3.4:80\n";
        let nft = "meta l4proto tcp dnat to 1.2.3.4:80\n";
        assert!(!has_endpoint(ipt, Ipv4Addr::new(1, 2, 3, 4)));
        assert!(has_endpoint(ipt, Ipv4Addr::new(11, 2, 3, 4)));
        assert!(has_endpoint(nft, Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!has_endpoint(nft, Ipv4Addr::new(1, 2, 3, 41)));
    }

    #[test]
    fn sync_histograms_from_prometheus_text() {
        let text = "# HELP kubeproxy_sync_proxy_rules_duration_seconds [ALPHA] SyncProxyRules latency in seconds\n\
# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n\
kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 0\n\
kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family=\"IPv4\"} 1.5\n\
kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 3\n\
kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family=\"IPv6\"} 9.5\n\
kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv6\"} 7\n\
kubeproxy_sync_full_proxy_rules_duration_seconds_sum 1.25\n\
kubeproxy_sync_full_proxy_rules_duration_seconds_count 1\n\
kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.7e+09\n\
rest_client_requests_total{code=\"200\",host=\"a b\",method=\"GET\"} 12\n";
        let m = metrics(text);
        assert_eq!(
            m.get("rest_client_requests_total{code=\"200\",host=\"a b\",method=\"GET\"}"),
            Some(&12.0)
        );
        let h = sync_histograms(&m);
        assert_eq!(h.len(), 2, "{h:?}");
        let all = h["kubeproxy_sync_proxy_rules_duration_seconds"];
        assert_eq!(
            all,
            Histogram {
                count: 3.0,
                sum: 1.5
            }
        );
        assert_eq!(all.mean(), 0.5);
        let full = h["kubeproxy_sync_full_proxy_rules_duration_seconds"];
        assert_eq!(
            all.since(full),
            Histogram {
                count: 2.0,
                sum: 0.25
            }
        );
        assert_eq!(Histogram::default().mean(), 0.0);
    }
}

//! kube-proxy 1.34's rule shapes for a [`Scenario`], as text for
//! `iptables-restore` and `nft -f`. Pure.
//!
//! Shapes follow `pkg/proxy/iptables/proxier.go` and
//! `pkg/proxy/nftables/proxier.go` of Kubernetes v1.34 (read, not copied):
//! a full sync of ClusterIP Services with `Cluster` traffic policy (in
//! north-south scenarios NodePort Services with `externalTrafficPolicy:
//! Cluster`: `KUBE-NODEPORTS` → `KUBE-EXT-*` → masquerade mark →
//! `KUBE-SVC-*`), no session affinity, `--cluster-cidr` set (local-traffic detector),
//! `localhostNodePorts` on, `nodePortAddresses` unset. Not reproduced: the
//! `nfacct` match on the INVALID-drop rule (needs the nfacct module; the
//! rule is kept without it).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::{CLUSTER_CIDR, ENDPOINTS, PortSpec, Scenario, endpoint, service_port_name, vip};

/// kube-proxy's masquerade mark (`--iptables-masquerade-bit` 14, `%#08x`).
pub const MASQ_MARK: &str = "0x004000";
/// Endpoint-chain count above which kube-proxy drops per-rule comments.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// RFC 4648 base32 (standard alphabet, with padding), as Go's
/// `base32.StdEncoding`.
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let symbols = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < symbols {
                out.push(ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hash16(input: &str) -> String {
    let mut s = base32(&Sha256::digest(input.as_bytes()));
    s.truncate(16);
    s
}

/// `KUBE-SVC-` + base32(sha256(servicePortName + protocol))[:16].
pub fn svc_chain(service_port_name: &str, proto: &str) -> String {
    format!(
        "KUBE-SVC-{}",
        hash16(&format!("{service_port_name}{proto}"))
    )
}

/// `KUBE-EXT-` + the same hash as [`svc_chain`] (kube-proxy's external
/// traffic chain of a Service port).
pub fn ext_chain(service_port_name: &str, proto: &str) -> String {
    format!(
        "KUBE-EXT-{}",
        hash16(&format!("{service_port_name}{proto}"))
    )
}

/// `KUBE-SEP-` + base32(sha256(servicePortName + protocol + endpoint))[:16].
pub fn sep_chain(service_port_name: &str, proto: &str, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{service_port_name}{proto}{endpoint}"))
    )
}

/// kube-proxy's `computeProbability`: `%0.10f` of 1/n.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// kube-proxy's jump rules from the built-in chains (`iptablesJumpChains`
/// plus kubelet's `KUBE-FIREWALL` ones): (table, target chain, built-in
/// chain, extra match, comment).
const JUMPS: [(&str, &str, &str, &str, &str); 14] = {
    const NEW: &str = "-m conntrack --ctstate NEW ";
    [
        (
            "filter",
            "KUBE-EXTERNAL-SERVICES",
            "INPUT",
            NEW,
            "kubernetes externally-visible service portals",
        ),
        (
            "filter",
            "KUBE-EXTERNAL-SERVICES",
            "FORWARD",
            NEW,
            "kubernetes externally-visible service portals",
        ),
        (
            "filter",
            "KUBE-NODEPORTS",
            "INPUT",
            "",
            "kubernetes health check service ports",
        ),
        (
            "filter",
            "KUBE-SERVICES",
            "FORWARD",
            NEW,
            "kubernetes service portals",
        ),
        (
            "filter",
            "KUBE-SERVICES",
            "OUTPUT",
            NEW,
            "kubernetes service portals",
        ),
        (
            "filter",
            "KUBE-FORWARD",
            "FORWARD",
            "",
            "kubernetes forwarding rules",
        ),
        (
            "filter",
            "KUBE-PROXY-FIREWALL",
            "INPUT",
            NEW,
            "kubernetes load balancer firewall",
        ),
        (
            "filter",
            "KUBE-PROXY-FIREWALL",
            "OUTPUT",
            NEW,
            "kubernetes load balancer firewall",
        ),
        (
            "filter",
            "KUBE-PROXY-FIREWALL",
            "FORWARD",
            NEW,
            "kubernetes load balancer firewall",
        ),
        ("filter", "KUBE-FIREWALL", "INPUT", "", ""),
        ("filter", "KUBE-FIREWALL", "OUTPUT", "", ""),
        (
            "nat",
            "KUBE-SERVICES",
            "OUTPUT",
            "",
            "kubernetes service portals",
        ),
        (
            "nat",
            "KUBE-SERVICES",
            "PREROUTING",
            "",
            "kubernetes service portals",
        ),
        (
            "nat",
            "KUBE-POSTROUTING",
            "POSTROUTING",
            "",
            "kubernetes postrouting rules",
        ),
    ]
};

/// The jump rules of `table` as restore lines with `op` (`-I` or `-A`).
fn jump_lines(table: &str, op: &str) -> String {
    let mut s = String::new();
    for (t, chain, from, extra, comment) in JUMPS {
        if t != table {
            continue;
        }
        let comment = if comment.is_empty() {
            String::new()
        } else {
            format!("-m comment --comment \"{comment}\" ")
        };
        let _ = writeln!(s, "{op} {from} {extra}{comment}-j {chain}");
    }
    s
}

/// The jump rules kube-proxy installs with single `iptables` calls before
/// its first restore (not part of the timed restore), as a `--noflush`
/// restore input.
pub fn iptables_jumps() -> String {
    let mut s = String::from("*filter\n");
    for (t, chain, ..) in JUMPS {
        if t == "filter" && !s.contains(&format!(":{chain} ")) {
            let _ = writeln!(s, ":{chain} - [0:0]");
        }
    }
    s.push_str(&jump_lines("filter", "-I"));
    s.push_str("COMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    s.push_str(&jump_lines("nat", "-I"));
    s.push_str("COMMIT\n");
    s
}

/// The same ruleset as [`iptables_jumps`] + [`iptables_restore`], as one
/// whole-table restore input (for `iptables-restore` *without*
/// `--noflush`, which replaces the filter and nat tables).
pub fn iptables_restore_whole_tables(sc: &Scenario) -> String {
    let text = iptables_restore(sc);
    let (filter, nat) = text.split_once("COMMIT\n*nat\n").unwrap_or((&text, ""));
    let nat = nat.strip_suffix("COMMIT\n").unwrap_or(nat);
    format!(
        "{filter}{}COMMIT\n*nat\n{nat}{}COMMIT\n",
        jump_lines("filter", "-A"),
        jump_lines("nat", "-A")
    )
}

/// The input of kube-proxy's full-sync `iptables-restore --noflush`.
pub fn iptables_restore(sc: &Scenario) -> String {
    let large = sc.services * ENDPOINTS > LARGE_CLUSTER_ENDPOINTS;
    let mut s = String::with_capacity(sc.services * 3000);
    s.push_str("*filter\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FIREWALL",
    ] {
        let _ = writeln!(s, ":{c} - [0:0]");
    }
    let _ = writeln!(
        s,
        "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" \
         -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" \
         -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" \
         -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n*nat"
    );
    let mut chains = String::with_capacity(sc.services * 400);
    let mut rules = String::with_capacity(sc.services * 2600);
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"
    );
    for i in 0..sc.services {
        for p in sc.ports(i) {
            let np = sc.node_port(i);
            iptables_service(&mut chains, &mut rules, (i, np), &p, large);
        }
    }
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    s.push('\n');
    s.push_str(&chains);
    s.push_str(&rules);
    s.push_str("COMMIT\n");
    s
}

/// kube-proxy's NodePort capture (eTP=Cluster): the `KUBE-NODEPORTS` rule,
/// and the `KUBE-EXT-*` chain that marks for masquerade and goes on to the
/// Service's cluster policy chain.
fn iptables_node_port(chains: &mut String, rules: &mut String, spn: &str, proto: &str, np: u16) {
    let ext = ext_chain(spn, proto);
    let svc = svc_chain(spn, proto);
    let _ = writeln!(chains, ":{ext} - [0:0]");
    let _ = writeln!(
        rules,
        "-A KUBE-NODEPORTS -m comment --comment {spn} -m {proto} -p {proto} --dport {np} -j {ext}\n\
         -A {ext} -m comment --comment \"masquerade traffic for {spn} external destinations\" \
         -j KUBE-MARK-MASQ\n\
         -A {ext} -j {svc}"
    );
}

fn iptables_service(
    chains: &mut String,
    rules: &mut String,
    (i, node_port): (usize, Option<u16>),
    p: &PortSpec,
    large: bool,
) {
    let spn = service_port_name(i, p);
    let proto = p.proto;
    let svc = svc_chain(&spn, proto);
    let match_args = format!(
        "-m comment --comment \"{spn} cluster IP\" -m {proto} -p {proto} -d {} --dport {}",
        vip(i),
        p.port
    );
    let _ = writeln!(rules, "-A KUBE-SERVICES {match_args} -j {svc}");
    let _ = writeln!(chains, ":{svc} - [0:0]");
    if let Some(np) = node_port {
        iptables_node_port(chains, rules, &spn, proto, np);
    }
    let _ = writeln!(
        rules,
        "-A {svc} {match_args} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
    );
    let eps: Vec<(String, String)> = (0..ENDPOINTS)
        .map(|slot| {
            let ep = format!("{}:{}", endpoint(i, slot), p.target_port);
            let sep = sep_chain(&spn, proto, &ep);
            (ep, sep)
        })
        .collect();
    for (k, (ep, sep)) in eps.iter().enumerate() {
        let _ = write!(rules, "-A {svc} ");
        if !large {
            let _ = write!(rules, "-m comment --comment \"{spn} -> {ep}\" ");
        }
        if k < ENDPOINTS - 1 {
            let _ = write!(
                rules,
                "-m statistic --mode random --probability {} ",
                probability(ENDPOINTS - k)
            );
        }
        let _ = writeln!(rules, "-j {sep}");
    }
    for (slot, (ep, sep)) in eps.iter().enumerate() {
        let _ = writeln!(chains, ":{sep} - [0:0]");
        let comment = if large {
            String::new()
        } else {
            format!("-m comment --comment {spn} ")
        };
        let _ = writeln!(
            rules,
            "-A {sep} {comment}-s {} -j KUBE-MARK-MASQ\n\
             -A {sep} {comment}-m {proto} -p {proto} -j DNAT --to-destination {ep}",
            endpoint(i, slot)
        );
    }
}

pub use crate::rules_nft::{nft_endpoint_chain, nft_script, nft_script_chunks, nft_service_chain};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn chain_names_are_kube_proxy_shaped_and_distinct() {
        let a = svc_chain("bench/svc-00000:http", "tcp");
        assert!(a.starts_with("KUBE-SVC-") && a.len() == 25, "{a}");
        assert!(
            a[9..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
        assert_ne!(a, svc_chain("bench/svc-00000:http", "udp"));
        let e = sep_chain("bench/svc-00000:http", "tcp", "10.200.0.1:8080");
        assert!(e.starts_with("KUBE-SEP-") && e.len() == 25, "{e}");
        // iptables limits chain names to 28 characters.
        assert!(a.len() <= 28 && e.len() <= 28);
    }

    #[test]
    fn probabilities_follow_compute_probability() {
        assert_eq!(probability(10), "0.1000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
    }

    fn count(s: &str, pat: &str) -> usize {
        s.lines().filter(|l| l.starts_with(pat)).count()
    }

    #[test]
    fn iptables_restore_has_one_chain_per_service_and_endpoint() {
        for n in [1usize, 150] {
            let sc = Scenario::new(n).unwrap();
            let text = iptables_restore(&sc);
            let ports: usize = (0..n).map(|i| sc.ports(i).len()).sum();
            assert_eq!(count(&text, ":KUBE-SVC-"), ports);
            assert_eq!(count(&text, ":KUBE-SEP-"), ports * ENDPOINTS);
            assert_eq!(count(&text, "-A KUBE-SERVICES "), ports + 1);
            assert_eq!(
                text.matches("--probability").count(),
                ports * (ENDPOINTS - 1)
            );
            assert_eq!(
                text.matches("-j DNAT --to-destination").count(),
                ports * ENDPOINTS
            );
            // Every chain jumped to is declared.
            for l in text.lines().filter(|l| l.starts_with("-A ")) {
                let target = l.rsplit(" -j ").next().unwrap().split(' ').next().unwrap();
                if target.starts_with("KUBE-") {
                    assert!(text.contains(&format!(":{target} - [0:0]")), "{target}");
                }
            }
            // The nodeports rule is the last KUBE-SERVICES rule; the last
            // Service's TCP port is the last Service rule.
            let svc_rules: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES "))
                .collect();
            assert!(svc_rules[svc_rules.len() - 1].contains("KUBE-NODEPORTS"));
            let last = svc_rules[svc_rules.len() - 2];
            assert!(
                last.contains(&format!("-d {} --dport 80", vip(n - 1))),
                "{last}"
            );
            assert_eq!(text.matches("COMMIT").count(), 2);
        }
    }

    #[test]
    fn whole_table_input_is_the_noflush_input_plus_the_jumps() {
        let sc = Scenario::new(3).unwrap();
        let whole = iptables_restore_whole_tables(&sc);
        let rules = iptables_restore(&sc);
        let jumps = iptables_jumps();
        assert_eq!(whole.matches("COMMIT").count(), 2);
        assert_eq!(
            count(&whole, "-A "),
            count(&rules, "-A ") + count(&jumps, "-I ")
        );
        assert!(whole.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ));
        assert!(whole.contains("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"));
        // The nat jumps are in the nat section.
        let nat = whole.split("*nat").nth(1).unwrap();
        assert!(nat.contains("-A POSTROUTING"));
        assert!(!nat.contains("-A INPUT"));
    }

    #[test]
    fn node_ports_go_through_kube_nodeports_and_an_ext_chain_that_masquerades() {
        let sc = Scenario::north_south(3).unwrap();
        let text = iptables_restore(&sc);
        let spn = "bench/svc-00002:http";
        let (ext, svc) = (ext_chain(spn, "tcp"), svc_chain(spn, "tcp"));
        assert!(
            ext.starts_with("KUBE-EXT-") && ext[9..] == svc[9..],
            "{ext}"
        );
        assert!(text.contains(&format!(":{ext} - [0:0]\n")));
        assert!(text.contains(&format!(
            "-A KUBE-NODEPORTS -m comment --comment {spn} -m tcp -p tcp --dport 20002 -j {ext}\n"
        )));
        assert!(text.contains(&format!(
            "-A {ext} -m comment --comment \"masquerade traffic for {spn} external destinations\" -j KUBE-MARK-MASQ\n-A {ext} -j {svc}\n"
        )));
        let ports: usize = (0..3).map(|i| sc.ports(i).len()).sum();
        assert_eq!(count(&text, "-A KUBE-NODEPORTS "), ports);
        // The last NodePort rule is the last Service's TCP port.
        let last = text.lines().rfind(|l| l.starts_with("-A KUBE-NODEPORTS "));
        assert!(last.unwrap().contains("-p tcp --dport 20002 "));
        // East-west scenarios have none.
        let ew = iptables_restore(&Scenario::new(3).unwrap());
        assert!(!ew.contains("KUBE-EXT-") && !ew.contains("-A KUBE-NODEPORTS"));
    }

    #[test]
    fn iptables_comments_dropped_in_large_cluster_mode() {
        let small = iptables_restore(&Scenario::new(1).unwrap());
        assert!(small.contains("-> 10.200.0.1:8080\""));
        assert!(small.contains("-m comment --comment bench/svc-00000:http -s 10.200.0.1"));
        let large = iptables_restore(&Scenario::new(101).unwrap());
        assert!(!large.contains(" -> "));
        // KUBE-SERVICES keeps its "cluster IP" comments.
        assert!(large.contains("\"bench/svc-00100:http cluster IP\""));
    }
}

//! kube-proxy 1.34's rule shapes for a [`Scenario`], as text for
//! `iptables-restore` and `nft -f`. Pure.
//!
//! Shapes follow `pkg/proxy/iptables/proxier.go` and
//! `pkg/proxy/nftables/proxier.go` of Kubernetes v1.34 (read, not copied):
//! a full sync of ClusterIP Services with `Cluster` traffic policy, no
//! session affinity, `--cluster-cidr` set (local-traffic detector),
//! `localhostNodePorts` on, `nodePortAddresses` unset. Not reproduced: the
//! `nfacct` match on the INVALID-drop rule (needs the nfacct module; the
//! rule is kept without it).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::{
    CLUSTER_CIDR, ENDPOINTS, NAMESPACE, PortSpec, SERVICE_CIDR, Scenario, endpoint, service_name,
    service_port_name, vip,
};

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
            iptables_service(&mut chains, &mut rules, i, &p, large);
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

fn iptables_service(chains: &mut String, rules: &mut String, i: usize, p: &PortSpec, large: bool) {
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

/// kube-proxy nftables' `hashAndTruncate`: base32(sha256(name))[:8] + "-" + name.
fn nft_name_base(name: &str) -> String {
    let mut h = base32(&Sha256::digest(name.as_bytes()));
    h.truncate(8);
    format!("{h}-{name}")
}

/// `service-<hash>-ns/name/proto/port`.
pub fn nft_service_chain(i: usize, p: &PortSpec) -> String {
    let name = format!("{NAMESPACE}/{}/{}/{}", service_name(i), p.proto, p.name);
    format!("service-{}", nft_name_base(&name))
}

/// `endpoint-<hash>-ns/name/proto/port__ip/port`.
pub fn nft_endpoint_chain(i: usize, p: &PortSpec, slot: usize) -> String {
    let name = format!(
        "{NAMESPACE}/{}/{}/{}__{}/{}",
        service_name(i),
        p.proto,
        p.name,
        endpoint(i, slot),
        p.target_port
    );
    format!("endpoint-{}", nft_name_base(&name))
}

/// The `nft -f` input of kube-proxy nftables mode's first full sync: the
/// `ip kube-proxy` table, base chains, dispatch maps, and per Service port
/// a service chain (`numgen random` vmap) and one chain per endpoint, as
/// one transaction.
pub fn nft_script(sc: &Scenario) -> String {
    let mut s = nft_header();
    s.push_str(&nft_services(sc, 0..sc.services));
    s
}

/// The same ruleset as [`nft_script`], split into transactions of at most
/// `per` Services each (the first also creates the table).
pub fn nft_script_chunks(sc: &Scenario, per: usize) -> Vec<String> {
    let per = per.max(1);
    (0..sc.services)
        .step_by(per)
        .map(|start| {
            let mut s = if start == 0 {
                nft_header()
            } else {
                String::new()
            };
            s.push_str(&nft_services(sc, start..(start + per).min(sc.services)));
            s
        })
        .collect()
}

const T: &str = "ip kube-proxy";

fn nft_header() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "add table {T} {{ comment \"rules for kube-proxy\" ; }}");
    for (name, ty, hook, prio) in [
        // knftables writes the named priorities (dstnat-10, filter, dstnat,
        // srcnat); nft 1.0.6 accepts `dstnat` only on prerouting, so the
        // numeric values (dstnat = -100, filter = 0, srcnat = 100) are used.
        ("filter-prerouting-pre-dnat", "filter", "prerouting", "-110"),
        ("filter-output-pre-dnat", "filter", "output", "-110"),
        ("filter-input", "filter", "input", "0"),
        ("filter-forward", "filter", "forward", "0"),
        ("filter-output", "filter", "output", "0"),
        ("nat-prerouting", "nat", "prerouting", "-100"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "100"),
    ] {
        let _ = writeln!(
            s,
            "add chain {T} {name} {{ type {ty} hook {hook} priority {prio} ; }}"
        );
    }
    for c in [
        "nodeport-endpoints-check",
        "service-endpoints-check",
        "firewall-check",
        "services",
        "masquerading",
        "cluster-ips-check",
        "mark-for-masquerade",
        "reject-chain",
    ] {
        let _ = writeln!(s, "add chain {T} {c}");
    }
    for (dst, src, extra) in [
        ("nodeport-endpoints-check", "filter-input", "ct state new "),
        ("service-endpoints-check", "filter-input", "ct state new "),
        ("service-endpoints-check", "filter-forward", "ct state new "),
        ("service-endpoints-check", "filter-output", "ct state new "),
        (
            "firewall-check",
            "filter-prerouting-pre-dnat",
            "ct state new ",
        ),
        ("firewall-check", "filter-output-pre-dnat", "ct state new "),
        ("services", "nat-output", ""),
        ("services", "nat-prerouting", ""),
        ("masquerading", "nat-postrouting", ""),
        ("cluster-ips-check", "filter-forward", "ct state new "),
        ("cluster-ips-check", "filter-output", "ct state new "),
    ] {
        let _ = writeln!(s, "add rule {T} {src} {extra}jump {dst}");
    }
    let vmap = "ipv4_addr . inet_proto . inet_service : verdict";
    let _ = writeln!(
        s,
        "add rule {T} mark-for-masquerade mark set mark or {MASQ_MARK}\n\
         add rule {T} masquerading mark and {MASQ_MARK} == 0 return\n\
         add rule {T} masquerading mark set mark xor {MASQ_MARK}\n\
         add rule {T} masquerading masquerade fully-random\n\
         add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}\n\
         add rule {T} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"\n\
         add rule {T} cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\"\n\
         add map {T} no-endpoint-services {{ type {vmap} ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}\n\
         add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}\n\
         add rule {T} reject-chain reject\n\
         add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\
         add rule {T} nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports\n\
         add map {T} firewall-ips {{ type {vmap} ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}\n\
         add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips\n\
         add map {T} service-ips {{ type {vmap} ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
         add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}\n\
         add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
    );
    s
}

/// The `nft -f` lines of Services `range` (their chains, then their
/// `service-ips` elements).
fn nft_services(sc: &Scenario, range: std::ops::Range<usize>) -> String {
    let mut s = String::with_capacity(range.len() * 3000);
    for i in range {
        let _ = writeln!(s, "add element {T} cluster-ips {{ {} }}", vip(i));
        for p in sc.ports(i) {
            let svc = nft_service_chain(i, &p);
            let eps: Vec<String> = (0..ENDPOINTS)
                .map(|k| nft_endpoint_chain(i, &p, k))
                .collect();
            for (k, ep) in eps.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "add chain {T} {ep}\n\
                     add rule {T} {ep} ip saddr {} jump mark-for-masquerade\n\
                     add rule {T} {ep} meta l4proto {} dnat to {}:{}",
                    endpoint(i, k),
                    p.proto,
                    endpoint(i, k),
                    p.target_port
                );
            }
            let _ = writeln!(
                s,
                "add chain {T} {svc}\n\
                 add rule {T} {svc} ip daddr {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
                vip(i)
            );
            let elems: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(k, c)| format!("{k} : goto {c}"))
                .collect();
            let _ = writeln!(
                s,
                "add rule {T} {svc} numgen random mod {ENDPOINTS} vmap {{ {} }}",
                elems.join(" , ")
            );
            let _ = writeln!(
                s,
                "add element {T} service-ips {{ {} . {} . {} : goto {svc} }}",
                vip(i),
                p.proto,
                p.port
            );
        }
    }
    s
}

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
    fn iptables_comments_dropped_in_large_cluster_mode() {
        let small = iptables_restore(&Scenario::new(1).unwrap());
        assert!(small.contains("-> 10.200.0.1:8080\""));
        assert!(small.contains("-m comment --comment bench/svc-00000:http -s 10.200.0.1"));
        let large = iptables_restore(&Scenario::new(101).unwrap());
        assert!(!large.contains(" -> "));
        // KUBE-SERVICES keeps its "cluster IP" comments.
        assert!(large.contains("\"bench/svc-00100:http cluster IP\""));
    }

    #[test]
    fn nft_chunks_concatenate_to_the_single_transaction() {
        let sc = Scenario::new(25).unwrap();
        let chunks = nft_script_chunks(&sc, 10);
        assert_eq!(chunks.len(), 3);
        assert!(chunks[0].starts_with("add table ip kube-proxy"));
        assert!(!chunks[1].contains("add table"));
        assert_eq!(chunks.concat(), nft_script(&sc));
    }

    #[test]
    fn nft_script_dispatches_every_port_through_the_vmap() {
        let n = 30;
        let sc = Scenario::new(n).unwrap();
        let text = nft_script(&sc);
        let ports: usize = (0..n).map(|i| sc.ports(i).len()).sum();
        assert_eq!(
            text.matches("add element ip kube-proxy service-ips")
                .count(),
            ports
        );
        assert_eq!(text.matches("numgen random mod 10 vmap").count(), ports);
        assert_eq!(text.matches(" dnat to ").count(), ports * ENDPOINTS);
        let svc = nft_service_chain(3, &sc.ports(3)[0]);
        assert!(svc.starts_with("service-") && svc.ends_with("-bench/svc-00003/tcp/http"));
        let ep = nft_endpoint_chain(3, &sc.ports(3)[0], 2);
        assert!(
            ep.ends_with("-bench/svc-00003/tcp/http__10.202.0.4/8080"),
            "{ep}"
        );
        // Chains are declared before the rules and vmaps that use them.
        let decl = text
            .find(&format!("add chain ip kube-proxy {ep}\n"))
            .unwrap();
        let used = text.find(&format!("goto {ep}")).unwrap();
        assert!(decl < used);
    }
}

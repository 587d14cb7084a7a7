//! kube-proxy 1.34's nftables-mode shapes for a [`Scenario`], as text for
//! `nft -f` (see [`crate::rules`] for the sources and what is reproduced).
//! NodePorts (north-south scenarios) as nftables mode writes them with its
//! default `--nodeport-addresses primary`: the node's address in
//! `nodeport-ips`, `service-nodeports` elements `proto . port : goto
//! external-…`, and per Service port an `external-…` chain that marks for
//! masquerade and goes to the service chain. Pure.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::{
    model::{
        CLUSTER_CIDR, ENDPOINTS, NAMESPACE, NODE_IP, PortSpec, SERVICE_CIDR, Scenario, endpoint,
        service_name, vip,
    },
    rules::{MASQ_MARK, base32},
};

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

/// `external-<hash>-ns/name/proto/port` (the service chain's base name).
pub fn nft_external_chain(i: usize, p: &PortSpec) -> String {
    let name = format!("{NAMESPACE}/{}/{}/{}", service_name(i), p.proto, p.name);
    format!("external-{}", nft_name_base(&name))
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
    let mut s = nft_header(sc);
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
                nft_header(sc)
            } else {
                String::new()
            };
            s.push_str(&nft_services(sc, start..(start + per).min(sc.services)));
            s
        })
        .collect()
}

const T: &str = "ip kube-proxy";

/// Which destinations NodePorts are served on: in north-south scenarios
/// nftables mode's default (`--nodeport-addresses primary`: the node's
/// address, in the `nodeport-ips` set written here), else every local
/// address but loopback (`--nodeport-addresses` unset). Returns the match
/// of the `nodeport-endpoints-check` rule and that of the dispatch rule.
fn nft_node_port_addresses(sc: &Scenario, s: &mut String) -> (&'static str, &'static str) {
    if !sc.node_ports {
        let local = "ip daddr != 127.0.0.0/8";
        return (local, "fib daddr type local ip daddr != 127.0.0.0/8");
    }
    let _ = writeln!(
        s,
        "add set {T} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}\n\
         add element {T} nodeport-ips {{ {NODE_IP} }}"
    );
    ("ip daddr @nodeport-ips", "ip daddr @nodeport-ips")
}

fn nft_header(sc: &Scenario) -> String {
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
    let (nodeport_match, nodeport_dispatch) = nft_node_port_addresses(sc, &mut s);
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
         add rule {T} nodeport-endpoints-check {nodeport_match} meta l4proto . th dport vmap @no-endpoint-nodeports\n\
         add map {T} firewall-ips {{ type {vmap} ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}\n\
         add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips\n\
         add map {T} service-ips {{ type {vmap} ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
         add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}\n\
         add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule {T} services {nodeport_dispatch} meta l4proto . th dport vmap @service-nodeports"
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
            if let Some(np) = sc.node_port(i) {
                let ext = nft_external_chain(i, &p);
                let _ = writeln!(
                    s,
                    "add chain {T} {ext}\n\
                     add rule {T} {ext} jump mark-for-masquerade\n\
                     add rule {T} {ext} goto {svc}\n\
                     add element {T} service-nodeports {{ {} . {np} : goto {ext} }}",
                    p.proto
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn node_ports_dispatch_on_the_node_address_through_an_external_chain() {
        let sc = Scenario::north_south(4).unwrap();
        let text = nft_script(&sc);
        let p = &sc.ports(3)[1];
        let (ext, svc) = (nft_external_chain(3, p), nft_service_chain(3, p));
        assert!(
            ext.starts_with("external-") && ext[9..] == svc[8..],
            "{ext}"
        );
        for line in [
            format!("add element ip kube-proxy nodeport-ips {{ {NODE_IP} }}"),
            "add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".into(),
            format!("add rule ip kube-proxy {ext} jump mark-for-masquerade"),
            format!("add rule ip kube-proxy {ext} goto {svc}"),
            format!("add element ip kube-proxy service-nodeports {{ tcp . 20003 : goto {ext} }}"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        let ports: usize = (0..4).map(|i| sc.ports(i).len()).sum();
        assert_eq!(
            text.matches("add element ip kube-proxy service-nodeports")
                .count(),
            ports
        );
        // Chunks still concatenate to the one transaction.
        assert_eq!(nft_script_chunks(&sc, 3).concat(), text);
        let ew = nft_script(&Scenario::new(4).unwrap());
        assert!(!ew.contains("nodeport-ips") && !ew.contains("external-"));
        assert!(ew.contains("services fib daddr type local ip daddr != 127.0.0.0/8"));
    }
}

//! Privileged tests against the real kernel: each test gets a fresh network namespace
//! (unique name, deleted on drop, also on panic), loads a kube-proxy-shaped ruleset
//! with the real tools, runs `scan`/`clean` through `ip netns exec`, and checks with the
//! real `*-save`/`nft`/`ipset` tools that exactly kube-proxy's objects are gone and
//! everything else is byte-identical to the same node loaded without kube-proxy.
//! Without root they print why they skip.

// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

mod netns;

use netns::{Netns, preconditions};
use std::collections::BTreeMap;
use switchyard_cleanup::{Backend, Options, Report, clean, scan};

const RULES: &str = include_str!("fixtures/iptables-mode.rules");
const RULES_EXPECTED: &str = include_str!("fixtures/iptables-mode.expected.rules");
const RULES6: &str = include_str!("fixtures/ip6tables-mode.rules");
const RULES6_EXPECTED: &str = include_str!("fixtures/ip6tables-mode.expected.rules");
const NFT_KUBE_PROXY: &str = include_str!("fixtures/nftables-mode.nft");
const NFT_OTHERS: &str = include_str!("fixtures/nftables-others.nft");
const IPVS_RULES: &str = include_str!("fixtures/ipvs-mode.rules");
const IPVS_EXPECTED: &str = include_str!("fixtures/ipvs-mode.expected.rules");
const IPVS_SETS: &str = include_str!("fixtures/ipvs-mode.ipset");

/// `/run/xtables.lock` is shared with every other test and tool on the host.
const WAIT: &[&str] = &["-w", "5"];

/// `*-save` output split per table, comment lines (timestamps) dropped; each table's
/// text is kept byte for byte.
fn tables(save: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for line in save.lines().filter(|l| !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('*') {
            cur = Some((name.to_string(), String::new()));
        }
        if let Some((_, text)) = cur.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
        if line == "COMMIT"
            && let Some((name, text)) = cur.take()
        {
            out.insert(name, text);
        }
    }
    out
}

fn assert_no_errors(report: &Report) {
    assert!(!report.has_errors(), "errors: {report:#?}");
}

fn names(report: &Report, b: Backend, removed: bool) -> Vec<String> {
    let r = report.backend(b).unwrap();
    let mut v = if removed {
        r.removed.names.clone()
    } else {
        r.found.names.clone()
    };
    v.sort();
    v
}

/// Loads the iptables-mode node into one backend, cleans, compares with the node loaded
/// without kube-proxy, and cleans again.
fn iptables_backend(kind: &str, backend: Backend) {
    let test = format!("iptables_{kind}_clean");
    let (v4, v6) = (format!("iptables-{kind}"), format!("ip6tables-{kind}"));
    let tools = [
        format!("{v4}-restore"),
        format!("{v4}-save"),
        format!("{v6}-restore"),
        format!("{v6}-save"),
    ];
    if !preconditions(&test, &tools.iter().map(String::as_str).collect::<Vec<_>>()) {
        return;
    }
    let node = Netns::new(kind);
    node.run(&tools[0], WAIT, Some(RULES));
    node.run(&tools[2], WAIT, Some(RULES6));
    let reference = Netns::new(&format!("{kind}-ref"));
    reference.run(&tools[0], WAIT, Some(RULES_EXPECTED));
    reference.run(&tools[2], WAIT, Some(RULES6_EXPECTED));
    let want4 = tables(&reference.run(&tools[1], &[], None));
    let want6 = tables(&reference.run(&tools[3], &[], None));

    // Listing mode changes nothing.
    let before4 = node.run(&tools[1], &[], None);
    let listed = scan(&node.options());
    assert_no_errors(&listed);
    assert!(listed.listing_only);
    assert_eq!(tables(&node.run(&tools[1], &[], None)), tables(&before4));
    let found = names(&listed, backend, false);
    assert_eq!(found.len(), 24 + 12 + 15, "{found:#?}");
    for n in [
        "ipv4 nat chain KUBE-SVC-GNZBNJ2PO5MGZ6GT",
        "ipv4 nat chain KUBE-SVL-GNZBNJ2PO5MGZ6GT",
        "ipv4 filter rule INPUT -> KUBE-PROXY-FIREWALL",
        "ipv4 mangle chain KUBE-PROXY-CANARY",
        "ipv6 nat chain KUBE-SEP-7Y4MAN2F4TXRE4ZS",
        "ipv6 filter rule OUTPUT -> KUBE-SERVICES",
    ] {
        assert!(found.iter().any(|f| f == n), "{n} not found in {found:#?}");
    }
    let other = if backend == Backend::IptablesNft {
        Backend::IptablesLegacy
    } else {
        Backend::IptablesNft
    };
    assert_eq!(listed.backend(other).unwrap().found.count, 0);
    assert_eq!(listed.backends_with_leftovers(), vec![backend]);

    // Clean: everything found is removed, everything else is byte-identical.
    let cleaned = clean(&node.options());
    assert_no_errors(&cleaned);
    assert!(!cleaned.listing_only);
    assert_eq!(names(&cleaned, backend, true), found);
    assert_eq!(tables(&node.run(&tools[1], &[], None)), want4);
    assert_eq!(tables(&node.run(&tools[3], &[], None)), want6);

    // Idempotent: a second run finds and removes nothing.
    let again = clean(&node.options());
    assert_no_errors(&again);
    assert_eq!(again.found_count(), 0, "{again:#?}");
    assert_eq!(again.removed_count(), 0);
}

#[test]
fn iptables_nft_clean() {
    iptables_backend("nft", Backend::IptablesNft);
}

#[test]
fn iptables_legacy_clean() {
    iptables_backend("legacy", Backend::IptablesLegacy);
}

/// The manual recipe `iptables-save | grep -v KUBE | iptables-restore`, run for real on
/// the same node: the kubelet's chains and kube-router's chain are gone afterwards. Our
/// clean on the same input keeps them (checked here and, in full, above).
#[test]
fn grep_v_kube_recipe_breaks_the_kubelet_and_ours_does_not() {
    if !preconditions(
        "grep_v_kube_recipe",
        &["iptables-nft-restore", "iptables-nft-save"],
    ) {
        return;
    }
    let recipe = Netns::new("recipe");
    recipe.run("iptables-nft-restore", WAIT, Some(RULES));
    recipe.run(
        "sh",
        &[
            "-c",
            "iptables-nft-save | grep -v KUBE | iptables-nft-restore",
        ],
        None,
    );
    let after_recipe = recipe.run("iptables-nft-save", &[], None);

    let ours = Netns::new("ours");
    ours.run("iptables-nft-restore", WAIT, Some(RULES));
    assert_no_errors(&clean(&ours.options()));
    let after_ours = ours.run("iptables-nft-save", &[], None);

    for chain in [
        ":KUBE-FIREWALL ",
        ":KUBE-KUBELET-CANARY ",
        ":KUBE-IPTABLES-HINT ",
        ":KUBE-NWPLCY-DEFAULT ",
    ] {
        assert!(!after_recipe.contains(chain), "recipe kept {chain}");
        assert!(after_ours.contains(chain), "we removed {chain}");
    }
    assert!(!after_recipe.contains("-A INPUT -j KUBE-FIREWALL"));
    assert!(after_ours.contains("-A INPUT -j KUBE-FIREWALL"));
    assert!(!after_ours.contains("KUBE-SVC-"));
    assert!(!after_ours.contains("KUBE-PROXY-CANARY"));
}

#[test]
fn nftables_clean() {
    if !preconditions("nftables_clean", &["nft"]) {
        return;
    }
    let node = Netns::new("nft");
    node.run("nft", &["-f", "-"], Some(NFT_OTHERS));
    node.run("nft", &["-f", "-"], Some(NFT_KUBE_PROXY));
    // What must remain: the other tables, plus empty NAT base chains that
    // keep the NAT hooks registered for connections kube-proxy had DNATed.
    let reference = Netns::new("nft-ref");
    reference.run("nft", &["-f", "-"], Some(NFT_OTHERS));
    let kube_proxy_tables =
        switchyard_cleanup::nft::parse_tables_text("table ip kube-proxy\ntable ip6 kube-proxy\n")
            .unwrap();
    let keepalive: String = switchyard_cleanup::nft::delete_script(&kube_proxy_tables)
        .lines()
        .filter(|l| l.starts_with("add "))
        .map(|l| format!("{l}\n"))
        .collect();
    reference.run("nft", &["-f", "-"], Some(&keepalive));
    let want = reference.run("nft", &["list", "ruleset"], None);
    assert!(want.contains("table ip6 switchyard-nat-keepalive"));

    let only_nft = Options {
        iptables: false,
        ipvs: false,
        ..node.options()
    };
    let before = node.run("nft", &["list", "ruleset"], None);
    let listed = scan(&only_nft);
    assert_no_errors(&listed);
    assert_eq!(node.run("nft", &["list", "ruleset"], None), before);
    assert_eq!(
        names(&listed, Backend::Nftables, false),
        vec!["table ip kube-proxy", "table ip6 kube-proxy"]
    );

    let cleaned = clean(&only_nft);
    assert_no_errors(&cleaned);
    assert_eq!(
        names(&cleaned, Backend::Nftables, true),
        vec!["table ip kube-proxy", "table ip6 kube-proxy"]
    );
    assert_eq!(node.run("nft", &["list", "ruleset"], None), want);
    assert!(
        want.contains("table inet kube-proxy"),
        "the decoy is part of the check"
    );

    let again = clean(&only_nft);
    assert_no_errors(&again);
    assert_eq!(again.found_count(), 0);
    assert_eq!(again.removed_count(), 0);
}

/// The ipvs-mode node: kube-proxy's ipsets and chains, `kube-ipvs0`, a user's link that
/// must stay, and two conntrack entries (one to a Service IP, one not).
fn ipvs_node() -> Netns {
    let node = Netns::new("ipvs");
    node.run("ipset", &["restore"], Some(IPVS_SETS));
    node.run("iptables-nft-restore", WAIT, Some(IPVS_RULES));
    add_veth(&node, "kube-ipvs0", "kipvs-peer");
    add_veth(&node, "eth-user", "eth-user-p");
    for (src, dst, dport) in [
        ("10.0.0.2", "10.96.0.10", "53"),
        ("10.0.0.2", "10.0.9.9", "53"),
    ] {
        node.run(
            "conntrack",
            &[
                "-I",
                "-s",
                src,
                "-d",
                dst,
                "-p",
                "udp",
                "--sport",
                "5000",
                "--dport",
                dport,
                "--timeout",
                "120",
            ],
            None,
        );
    }
    node
}

fn add_veth(node: &Netns, name: &str, peer: &str) {
    node.run(
        "ip",
        &["link", "add", name, "type", "veth", "peer", "name", peer],
        None,
    );
}

/// The same node's tables loaded without kube-proxy.
fn ipvs_reference_tables() -> BTreeMap<String, String> {
    let reference = Netns::new("ipvs-ref");
    reference.run("ipset", &["restore"], Some(IPVS_SETS));
    reference.run("iptables-nft-restore", WAIT, Some(IPVS_EXPECTED));
    tables(&reference.run("iptables-nft-save", &[], None))
}

/// What the ipvs backend finds: the link and kube-proxy's ipsets, sorted.
fn ipvs_want_found() -> Vec<String> {
    let mut want_found = vec![
        "link kube-ipvs0".to_string(),
        "ipset KUBE-CLUSTER-IP".into(),
        "ipset KUBE-LOOP-BACK".into(),
        "ipset KUBE-LOAD-BALANCER".into(),
        "ipset KUBE-LOAD-BALANCER-FW".into(),
        "ipset KUBE-NODE-PORT-TCP".into(),
        "ipset KUBE-HEALTH-CHECK-NODE-PORT".into(),
        "ipset KUBE-IPVS-IPS".into(),
        "ipset KUBE-6-CLUSTER-IP".into(),
    ];
    want_found.sort();
    want_found
}

/// `scan` lists the ipvs leftovers and the one Service conntrack entry, and changes nothing.
fn check_ipvs_scan(node: &Netns, opts: &Options, want_found: &[String]) {
    let listed = scan(opts);
    let ipvs = listed.backend(Backend::Ipvs).unwrap();
    assert!(ipvs.available);
    assert!(ipvs.errors.is_empty(), "{ipvs:#?}");
    if !std::path::Path::new("/proc/net/ip_vs").exists() {
        // No IPVS in this kernel: ipvsadm is not even tried.
        assert!(
            ipvs.notes
                .iter()
                .any(|n| n.starts_with("IPVS is not loaded")),
            "{ipvs:#?}"
        );
    }
    assert_eq!(names(&listed, Backend::Ipvs, false), want_found);
    let ct = listed.conntrack.as_ref().unwrap();
    assert_eq!((ct.found, ct.deleted_for.len()), (1, 0), "{ct:#?}");
    assert_eq!(
        node.run("ipset", &["list", "-n"], None).lines().count(),
        9,
        "scan changed ipsets"
    );
}

/// `clean` removes exactly kube-proxy's objects and the Service's conntrack entry.
fn check_ipvs_clean(
    node: &Netns,
    opts: &Options,
    want_found: &[String],
    want: &BTreeMap<String, String>,
) {
    let cleaned = clean(opts);
    assert_no_errors(&cleaned);
    assert_eq!(names(&cleaned, Backend::Ipvs, true), want_found);
    assert!(cleaned.backend(Backend::IptablesNft).unwrap().removed.count > 0);
    assert_eq!(&tables(&node.run("iptables-nft-save", &[], None)), want);
    assert_eq!(
        node.run("ipset", &["list", "-n"], None),
        "cali40all-ipam-pools\n"
    );
    let links = node.run("ip", &["-o", "link", "show"], None);
    assert!(!links.contains("kube-ipvs0"), "{links}");
    assert!(links.contains("eth-user"), "{links}");
    assert_eq!(
        cleaned.conntrack.as_ref().unwrap().deleted_for,
        vec!["10.96.0.10"]
    );
    let left = node.run("conntrack", &["-L", "-f", "ipv4"], None);
    assert!(!left.contains("dst=10.96.0.10"), "{left}");
    assert!(left.contains("dst=10.0.9.9"), "{left}");
}

/// ipvs mode without IPVS in the kernel: the ipvs chains, `kube-ipvs0` and kube-proxy's
/// ipsets are real here. The sets are used by the chains' rules, so this only passes if
/// the ipsets are destroyed after the rules. The kernel has no dummy driver, so a veth
/// named `kube-ipvs0` stands in for the dummy device (removal is by name).
#[test]
fn ipvs_leftovers_and_conntrack() {
    if !preconditions(
        "ipvs_leftovers_and_conntrack",
        &[
            "iptables-nft-restore",
            "iptables-nft-save",
            "ipset",
            "ip",
            "conntrack",
        ],
    ) {
        return;
    }
    let node = ipvs_node();
    let want = ipvs_reference_tables();
    let opts = Options {
        service_ips: vec!["10.96.0.10".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        flush_conntrack: true,
        ..node.options()
    };
    let want_found = ipvs_want_found();
    check_ipvs_scan(&node, &opts, &want_found);
    check_ipvs_clean(&node, &opts, &want_found, &want);

    let again = clean(&opts);
    assert_no_errors(&again);
    assert_eq!(again.found_count(), 0, "{again:#?}");
    assert_eq!(again.conntrack.as_ref().unwrap().found, 0);
}

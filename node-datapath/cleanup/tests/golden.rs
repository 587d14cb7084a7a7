//! Golden tests of the parser and planner on real `iptables-save` output: the fixtures
//! `iptables-mode.{nft,legacy}.save` are what iptables-nft-save and
//! iptables-legacy-save 1.8.9 printed after loading `iptables-mode.rules` (a node
//! programmed by kube-proxy 1.34 in iptables mode, the kubelet, a runtime, a CNI,
//! kube-router and an operator rule). The two backends order the tables differently.

// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

use switchyard_cleanup::iptables::{PlanOptions, Ruleset, plan};

const NFT_SAVE: &str = include_str!("fixtures/iptables-mode.nft.save");
const LEGACY_SAVE: &str = include_str!("fixtures/iptables-mode.legacy.save");
const EXPECTED: &str = include_str!("fixtures/iptables-mode.expected.rules");

/// Tables keyed by name, so dumps from both backends compare regardless of table order.
fn by_table(rs: &Ruleset) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rs
        .tables
        .iter()
        .map(|t| {
            let single = Ruleset {
                tables: vec![t.clone()],
            };
            (t.name.clone(), single.render())
        })
        .collect();
    v.sort();
    v
}

const EXPECTED_CHAINS: &[&str] = &[
    "mangle chain KUBE-PROXY-CANARY",
    "filter chain KUBE-EXTERNAL-SERVICES",
    "filter chain KUBE-FORWARD",
    "filter chain KUBE-NODEPORTS",
    "filter chain KUBE-PROXY-CANARY",
    "filter chain KUBE-PROXY-FIREWALL",
    "filter chain KUBE-SERVICES",
    "nat chain KUBE-EXT-GNZBNJ2PO5MGZ6GT",
    "nat chain KUBE-EXT-NUKIZ6OKUXPJNT4C",
    "nat chain KUBE-FW-NUKIZ6OKUXPJNT4C",
    "nat chain KUBE-MARK-MASQ",
    "nat chain KUBE-NODEPORTS",
    "nat chain KUBE-POSTROUTING",
    "nat chain KUBE-PROXY-CANARY",
    "nat chain KUBE-SEP-C6EBXVWJJZMIWKLZ",
    "nat chain KUBE-SEP-I77PXRDZVX7PMWMN",
    "nat chain KUBE-SEP-RS4RBKLTHTF2IUXJ",
    "nat chain KUBE-SEP-SXIVWICOYRO3J4NJ",
    "nat chain KUBE-SEP-UKSFD7AGPMPPLUHC",
    "nat chain KUBE-SERVICES",
    "nat chain KUBE-SVC-GNZBNJ2PO5MGZ6GT",
    "nat chain KUBE-SVC-NUKIZ6OKUXPJNT4C",
    "nat chain KUBE-SVC-XPGD46QRK7WJZT7O",
    "nat chain KUBE-SVL-GNZBNJ2PO5MGZ6GT",
];

const EXPECTED_JUMPS: &[&str] = &[
    "filter rule INPUT -> KUBE-PROXY-FIREWALL",
    "filter rule INPUT -> KUBE-NODEPORTS",
    "filter rule INPUT -> KUBE-EXTERNAL-SERVICES",
    "filter rule FORWARD -> KUBE-PROXY-FIREWALL",
    "filter rule FORWARD -> KUBE-FORWARD",
    "filter rule FORWARD -> KUBE-SERVICES",
    "filter rule FORWARD -> KUBE-EXTERNAL-SERVICES",
    "filter rule OUTPUT -> KUBE-PROXY-FIREWALL",
    "filter rule OUTPUT -> KUBE-SERVICES",
    "nat rule PREROUTING -> KUBE-SERVICES",
    "nat rule OUTPUT -> KUBE-SERVICES",
    "nat rule POSTROUTING -> KUBE-POSTROUTING",
];

fn check_backend(save: &str) {
    let rs = Ruleset::parse(save).expect("fixture parses");
    assert_eq!(rs.tables.len(), 3);
    let p = plan(&rs, &PlanOptions::default());

    let mut names = p.object_names();
    names.sort();
    let mut want: Vec<String> = EXPECTED_CHAINS
        .iter()
        .map(|s| s.to_string())
        .chain(EXPECTED_JUMPS.iter().map(|s| s.to_string()))
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert!(p.blocked().is_empty(), "{:?}", p.blocked());

    // Applying the plan leaves exactly the expected ruleset, table by table.
    let after = p.apply(&rs);
    let expected = Ruleset::parse(EXPECTED).unwrap();
    assert_eq!(by_table(&after), by_table(&expected));

    // Idempotent: nothing left to do.
    assert!(plan(&after, &PlanOptions::default()).is_empty());

    // The restore input touches no chain and no rule of anyone else.
    let input = p.restore_input();
    for kept in [
        "KUBE-FIREWALL",
        "KUBE-KUBELET-CANARY",
        "KUBE-IPTABLES-HINT",
        "KUBE-NWPLCY",
        "DOCKER",
        "cali-",
    ] {
        assert!(
            !input
                .lines()
                .any(|l| l.contains(kept) && !l.starts_with("-D ")),
            "restore input mentions {kept}:\n{input}"
        );
    }
    for l in input.lines().filter(|l| l.starts_with("-D ")) {
        assert!(
            [
                "-D INPUT ",
                "-D FORWARD ",
                "-D OUTPUT ",
                "-D PREROUTING ",
                "-D POSTROUTING "
            ]
            .iter()
            .any(|p| l.starts_with(p)),
            "{l}"
        );
        assert!(l.contains("-j KUBE-"), "{l}");
    }
}

#[test]
fn nft_backend_dump() {
    check_backend(NFT_SAVE);
}

#[test]
fn legacy_backend_dump() {
    check_backend(LEGACY_SAVE);
}

#[test]
fn restore_input_for_nat_is_flush_unlink_delete() {
    let rs = Ruleset::parse(LEGACY_SAVE).unwrap();
    let p = plan(&rs, &PlanOptions::default());
    let nat = p.tables.iter().find(|t| t.table == "nat").unwrap();
    let input = nat.restore_input();
    let expected_head = "*nat\n:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]\n";
    assert!(input.starts_with(expected_head), "{input}");
    assert!(input.contains(
        "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-D OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n-X KUBE-EXT-GNZBNJ2PO5MGZ6GT\n"
    ));
    assert!(input.ends_with("-X KUBE-SVL-GNZBNJ2PO5MGZ6GT\nCOMMIT\n"));
}

#[test]
fn keeping_pre_1_28_chains_keeps_postrouting_jump_and_mark_masq() {
    let rs = Ruleset::parse(NFT_SAVE).unwrap();
    let opts = PlanOptions {
        keep_pre_1_28_kubelet_chains: true,
    };
    let p = plan(&rs, &opts);
    let names = p.object_names();
    assert!(!names.iter().any(|n| n == "nat chain KUBE-MARK-MASQ"));
    assert!(!names.iter().any(|n| n == "nat chain KUBE-POSTROUTING"));
    assert!(
        !names
            .iter()
            .any(|n| n == "nat rule POSTROUTING -> KUBE-POSTROUTING")
    );
    assert!(
        names
            .iter()
            .any(|n| n == "nat chain KUBE-SEP-RS4RBKLTHTF2IUXJ")
    );
    let after = p.apply(&rs);
    let nat = after.table("nat").unwrap();
    assert!(nat.chain("KUBE-MARK-MASQ").is_some());
    assert_eq!(
        nat.rules
            .iter()
            .filter(|r| r.chain == "KUBE-MARK-MASQ" || r.chain == "KUBE-POSTROUTING")
            .count(),
        4
    );
    assert!(plan(&after, &opts).is_empty());
}

/// The published manual recipe, `iptables-save | grep -v KUBE | iptables-restore`, on the
/// same dump: it also deletes the kubelet's chains (and their jumps) and kube-router's,
/// which our plan keeps. (The privileged test shows the same against the kernel.)
#[test]
fn grep_v_kube_recipe_deletes_what_we_keep() {
    for save in [NFT_SAVE, LEGACY_SAVE] {
        let grepped: String = save
            .lines()
            .filter(|l| !l.contains("KUBE"))
            .map(|l| format!("{l}\n"))
            .collect();
        let recipe = Ruleset::parse(&grepped).unwrap();
        let ours = plan(&Ruleset::parse(save).unwrap(), &PlanOptions::default())
            .apply(&Ruleset::parse(save).unwrap());
        for (table, chain) in [
            ("filter", "KUBE-FIREWALL"),
            ("filter", "KUBE-KUBELET-CANARY"),
            ("filter", "KUBE-NWPLCY-DEFAULT"),
            ("nat", "KUBE-KUBELET-CANARY"),
            ("mangle", "KUBE-KUBELET-CANARY"),
            ("mangle", "KUBE-IPTABLES-HINT"),
        ] {
            assert!(recipe.table(table).unwrap().chain(chain).is_none());
            assert!(
                ours.table(table).unwrap().chain(chain).is_some(),
                "{table} {chain}"
            );
        }
        let jumps_to_firewall = |rs: &Ruleset| {
            rs.table("filter")
                .unwrap()
                .rules
                .iter()
                .filter(|r| r.target_name() == Some("KUBE-FIREWALL"))
                .count()
        };
        assert_eq!(jumps_to_firewall(&recipe), 0);
        assert_eq!(jumps_to_firewall(&ours), 2);
    }
}

/// ipvs mode's chains (KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-IPVS-FILTER, …) are
/// kube-proxy's too; the CNI's rule on its own ipset and the kubelet's chains stay.
#[test]
fn ipvs_mode_chains() {
    let rs = Ruleset::parse(include_str!("fixtures/ipvs-mode.rules")).unwrap();
    let p = plan(&rs, &PlanOptions::default());
    let after = p.apply(&rs);
    let expected = Ruleset::parse(include_str!("fixtures/ipvs-mode.expected.rules")).unwrap();
    assert_eq!(by_table(&after), by_table(&expected));
    let names = p.object_names();
    for n in [
        "filter chain KUBE-IPVS-OUT-FILTER",
        "filter chain KUBE-SOURCE-RANGES-FIREWALL",
        "nat chain KUBE-LOAD-BALANCER",
        "nat chain KUBE-NODE-PORT",
        "filter rule INPUT -> KUBE-NODE-PORT",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:#?}");
    }
    assert!(plan(&after, &PlanOptions::default()).is_empty());
}

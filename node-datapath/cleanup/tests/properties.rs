//! Property tests of the iptables planner: for random mixtures of kube-proxy chains and
//! jumps, kubelet chains and other components' chains (including KUBE-prefixed ones
//! that are not kube-proxy's), the plan removes every kube-proxy object that can be
//! removed, leaves everything else exactly as it was, never leaves a dangling jump, and
//! finds nothing to do on its own result.

// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::collections::BTreeSet;
use switchyard_cleanup::iptables::owners::fixed_kube_proxy_chains;
use switchyard_cleanup::iptables::{
    Chain, IptablesPlan, PlanOptions, Rule, Ruleset, Table, is_kube_proxy_chain, plan,
};

const TABLES: &[(&str, &[&str])] = &[
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
];

const OTHERS: &[&str] = &[
    "KUBE-FIREWALL",
    "KUBE-KUBELET-CANARY",
    "KUBE-IPTABLES-HINT",
    "KUBE-MARK-DROP",
    "KUBE-NWPLCY-DEFAULT",
    "KUBE-ROUTER-INPUT",
    "KUBE-SVCX",
    "DOCKER",
    "DOCKER-USER",
    "cali-INPUT",
    "CNI-HOSTPORT-DNAT",
    "USER",
];

const COMMENTS: &[Option<&str>] = &[
    None,
    Some("kubernetes service portals"),
    Some("kubernetes postrouting rules"),
    Some("ns1/svc1:p80 cluster IP"),
    Some("cali:abc"),
    Some("operator rule with spaces"),
];

const VERDICTS: &[&str] = &["ACCEPT", "RETURN", "DROP"];

fn pool(table: &str) -> Vec<String> {
    let mut p: Vec<String> = fixed_kube_proxy_chains(table)
        .into_iter()
        .map(String::from)
        .collect();
    for prefix in [
        "KUBE-SVC-",
        "KUBE-SVL-",
        "KUBE-SEP-",
        "KUBE-FW-",
        "KUBE-EXT-",
    ] {
        for suffix in ["AAAA", "BBBB"] {
            p.push(format!("{prefix}{suffix}"));
        }
    }
    p.extend(OTHERS.iter().map(|s| s.to_string()));
    p
}

#[derive(Debug, Clone)]
struct TableSpec {
    mask: Vec<bool>,
    rules: Vec<(usize, usize, usize)>,
}

fn table_spec() -> impl Strategy<Value = TableSpec> {
    (
        prop::collection::vec(any::<bool>(), 40),
        prop::collection::vec((0usize..64, 0usize..64, 0usize..COMMENTS.len()), 0..40),
    )
        .prop_map(|(mask, rules)| TableSpec { mask, rules })
}

fn build(specs: &[TableSpec]) -> Ruleset {
    let mut tables = Vec::new();
    for ((name, builtins), spec) in TABLES.iter().zip(specs) {
        let mut chains: Vec<Chain> = builtins
            .iter()
            .map(|b| Chain {
                name: b.to_string(),
                policy: "ACCEPT".into(),
                counters: "[0:0]".into(),
            })
            .collect();
        for (i, c) in pool(name).into_iter().enumerate() {
            if spec.mask.get(i).copied().unwrap_or(false) {
                chains.push(Chain {
                    name: c,
                    policy: "-".into(),
                    counters: "[0:0]".into(),
                });
            }
        }
        let mut rules = Vec::new();
        for (from, to, comment) in &spec.rules {
            let chain = &chains[from % chains.len()].name;
            let user: Vec<&Chain> = chains.iter().filter(|c| !c.is_builtin()).collect();
            let target = if to % 3 == 0 || user.is_empty() {
                VERDICTS[to % VERDICTS.len()].to_string()
            } else {
                user[to % user.len()].name.clone()
            };
            if &target == chain {
                continue;
            }
            let mut spec = String::new();
            if let Some(c) = COMMENTS[*comment] {
                spec.push_str(&format!("-m comment --comment \"{c}\" "));
            }
            spec.push_str(&format!("-j {target}"));
            rules.push(Rule::new(chain, &spec).unwrap());
        }
        tables.push(Table {
            name: name.to_string(),
            chains,
            rules,
        });
    }
    Ruleset { tables }
}

fn check(rs: &Ruleset, opts: &PlanOptions) -> Result<(), TestCaseError> {
    // The model survives the text format.
    let reparsed = Ruleset::parse(&rs.render()).unwrap();
    prop_assert_eq!(&reparsed, rs);

    let p = plan(rs, opts);
    let after = p.apply(rs);
    for (before_t, after_t) in rs.tables.iter().zip(&after.tables) {
        check_table(before_t, after_t, &p, opts)?;
    }

    // Idempotent.
    prop_assert!(plan(&after, opts).is_empty());
    Ok(())
}

/// One table before and after the plan: kube-proxy's chains gone unless blocked, the
/// others kept with their rules, built-ins losing only jumps to deleted chains, every
/// block real and no dangling jump.
fn check_table(
    before_t: &Table,
    after_t: &Table,
    p: &IptablesPlan,
    opts: &PlanOptions,
) -> Result<(), TestCaseError> {
    let tname = &before_t.name;
    let tp = p.tables.iter().find(|t| &t.table == tname);
    let blocked: BTreeSet<&str> = tp
        .map(|t| t.blocked.iter().map(|b| b.chain.as_str()).collect())
        .unwrap_or_default();
    let deleted: BTreeSet<&str> = tp
        .map(|t| t.delete_chains.iter().map(String::as_str).collect())
        .unwrap_or_default();

    check_chains(before_t, after_t, &blocked, &deleted, opts)?;
    check_builtins(before_t, after_t, &deleted)?;

    // A blocked chain really is used by a chain that stays.
    for b in &blocked {
        prop_assert!(after_t.rules.iter().any(|r| r.target_name() == Some(*b)
            && !after_t.is_builtin(&r.chain)
            && !is_kube_proxy_chain(tname, &r.chain, opts)
            || r.target_name() == Some(*b) && blocked.contains(r.chain.as_str())));
    }

    // No dangling jumps: the kernel would have refused the transaction.
    let declared: BTreeSet<&str> = after_t.chains.iter().map(|c| c.name.as_str()).collect();
    for r in &after_t.rules {
        if let Some(t) = r.target_name()
            && !VERDICTS.contains(&t)
        {
            prop_assert!(declared.contains(t), "dangling jump {:?}", r);
        }
    }
    Ok(())
}

fn check_chains(
    before_t: &Table,
    after_t: &Table,
    blocked: &BTreeSet<&str>,
    deleted: &BTreeSet<&str>,
    opts: &PlanOptions,
) -> Result<(), TestCaseError> {
    let tname = &before_t.name;
    for c in &before_t.chains {
        let owned = !c.is_builtin() && is_kube_proxy_chain(tname, &c.name, opts);
        let present = after_t.chain(&c.name).is_some();
        if owned {
            // Every kube-proxy chain goes, unless something kept still uses it.
            prop_assert_eq!(
                present,
                blocked.contains(c.name.as_str()),
                "{} {}",
                tname,
                c.name
            );
        } else {
            prop_assert!(present, "{} {} was removed", tname, c.name);
            prop_assert!(!deleted.contains(c.name.as_str()));
        }
        if present && !c.is_builtin() {
            // Chains that stay keep exactly their rules.
            let rules = |t: &Table| -> Vec<String> {
                t.rules
                    .iter()
                    .filter(|r| r.chain == c.name)
                    .map(|r| r.spec.clone())
                    .collect()
            };
            prop_assert_eq!(rules(before_t), rules(after_t));
        }
    }
    Ok(())
}

fn check_builtins(
    before_t: &Table,
    after_t: &Table,
    deleted: &BTreeSet<&str>,
) -> Result<(), TestCaseError> {
    // Built-in chains lose exactly the rules that target a deleted chain.
    for b in before_t.chains.iter().filter(|c| c.is_builtin()) {
        let want: Vec<&str> = before_t
            .rules
            .iter()
            .filter(|r| r.chain == b.name)
            .filter(|r| !r.target_name().is_some_and(|t| deleted.contains(t)))
            .map(|r| r.spec.as_str())
            .collect();
        let got: Vec<&str> = after_t
            .rules
            .iter()
            .filter(|r| r.chain == b.name)
            .map(|r| r.spec.as_str())
            .collect();
        prop_assert_eq!(want, got);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plan_removes_exactly_kube_proxy_objects(
        specs in prop::collection::vec(table_spec(), 3),
        keep in any::<bool>(),
    ) {
        let rs = build(&specs);
        let opts = PlanOptions { keep_pre_1_28_kubelet_chains: keep };
        check(&rs, &opts)?;
    }

    #[test]
    fn without_foreign_references_nothing_of_kube_proxy_survives(
        specs in prop::collection::vec(table_spec(), 3),
    ) {
        let opts = PlanOptions::default();
        let mut rs = build(&specs);
        // Drop every rule in a foreign user chain that targets a kube-proxy chain.
        for t in &mut rs.tables {
            let name = t.name.clone();
            let builtin: BTreeSet<String> =
                t.chains.iter().filter(|c| c.is_builtin()).map(|c| c.name.clone()).collect();
            t.rules.retain(|r| {
                builtin.contains(&r.chain)
                    || is_kube_proxy_chain(&name, &r.chain, &opts)
                    || !r.target_name().is_some_and(|x| is_kube_proxy_chain(&name, x, &opts))
            });
        }
        let after = plan(&rs, &opts).apply(&rs);
        for t in &after.tables {
            for c in &t.chains {
                prop_assert!(c.is_builtin() || !is_kube_proxy_chain(&t.name, &c.name, &opts),
                    "{} {} survived", t.name, c.name);
            }
        }
        check(&rs, &opts)?;
    }
}

//! The pure iptables cleanup planner: a parsed dump in, the exact removals out.
//!
//! Per table the plan holds
//! * the kube-proxy chains to flush and delete ([`super::owners`] decides ownership),
//! * the rules in built-in chains that jump (or go) to one of those chains — matched on
//!   the target chain, so a jump is found whatever comment or match it carries, and a rule
//!   in a built-in chain that jumps anywhere else is never touched,
//! * the kube-proxy chains that must stay because a chain we keep (a user's or the
//!   kubelet's) still references them: deleting them would make the whole
//!   `iptables-restore` transaction fail, which is how upstream's cleanup fails on such
//!   nodes. We keep them (and report why) and remove everything else.
//!
//! The plan renders as `iptables-restore --noflush` input, one atomic transaction per
//! table, and can be applied to the model ([`IptablesPlan::apply`]) for tests.

use super::owners::{PlanOptions, is_kube_proxy_chain};
use super::save::{Rule, Ruleset, Table, rule_line};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// The removals for one table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TablePlan {
    /// Table name (`nat`, `filter`, `mangle`).
    pub table: String,
    /// Rules in built-in chains that target a chain being deleted, in dump order.
    #[serde(serialize_with = "serialize_rules")]
    pub delete_rules: Vec<Rule>,
    /// kube-proxy chains to flush and delete, in dump order.
    pub delete_chains: Vec<String>,
    /// kube-proxy chains kept because a kept chain references them.
    pub blocked: Vec<BlockedChain>,
}

/// A kube-proxy chain that stays because something that is not kube-proxy's uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedChain {
    /// The kube-proxy chain that stays.
    pub chain: String,
    /// The first referencing rule, as `-A CHAIN SPEC`.
    pub referenced_by: String,
}

fn serialize_rules<S: serde::Serializer>(rules: &[Rule], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(rules.iter().map(|r| rule_line("-A", r)))
}

/// The removals for one backend and family: only tables with something to do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct IptablesPlan {
    /// Per-table plans, in dump order; tables with nothing to remove are left out.
    pub tables: Vec<TablePlan>,
}

impl TablePlan {
    /// Whether this table needs no change.
    pub fn is_empty(&self) -> bool {
        self.delete_rules.is_empty() && self.delete_chains.is_empty()
    }

    /// `iptables-restore --noflush` input removing this table's kube-proxy objects in one
    /// transaction: declaring an existing chain flushes it (which also drops the links
    /// between the chains being deleted), then the jumps from built-in chains go, then
    /// the chains.
    pub fn restore_input(&self) -> String {
        let mut out = format!("*{}\n", self.table);
        for c in &self.delete_chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in &self.delete_rules {
            out.push_str(&rule_line("-D", r));
            out.push('\n');
        }
        for c in &self.delete_chains {
            out.push_str(&format!("-X {c}\n"));
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Human-readable object names for reports, e.g. `nat chain KUBE-SVC-…` and
    /// `nat rule PREROUTING -> KUBE-SERVICES`.
    pub fn object_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .delete_chains
            .iter()
            .map(|c| format!("{} chain {c}", self.table))
            .collect();
        names.extend(self.delete_rules.iter().map(|r| {
            format!(
                "{} rule {} -> {}",
                self.table,
                r.chain,
                r.target_name().unwrap_or("?")
            )
        }));
        names
    }
}

impl IptablesPlan {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(TablePlan::is_empty)
    }

    /// The full `iptables-restore --noflush` input (one `*table … COMMIT` block each).
    pub fn restore_input(&self) -> String {
        self.tables.iter().map(TablePlan::restore_input).collect()
    }

    /// Applies the plan to a model the way `iptables-restore --noflush` applies it to the
    /// kernel. Used to check plans (idempotence, "nothing else changes") without root.
    pub fn apply(&self, ruleset: &Ruleset) -> Ruleset {
        let mut out = ruleset.clone();
        for tp in &self.tables {
            let Some(table) = out.tables.iter_mut().find(|t| t.name == tp.table) else {
                continue;
            };
            let doomed: BTreeSet<&str> = tp.delete_chains.iter().map(String::as_str).collect();
            // `-D CHAIN SPEC` removes the first matching rule, once per line.
            for del in &tp.delete_rules {
                if let Some(pos) = table
                    .rules
                    .iter()
                    .position(|r| r.chain == del.chain && r.spec == del.spec)
                {
                    table.rules.remove(pos);
                }
            }
            table.rules.retain(|r| !doomed.contains(r.chain.as_str()));
            table.chains.retain(|c| !doomed.contains(c.name.as_str()));
        }
        out
    }

    /// Report names of every object the plan removes.
    pub fn object_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .flat_map(TablePlan::object_names)
            .collect()
    }

    /// Every blocked chain, prefixed with its table.
    pub fn blocked(&self) -> Vec<(String, BlockedChain)> {
        self.tables
            .iter()
            .flat_map(|t| t.blocked.iter().map(|b| (t.table.clone(), b.clone())))
            .collect()
    }
}

/// Computes what to remove from one backend/family dump.
pub fn plan(ruleset: &Ruleset, opts: &PlanOptions) -> IptablesPlan {
    let tables = ruleset
        .tables
        .iter()
        .map(|table| plan_table(table, opts))
        .filter(|tp| !tp.is_empty() || !tp.blocked.is_empty())
        .collect();
    IptablesPlan { tables }
}

/// One table's plan: kube-proxy's chains less those a kept chain still uses, the
/// built-in chains' jumps to them, and why each blocked chain stays.
fn plan_table(table: &Table, opts: &PlanOptions) -> TablePlan {
    let builtin: HashSet<&str> = table
        .chains
        .iter()
        .filter(|c| c.is_builtin())
        .map(|c| c.name.as_str())
        .collect();
    let mut removal: HashSet<&str> = table
        .chains
        .iter()
        .filter(|c| !c.is_builtin() && is_kube_proxy_chain(&table.name, &c.name, opts))
        .map(|c| c.name.as_str())
        .collect();

    let blocked = keep_referenced(table, &builtin, &mut removal);

    let delete_rules: Vec<Rule> = table
        .rules
        .iter()
        .filter(|r| {
            builtin.contains(r.chain.as_str())
                && r.target_name().is_some_and(|t| removal.contains(t))
        })
        .cloned()
        .collect();
    let delete_chains: Vec<String> = table
        .chains
        .iter()
        .filter(|c| removal.contains(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    TablePlan {
        table: table.name.clone(),
        delete_rules,
        delete_chains,
        blocked,
    }
}

/// Takes out of `removal` the kube-proxy chains a kept chain still uses, and returns
/// them with the rule that uses each. A chain we keep that is not built-in may
/// reference a kube-proxy chain; that chain then stays too, and so does whatever it
/// references (a worklist over the rules of each newly kept chain, linear in the size
/// of the table).
fn keep_referenced<'a>(
    table: &'a Table,
    builtin: &HashSet<&str>,
    removal: &mut HashSet<&'a str>,
) -> Vec<BlockedChain> {
    let mut by_chain: HashMap<&str, Vec<&Rule>> = HashMap::new();
    for r in &table.rules {
        by_chain.entry(r.chain.as_str()).or_default().push(r);
    }
    let mut queue: VecDeque<&Rule> = table
        .rules
        .iter()
        .filter(|r| {
            !builtin.contains(r.chain.as_str())
                && !removal.contains(r.chain.as_str())
                && r.target_name().is_some_and(|t| removal.contains(t))
        })
        .collect();
    let mut blocked = Vec::new();
    while let Some(rule) = queue.pop_front() {
        let Some(target) = rule.target_name() else {
            continue;
        };
        if !removal.remove(target) {
            continue;
        }
        blocked.push(BlockedChain {
            chain: target.to_string(),
            referenced_by: rule_line("-A", rule),
        });
        for r in by_chain.get(target).into_iter().flatten() {
            if r.target_name().is_some_and(|t| removal.contains(t)) {
                queue.push_back(r);
            }
        }
    }
    blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-BBB - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-MARK-DROP - [0:0]
:KUBE-POSTROUTING - [0:0]
:USER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -j USER
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-AAA
-A KUBE-SVC-AAA -j KUBE-SEP-BBB
-A KUBE-SEP-BBB -s 10.0.0.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-BBB -p tcp -m tcp -j DNAT --to-destination 10.0.0.5:6443
-A USER -j RETURN
COMMIT
"#;

    #[test]
    fn plans_chains_and_jumps_and_nothing_else() {
        let rs = Ruleset::parse(DUMP).unwrap();
        let p = plan(&rs, &PlanOptions::default());
        let t = &p.tables[0];
        assert_eq!(
            t.delete_chains,
            vec![
                "KUBE-SERVICES",
                "KUBE-SVC-AAA",
                "KUBE-SEP-BBB",
                "KUBE-MARK-MASQ",
                "KUBE-POSTROUTING"
            ]
        );
        let jumps: Vec<_> = t
            .delete_rules
            .iter()
            .map(|r| (r.chain.as_str(), r.target_name().unwrap()))
            .collect();
        assert_eq!(
            jumps,
            vec![
                ("PREROUTING", "KUBE-SERVICES"),
                ("POSTROUTING", "KUBE-POSTROUTING")
            ]
        );
        assert!(t.blocked.is_empty());
        let after = p.apply(&rs);
        let nat = after.table("nat").unwrap();
        let names: Vec<_> = nat.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["PREROUTING", "POSTROUTING", "KUBE-MARK-DROP", "USER"]
        );
        assert_eq!(nat.rules.len(), 2, "{:?}", nat.rules);
        assert!(plan(&after, &PlanOptions::default()).is_empty());
    }

    #[test]
    fn restore_input_flushes_then_unlinks_then_deletes() {
        let rs = Ruleset::parse(DUMP).unwrap();
        let input = plan(&rs, &PlanOptions::default()).restore_input();
        let lines: Vec<&str> = input.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(lines[1], ":KUBE-SERVICES - [0:0]");
        let first_d = lines.iter().position(|l| l.starts_with("-D ")).unwrap();
        let first_x = lines.iter().position(|l| l.starts_with("-X ")).unwrap();
        let last_decl = lines.iter().rposition(|l| l.starts_with(':')).unwrap();
        assert!(last_decl < first_d && first_d < first_x);
        assert!(lines.contains(
            &r#"-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#
        ));
        assert_eq!(*lines.last().unwrap(), "COMMIT");
    }

    #[test]
    fn keep_option_keeps_shared_chains_and_their_jump() {
        let rs = Ruleset::parse(DUMP).unwrap();
        let opts = PlanOptions {
            keep_pre_1_28_kubelet_chains: true,
        };
        let p = plan(&rs, &opts);
        let t = &p.tables[0];
        assert!(!t.delete_chains.iter().any(|c| c == "KUBE-MARK-MASQ"));
        assert!(!t.delete_chains.iter().any(|c| c == "KUBE-POSTROUTING"));
        assert!(!t.delete_rules.iter().any(|r| r.chain == "POSTROUTING"));
        assert!(t.delete_chains.iter().any(|c| c == "KUBE-SEP-BBB"));
    }

    #[test]
    fn chain_referenced_by_a_kept_chain_is_blocked_transitively() {
        let dump = "*nat\n:OUTPUT ACCEPT [0:0]\n:CNI-HOSTPORT - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-B - [0:0]\n:KUBE-SEP-C - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A OUTPUT -j KUBE-SVC-A\n-A CNI-HOSTPORT -j KUBE-SVC-A\n-A KUBE-SVC-A -j KUBE-SEP-B\n-A KUBE-SEP-B -j KUBE-MARK-MASQ\n-A KUBE-SEP-C -j KUBE-MARK-MASQ\nCOMMIT\n";
        let rs = Ruleset::parse(dump).unwrap();
        let p = plan(&rs, &PlanOptions::default());
        let t = &p.tables[0];
        let blocked: Vec<_> = t.blocked.iter().map(|b| b.chain.as_str()).collect();
        assert_eq!(blocked, vec!["KUBE-SVC-A", "KUBE-SEP-B", "KUBE-MARK-MASQ"]);
        assert_eq!(t.blocked[0].referenced_by, "-A CNI-HOSTPORT -j KUBE-SVC-A");
        assert_eq!(t.delete_chains, vec!["KUBE-SEP-C"]);
        // The built-in jump to a blocked chain stays.
        assert!(t.delete_rules.is_empty());
        let after = p.apply(&rs);
        assert!(plan(&after, &PlanOptions::default()).is_empty());
    }

    #[test]
    fn duplicate_jumps_are_each_deleted() {
        let dump = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n-A INPUT -j KUBE-FORWARD\n-A INPUT -j KUBE-FORWARD\n-A INPUT -j ACCEPT\nCOMMIT\n";
        let rs = Ruleset::parse(dump).unwrap();
        let p = plan(&rs, &PlanOptions::default());
        assert_eq!(p.tables[0].delete_rules.len(), 2);
        let after = p.apply(&rs);
        assert_eq!(after.tables[0].rules.len(), 1);
        assert_eq!(
            p.restore_input()
                .matches("-D INPUT -j KUBE-FORWARD")
                .count(),
            2
        );
    }

    #[test]
    fn empty_dump_plans_nothing() {
        let p = plan(&Ruleset::default(), &PlanOptions::default());
        assert!(p.is_empty());
        assert_eq!(p.restore_input(), "");
    }
}

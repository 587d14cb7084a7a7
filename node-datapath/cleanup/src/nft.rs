//! nftables mode: kube-proxy keeps everything in one table named `kube-proxy` per IP
//! family (`ip` and `ip6`); its cleanup deletes those two tables and nothing else
//! (`pkg/proxy/nftables/cleanup.go`). A `kube-proxy` table of another family (`inet`,
//! `bridge`, …) or any other table is not kube-proxy's and stays.

use crate::Error;
use serde::{Deserialize, Serialize};

/// The table name kube-proxy's nftables mode uses.
pub const KUBE_PROXY_TABLE: &str = "kube-proxy";
/// The families kube-proxy creates that table in.
pub const KUBE_PROXY_FAMILIES: &[&str] = &["ip", "ip6"];

/// One nftables table as `nft list tables` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NftTable {
    /// `ip`, `ip6`, `inet`, `arp`, `bridge`, `netdev`.
    pub family: String,
    /// Table name.
    pub name: String,
}

impl std::fmt::Display for NftTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table {} {}", self.family, self.name)
    }
}

#[derive(Deserialize)]
struct JsonRoot {
    nftables: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct JsonTable {
    family: String,
    name: String,
}

/// Parses `nft -j list tables`.
pub fn parse_tables_json(text: &str) -> Result<Vec<NftTable>, Error> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root: JsonRoot = serde_json::from_str(text).map_err(|source| Error::Json {
        what: "nft -j list tables",
        source,
    })?;
    let mut out = Vec::new();
    for item in root.nftables {
        if let Some(t) = item.get("table") {
            let t: JsonTable = serde_json::from_value(t.clone()).map_err(|source| Error::Json {
                what: "nft -j list tables (table object)",
                source,
            })?;
            out.push(NftTable {
                family: t.family,
                name: t.name,
            });
        }
    }
    Ok(out)
}

/// Parses `nft list tables` (text: `table <family> <name>` per line).
pub fn parse_tables_text(text: &str) -> Result<Vec<NftTable>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["table", family, name] => out.push(NftTable {
                family: (*family).to_string(),
                name: (*name).to_string(),
            }),
            _ => {
                return Err(Error::Parse {
                    what: "nft list tables",
                    line: i + 1,
                    message: format!("unexpected line {line:?}"),
                });
            }
        }
    }
    Ok(out)
}

/// Whether kube-proxy's nftables cleanup deletes this table.
pub fn is_kube_proxy_table(t: &NftTable) -> bool {
    t.name == KUBE_PROXY_TABLE && KUBE_PROXY_FAMILIES.contains(&t.family.as_str())
}

/// The tables to delete, in the order listed.
pub fn plan(tables: &[NftTable]) -> Vec<NftTable> {
    tables
        .iter()
        .filter(|t| is_kube_proxy_table(t))
        .cloned()
        .collect()
}

/// The table that keeps the kernel's connection tracking and NAT hooks
/// registered once kube-proxy's table is gone.
///
/// Connections kube-proxy had DNATed to a Service (API server watches,
/// long-lived client connections) keep working after its table is deleted
/// only if the kernel still translates their packets, which takes two things
/// per family, each of which kube-proxy's table was holding:
///
/// * the NAT hooks: nftables registers them only while some `type nat` base
///   chain of the family exists — the empty NAT base chains of this table;
/// * connection tracking itself: in a network namespace its hooks are
///   registered only while some rule needs it (`nf_ct_netns_get`: a `ct`
///   match, `dnat`, `masquerade`, …); a NAT chain alone does not hold it. With
///   no tracking, packets are never matched to their conntrack entries (which
///   stay, unused), nothing is translated, and the connections hang. The rule
///   in the unhooked `conntrack` chain holds that reference; the chain is never
///   evaluated.
///
/// The base chains are empty: they match nothing and change no packet.
pub const NAT_KEEPALIVE_TABLE: &str = "switchyard-nat-keepalive";

/// The unhooked chain whose rule keeps connection tracking registered.
pub const CONNTRACK_HOLD_CHAIN: &str = "conntrack";

fn nat_keepalive(family: &str) -> String {
    let t = NAT_KEEPALIVE_TABLE;
    let mut out = format!("add table {family} {t}\n");
    for (chain, priority) in [
        ("prerouting", -100),
        ("output", -100),
        ("postrouting", 100),
        ("input", 100),
    ] {
        out.push_str(&format!(
            "add chain {family} {t} {chain} {{ type nat hook {chain} priority {priority}; policy accept; }}\n"
        ));
    }
    // Flushed first so a second cleanup (after a rollback) leaves one rule;
    // the new rule takes its reference before the old one drops it.
    let c = CONNTRACK_HOLD_CHAIN;
    out.push_str(&format!(
        "add chain {family} {t} {c}\nflush chain {family} {t} {c}\nadd rule {family} {t} {c} ct state established counter\n"
    ));
    out
}

/// `nft -f -` input creating (idempotently) the keepalive table of the
/// `ip` family: what the ingress program's conntrack NAT needs on a node
/// whatever kube-proxy left (see [`NAT_KEEPALIVE_TABLE`]).
pub fn keepalive_script() -> String {
    nat_keepalive("ip")
}

/// `nft -f -` input deleting the planned tables in one transaction, after
/// making sure connection tracking and the NAT hooks of their families stay
/// registered (see [`NAT_KEEPALIVE_TABLE`]).
pub fn delete_script(tables: &[NftTable]) -> String {
    let mut families: Vec<&str> = tables.iter().map(|t| t.family.as_str()).collect();
    families.dedup();
    let mut out: String = families.into_iter().map(nat_keepalive).collect();
    for t in tables {
        out.push_str(&format!("delete table {} {}\n", t.family, t.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_agree() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 3}}, {"table": {"family": "inet", "name": "kube-proxy", "handle": 4}}, {"table": {"family": "ip6", "name": "kube-proxy", "handle": 5}}, {"table": {"family": "inet", "name": "filter", "handle": 6}}]}"#;
        let text =
            "table ip kube-proxy\ntable inet kube-proxy\ntable ip6 kube-proxy\ntable inet filter\n";
        let a = parse_tables_json(json).unwrap();
        assert_eq!(a, parse_tables_text(text).unwrap());
        let p = plan(&a);
        assert_eq!(
            p.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["table ip kube-proxy", "table ip6 kube-proxy"]
        );
        let script = delete_script(&p);
        assert!(
            script.ends_with("delete table ip kube-proxy\ndelete table ip6 kube-proxy\n"),
            "{script}"
        );
        // NAT hooks stay registered for both families, created before the deletes.
        for family in ["ip", "ip6"] {
            let keep = format!(
                "add chain {family} {NAT_KEEPALIVE_TABLE} output {{ type nat hook output priority -100; policy accept; }}"
            );
            let at = script
                .find(&keep)
                .unwrap_or_else(|| panic!("no {family} keepalive in {script}"));
            assert!(at < script.find("delete table").unwrap());
            // Connection tracking stays registered too: a rule with a ct
            // expression, before the deletes.
            let hold =
                format!("add rule {family} {NAT_KEEPALIVE_TABLE} {CONNTRACK_HOLD_CHAIN} ct state");
            let at = script
                .find(&hold)
                .unwrap_or_else(|| panic!("no {family} conntrack hold in {script}"));
            assert!(at < script.find("delete table").unwrap());
        }
    }

    #[test]
    fn empty_and_malformed() {
        assert!(parse_tables_json("").unwrap().is_empty());
        assert!(parse_tables_json(r#"{"nftables": []}"#).unwrap().is_empty());
        assert!(parse_tables_json("{").is_err());
        assert!(parse_tables_text("chain x\n").is_err());
        assert!(plan(&[]).is_empty());
    }
}

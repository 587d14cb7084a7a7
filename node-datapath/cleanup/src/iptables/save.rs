//! The `iptables-save` format: a parser into a small model and a renderer back.
//!
//! The model keeps every rule's specification verbatim (the text after `-A CHAIN `), so a
//! rule can be deleted later with `-D CHAIN <spec>` exactly as the backend printed it, and
//! a ruleset renders back to the same lines it was parsed from (save-file comments and
//! blank lines aside).

use crate::Error;
use std::collections::HashSet;

/// A whole `iptables-save` dump of one backend and one IP family: its tables in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// The tables in the order the dump listed them.
    pub tables: Vec<Table>,
}

/// One table (`*nat`, `*filter`, `*mangle`, …) with its chains and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Table name without the `*`.
    pub name: String,
    /// Chain declarations in dump order.
    pub chains: Vec<Chain>,
    /// Rules in dump order (the order within each chain is the evaluation order).
    pub rules: Vec<Rule>,
}

/// A chain declaration (`:NAME POLICY [packets:bytes]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// `ACCEPT`/`DROP` for a built-in chain, `-` for a user-defined one.
    pub policy: String,
    /// The counters field verbatim, e.g. `[0:0]`.
    pub counters: String,
}

impl Chain {
    /// Built-in chains carry a policy; user-defined chains print `-`.
    pub fn is_builtin(&self) -> bool {
        self.policy != "-"
    }
}

/// Where a rule sends matching packets when that is another chain or a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Chain or target extension name (`KUBE-SERVICES`, `ACCEPT`, `MASQUERADE`, …).
    pub name: String,
    /// `-g` (goto) rather than `-j` (jump).
    pub goto: bool,
}

/// One `-A CHAIN …` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain the rule is appended to.
    pub chain: String,
    /// Everything after `-A CHAIN `, verbatim (quoting as the backend printed it).
    pub spec: String,
    /// The `-j`/`-g` target, if the rule has one.
    pub target: Option<Target>,
    /// The value of `-m comment --comment`, unquoted, if present.
    pub comment: Option<String>,
}

impl Rule {
    /// Builds a rule from its chain and verbatim specification, extracting target and
    /// comment.
    pub fn new(chain: &str, spec: &str) -> Result<Self, String> {
        let tokens = tokenize(spec)?;
        let mut target = None;
        let mut comment = None;
        let mut i = 0;
        while i < tokens.len() {
            match tokens[i].as_str() {
                "--comment" => {
                    comment = tokens.get(i + 1).cloned();
                    i += 2;
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    let goto = matches!(tokens[i].as_str(), "-g" | "--goto");
                    let name = tokens
                        .get(i + 1)
                        .ok_or_else(|| format!("{} without a target", tokens[i]))?;
                    target = Some(Target {
                        name: name.clone(),
                        goto,
                    });
                    i += 2;
                }
                _ => i += 1,
            }
        }
        Ok(Rule {
            chain: chain.to_string(),
            spec: spec.to_string(),
            target,
            comment,
        })
    }

    /// The chain this rule jumps or goes to, if any.
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.name.as_str())
    }
}

impl Ruleset {
    /// Parses `iptables-save` output. Comment and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let err = |line: usize, message: String| Error::Parse {
            what: "iptables-save output",
            line,
            message,
        };
        let mut tables: Vec<Table> = Vec::new();
        let mut open = false;
        // Chain names of the open table, for the declared-before-use check.
        let mut declared: HashSet<String> = HashSet::new();
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim_end();
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if open {
                    return Err(err(lineno, format!("table {name} starts before COMMIT")));
                }
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(err(lineno, format!("bad table name {name:?}")));
                }
                tables.push(Table {
                    name: name.to_string(),
                    chains: Vec::new(),
                    rules: Vec::new(),
                });
                open = true;
                declared.clear();
                continue;
            }
            let table = match tables.last_mut() {
                Some(t) if open => t,
                _ => return Err(err(lineno, "line outside a table".to_string())),
            };
            if line == "COMMIT" {
                open = false;
            } else if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                    return Err(err(lineno, format!("bad chain declaration {line:?}")));
                };
                let counters = parts.next().unwrap_or("[0:0]").to_string();
                declared.insert(name.to_string());
                table.chains.push(Chain {
                    name: name.to_string(),
                    policy: policy.to_string(),
                    counters,
                });
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                if !declared.contains(chain) {
                    return Err(err(lineno, format!("rule for undeclared chain {chain}")));
                }
                let rule = Rule::new(chain, spec).map_err(|m| err(lineno, m))?;
                table.rules.push(rule);
            } else {
                return Err(err(lineno, format!("unexpected line {line:?}")));
            }
        }
        if open {
            return Err(err(text.lines().count(), "missing COMMIT".to_string()));
        }
        Ok(Ruleset { tables })
    }

    /// Renders the ruleset in `iptables-save` format (loadable by `iptables-restore`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            out.push('*');
            out.push_str(&t.name);
            out.push('\n');
            for c in &t.chains {
                out.push_str(&format!(":{} {} {}\n", c.name, c.policy, c.counters));
            }
            for r in &t.rules {
                out.push_str(&rule_line("-A", r));
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// The table with this name, if the dump has it.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl Table {
    /// The declaration of this chain, if the table has it.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Whether this chain is one of the table's built-in chains.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.chain(name).is_some_and(Chain::is_builtin)
    }
}

/// `<op> CHAIN SPEC`, the form `iptables-restore` accepts for `-A`/`-D`.
pub(crate) fn rule_line(op: &str, rule: &Rule) -> String {
    if rule.spec.is_empty() {
        format!("{op} {}", rule.chain)
    } else {
        format!("{op} {} {}", rule.chain, rule.spec)
    }
}

/// Splits a rule specification into arguments the way `iptables-restore` does: on
/// whitespace, with double quotes grouping and `\"`/`\\` escapes inside quotes.
pub fn tokenize(spec: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            '\\' if quoted => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("dangling backslash".to_string()),
            },
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    tokens.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    if in_token {
        tokens.push(cur);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_honours_quotes_and_escapes() {
        let t = tokenize(r#"-m comment --comment "a \"b\" c" -j X"#).unwrap();
        assert_eq!(
            t,
            vec!["-m", "comment", "--comment", r#"a "b" c"#, "-j", "X"]
        );
        assert!(tokenize(r#"--comment "open"#).is_err());
    }

    #[test]
    fn rule_extracts_target_and_comment() {
        let r = Rule::new(
            "PREROUTING",
            r#"-m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#,
        )
        .unwrap();
        assert_eq!(r.target_name(), Some("KUBE-SERVICES"));
        assert_eq!(r.comment.as_deref(), Some("kubernetes service portals"));
        let g = Rule::new("X", "-g KUBE-SVC-ABC").unwrap();
        assert!(g.target.as_ref().unwrap().goto);
        // A comment that looks like an option is a value, not a target.
        let c = Rule::new("X", "-m comment --comment -j -j ACCEPT").unwrap();
        assert_eq!(c.comment.as_deref(), Some("-j"));
        assert_eq!(c.target_name(), Some("ACCEPT"));
        let none = Rule::new("X", "-s 1.2.3.4/32").unwrap();
        assert_eq!(none.target, None);
    }

    #[test]
    fn parse_render_round_trip() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-X - [0:0]\n-A PREROUTING -j KUBE-X\n-A KUBE-X\nCOMMIT\n";
        let rs = Ruleset::parse(&format!("# Generated by x\n{text}# Completed\n")).unwrap();
        assert_eq!(rs.render(), text);
        let t = rs.table("nat").unwrap();
        assert!(t.is_builtin("PREROUTING"));
        assert!(!t.is_builtin("KUBE-X"));
    }

    #[test]
    fn parse_rejects_malformed_dumps() {
        for bad in [
            "-A X -j Y\n",
            "*nat\n-A UNDECLARED -j Y\nCOMMIT\n",
            "*nat\n:X - [0:0]\n",
            "*nat\n*filter\nCOMMIT\n",
            "*nat\nbogus\nCOMMIT\n",
            "*nat\n:X\nCOMMIT\n",
        ] {
            assert!(Ruleset::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}

//! Bad input never hurts: whatever the tools print (arbitrary bytes, or
//! real output cut and mangled), every parser answers with a value or an
//! error, never a panic; and a cleanup whose look at a backend could not
//! be parsed changes nothing there.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;

use proptest::prelude::*;
use switchyard_cleanup::iptables::{PlanOptions, Ruleset, plan};
use switchyard_cleanup::{CommandOutput, CommandRunner, Error, Options, clean_with, ipvs, nft};

/// Real output of each tool, as the mangled inputs' seeds.
const IPTABLES: &str = include_str!("fixtures/ipvs-mode.rules");
const IPSET: &str = include_str!("fixtures/ipvs-mode.ipset");
const NFT: &str = include_str!("fixtures/nftables-mode.nft");
const IPVSADM: &str = "-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 172.18.0.2:6443 -m -w 1\n-A -u [fd00:10:96::a]:53 -s rr\n";
const IP_LINK: &str =
    r#"[{"ifindex":1,"ifname":"lo"},{"ifindex":4,"ifname":"kube-ipvs0","link_type":"ether"}]"#;
const NFT_JSON: &str = r#"{"nftables":[{"metainfo":{"version":"1.1.3"}},{"table":{"family":"ip","name":"kube-proxy","handle":3}}]}"#;

/// Real output with lines dropped, cut short or with a character replaced.
fn mangled(seed: &'static str) -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = seed.lines().collect();
    let n = lines.len().max(1);
    (
        prop::collection::vec((0..n, 0usize..200, any::<char>(), any::<bool>()), 0..3 * n),
        any::<bool>(),
    )
        .prop_map(move |(edits, cut_last)| {
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            for (i, at, c, drop) in edits {
                let Some(line) = out.get_mut(i % n) else {
                    continue;
                };
                let at = line
                    .char_indices()
                    .map(|(b, _)| b)
                    .nth(at)
                    .unwrap_or(line.len());
                if drop {
                    line.truncate(at);
                } else {
                    line.insert(at, c);
                }
            }
            let mut text = out.join("\n");
            if cut_last {
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            text
        })
}

fn any_text(seed: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), mangled(seed)]
}

/// A node whose every read prints `text`; records what ran.
#[derive(Debug)]
struct Garbled {
    text: String,
    log: RefCell<Vec<String>>,
}

impl CommandRunner for Garbled {
    fn has_program(&self, _: &str) -> bool {
        true
    }

    fn run(&self, program: &str, args: &[String], _: Option<&str>) -> Result<CommandOutput, Error> {
        self.log
            .borrow_mut()
            .push(format!("{program} {}", args.join(" ")));
        Ok(CommandOutput {
            success: true,
            code: Some(0),
            stdout: self.text.clone(),
            stderr: String::new(),
        })
    }
}

impl Garbled {
    /// Whether a command that changes the node ran.
    fn wrote(&self, program: &str, verb: &str) -> bool {
        self.log
            .borrow()
            .iter()
            .any(|c| c.starts_with(program) && c.contains(verb))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn iptables_save_output_parses_or_is_refused(text in any_text(IPTABLES)) {
        if let Ok(rs) = Ruleset::parse(&text) {
            // What parsed can be planned and rendered back.
            let p = plan(&rs, &PlanOptions::default());
            let _ = p.restore_input();
            prop_assert!(Ruleset::parse(&rs.render()).is_ok());
        }
    }

    #[test]
    fn ipvs_and_link_and_nft_output_parse_or_are_refused(
        ipvsadm in any_text(IPVSADM),
        ipset in any_text(IPSET),
        link in any_text(IP_LINK),
        nft_text in any_text(NFT),
        nft_json in any_text(NFT_JSON),
    ) {
        let _ = ipvs::parse_ipvsadm_save(&ipvsadm);
        for name in ipvs::parse_ipset_names(&ipset) {
            prop_assert!(!name.contains('\n'));
        }
        let _ = ipvs::parse_link_names(&link);
        if let Ok(tables) = nft::parse_tables_text(&nft_text) {
            let _ = nft::plan(&tables);
        }
        if let Ok(tables) = nft::parse_tables_json(&nft_json) {
            let _ = nft::plan(&tables);
        }
    }

    /// Each tool printing what cannot be parsed: the cleanup reports it
    /// and writes nothing through that tool.
    #[test]
    fn a_backend_whose_output_does_not_parse_is_left_alone(text in any_text(IPTABLES)) {
        let node = Garbled { text: text.clone(), log: RefCell::new(Vec::new()) };
        let opts = Options {
            service_ips: vec!["10.96.0.1".parse().unwrap()],
            ..Options::default()
        };
        let _report = clean_with(&node, &opts);
        if Ruleset::parse(&text).is_err() {
            prop_assert!(!node.wrote("iptables", "-restore"), "{:?}", node.log.borrow());
        }
        if ipvs::parse_ipvsadm_save(&text).is_err() {
            prop_assert!(!node.wrote("ipvsadm", "-D"), "{:?}", node.log.borrow());
        }
        if ipvs::parse_link_names(&text).is_err() {
            prop_assert!(!node.wrote("ip", "link del"), "{:?}", node.log.borrow());
        }
        if nft::parse_tables_json(&text).is_err() && nft::parse_tables_text(&text).is_err() {
            prop_assert!(!node.wrote("nft", "-f"), "{:?}", node.log.borrow());
        }
    }
}

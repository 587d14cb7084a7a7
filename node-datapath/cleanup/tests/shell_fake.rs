//! The I/O shell against a fake node (a [`CommandRunner`] that emulates `ipvsadm`,
//! `ipset`, `ip link` and `iptables-nft-save/-restore` over in-memory state): the ipvs
//! path this kernel cannot run for real (no IPVS), the order of the steps, listing mode
//! issuing only reads, and failures being reported while the rest still runs.

// Test helpers outside #[test] functions unwrap too (clippy.toml only covers #[test]).
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use switchyard_cleanup::iptables::{Rule, Ruleset};
use switchyard_cleanup::{
    Backend, CommandOutput, CommandRunner, Error, Options, clean_with, scan_with,
};

#[derive(Debug)]
struct FakeNode {
    virtual_servers: Vec<String>,
    ipsets: Vec<String>,
    links: Vec<String>,
    ruleset: Ruleset,
    ipvs_loaded: bool,
}

#[derive(Debug)]
struct FakeRunner {
    node: RefCell<FakeNode>,
    log: RefCell<Vec<String>>,
}

const INSTALLED: &[&str] = &[
    "test",
    "ipvsadm",
    "ipset",
    "ip",
    "iptables-nft-save",
    "iptables-nft-restore",
];

fn ok(stdout: String) -> Result<CommandOutput, Error> {
    Ok(CommandOutput {
        success: true,
        code: Some(0),
        stdout,
        stderr: String::new(),
    })
}

fn fail(stderr: &str) -> Result<CommandOutput, Error> {
    Ok(CommandOutput {
        success: false,
        code: Some(1),
        stdout: String::new(),
        stderr: stderr.to_string(),
    })
}

/// Applies the subset of `iptables-restore --noflush` the planner emits.
fn restore(rs: &mut Ruleset, input: &str) {
    let mut table = String::new();
    for line in input.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            continue;
        }
        let t = rs.tables.iter_mut().find(|x| x.name == table).unwrap();
        if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap();
            t.rules.retain(|r| r.chain != chain);
        } else if let Some(rest) = line.strip_prefix("-D ") {
            let (chain, spec) = rest.split_once(' ').unwrap();
            let pos = t
                .rules
                .iter()
                .position(|r| r.chain == chain && r.spec == spec)
                .unwrap();
            t.rules.remove(pos);
        } else if let Some(chain) = line.strip_prefix("-X ") {
            assert!(
                !t.rules.iter().any(|r| r.target_name() == Some(chain)),
                "{chain} still referenced"
            );
            t.chains.retain(|c| c.name != chain);
        }
    }
}

impl CommandRunner for FakeRunner {
    fn has_program(&self, program: &str) -> bool {
        INSTALLED.contains(&program)
    }

    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, Error> {
        self.log
            .borrow_mut()
            .push(format!("{program} {}", args.join(" ")));
        let mut node = self.node.borrow_mut();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match (program, a.as_slice()) {
            ("test", ["-e", "/proc/net/ip_vs"]) if node.ipvs_loaded => ok(String::new()),
            ("test", ["-e", "/proc/net/ip_vs"]) => fail(""),
            ("ipvsadm", ["-S", "-n"]) => ok(node
                .virtual_servers
                .iter()
                .map(|v| format!("-A {v} -s rr\n"))
                .collect()),
            ("ipvsadm", ["-D", flag, ep]) => {
                let key = format!("{flag} {ep}");
                node.virtual_servers.retain(|v| *v != key);
                ok(String::new())
            }
            ("ipset", ["list", "-n"]) => ok(node.ipsets.iter().map(|s| format!("{s}\n")).collect()),
            ("ipset", ["destroy", name]) => {
                let used = node
                    .ruleset
                    .tables
                    .iter()
                    .flat_map(|t| &t.rules)
                    .any(|r| r.spec.contains(&format!("--match-set {name} ")));
                if used {
                    return fail(
                        "ipset v7.17: Set cannot be destroyed: it is in use by a kernel component",
                    );
                }
                node.ipsets.retain(|s| s != name);
                ok(String::new())
            }
            ("ip", ["-j", "link", "show"]) => {
                let items: Vec<String> = node
                    .links
                    .iter()
                    .map(|l| format!("{{\"ifname\":\"{l}\"}}"))
                    .collect();
                ok(format!("[{}]", items.join(",")))
            }
            ("ip", ["link", "del", name]) => {
                node.links.retain(|l| l != name);
                ok(String::new())
            }
            ("iptables-nft-save", []) => ok(node.ruleset.render()),
            ("iptables-nft-restore", ["-w", _, "--noflush"]) => {
                restore(&mut node.ruleset, stdin.unwrap());
                ok(String::new())
            }
            _ => panic!("unexpected command {program} {args:?}"),
        }
    }
}

const RULES: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:USER-CHAIN - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n";

fn node(user_rule: Option<&str>) -> FakeRunner {
    let mut ruleset = Ruleset::parse(RULES).unwrap();
    if let Some(spec) = user_rule {
        ruleset.tables[0]
            .rules
            .push(Rule::new("USER-CHAIN", spec).unwrap());
    }
    FakeRunner {
        node: RefCell::new(FakeNode {
            virtual_servers: vec![
                "-t 10.96.0.1:443".into(),
                "-u 10.96.0.10:53".into(),
                "-t [fd00:10:96::1]:443".into(),
                "-t 192.168.1.250:6443".into(),
            ],
            ipsets: vec![
                "KUBE-CLUSTER-IP".into(),
                "KUBE-LOOP-BACK".into(),
                "cali40all-ipam-pools".into(),
            ],
            links: vec!["lo".into(), "eth0".into(), "kube-ipvs0".into()],
            ruleset,
            ipvs_loaded: true,
        }),
        log: RefCell::new(Vec::new()),
    }
}

fn options() -> Options {
    Options {
        nftables: false,
        service_cidrs: vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:10:96::/112".parse().unwrap(),
        ],
        ..Options::default()
    }
}

fn is_write(cmd: &str) -> bool {
    [
        "ipvsadm -D",
        "ip link del",
        "ipset destroy",
        "iptables-nft-restore",
    ]
    .iter()
    .any(|w| cmd.starts_with(w))
}

#[test]
fn ipvs_clean_removes_only_service_virtual_servers_in_order() {
    let fake = node(None);
    let listed = scan_with(&fake, &options());
    assert!(listed.listing_only);
    assert!(
        !fake.log.borrow().iter().any(|c| is_write(c)),
        "scan wrote: {:?}",
        fake.log.borrow()
    );
    let ipvs = listed.backend(Backend::Ipvs).unwrap();
    assert_eq!(ipvs.found.count, 6, "{ipvs:#?}");
    assert_eq!(ipvs.kept.len(), 1);
    assert_eq!(ipvs.kept[0].name, "virtual-server tcp 192.168.1.250:6443");

    fake.log.borrow_mut().clear();
    let cleaned = clean_with(&fake, &options());
    assert!(!cleaned.has_errors(), "{cleaned:#?}");
    let writes: Vec<String> = fake
        .log
        .borrow()
        .iter()
        .filter(|c| is_write(c))
        .cloned()
        .collect();
    assert_eq!(
        writes,
        vec![
            "ipvsadm -D -t 10.96.0.1:443",
            "ipvsadm -D -t [fd00:10:96::1]:443",
            "ipvsadm -D -u 10.96.0.10:53",
            "ip link del kube-ipvs0",
            "iptables-nft-restore -w 5 --noflush",
            "ipset destroy KUBE-CLUSTER-IP",
            "ipset destroy KUBE-LOOP-BACK",
        ]
    );
    let n = fake.node.borrow();
    assert_eq!(n.virtual_servers, vec!["-t 192.168.1.250:6443"]);
    assert_eq!(n.ipsets, vec!["cali40all-ipam-pools"]);
    assert_eq!(n.links, vec!["lo", "eth0"]);
    drop(n);
    let ipvs = cleaned.backend(Backend::Ipvs).unwrap();
    assert_eq!(ipvs.removed, ipvs.found);
    let nft = cleaned.backend(Backend::IptablesNft).unwrap();
    assert_eq!(nft.removed.count, 4, "{nft:#?}");
    assert!(!cleaned.backend(Backend::IptablesLegacy).unwrap().available);

    fake.log.borrow_mut().clear();
    let again = clean_with(&fake, &options());
    assert_eq!(again.found_count(), 0, "{again:#?}");
    assert!(
        !fake.log.borrow().iter().any(|c| is_write(c)),
        "{:?}",
        fake.log.borrow()
    );
}

#[test]
fn a_failing_step_is_reported_and_the_rest_still_runs() {
    // A user's chain matches on one of kube-proxy's sets: that set cannot go.
    let fake = node(Some(
        "-m set --match-set KUBE-LOOP-BACK dst,dst,src -j ACCEPT",
    ));
    let cleaned = clean_with(&fake, &options());
    let ipvs = cleaned.backend(Backend::Ipvs).unwrap();
    assert_eq!(ipvs.errors.len(), 1, "{ipvs:#?}");
    assert!(
        ipvs.errors[0].contains("ipset destroy KUBE-LOOP-BACK"),
        "{}",
        ipvs.errors[0]
    );
    assert!(
        ipvs.found
            .names
            .contains(&"ipset KUBE-LOOP-BACK".to_string())
    );
    assert!(
        !ipvs
            .removed
            .names
            .contains(&"ipset KUBE-LOOP-BACK".to_string())
    );
    assert!(
        ipvs.removed
            .names
            .contains(&"ipset KUBE-CLUSTER-IP".to_string())
    );
    assert_eq!(
        fake.node.borrow().ipsets,
        vec!["KUBE-LOOP-BACK", "cali40all-ipam-pools"]
    );
    assert!(cleaned.has_errors());
}

#[test]
fn conntrack_requested_without_the_tool_is_an_error_not_a_panic() {
    let fake = node(None);
    let opts = Options {
        flush_conntrack: true,
        service_ips: vec!["10.96.0.10".parse().unwrap()],
        ..options()
    };
    let r = scan_with(&fake, &opts);
    let ct = r.conntrack.unwrap();
    assert_eq!(
        ct.addresses,
        vec!["10.96.0.1", "10.96.0.10", "fd00:10:96::1"]
    );
    assert_eq!(ct.errors, vec!["conntrack not available"]);
}

#[test]
fn without_the_ip_vs_module_ipvsadm_is_not_run() {
    let fake = node(None);
    fake.node.borrow_mut().ipvs_loaded = false;
    let cleaned = clean_with(&fake, &options());
    assert!(!cleaned.has_errors(), "{cleaned:#?}");
    assert!(
        !fake.log.borrow().iter().any(|c| c.starts_with("ipvsadm")),
        "{:?}",
        fake.log.borrow()
    );
    let ipvs = cleaned.backend(Backend::Ipvs).unwrap();
    assert!(
        ipvs.notes
            .iter()
            .any(|n| n.starts_with("IPVS is not loaded")),
        "{ipvs:#?}"
    );
    // The rest of ipvs mode's leftovers still go.
    assert!(ipvs.removed.names.contains(&"link kube-ipvs0".to_string()));
    assert!(
        ipvs.removed
            .names
            .contains(&"ipset KUBE-CLUSTER-IP".to_string())
    );
}

//! Who owns which `KUBE-*` chain, per table — the knowledge the planner applies.
//!
//! Checked against Kubernetes 1.34: `pkg/proxy/iptables/cleanup.go` (iptables mode),
//! `pkg/proxy/ipvs/cleanup.go` + `proxier.go` (ipvs mode: `iptablesCleanupChains`) and
//! `pkg/kubelet/kubelet_network_linux.go` (the kubelet's chains).
//!
//! `kube-proxy --cleanup` runs the cleanup of every mode, so a chain is kube-proxy's when
//! either the iptables or the ipvs proxier deletes it. Chains the cleanup leaves alone
//! (`KUBE-MARK-DROP`, the kubelet's `KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`,
//! `KUBE-IPTABLES-HINT`) are never touched.

/// Chains the iptables-mode proxier deletes, per table.
const IPTABLES_MODE: &[(&str, &[&str])] = &[
    (
        "nat",
        &[
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            "KUBE-PROXY-CANARY",
        ],
    ),
    (
        "filter",
        &[
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-PROXY-CANARY",
        ],
    ),
    ("mangle", &["KUBE-PROXY-CANARY"]),
];

/// Per-service chain prefixes the iptables-mode cleanup hunts for in the nat table
/// (`isServiceChainName`): cluster policy, local policy, endpoint, firewall, external.
pub const SERVICE_CHAIN_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-FW-",
    "KUBE-EXT-",
];

/// Chains the ipvs-mode proxier deletes (`iptablesCleanupChains`), per table.
const IPVS_MODE: &[(&str, &[&str])] = &[
    (
        "nat",
        &[
            "KUBE-SERVICES",
            "KUBE-POSTROUTING",
            "KUBE-NODE-PORT",
            "KUBE-LOAD-BALANCER",
            "KUBE-MARK-MASQ",
        ],
    ),
    (
        "filter",
        &[
            "KUBE-FORWARD",
            "KUBE-NODE-PORT",
            "KUBE-PROXY-FIREWALL",
            "KUBE-SOURCE-RANGES-FIREWALL",
            "KUBE-IPVS-FILTER",
            "KUBE-IPVS-OUT-FILTER",
        ],
    ),
];

/// Chains that are never removed, whatever table they are in: the kubelet's
/// (`KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`) and `KUBE-MARK-DROP`,
/// which kube-proxy stopped creating in 1.28 and which its cleanup leaves to the kubelet.
pub const PROTECTED_CHAINS: &[&str] = &[
    "KUBE-FIREWALL",
    "KUBE-KUBELET-CANARY",
    "KUBE-IPTABLES-HINT",
    "KUBE-MARK-DROP",
];

/// nat chains that kubelets before 1.28 created too (jointly with kube-proxy). 1.34's
/// cleanup deletes them; [`PlanOptions::keep_pre_1_28_kubelet_chains`] keeps them for
/// nodes whose kubelet still relies on them (it re-creates them within a minute anyway).
pub const PRE_1_28_KUBELET_SHARED: &[&str] = &["KUBE-MARK-MASQ", "KUBE-POSTROUTING"];

/// Tunables of the iptables planner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Keep `KUBE-MARK-MASQ` and `KUBE-POSTROUTING` in nat (and the `POSTROUTING` jump),
    /// which kubelets before 1.28 shared with kube-proxy. Off by default: 1.34's cleanup
    /// removes them, and a ≥1.28 kubelet does not use them.
    pub keep_pre_1_28_kubelet_chains: bool,
}

/// Whether `kube-proxy --cleanup` (1.34, all modes) deletes this chain of this table.
pub fn is_kube_proxy_chain(table: &str, chain: &str, opts: &PlanOptions) -> bool {
    if PROTECTED_CHAINS.contains(&chain) {
        return false;
    }
    if opts.keep_pre_1_28_kubelet_chains
        && table == "nat"
        && PRE_1_28_KUBELET_SHARED.contains(&chain)
    {
        return false;
    }
    let listed = |modes: &[(&str, &[&str])]| {
        modes
            .iter()
            .any(|(t, chains)| *t == table && chains.contains(&chain))
    };
    if listed(IPTABLES_MODE) || listed(IPVS_MODE) {
        return true;
    }
    table == "nat" && SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// Every fixed (non-prefix) chain name kube-proxy's cleanup deletes in this table.
pub fn fixed_kube_proxy_chains(table: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = IPTABLES_MODE
        .iter()
        .chain(IPVS_MODE.iter())
        .filter(|(t, _)| *t == table)
        .flat_map(|(_, chains)| chains.iter().copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_chains_are_never_kube_proxy_chains() {
        for table in ["nat", "filter", "mangle", "raw"] {
            for opts in [
                PlanOptions::default(),
                PlanOptions {
                    keep_pre_1_28_kubelet_chains: true,
                },
            ] {
                for c in PROTECTED_CHAINS {
                    assert!(!is_kube_proxy_chain(table, c, &opts), "{table} {c}");
                }
            }
        }
    }

    #[test]
    fn service_chains_only_in_nat() {
        let o = PlanOptions::default();
        assert!(is_kube_proxy_chain("nat", "KUBE-SVC-ABCDEF", &o));
        assert!(is_kube_proxy_chain("nat", "KUBE-SVL-ABCDEF", &o));
        assert!(is_kube_proxy_chain("nat", "KUBE-SEP-ABCDEF", &o));
        assert!(is_kube_proxy_chain("nat", "KUBE-FW-ABCDEF", &o));
        assert!(is_kube_proxy_chain("nat", "KUBE-EXT-ABCDEF", &o));
        assert!(!is_kube_proxy_chain("filter", "KUBE-SVC-ABCDEF", &o));
        // Not a kube-proxy prefix (e.g. someone's own KUBE-ish chain).
        assert!(!is_kube_proxy_chain("nat", "KUBE-SVCX", &o));
        assert!(!is_kube_proxy_chain("nat", "KUBE-ROUTER-X", &o));
        assert!(!is_kube_proxy_chain("nat", "DOCKER", &o));
    }

    #[test]
    fn shared_pre_1_28_chains_follow_the_option() {
        let default = PlanOptions::default();
        let keep = PlanOptions {
            keep_pre_1_28_kubelet_chains: true,
        };
        for c in PRE_1_28_KUBELET_SHARED {
            assert!(is_kube_proxy_chain("nat", c, &default));
            assert!(!is_kube_proxy_chain("nat", c, &keep));
        }
        assert!(is_kube_proxy_chain("nat", "KUBE-SERVICES", &keep));
        assert!(!is_kube_proxy_chain("nat", "KUBE-MARK-DROP", &default));
    }

    #[test]
    fn mangle_only_has_the_canary() {
        assert_eq!(fixed_kube_proxy_chains("mangle"), vec!["KUBE-PROXY-CANARY"]);
        assert!(fixed_kube_proxy_chains("raw").is_empty());
    }
}

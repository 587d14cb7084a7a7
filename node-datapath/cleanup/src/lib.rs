//! Finds and removes exactly what kube-proxy leaves behind (iptables nft/legacy,
//! nftables, ipvs) — what `kube-proxy --cleanup` (Kubernetes 1.34) removes, nothing
//! less (stale rules break traffic) and nothing more (the kubelet's `KUBE-FIREWALL`,
//! `KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`, `KUBE-MARK-DROP` and every chain that is
//! not kube-proxy's stay).
//!
//! # Data flow
//!
//! ```text
//!  tools' output ──parse──▶ model ──plan (pure)──▶ plan ──render──▶ tool input
//!  iptables-*-save          Ruleset   iptables::plan    IptablesPlan    iptables-*-restore --noflush
//!  nft -j list tables       NftTable  nft::plan         Vec<NftTable>   nft -f -
//!  ipvsadm/ipset/ip link    IpvsObserved ipvs::plan     IpvsPlan        ipvsadm -D / ip link del / ipset destroy
//!  service IPs                        conntrack::plan   deletions       conntrack -D
//! ```
//!
//! Everything above the tools is pure and unit/property tested ([`iptables`], [`nft`],
//! [`ipvs`], [`conntrack`]). [`shell`] is the thin I/O layer: [`scan`] observes and
//! plans (listing mode, changes nothing); [`clean`] observes, applies in a safe order,
//! observes again and reports per backend what it found and what is gone. Both are
//! idempotent: a clean after a clean finds and removes nothing. Commands run through a
//! [`CommandRunner`]; [`Options::command_prefix`] (e.g. `ip netns exec NODE`) or
//! [`scan_with`]/[`clean_with`] point them elsewhere.
//!
//! # Choices
//!
//! * Shared chains with pre-1.28 kubelets (`KUBE-MARK-MASQ`, `KUBE-POSTROUTING` in
//!   nat): removed, as 1.34's cleanup does; [`Options::keep_pre_1_28_kubelet_chains`]
//!   keeps them. `KUBE-MARK-DROP` is never removed (1.34 leaves it too).
//! * A kube-proxy chain that a kept chain still jumps to stays, with a
//!   [`report::Kept`] entry saying which rule uses it (upstream's transaction would fail).
//! * The ipvs-mode chains are removed whether or not the kernel has IPVS; IPVS virtual
//!   servers only on given service IPs/CIDRs (upstream flushes all); IPv6 ipsets
//!   (`KUBE-6-…`) too. See [`ipvs`].

pub mod addr;
pub mod conntrack;
pub mod iptables;
pub mod ipvs;
pub mod nft;
pub mod report;
pub mod runner;
pub mod shell;

pub use addr::Cidr;
pub use report::{Backend, BackendReport, ConntrackReport, Kept, Objects, Report};
pub use runner::{CommandOutput, CommandRunner, SystemRunner};
pub use shell::{Options, clean, clean_with, scan, scan_with};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool's text output did not have the expected shape.
    #[error("cannot parse {what} at line {line}: {message}")]
    Parse {
        /// Which output.
        what: &'static str,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A tool's JSON output did not have the expected shape.
    #[error("cannot parse {what}: {source}")]
    Json {
        /// Which output.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Not an address prefix.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// A command could not be started or fed.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line (without the runner's prefix).
        command: String,
        /// Exit status description.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

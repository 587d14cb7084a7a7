//! The serializable result of a scan or a clean, as it goes into `NodeDatapath` status.

use serde::{Deserialize, Serialize};

/// Where kube-proxy state can live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// iptables mode through the nf_tables backend (`iptables-nft`, `ip6tables-nft`).
    IptablesNft,
    /// iptables mode through the legacy x_tables backend.
    IptablesLegacy,
    /// nftables mode (`ip kube-proxy`, `ip6 kube-proxy` tables).
    Nftables,
    /// ipvs mode (virtual servers, `kube-ipvs0`, ipsets; its chains count under the
    /// iptables backends).
    Ipvs,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::Nftables => "nftables",
            Backend::Ipvs => "ipvs",
        })
    }
}

/// A counted list of object names (`ipv4 nat chain KUBE-SVC-…`, `table ip kube-proxy`,
/// `ipset KUBE-CLUSTER-IP`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objects {
    /// Number of objects (equals `names.len()`).
    pub count: usize,
    /// Object names, in a stable order.
    pub names: Vec<String>,
}

impl Objects {
    /// Wraps a list of names.
    pub fn new(names: Vec<String>) -> Self {
        Objects {
            count: names.len(),
            names,
        }
    }
}

/// A kube-proxy-looking object deliberately left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// Object name.
    pub name: String,
    /// Why it stays.
    pub reason: String,
}

/// One backend's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Which backend.
    pub backend: Backend,
    /// Whether its tools are installed (at least one of them, for ipvs).
    pub available: bool,
    /// Informational notes (e.g. "ipvsadm not available").
    pub notes: Vec<String>,
    /// kube-proxy objects present before any change.
    pub found: Objects,
    /// Objects that were found and are gone after the clean (empty in listing mode).
    pub removed: Objects,
    /// kube-proxy-looking objects left in place on purpose.
    pub kept: Vec<Kept>,
    /// Failures (observing or removing); the rest of the cleanup still ran.
    pub errors: Vec<String>,
}

impl BackendReport {
    pub(crate) fn new(backend: Backend) -> Self {
        BackendReport {
            backend,
            available: false,
            notes: Vec::new(),
            found: Objects::default(),
            removed: Objects::default(),
            kept: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Conntrack entries to service addresses (ipvs switch helper).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackReport {
    /// Addresses whose entries were considered.
    pub addresses: Vec<String>,
    /// Entries found before deletion.
    pub found: usize,
    /// Addresses whose entries were deleted (empty in listing mode).
    pub deleted_for: Vec<String>,
    /// Failures.
    pub errors: Vec<String>,
}

/// The result of [`crate::scan`] or [`crate::clean`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `true` for a scan (nothing was changed).
    pub listing_only: bool,
    /// One entry per backend, in the order iptables-nft, iptables-legacy, nftables, ipvs.
    pub backends: Vec<BackendReport>,
    /// Present when conntrack handling was requested.
    pub conntrack: Option<ConntrackReport>,
}

impl Report {
    /// The report of one backend.
    pub fn backend(&self, backend: Backend) -> Option<&BackendReport> {
        self.backends.iter().find(|b| b.backend == backend)
    }

    /// Total kube-proxy objects found.
    pub fn found_count(&self) -> usize {
        self.backends.iter().map(|b| b.found.count).sum()
    }

    /// Total objects removed.
    pub fn removed_count(&self) -> usize {
        self.backends.iter().map(|b| b.removed.count).sum()
    }

    /// Whether any backend (or conntrack) recorded an error.
    pub fn has_errors(&self) -> bool {
        self.backends.iter().any(|b| !b.errors.is_empty())
            || self
                .conntrack
                .as_ref()
                .is_some_and(|c| !c.errors.is_empty())
    }

    /// The backends that hold kube-proxy objects.
    pub fn backends_with_leftovers(&self) -> Vec<Backend> {
        self.backends
            .iter()
            .filter(|b| b.found.count > 0)
            .map(|b| b.backend)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_stable_names() {
        let mut b = BackendReport::new(Backend::IptablesNft);
        b.found = Objects::new(vec!["ipv4 nat chain KUBE-SERVICES".into()]);
        let r = Report {
            listing_only: true,
            backends: vec![b],
            conntrack: None,
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["backends"][0]["backend"], "iptables-nft");
        assert_eq!(j["backends"][0]["found"]["count"], 1);
        let back: Report = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.found_count(), 1);
        assert_eq!(r.backends_with_leftovers(), vec![Backend::IptablesNft]);
        assert!(!r.has_errors());
    }
}

//! iptables mode (both the nft and the legacy backend, IPv4 and IPv6): parse
//! `iptables-save` output ([`save`]), decide ownership ([`owners`]) and plan the exact
//! removals as `iptables-restore --noflush` input ([`mod@plan`]).

pub mod owners;
pub mod plan;
pub mod save;

pub use owners::{PlanOptions, is_kube_proxy_chain};
pub use plan::{BlockedChain, IptablesPlan, TablePlan, plan};
pub use save::{Chain, Rule, Ruleset, Table, Target};

//! The thin I/O shell: observe with the node's tools, plan with the pure core, apply,
//! observe again, report.
//!
//! Order of a clean: IPVS virtual servers → `kube-ipvs0` → iptables (every backend and
//! family, one `iptables-restore --noflush` transaction per table, honouring
//! `/run/xtables.lock` with `-w`) → nftables tables → ipsets (only once no iptables
//! rule uses them) → conntrack entries. What counts as removed is decided by observing
//! again afterwards, so the report never claims more than happened.

use crate::addr::Cidr;
use crate::iptables::{self, PlanOptions, Ruleset};
use crate::ipvs::{self, IpvsObserved, IpvsPlan, ServiceAddresses};
use crate::report::{Backend, BackendReport, ConntrackReport, Kept, Objects, Report};
use crate::runner::{CommandRunner, SystemRunner};
use crate::{Error, conntrack, nft};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What to look at and how to clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Handle iptables mode (nft and legacy backends, IPv4 and IPv6). The chains of
    /// iptables and ipvs mode are planned together, so they are handled when either
    /// this or `ipvs` is set.
    pub iptables: bool,
    /// Handle nftables mode.
    pub nftables: bool,
    /// Handle ipvs mode (virtual servers, `kube-ipvs0`, ipsets).
    pub ipvs: bool,
    /// Keep the nat chains kubelets before 1.28 shared with kube-proxy
    /// (see [`PlanOptions::keep_pre_1_28_kubelet_chains`]).
    pub keep_pre_1_28_kubelet_chains: bool,
    /// Service IPs (ClusterIPs, external/LB IPs): IPVS virtual servers on them are
    /// removed, and conntrack entries to them when `flush_conntrack` is set.
    pub service_ips: Vec<IpAddr>,
    /// Service CIDRs: IPVS virtual servers inside them are removed.
    pub service_cidrs: Vec<Cidr>,
    /// Delete conntrack entries to `service_ips` and to removed virtual servers.
    pub flush_conntrack: bool,
    /// Prefix for every command, e.g. `["ip","netns","exec","node-1"]`; empty runs in
    /// the current network namespace (the agent runs in the node's).
    pub command_prefix: Vec<String>,
    /// Seconds to wait for `/run/xtables.lock`.
    pub xtables_wait_seconds: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iptables: true,
            nftables: true,
            ipvs: true,
            keep_pre_1_28_kubelet_chains: false,
            service_ips: Vec::new(),
            service_cidrs: Vec::new(),
            flush_conntrack: false,
            command_prefix: Vec::new(),
            xtables_wait_seconds: 5,
        }
    }
}

/// Lists kube-proxy's leftovers; changes nothing.
pub fn scan(opts: &Options) -> Report {
    scan_with(
        &SystemRunner::with_prefix(opts.command_prefix.clone()),
        opts,
    )
}

/// Removes kube-proxy's leftovers and reports what was found and removed.
pub fn clean(opts: &Options) -> Report {
    clean_with(
        &SystemRunner::with_prefix(opts.command_prefix.clone()),
        opts,
    )
}

/// [`scan`] with an explicit command runner (`command_prefix` is ignored).
pub fn scan_with(runner: &dyn CommandRunner, opts: &Options) -> Report {
    let obs = observe(runner, opts);
    let mut report = obs.report(true);
    if let Some(ct) = conntrack_targets(opts, &obs.ipvs_plan) {
        report.conntrack = Some(conntrack_step(runner, &ct, false));
    }
    report
}

/// [`clean`] with an explicit command runner (`command_prefix` is ignored).
pub fn clean_with(runner: &dyn CommandRunner, opts: &Options) -> Report {
    let before = observe(runner, opts);
    let errors = remove(runner, opts, &before);
    let conntrack =
        conntrack_targets(opts, &before.ipvs_plan).map(|t| conntrack_step(runner, &t, true));

    let after = observe(runner, opts);
    let mut report = verified(&before, &after, &errors);
    report.conntrack = conntrack;
    tracing::info!(
        found = report.found_count(),
        removed = report.removed_count(),
        errors = report.has_errors(),
        "kube-proxy cleanup finished"
    );
    report
}

/// Removes what `before` found, in the order the objects depend on each other (ipvs
/// virtual servers and link, iptables rules and chains, nftables tables, then the ipsets
/// the rules used); returns the failed steps by backend.
fn remove(
    runner: &dyn CommandRunner,
    opts: &Options,
    before: &Observation,
) -> Vec<(Backend, String)> {
    let mut errors: Vec<(Backend, String)> = Vec::new();
    let mut push = |b: Backend, e: Error| {
        tracing::warn!(backend = %b, error = %e, "cleanup step failed");
        errors.push((b, e.to_string()));
    };

    for vs in &before.ipvs_plan.delete_virtual_servers {
        if let Err(e) = runner.run_ok("ipvsadm", &vs.delete_args(), None) {
            push(Backend::Ipvs, e);
        }
    }
    if let Some(link) = &before.ipvs_plan.delete_link {
        let args = vec!["link".into(), "del".into(), link.clone()];
        if let Err(e) = runner.run_ok("ip", &args, None) {
            push(Backend::Ipvs, e);
        }
    }
    let wait = opts.xtables_wait_seconds.to_string();
    for ipt in &before.iptables {
        let Some(Ok(plan)) = &ipt.state else {
            continue;
        };
        for table in plan.tables.iter().filter(|t| !t.is_empty()) {
            let args = vec!["-w".into(), wait.clone(), "--noflush".into()];
            tracing::info!(backend = %ipt.backend, family = ipt.family.name(), table = %table.table,
                chains = table.delete_chains.len(), rules = table.delete_rules.len(), "removing kube-proxy iptables objects");
            if let Err(e) = runner.run_ok(&ipt.restore, &args, Some(&table.restore_input())) {
                push(ipt.backend, e);
            }
        }
    }
    if let Some(Ok(tables)) = &before.nft
        && !tables.is_empty()
    {
        let args = vec!["-f".into(), "-".into()];
        if let Err(e) = runner.run_ok("nft", &args, Some(&nft::delete_script(tables))) {
            push(Backend::Nftables, e);
        }
    }
    for set in &before.ipvs_plan.destroy_ipsets {
        let args = vec!["destroy".into(), set.clone()];
        if let Err(e) = runner.run_ok("ipset", &args, None) {
            push(Backend::Ipvs, e);
        }
    }
    errors
}

/// `before`'s report with what `after` no longer finds as removed (claimed only when the
/// second look had no errors) and the failed steps as each backend's errors.
fn verified(before: &Observation, after: &Observation, errors: &[(Backend, String)]) -> Report {
    let mut report = before.report(false);
    let remaining = after.report(true);
    for b in &mut report.backends {
        let Some(rest) = remaining.backend(b.backend) else {
            continue;
        };
        if rest.errors.is_empty() {
            let still: BTreeSet<&String> = rest.found.names.iter().collect();
            let removed: Vec<String> = b
                .found
                .names
                .iter()
                .filter(|n| !still.contains(n))
                .cloned()
                .collect();
            b.removed = Objects::new(removed);
        } else {
            // Without a clean second look, claim nothing.
            b.errors.extend(
                rest.errors
                    .iter()
                    .map(|e| format!("verifying removal: {e}")),
            );
        }
        b.errors.extend(
            errors
                .iter()
                .filter(|(k, _)| *k == b.backend)
                .map(|(_, e)| e.clone()),
        );
    }
    report
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

#[derive(Debug)]
struct IptablesObservation {
    backend: Backend,
    family: Family,
    restore: String,
    /// `None`: tools missing.
    state: Option<Result<iptables::IptablesPlan, Error>>,
}

#[derive(Debug)]
struct Observation {
    iptables: Vec<IptablesObservation>,
    /// `None`: nftables not requested or `nft` missing.
    /// Holds the kube-proxy tables present.
    nft: Option<Result<Vec<nft::NftTable>, Error>>,
    nft_available: bool,
    ipvs_requested: bool,
    ipvs_observed: IpvsObserved,
    ipvs_notes: Vec<String>,
    ipvs_errors: Vec<String>,
    ipvs_plan: IpvsPlan,
}

fn iptables_tools(backend: Backend, family: Family) -> (String, String) {
    let base = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let kind = if backend == Backend::IptablesNft {
        "nft"
    } else {
        "legacy"
    };
    (
        format!("{base}-{kind}-save"),
        format!("{base}-{kind}-restore"),
    )
}

fn observe(runner: &dyn CommandRunner, opts: &Options) -> Observation {
    let iptables = if opts.iptables || opts.ipvs {
        observe_iptables(runner, opts)
    } else {
        Vec::new()
    };
    let nft_available = runner.has_program("nft");
    let nft = (opts.nftables && nft_available).then(|| observe_nft(runner));
    let ipvs = if opts.ipvs {
        observe_ipvs(runner)
    } else {
        IpvsLook::default()
    };
    let services = ServiceAddresses {
        ips: opts.service_ips.clone(),
        cidrs: opts.service_cidrs.clone(),
    };
    let ipvs_plan = ipvs::plan(&ipvs.observed, &services);
    Observation {
        iptables,
        nft,
        nft_available,
        ipvs_requested: opts.ipvs,
        ipvs_observed: ipvs.observed,
        ipvs_notes: ipvs.notes,
        ipvs_errors: ipvs.errors,
        ipvs_plan,
    }
}

/// Each iptables backend and family whose save and restore tools exist: its ruleset and
/// the plan for it.
fn observe_iptables(runner: &dyn CommandRunner, opts: &Options) -> Vec<IptablesObservation> {
    let plan_opts = PlanOptions {
        keep_pre_1_28_kubelet_chains: opts.keep_pre_1_28_kubelet_chains,
    };
    let mut ipts = Vec::new();
    for backend in [Backend::IptablesNft, Backend::IptablesLegacy] {
        for family in [Family::V4, Family::V6] {
            let (save, restore) = iptables_tools(backend, family);
            let state = (runner.has_program(&save) && runner.has_program(&restore)).then(|| {
                let text = runner.run_ok(&save, &[], None)?;
                let rs = Ruleset::parse(&text)?;
                Ok(iptables::plan(&rs, &plan_opts))
            });
            ipts.push(IptablesObservation {
                backend,
                family,
                restore,
                state,
            });
        }
    }
    ipts
}

/// kube-proxy's nftables tables (JSON listing, the text listing where JSON fails).
fn observe_nft(runner: &dyn CommandRunner) -> Result<Vec<nft::NftTable>, Error> {
    let json = runner.run_ok("nft", &["-j".into(), "list".into(), "tables".into()], None);
    let tables = match json.and_then(|t| nft::parse_tables_json(&t)) {
        Ok(t) => t,
        Err(_) => {
            let text = runner.run_ok("nft", &["list".into(), "tables".into()], None)?;
            nft::parse_tables_text(&text)?
        }
    };
    Ok(nft::plan(&tables))
}

/// What the ipvs tools show, with notes on missing tools and the errors met.
#[derive(Debug, Default)]
struct IpvsLook {
    observed: IpvsObserved,
    notes: Vec<String>,
    errors: Vec<String>,
}

fn observe_ipvs(runner: &dyn CommandRunner) -> IpvsLook {
    let mut look = IpvsLook::default();
    let mut probe = |program: &str, args: &[&str]| -> Option<String> {
        if !runner.has_program(program) {
            look.notes.push(format!("{program} not available"));
            return None;
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match runner.run_ok(program, &args, None) {
            Ok(out) => Some(out),
            Err(e) => {
                look.errors.push(e.to_string());
                None
            }
        }
    };
    // Without the ip_vs module there can be no virtual server, and ipvsadm would only
    // fail trying to load it (upstream checks `modprobe ip_vs` the same way).
    // /proc/net is per network namespace, so this runs behind the runner's prefix.
    let ipvs_loaded = !runner.has_program("test")
        || runner
            .run("test", &["-e".into(), "/proc/net/ip_vs".into()], None)
            .is_ok_and(|o| o.success);
    let vs = if ipvs_loaded {
        probe("ipvsadm", &["-S", "-n"])
    } else {
        Some(String::new())
    };
    let sets = probe("ipset", &["list", "-n"]);
    let links = probe("ip", &["-j", "link", "show"]);
    if !ipvs_loaded {
        look.notes
            .push("IPVS is not loaded in this kernel: no virtual servers".into());
    }
    match vs.map(|t| ipvs::parse_ipvsadm_save(&t)).transpose() {
        Ok(v) => look.observed.virtual_servers = v,
        Err(e) => look.errors.push(e.to_string()),
    }
    look.observed.ipsets = sets.map(|t| ipvs::parse_ipset_names(&t));
    match links.map(|t| ipvs::parse_link_names(&t)).transpose() {
        Ok(l) => look.observed.links = l,
        Err(e) => look.errors.push(e.to_string()),
    }
    look
}

impl Observation {
    fn report(&self, listing_only: bool) -> Report {
        let backends = vec![
            self.iptables_report(Backend::IptablesNft),
            self.iptables_report(Backend::IptablesLegacy),
            self.nft_report(),
            self.ipvs_report(),
        ];
        Report {
            listing_only,
            backends,
            conntrack: None,
        }
    }

    /// One iptables backend over both families.
    fn iptables_report(&self, backend: Backend) -> BackendReport {
        let mut b = BackendReport::new(backend);
        let mut names = Vec::new();
        for o in self.iptables.iter().filter(|o| o.backend == backend) {
            match &o.state {
                None => b
                    .notes
                    .push(format!("{} tools not available", o.family.name())),
                Some(Err(e)) => {
                    b.available = true;
                    b.errors.push(format!("{}: {e}", o.family.name()));
                }
                Some(Ok(plan)) => {
                    b.available = true;
                    let fam = o.family.name();
                    names.extend(
                        plan.object_names()
                            .into_iter()
                            .map(|n| format!("{fam} {n}")),
                    );
                    b.kept
                        .extend(plan.blocked().into_iter().map(|(table, bc)| Kept {
                            name: format!("{fam} {table} chain {}", bc.chain),
                            reason: format!("still referenced by {}", bc.referenced_by),
                        }));
                }
            }
        }
        b.found = Objects::new(names);
        b
    }

    fn nft_report(&self) -> BackendReport {
        let mut n = BackendReport::new(Backend::Nftables);
        n.available = self.nft_available;
        if !self.nft_available {
            n.notes.push("nft not available".into());
        }
        match &self.nft {
            Some(Ok(plan)) => {
                n.found = Objects::new(plan.iter().map(ToString::to_string).collect())
            }
            Some(Err(e)) => n.errors.push(e.to_string()),
            None => {}
        }
        n
    }

    fn ipvs_report(&self) -> BackendReport {
        let mut v = BackendReport::new(Backend::Ipvs);
        if self.ipvs_requested {
            let o = &self.ipvs_observed;
            v.available = o.virtual_servers.is_some() || o.ipsets.is_some() || o.links.is_some();
            v.notes = self.ipvs_notes.clone();
            v.errors = self.ipvs_errors.clone();
            v.found = Objects::new(self.ipvs_plan.object_names());
            v.kept = self
                .ipvs_plan
                .kept_virtual_servers
                .iter()
                .map(|vs| Kept {
                    name: vs.to_string(),
                    reason: "not on a given service IP or CIDR".into(),
                })
                .collect();
        }
        v
    }
}

fn conntrack_targets(
    opts: &Options,
    ipvs_plan: &IpvsPlan,
) -> Option<Vec<conntrack::ConntrackDeletion>> {
    if !opts.flush_conntrack {
        return None;
    }
    let mut ips = opts.service_ips.clone();
    ips.extend(ipvs_plan.delete_virtual_servers.iter().map(|vs| vs.addr));
    Some(conntrack::plan(&ips))
}

fn conntrack_step(
    runner: &dyn CommandRunner,
    targets: &[conntrack::ConntrackDeletion],
    delete: bool,
) -> ConntrackReport {
    let mut r = ConntrackReport {
        addresses: targets.iter().map(|t| t.dst.to_string()).collect(),
        ..ConntrackReport::default()
    };
    if targets.is_empty() {
        return r;
    }
    if !runner.has_program("conntrack") {
        r.errors.push("conntrack not available".into());
        return r;
    }
    for t in targets {
        let found = match runner.run_ok("conntrack", &t.list_args(), None) {
            Ok(out) => conntrack::count_entries(&out),
            Err(e) => {
                r.errors.push(e.to_string());
                continue;
            }
        };
        r.found += found;
        if delete && found > 0 {
            match runner.run_ok("conntrack", &t.delete_args(), None) {
                Ok(_) => r.deleted_for.push(t.dst.to_string()),
                Err(e) => r.errors.push(e.to_string()),
            }
        }
    }
    r
}

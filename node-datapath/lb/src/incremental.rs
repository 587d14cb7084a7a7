//! The desired state kept per Service, so that one Service or EndpointSlice
//! change costs O(that Service), not O(all Services).
//!
//! [`LbState`] holds each Service's own [`Desired`] (what
//! [`crate::desired_state`] computes from that Service and its slices alone) and
//! merges them into one [`DesiredState`] exactly as the full computation
//! does: a frontend claimed by several Services belongs to the first by
//! namespace/name, a backend is terminating only if every slot using it
//! says so, a ClusterIP keeps its VIP marker while any Service wants it.
//! Every change records the [`Dirty`] keys; [`LbState::plan`] diffs only
//! those against the maps ([`crate::diff::diff_dirty`]).
//!
//! The caller owns the projected objects ([`ServiceView`], [`SliceView`]) and
//! tells the state what changed ([`LbState::service_touched`],
//! [`LbState::slice_touched`]); [`LbState::refresh`] then looks the stale
//! Services and their slices up through closures. One difference from the
//! full computation: a Service that loses a frontend both to another
//! Service and to one of its own ports reports both conflicts.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::LbError;
use crate::desired::{Desired, Finding, FindingKind, NodeContext, Options, desired_state_of_views};
use crate::diff::{Dirty, diff_dirty};
use crate::ids::IdAllocator;
use crate::maps::{MapOp, MapsSnapshot};
use crate::model::{BackendKey, DesiredState, Frontend, FrontendState, Scope};
use crate::view::{LABEL_SERVICE_NAME, ServiceView, SliceView};

/// A Service's `(namespace, name)` (shared strings: a Service's id is
/// cloned into every frontend it claims).
pub type ServiceId = (Arc<str>, Arc<str>);

/// How many slots use a backend, and how many of them as not terminating.
#[derive(Clone, Copy, Debug, Default)]
struct Uses {
    all: u32,
    serving: u32,
}

/// A frontend in both of its scopes (a Service may own either).
fn both_scopes(fe: &Frontend) -> [Frontend; 2] {
    [fe.in_scope(Scope::Node), fe.in_scope(Scope::Ingress)]
}

/// A small sorted set (most have one element; a `BTreeSet` would allocate
/// a whole node for it).
type Sorted<T> = Vec<T>;

fn sorted_insert<T: Ord>(v: &mut Sorted<T>, x: T) {
    if let Err(i) = v.binary_search(&x) {
        v.insert(i, x);
    }
}

fn sorted_remove<T: Ord + std::borrow::Borrow<Q>, Q: Ord + ?Sized>(v: &mut Sorted<T>, x: &Q) {
    if let Ok(i) = v.binary_search_by(|e| e.borrow().cmp(x)) {
        v.remove(i);
    }
}

/// One Service's own contribution, compact ([`Desired`] keeps its
/// frontends in a `BTreeMap`, a whole node for one or two entries).
#[derive(Debug)]
struct ServiceDesired {
    /// Sorted by frontend.
    frontends: Vec<(Frontend, FrontendState)>,
    vips: Vec<Ipv4Addr>,
    findings: Vec<Finding>,
}

impl ServiceDesired {
    fn new(d: Desired) -> Self {
        Self {
            frontends: d.state.frontends.into_iter().collect(),
            vips: d.state.vips.into_iter().collect(),
            findings: d.findings,
        }
    }

    fn frontend(&self, fe: &Frontend) -> Option<&FrontendState> {
        self.frontends
            .binary_search_by(|(f, _)| f.cmp(fe))
            .ok()
            .map(|i| &self.frontends[i].1)
    }
}

/// The merged desired state, maintained per Service (see the module doc).
#[derive(Debug, Default)]
pub struct LbState {
    node: NodeContext,
    opts: Options,
    per_service: HashMap<ServiceId, ServiceDesired>,
    /// frontend (node scope) → the Services claiming it (the first one owns
    /// it, in both scopes).
    claims: HashMap<Frontend, Sorted<ServiceId>>,
    vip_refs: HashMap<Ipv4Addr, u32>,
    backend_uses: HashMap<BackendKey, Uses>,
    /// Services with findings of their own.
    with_findings: BTreeSet<ServiceId>,
    /// Frontends claimed by more than one Service.
    conflicted: BTreeSet<Frontend>,
    /// Services with at least one frontend of their own.
    services_with_frontends: usize,
    /// Slices by `(namespace, name)` → the Service they belong to.
    slice_owner: HashMap<ServiceId, ServiceId>,
    /// Service → names of its slices.
    slices_of: HashMap<ServiceId, Sorted<String>>,
    /// Services to recompute at the next [`Self::refresh`].
    stale: BTreeSet<ServiceId>,
    state: DesiredState,
    dirty: Dirty,
    /// Every key may be dirty: the next plan is a full diff, and no
    /// per-key tracking is done until then (cheaper rebuilds).
    all_dirty: bool,
}

impl LbState {
    /// An empty state for `node`.
    pub fn new(node: NodeContext, opts: Options) -> Self {
        Self {
            node,
            opts,
            ..Self::default()
        }
    }

    /// The merged desired state (equal to [`crate::desired_state`] over every
    /// Service and slice refreshed so far).
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Keys changed since the last [`Self::plan`] (empty while
    /// [`Self::mark_all_dirty`] is in effect).
    pub fn dirty(&self) -> &Dirty {
        &self.dirty
    }

    /// Makes the next [`Self::plan`] a full diff (after adopting maps, a
    /// failed write, or a relist).
    pub fn mark_all_dirty(&mut self) {
        self.all_dirty = true;
        self.dirty = Dirty::default();
    }

    /// Whether the next plan is a full diff.
    pub fn all_dirty(&self) -> bool {
        self.all_dirty
    }

    /// Whether the set of VIPs may have changed since the last plan.
    pub fn vips_changed(&self) -> bool {
        self.all_dirty || !self.dirty.vips.is_empty()
    }

    /// Whether Services wait for [`Self::refresh`].
    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Services with at least one frontend of their own (a Service that
    /// lost every frontend to others still counts, unlike
    /// [`DesiredState::service_count`]).
    pub fn service_count(&self) -> usize {
        self.services_with_frontends
    }

    /// Whether backend `key` is wanted, and whether as terminating.
    pub fn backend(&self, key: &BackendKey) -> Option<bool> {
        self.backend_uses.get(key).map(|u| u.serving == 0)
    }

    /// Everything not served, sorted (as [`Desired::findings`]).
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .with_findings
            .iter()
            .filter_map(|id| self.per_service.get(id))
            .flat_map(|d| d.findings.iter().cloned())
            .collect();
        for fe in &self.conflicted {
            let (Some(owner), Some(claimants)) =
                (self.state.frontends.get(fe), self.claims.get(fe))
            else {
                continue;
            };
            for (ns, name) in claimants.iter().skip(1) {
                out.push(Finding {
                    service: format!("{ns}/{name}"),
                    kind: FindingKind::FrontendConflict {
                        frontend: *fe,
                        owner: owner.service.clone(),
                    },
                });
            }
        }
        out.extend(crate::capacity::over_capacity(
            &self.state,
            crate::capacity::Limits::default(),
        ));
        out.sort();
        out.dedup();
        out
    }

    /// Service `namespace/name` was added, changed or deleted.
    pub fn service_touched(&mut self, namespace: &str, name: &str) {
        self.stale.insert((namespace.into(), name.into()));
    }

    /// Slice `namespace/name` was added or changed (`service`: its
    /// `kubernetes.io/service-name` label) or deleted (`service`: `None`).
    pub fn slice_touched(&mut self, namespace: &str, name: &str, service: Option<&str>) {
        let slice: ServiceId = (namespace.into(), name.into());
        let new = service
            .filter(|s| !s.is_empty())
            .map(|s| (namespace.into(), s.into()));
        let old = self.slice_owner.remove(&slice);
        if let Some(old) = &old
            && new.as_ref() != Some(old)
        {
            if let Some(names) = self.slices_of.get_mut(old) {
                sorted_remove(names, name);
                if names.is_empty() {
                    self.slices_of.remove(old);
                }
            }
            self.stale.insert(old.clone());
        }
        if let Some(new) = new {
            sorted_insert(
                self.slices_of.entry(new.clone()).or_default(),
                name.to_string(),
            );
            self.slice_owner.insert(slice, new.clone());
            self.stale.insert(new);
        }
    }

    /// The `kubernetes.io/service-name` label of a slice.
    pub fn slice_service(slice: &EndpointSlice) -> Option<&str> {
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
            .map(String::as_str)
    }

    /// Forgets everything and indexes `slices` (`(namespace, name,
    /// service label)`); marks `services` stale. Follow with
    /// [`Self::refresh`] (a relist).
    pub fn reset<'a>(
        &mut self,
        services: impl IntoIterator<Item = (&'a str, &'a str)>,
        slices: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
    ) {
        self.mark_all_dirty();
        let old: Vec<ServiceId> = self.per_service.keys().cloned().collect();
        self.stale.extend(old);
        self.slice_owner.clear();
        self.slices_of.clear();
        for (ns, name) in services {
            self.service_touched(ns, name);
        }
        for (ns, name, svc) in slices {
            self.slice_touched(ns, name, svc);
        }
    }

    /// Recomputes every stale Service, looking it up with `service(ns,
    /// name)` and its slices with `slice(ns, name)`.
    pub fn refresh<S, E>(
        &mut self,
        service: impl Fn(&str, &str) -> Option<S>,
        slice: impl Fn(&str, &str) -> Option<E>,
    ) where
        S: Deref<Target = ServiceView>,
        E: Deref<Target = SliceView>,
    {
        for id in std::mem::take(&mut self.stale) {
            let (ns, name) = (&id.0, &id.1);
            let new = service(ns, name).map(|svc| {
                let slices: Vec<E> = self
                    .slices_of
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| slice(ns, s))
                    .collect();
                desired_state_of_views([&*svc], slices.iter().map(|s| &**s), &self.node, &self.opts)
            });
            self.replace(id, new.map(ServiceDesired::new));
        }
    }

    /// Replaces one Service's contribution and re-merges what it touches.
    fn replace(&mut self, id: ServiceId, new: Option<ServiceDesired>) {
        let old = self.per_service.remove(&id);
        let mut touched: Vec<Frontend> = Vec::new();
        if let Some(old) = &old {
            if !old.frontends.is_empty() {
                self.services_with_frontends -= 1;
            }
            for (fe, _) in &old.frontends {
                let claim = fe.in_scope(Scope::Node);
                if let Some(c) = self.claims.get_mut(&claim) {
                    sorted_remove(c, &id);
                    if c.is_empty() {
                        self.claims.remove(&claim);
                    }
                }
                touched.extend(both_scopes(fe));
            }
        }
        self.with_findings.remove(&id);
        if let Some(new) = new.filter(|d| !d.frontends.is_empty() || !d.findings.is_empty()) {
            for (fe, _) in &new.frontends {
                let claim = fe.in_scope(Scope::Node);
                sorted_insert(self.claims.entry(claim).or_default(), id.clone());
                touched.extend(both_scopes(fe));
            }
            for vip in &new.vips {
                let n = self.vip_refs.entry(*vip).or_default();
                *n += 1;
                if *n == 1 {
                    self.state.vips.insert(*vip);
                    if !self.all_dirty {
                        self.dirty.vips.insert(*vip);
                    }
                }
            }
            if !new.findings.is_empty() {
                self.with_findings.insert(id.clone());
            }
            if !new.frontends.is_empty() {
                self.services_with_frontends += 1;
            }
            self.per_service.insert(id, new);
        }
        // Old VIPs after the new ones, so a kept VIP never drops to zero
        // uses: only VIPs that appear or vanish are dirty.
        for vip in old.iter().flat_map(|o| &o.vips) {
            if let Some(n) = self.vip_refs.get_mut(vip) {
                *n -= 1;
                if *n == 0 {
                    self.vip_refs.remove(vip);
                    self.state.vips.remove(vip);
                    if !self.all_dirty {
                        self.dirty.vips.insert(*vip);
                    }
                }
            }
        }
        self.remerge(touched);
    }

    /// Re-merges the `touched` frontends from their owners' contributions.
    fn remerge(&mut self, mut touched: Vec<Frontend>) {
        touched.sort_unstable();
        touched.dedup();
        for fe in touched {
            // Claims are per address, port and protocol: the Service owning
            // a frontend's node scope owns its ingress scope too.
            let claim = fe.in_scope(Scope::Node);
            if self.claims.get(&claim).is_some_and(|c| c.len() > 1) {
                self.conflicted.insert(claim);
            } else {
                self.conflicted.remove(&claim);
            }
            let owner = self
                .claims
                .get(&claim)
                .and_then(|c| c.first())
                .and_then(|o| self.per_service.get(o))
                .and_then(|d| d.frontend(&fe))
                .cloned();
            self.set_frontend(fe, owner);
        }
    }

    /// Sets the merged state of one frontend, updating backend uses.
    fn set_frontend(&mut self, fe: Frontend, new: Option<FrontendState>) {
        let old = match &new {
            Some(st) => self.state.frontends.insert(fe, st.clone()),
            None => self.state.frontends.remove(&fe),
        };
        if old == new {
            return;
        }
        let track = !self.all_dirty;
        if track {
            self.dirty.frontends.insert(fe);
        }
        for b in old.iter().flat_map(|s| &s.backends) {
            if let Some(u) = self.backend_uses.get_mut(&b.key) {
                u.all -= 1;
                u.serving -= u32::from(!b.terminating);
                if u.all == 0 {
                    self.backend_uses.remove(&b.key);
                }
            }
            if track {
                self.dirty.backends.insert(b.key);
            }
        }
        for b in new.iter().flat_map(|s| &s.backends) {
            let u = self.backend_uses.entry(b.key).or_default();
            u.all += 1;
            u.serving += u32::from(!b.terminating);
            if track {
                self.dirty.backends.insert(b.key);
            }
        }
    }

    /// The ordered operations for the dirty keys (see
    /// [`crate::diff::diff_dirty`]), or for everything (the full
    /// [`crate::diff::diff`]) after [`Self::mark_all_dirty`]; clears them.
    pub fn plan(
        &mut self,
        current: &MapsSnapshot,
        ids: &mut IdAllocator,
    ) -> Result<Vec<MapOp>, LbError> {
        if self.all_dirty {
            let ops = crate::diff::diff(current, &self.state, ids)?;
            self.all_dirty = false;
            return Ok(ops);
        }
        let dirty = std::mem::take(&mut self.dirty);
        let uses = &self.backend_uses;
        let wanted = |k: &BackendKey| uses.get(k).map(|u| u.serving == 0);
        diff_dirty(current, &self.state, wanted, &dirty, ids).inspect_err(|_| {
            // Keep them dirty for the next attempt.
            self.dirty = dirty.clone();
        })
    }
}

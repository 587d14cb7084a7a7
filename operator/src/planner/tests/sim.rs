//! A simulated cluster for the planner: nodes, kube-proxy's DaemonSet
//! controller, and node agents, with checks of the safety invariants at every
//! change. Pure and deterministic given its inputs.

mod actions;
mod wire;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use switchyard_api::{
    DatapathMode, MigrationPlanSpec, MigrationPlanStatus, NodeDatapathSpec, NodeStep, Phase,
    ProbeProtocol,
};

use crate::planner::{
    Action, AgentLease, ConfigMapObs, DaemonSetObs, DatapathObs, Decision, Event, ExternalService,
    IngressObs, Input, KubeProxyObs, NodeObs, NodePortObs, PeerProbeObs, PodObs, RequestOutcome,
    Snapshot, plan,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimNode {
    pub unschedulable: bool,
    pub excluded: bool,
    pub kp_pod: bool,
    pub kp_ready: bool,
    /// The pod was created from a template carrying the exclusion.
    pub kp_excluding_template: bool,
    /// kube-proxy's rules are in the node's tables (they survive the pod).
    pub kp_rules: bool,
    pub dp_spec: DatapathMode,
    pub dp_active: bool,
    pub programmed: bool,
    pub agent_alive: bool,
    pub cleanup_req: i64,
    pub cleanup_obs: Option<(i64, bool)>,
    pub probe_req: i64,
    pub probe_obs: Option<(i64, bool)>,
    /// Outcomes this node's agent gives.
    pub probe_fails: bool,
    pub cleanup_fails: bool,
    /// Probe passed since the last time the node was cordoned.
    pub verified: bool,
    /// `spec.peerProbe` as last written: its generation and the nodes it
    /// probes.
    pub peer_req: Option<(i64, BTreeSet<String>)>,
    /// The agent's answer: generation, and per probed node whether it passed.
    pub peer_obs: Option<(i64, BTreeMap<String, bool>)>,
    /// Traffic from outside the node dies there once kube-proxy left it.
    pub ingress_dead: bool,
    /// The Node's labels (what a plan's `nodeSelector` matches).
    pub labels: BTreeMap<String, String>,
    /// Carries the startup taint: no pod runs there, nothing to serve.
    pub startup_taint: bool,
    /// The plan cordoned the node and has not seen it uncordoned since.
    pub plan_cordon: bool,
    /// When its Node was created (sim seconds).
    pub created: i64,
}

#[derive(Clone, Debug)]
pub struct Sim {
    pub nodes: BTreeMap<String, SimNode>,
    /// Nodes someone else cordoned (before the plan, or during it while
    /// the node was schedulable): the plan must never uncordon them.
    pub cordoned_by_others: BTreeSet<String>,
    pub ds: Option<bool>, // Some(excludes_label)
    /// The DaemonSet's rollout is held (`OnDelete`, the user's strategy
    /// remembered); otherwise it rolls pods of another template.
    pub ds_held: bool,
    /// Nodes whose kube-proxy pod a rolling update replaced, in order.
    pub rolled: Vec<String>,
    pub cm: bool,
    pub backup: bool,
    pub now: i64,
    pub violations: Vec<String>,
    pub max_in_flight_seen: usize,
    /// Every event the applied decisions emitted, in order.
    pub events: Vec<Event>,
    /// The status as the planner reads it back: recorded compacted, as the
    /// controller does, and expanded again.
    pub status: MigrationPlanStatus,
    /// The status as the planner returned it, never compacted: decisions
    /// from it must be the ones from `status`.
    pub full: MigrationPlanStatus,
    /// The status of the decision whose actions are being applied.
    pub deciding: Option<MigrationPlanStatus>,
    pub spec: MigrationPlanSpec,
    /// Each node's NodeDatapath spec as last written.
    pub written: BTreeMap<String, NodeDatapathSpec>,
    /// Services reached from outside the nodes.
    pub external_services: Vec<ExternalService>,
    /// The plan is being deleted.
    pub deleting: bool,
    /// Its finalizer was removed: the object is gone.
    pub released: bool,
}

impl Sim {
    pub fn new(n: usize, pre_cordoned: &[usize], spec: MigrationPlanSpec) -> Self {
        let mut nodes = BTreeMap::new();
        let mut pre = BTreeSet::new();
        for i in 0..n {
            let name = format!("node-{i:02}");
            let cordoned = pre_cordoned.contains(&i);
            if cordoned {
                pre.insert(name.clone());
            }
            nodes.insert(
                name,
                SimNode {
                    unschedulable: cordoned,
                    kp_pod: true,
                    kp_ready: true,
                    kp_rules: true,
                    agent_alive: true,
                    ..SimNode::default()
                },
            );
        }
        Sim {
            nodes,
            cordoned_by_others: pre,
            ds: Some(false),
            ds_held: false,
            rolled: Vec::new(),
            cm: true,
            backup: false,
            now: 1_700_000_000,
            violations: Vec::new(),
            events: Vec::new(),
            max_in_flight_seen: 0,
            status: MigrationPlanStatus::default(),
            full: MigrationPlanStatus::default(),
            deciding: None,
            spec,
            written: BTreeMap::new(),
            external_services: vec![ExternalService {
                name: "web/np".into(),
                kinds: vec!["NodePort"],
                local: false,
                node_ports: vec![NodePortObs {
                    port: 80,
                    node_port: 30080,
                    protocol: ProbeProtocol::TCP,
                }],
            }],
            deleting: false,
            released: false,
        }
    }

    /// A node joins the cluster, registered with the startup taint: its
    /// agent runs (the DaemonSet tolerates every taint), its datapath is
    /// off, and kube-proxy's DaemonSet, if any, starts a pod there.
    pub fn join(&mut self, name: &str) {
        let n = SimNode {
            agent_alive: true,
            startup_taint: true,
            created: self.now,
            ..SimNode::default()
        };
        self.nodes.insert(name.into(), n);
        // Its NodeDatapath is new too (the agent creates it).
        self.written.remove(name);
    }

    /// A node leaves the cluster (its machine is gone, its Node deleted).
    pub fn leave(&mut self, name: &str) {
        self.nodes.remove(name);
        self.cordoned_by_others.remove(name);
    }

    pub fn ts(&self) -> Timestamp {
        Timestamp::from_second(self.now).expect("valid time")
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            backup_exists: self.backup,
            api_server_endpoints: vec!["172.31.255.1:6443".into()],
            external_services: self.external_services.clone(),
            ..Snapshot::default()
        };
        snap.kube_proxy = self.kube_proxy_obs();
        for (i, (name, n)) in self.nodes.iter().enumerate() {
            snap.nodes.insert(
                name.clone(),
                NodeObs {
                    labels: n.labels.clone(),
                    unschedulable: n.unschedulable,
                    kube_proxy_excluded: n.excluded,
                    internal_ip: Some(format!("172.31.0.{}", i + 10)),
                    startup_taint: n.startup_taint,
                    created: Timestamp::from_second(n.created).ok(),
                },
            );
            if n.kp_pod {
                snap.kube_proxy
                    .pods
                    .insert(name.clone(), PodObs { ready: n.kp_ready });
            }
            snap.datapaths
                .insert(name.clone(), self.datapath_obs(name, n));
        }
        snap
    }

    /// kube-proxy's DaemonSet and ConfigMap as the cluster has them (pods added per node).
    fn kube_proxy_obs(&self) -> KubeProxyObs {
        KubeProxyObs {
            daemon_set: self.ds.map(|excludes_label| DaemonSetObs {
                excludes_label,
                rollout_held: self.ds_held,
                pods_current: Some(
                    self.nodes
                        .values()
                        .filter(|n| n.kp_pod)
                        .all(|n| n.kp_excluding_template == excludes_label),
                ),
                managed_by: vec![],
            }),
            config_map: self.cm.then(|| ConfigMapObs {
                mode: Some("iptables".into()),
                ..ConfigMapObs::default()
            }),
            pods: BTreeMap::new(),
        }
    }

    /// Node `name`'s NodeDatapath as its agent reports it.
    fn datapath_obs(&self, name: &str, n: &SimNode) -> DatapathObs {
        let outcome = |o: Option<(i64, bool)>| {
            o.map(|(g, ok)| RequestOutcome {
                observed_generation: g,
                succeeded: ok,
                message: (!ok).then(|| format!("probe \"web\" failed on {name}")),
            })
        };
        DatapathObs {
            spec_mode: n.dp_spec,
            active_mode: Some(if n.dp_active {
                DatapathMode::Active
            } else {
                DatapathMode::Off
            }),
            lease: n.agent_alive.then(|| AgentLease {
                renewed: self.ts(),
                duration_secs: i64::from(switchyard_api::AGENT_LEASE_DURATION_SECS),
            }),
            missing_capabilities: Some(vec![]),
            services_seen: 3,
            services_programmed: if n.programmed { 3 } else { 0 },
            cleanup: outcome(n.cleanup_obs),
            probe: outcome(n.probe_obs),
            drops: 0,
            ingress: IngressObs::Ready,
            peer_probe_requested: n.peer_req.as_ref().map_or(0, |r| r.0),
            peer_probe: n.peer_obs.as_ref().map(|(g, nodes)| PeerProbeObs {
                observed_generation: *g,
                nodes: nodes
                    .iter()
                    .map(|(t, ok)| (t.clone(), (!ok).then(|| format!("nodeport of {t} refused"))))
                    .collect(),
            }),
        }
    }

    fn check_serving(&mut self, when: &str) {
        for (name, n) in &self.nodes {
            let serving = n.kp_rules || (n.dp_active && n.programmed);
            if !serving && !n.startup_taint {
                self.violations
                    .push(format!("{when}: node {name} has no serving datapath"));
            }
        }
    }

    /// Writes a node's whole NodeDatapath spec, as server-side apply does.
    /// Each write changes one thing at most, the step's own: the mode, the
    /// cleanup request or the probe request. Besides, it may withdraw a
    /// request the agent never answered. A write that makes a peer probe
    /// request changes nothing of the node's own migration.
    fn write_datapath(&mut self, node: &str, spec: &NodeDatapathSpec) {
        let before = self.written.insert(node.into(), spec.clone());
        let before = before.unwrap_or_default();
        let n = &self.nodes[node];
        let answered = |req: i64, obs: Option<(i64, bool)>| obs.is_some_and(|o| o.0 >= req);
        let withdrawn = |was: bool, is: bool, answered: bool| was && !is && !answered;
        let changed = [
            before.mode != spec.mode,
            before.cleanup != spec.cleanup
                && !withdrawn(
                    before.cleanup.is_some(),
                    spec.cleanup.is_some(),
                    answered(n.cleanup_req, n.cleanup_obs),
                ),
            before.probe != spec.probe
                && !withdrawn(
                    before.probe.is_some(),
                    spec.probe.is_some(),
                    answered(n.probe_req, n.probe_obs),
                ),
        ];
        let own_changes = changed.iter().filter(|c| **c).count()
            + usize::from(before.api_server != spec.api_server && !changed[0]);
        if own_changes > 1 {
            self.violations.push(format!(
                "one write changed more than one part of {node}'s spec: {before:?} -> {spec:?}"
            ));
        }
        let peer_requested = spec.peer_probe.is_some() && before.peer_probe != spec.peer_probe;
        if peer_requested && changed.iter().any(|c| *c) {
            self.violations.push(format!(
                "a peer probe request changed {node}'s own migration: {before:?} -> {spec:?}"
            ));
        }
        let n = self.node(node);
        let unsafe_off = spec.mode == DatapathMode::Off && n.dp_active && !n.kp_ready;
        n.dp_spec = spec.mode;
        n.cleanup_req = spec.cleanup.as_ref().map_or(0, |c| c.generation);
        n.probe_req = spec.probe.as_ref().map_or(0, |r| r.generation);
        n.peer_req = spec.peer_probe.as_ref().map(|r| {
            let nodes = r.targets.iter().map(|t| t.node.clone()).collect();
            (r.generation, nodes)
        });
        if unsafe_off {
            self.violations.push(format!(
                "datapath turned off on {node} while kube-proxy is absent"
            ));
        }
    }

    fn node(&mut self, name: &str) -> &mut SimNode {
        self.nodes.get_mut(name).expect("action on a known node")
    }

    /// One round of the cluster's other actors: the DaemonSet controller
    /// and the agents. `lag` makes a node's actors skip this round.
    pub fn tick(&mut self, secs: i64, lag: &dyn Fn(&str) -> bool) {
        self.now += secs;
        let ds = self.ds;
        let mut rolled = Vec::new();
        for (name, n) in self.nodes.iter_mut() {
            if lag(name) {
                continue;
            }
            let wanted = ds.is_some_and(|excl| !(excl && n.excluded));
            let template = ds == Some(true);
            if wanted && !n.kp_pod {
                n.kp_pod = true;
                n.kp_ready = false;
                n.kp_excluding_template = template;
            } else if wanted && !self.ds_held && n.kp_excluding_template != template {
                // A rolling update replaces the pod (its rules stay meanwhile).
                rolled.push((name.clone(), n.kp_excluding_template));
                n.kp_excluding_template = template;
            } else if wanted && !n.kp_ready {
                n.kp_ready = true;
                n.kp_rules = true;
            } else if !wanted && n.kp_pod {
                n.kp_pod = false;
                n.kp_ready = false;
            }
            if !n.agent_alive {
                continue;
            }
            match n.dp_spec {
                DatapathMode::Active if !n.dp_active => n.dp_active = true,
                DatapathMode::Active => n.programmed = true,
                DatapathMode::Off => {
                    n.dp_active = false;
                    n.programmed = false;
                }
            }
            if n.cleanup_req > n.cleanup_obs.map_or(0, |o| o.0) {
                if n.dp_active {
                    if !n.cleanup_fails {
                        n.kp_rules = n.kp_ready;
                    }
                    n.cleanup_obs = Some((n.cleanup_req, !n.cleanup_fails));
                } else {
                    n.cleanup_obs = Some((n.cleanup_req, false));
                }
            }
            if n.probe_req > n.probe_obs.map_or(0, |o| o.0) {
                let ok = !n.probe_fails;
                n.probe_obs = Some((n.probe_req, ok));
                n.verified = ok;
            }
        }
        self.answer_peer_probes(lag);
        self.check_rolled(&rolled);
        self.check_serving("after a tick");
    }

    /// A rolling update restarts kube-proxy only where a pod of the plan's
    /// excluding template goes when kube-proxy's own template is given back:
    /// on a node the plan took kube-proxy from and gave it back, or one that
    /// joined during the plan (its pod could only come from the template of
    /// the time). Never a pod of kube-proxy's own template: that would be
    /// the plan's edit restarting kube-proxy on nodes it did not reach.
    fn check_rolled(&mut self, rolled: &[(String, bool)]) {
        for (name, from_excluding) in rolled {
            if !from_excluding {
                let p = self.status.nodes.iter().find(|p| p.name == *name);
                self.violations.push(format!(
                    "a rolling update restarted kube-proxy on {name} (plan {:?}, node {:?})",
                    self.phase(),
                    p.map(|p| (p.step, p.reached))
                ));
            }
            self.rolled.push(name.clone());
        }
    }

    /// Live agents answer new peer probe requests: a probed node passes
    /// when traffic from outside reaches a serving datapath there.
    fn answer_peer_probes(&mut self, lag: &dyn Fn(&str) -> bool) {
        let ingress_ok: BTreeMap<String, bool> = self
            .nodes
            .iter()
            .map(|(name, n)| {
                let serves = n.kp_rules || (n.dp_active && n.programmed && !n.ingress_dead);
                (name.clone(), serves)
            })
            .collect();
        for (name, n) in self.nodes.iter_mut() {
            if lag(name) || !n.agent_alive {
                continue;
            }
            let Some((generation, targets)) = &n.peer_req else {
                continue;
            };
            if *generation > n.peer_obs.as_ref().map_or(0, |o| o.0) {
                let results = targets
                    .iter()
                    .map(|t| (t.clone(), ingress_ok.get(t).copied().unwrap_or(false)))
                    .collect();
                n.peer_obs = Some((*generation, results));
            }
        }
    }

    /// The planner's decision for the current state (changes nothing).
    pub fn decide(&self) -> Decision {
        self.decide_from(&self.status)
    }

    /// The planner's decision for the current cluster and `status`.
    fn decide_from(&self, status: &MigrationPlanStatus) -> Decision {
        let snap = self.snapshot();
        plan(Input {
            plan_name: "p",
            generation: Some(1),
            spec: &self.spec,
            status,
            snapshot: &snap,
            now: self.ts(),
            deleting: self.deleting,
        })
        .expect("plan")
    }

    /// Runs the planner once. `crash`: `None` = no crash; `Some(k)` = the
    /// controller dies after applying `k` actions, before recording the
    /// status (the worst order).
    pub fn reconcile(&mut self, crash: Option<usize>) {
        let d = self.decide();
        let again = self.decide();
        if d != again {
            self.violations.push("planner is not deterministic".into());
        }
        let from_full = self.decide_from(&self.full);
        self.check_wire(&d, &from_full);
        let in_flight = d.status.nodes.iter().filter(|n| n.step.in_flight()).count();
        self.max_in_flight_seen = self.max_in_flight_seen.max(in_flight);
        let mut written = BTreeSet::new();
        for a in &d.actions {
            if let Action::ApplyDatapath { node, .. } = a
                && !written.insert(node.clone())
            {
                self.violations.push(format!(
                    "two writes of {node}'s NodeDatapath in one decision"
                ));
            }
        }
        let applied = crash.unwrap_or(d.actions.len()).min(d.actions.len());
        self.deciding = Some(d.status.clone());
        for a in &d.actions[..applied] {
            self.apply(a);
        }
        self.deciding = None;
        if crash.is_none() {
            self.status = d.status.compacted().expanded();
            self.full = from_full.status;
            self.released |= d.release;
            for n in self.nodes.values_mut().filter(|n| !n.unschedulable) {
                // Seen uncordoned: a cordon placed from now on is not the plan's.
                n.plan_cordon = false;
            }
        }
    }

    pub fn phase(&self) -> Phase {
        self.status.phase
    }

    /// The recorded progress of node `name`.
    pub fn progress(&self, name: &str) -> &switchyard_api::NodeProgress {
        self.status
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("node {name} is not in the plan's status"))
    }

    pub fn steps(&self) -> BTreeMap<String, NodeStep> {
        self.status
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.step))
            .collect()
    }

    /// Drives reconcile + tick until the plan settles or `limit` rounds.
    pub fn run(
        &mut self,
        limit: usize,
        mut crash: impl FnMut(usize) -> Option<usize>,
        lag: &dyn Fn(usize, &str) -> bool,
    ) {
        for round in 0..limit {
            self.reconcile(crash(round));
            self.tick(3, &|n| lag(round, n));
            if self.settled() {
                // Two more quiet rounds: nothing may move once settled
                // (a node that joined meanwhile does).
                let before = (self.phase(), self.steps());
                self.reconcile(None);
                self.tick(3, &|_| false);
                self.reconcile(None);
                if (self.phase(), self.steps()) != before {
                    continue;
                }
                return;
            }
        }
    }

    pub fn settled(&self) -> bool {
        let finished = || self.status.nodes.iter().all(|n| n.step.is_terminal());
        (self.phase() == Phase::Succeeded && finished())
            || matches!(
                self.phase(),
                Phase::Failed | Phase::RolledBack | Phase::Planned
            )
            || (self.phase() == Phase::Paused
                && self.status.nodes.iter().all(|n| !n.step.in_flight()))
    }
}

//! switchyard-scale-bench: the control-plane benchmarks, built on the lab
//! cluster of `switchyard-e2e`. The figures and their discussion are in
//! `BENCHMARKS.md`; these modules keep how and why each is measured.
//!
//! The operator at scale (`make bench-operator`, [`operator_scale`]): a
//! real control plane (etcd, kube-apiserver with an audit log of the
//! operator's requests, kube-controller-manager, kube-scheduler) without
//! lab nodes; N [`simulated`] Node objects, kube-proxy's real DaemonSet and
//! ConfigMap (iptables mode) whose pods the real DaemonSet controller and
//! scheduler place on them; a fake [`responder`] playing every node's agent
//! and a fake [`kubelet`] for kube-proxy's pods; the real
//! `switchyard-operator` binary as a child process ([`operator`]) with its
//! own ServiceAccount token and `config/rbac` permissions; one
//! `MigrationPlan` in waves, measured from apply to `Succeeded` ([`measure`]:
//! `/proc` samples and the audit log), then a window at rest and etcd's
//! database size ([`at_rest`]); [`report`] renders the runs.
//!
//! kube-proxy's own programming time (`make bench-kube-proxy`,
//! [`kube_proxy`]): the real kube-proxy programming N Services on a lab
//! node, its metrics parsed by [`kp_parse`], rendered by [`kp_report`].

pub mod at_rest;
pub mod kp_parse;
pub mod kp_report;
pub mod kube_proxy;
pub mod kubelet;
pub mod measure;
pub mod operator;
pub mod operator_scale;
pub mod report;
pub mod responder;
pub mod simulated;

pub use operator::OPERATOR_USER;
pub use operator_scale::{RunResult, ScaleConfig, run_once};
pub use simulated::{PLAN, WaveClock, node_ip, node_name, node_object, plan_object};

//! Planner tests: a small simulated cluster (`sim`), unit tests of each
//! transition (`unit`), the NodeDatapath spec a rollback leaves
//! (`rollback_spec`), traffic from outside the nodes in preflight and
//! Verify (`north_south`), the agents' Leases (`liveness`) and property
//! tests of the invariants (`props`).

mod cordons;
mod deletion;
mod joining;
mod liveness;
mod node_ports;
mod north_south;
mod props;
mod recovery;
mod rollback_spec;
mod rollout;
mod sim;
mod unit;

//! Planner tests: a small simulated cluster (`sim`), unit tests of each
//! transition (`unit`), the NodeDatapath spec a rollback leaves
//! (`rollback_spec`), traffic from outside the nodes in preflight and
//! Verify (`north_south`), the agents' Leases (`liveness`), cordons by
//! others (`cordons`), the Events of a run (`events`), nodes joining and coming back (`joining`) and
//! property tests of the invariants: a plan run to its end (`props`), and
//! retries, churn, cordons, selections and stalled rollbacks
//! (`props_day_two`).

mod cordons;
mod deletion;
mod events;
mod joining;
mod liveness;
mod node_ports;
mod north_south;
mod props;
mod props_day_two;
mod recovery;
mod rollback_spec;
mod rollout;
mod sim;
mod unit;

//! Planner tests: a small simulated cluster (`sim`), unit tests of each
//! transition (`unit`), the NodeDatapath spec a rollback leaves
//! (`rollback_spec`) and property tests of the invariants (`props`).

mod props;
mod rollback_spec;
mod sim;
mod unit;

//! Planner tests: a small simulated cluster (`sim`), unit tests of each
//! transition (`unit`) and property tests of the invariants (`props`).

mod props;
mod sim;
mod unit;

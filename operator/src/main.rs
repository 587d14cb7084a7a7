//! `switchyard-operator`: the controller binary (the kube I/O shell around the
//! planner). The controller lands with the operator issue; until then this
//! binary only reports its version.

fn main() {
    println!("switchyard-operator {}", env!("CARGO_PKG_VERSION"));
}

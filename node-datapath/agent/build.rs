//! Generates the Observer API's Rust types and gRPC service from `proto/`
//! (switchyard's subset of Hubble's API) with protox, a protobuf compiler
//! in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/flow/flow.proto", "proto/observer/observer.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

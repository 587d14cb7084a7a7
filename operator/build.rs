//! Generates the Peer API's Rust types and gRPC service from `proto/`
//! (switchyard's copy of Hubble's Peer interface) with protox, a protobuf
//! compiler in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/peer/peer.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(descriptors)?;
    Ok(())
}

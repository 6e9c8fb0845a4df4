// Generates the CSI gRPC server and client from proto/csi.proto. The proto is
// compiled by protox (a protobuf compiler written in Rust, with the well-known
// google/protobuf/*.proto types built in), so the build needs no `protoc` and
// no distro package: a fresh machine with only a Rust toolchain can build carve.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["../../proto"])?;
    // Default stubs answer Unimplemented for RPCs a service does not write:
    // the resizer endpoint serves only capability calls. carve's full
    // services implement every RPC (csi-sanity checks each).
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

// Generates the CSI gRPC server and client from proto/csi.proto. The proto is
// compiled by protox (a protobuf compiler written in Rust, with the well-known
// google/protobuf/*.proto types built in), so the build needs no `protoc` and
// no distro package: a fresh machine with only a Rust toolchain can build carve.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

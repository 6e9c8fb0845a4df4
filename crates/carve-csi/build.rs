// Generates the CSI gRPC server and client from proto/csi.proto. The proto is
// compiled by protox (a protobuf compiler written in Rust, with the well-known
// google/protobuf/*.proto types built in), so the build needs no `protoc` and
// no distro package: a fresh machine with only a Rust toolchain can build carve.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/csi.proto");
    build_commit();
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

/// The commit carve is built from, for `carve_build_info`: CARVE_COMMIT when
/// the builder sets it (the image build, which has no .git), else git's
/// answer, else "unknown". A program and its arguments, no shell.
fn build_commit() {
    println!("cargo:rerun-if-env-changed=CARVE_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let commit = std::env::var("CARVE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CARVE_COMMIT={commit}");
}

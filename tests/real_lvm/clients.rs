//! Clients other than tonic's (issue 8, finding 9): a CSI endpoint must serve
//! any conforming gRPC client. grpc-core clients (Python grpcio, C++, Ruby)
//! send the %-encoded socket path as the HTTP/2 :authority.

use super::*;

/// The Python interpreter of the test environment hack/setup.sh makes
/// (grpcio and grpcio-tools from PyPI).
fn python() -> PathBuf {
    let p =
        PathBuf::from(std::env::var("CARVE_PYENV").unwrap_or_else(|_| "/opt/carve-pyenv".into()))
            .join("bin/python3");
    assert!(
        p.exists(),
        "{} missing: run hack/setup.sh (it installs grpcio for this test)",
        p.display()
    );
    p
}

#[tokio::test]
async fn python_grpcio_client_drives_a_volume_through_carve() {
    let carve = Carve::start(&testbed_config()).await;
    let work = PathBuf::from("/tmp/python-client");
    std::fs::create_dir_all(&work).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/csi_client.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&carve.socket)
        .arg(&work)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "the grpcio client failed:\n{text}\ncarve log:\n{}",
        carve.log_text()
    );
    assert!(text.contains("all steps ok"), "{text}");
    // grpc-core sent its %-encoded socket path as :authority, and carve's
    // rewrite is what let the calls through.
    assert!(
        carve
            .log_text()
            .contains("replacing an invalid :authority with localhost"),
        "the client never needed the authority rewrite:\n{}",
        carve.log_text()
    );
    foreign_intact();
}

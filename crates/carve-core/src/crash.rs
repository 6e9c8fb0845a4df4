//! Named crash points for crash-safety tests. With the `crash-points` cargo
//! feature (enabled only by the test build, `real-lvm`), a process started with
//! `CARVE_CRASH_POINT=<name>` kills itself with SIGKILL the first time it reaches
//! that point, exactly as a `kill -9` at that instant would: no destructor, no
//! flush, no cleanup. Without the feature every point compiles to nothing.
//!
//! Points are placed between the steps of multi-step operations (create then
//! extend, snapshot then copy then clean up) so the tests can prove that a retry
//! or a delete converges from each of them.

#[cfg(feature = "crash-points")]
pub fn point(name: &'static str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("CARVE_CRASH_POINT").ok());
    if armed.as_deref() == Some(name) {
        // stderr is unbuffered: the line is out before the signal lands.
        eprintln!("carve: crash point {name} reached: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; never continue past the point.
        std::process::abort();
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &'static str) {}

/// Test builds only: with `CARVE_TEST_COPY_CHUNK_DELAY_MS=<n>`, every block
/// copy chunk takes at least n ms, so a test can act while a copy is running
/// (publish an unfinished volume, delete it, read its progress).
#[cfg(feature = "crash-points")]
pub fn slow_copy_chunk() {
    use std::sync::OnceLock;
    static DELAY: OnceLock<Option<u64>> = OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("CARVE_TEST_COPY_CHUNK_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(ms) = delay {
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn slow_copy_chunk() {}

/// Test builds only: `CARVE_TEST_BLOCKING_THREADS=<n>` shrinks tokio's
/// blocking pool, so a test can show no RPC ever waits for a pool thread
/// while holding one (with the default, a deadlock needs more concurrent
/// calls than the pool has threads before it shows).
#[cfg(feature = "crash-points")]
pub fn blocking_threads(default: usize) -> usize {
    std::env::var("CARVE_TEST_BLOCKING_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn blocking_threads(default: usize) -> usize {
    default
}

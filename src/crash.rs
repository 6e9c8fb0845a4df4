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
        // SAFETY: plain syscalls; the process ends here.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL cannot be caught; never continue past the point.
        std::process::abort();
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &'static str) {}

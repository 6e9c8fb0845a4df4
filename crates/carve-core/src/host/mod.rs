//! The host layer: how carve runs programs and touches the node's mounts,
//! devices and paths. Nothing here knows about LVM tags or CSI.

pub mod blkid;
pub mod copy;
pub mod exec;
#[allow(unsafe_code)]
pub mod ffi;
pub mod fs;
pub mod luks;
pub mod mount;
pub mod mountinfo;
pub mod paths;

/// Runs one blocking host call (mount, umount2, statvfs, stat, a read of the
/// mount table) on tokio's blocking pool and waits for it without holding a
/// thread. RPC bodies stay async and hand over only such calls, so no call
/// ever waits for a pool thread while holding one: any number of concurrent
/// RPCs make progress with any pool size.
pub async fn offload<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(call).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down, and then nobody waits.
            Err(e) => panic!("blocking host call cancelled: {e}"),
        },
    }
}

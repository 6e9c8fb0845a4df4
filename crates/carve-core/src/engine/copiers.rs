//! Where thick block copies run: each on a thread of its own, at most
//! `copy_workers` at once, the rest waiting in line. A copy takes minutes to
//! hours; on tokio's blocking pool (which also serves every mount, umount and
//! stat of the node RPCs) a few dozen restores would starve every stage and
//! unpublish on the node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::engine::jobs::Job;
use crate::host::copy::{self, Copied, CopyError};

pub struct Copiers {
    slots: Arc<Semaphore>,
    workers: usize,
    /// Copies waiting for a worker.
    queued: AtomicUsize,
}

/// Counts one copy in line for as long as it waits (also when its waiting
/// future is dropped).
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        InLine(n)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Copiers {
    pub fn new(workers: usize) -> Self {
        Copiers {
            slots: Arc::new(Semaphore::new(workers.max(1))),
            workers: workers.max(1),
            queued: AtomicUsize::new(0),
        }
    }

    /// Copies running now.
    pub fn running(&self) -> usize {
        self.workers - self.slots.available_permits()
    }

    /// Copies waiting in line for a worker now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Copies `bytes` from `src` to `dst` for `job` once a worker is free.
    /// While it waits in line the job can be cancelled (DeleteVolume).
    pub async fn copy(
        &self,
        src: String,
        dst: String,
        bytes: u64,
        job: Arc<Job>,
    ) -> Result<Copied, CopyError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracing::info!(copy = %job.what, running = self.running(), workers = self.workers, "block copy queued: every copy worker is busy");
                let _queued = InLine::new(&self.queued);
                loop {
                    let wait = self.slots.clone().acquire_owned();
                    match tokio::time::timeout(Duration::from_millis(500), wait).await {
                        Ok(p) => break p.expect("the semaphore is never closed"),
                        Err(_) if job.control.cancel.load(Ordering::SeqCst) => {
                            return Err(CopyError::Cancelled(0))
                        }
                        Err(_) => {}
                    }
                }
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("carve-copy".into())
            .spawn(move || {
                let r = copy::copy_blocking(&src, &dst, bytes, &job.what, &job.control);
                drop(permit);
                let _ = tx.send(r);
            })
            .map_err(CopyError::Io)?;
        rx.await.unwrap_or_else(|_| {
            Err(CopyError::Io(std::io::Error::other(
                "the copy thread ended without an answer",
            )))
        })
    }
}

//! Long block copies as jobs owned by carve, not by the RPC that asked for
//! them: at most one job per target LV, running on after the call that started
//! it was cancelled (external-provisioner gives up on a CreateVolume after its
//! timeout and calls again), observable by every later call, cancellable by
//! DeleteVolume.
//!
//! A job is registered under its target's key until it ends. A job that
//! succeeded leaves the registry at once (LVM itself now says the volume is
//! whole); one that failed stays until a caller has taken its error, so the
//! failure is reported once and the next call starts afresh.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::host::copy::{self, Control};

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Failed(String),
    Cancelled,
}

/// One running (or just ended) job.
#[derive(Debug)]
pub struct Job {
    pub key: String,
    /// What it does, for messages: e.g. "restore of <snapshot> into <vg/lv>".
    pub what: String,
    pub total: u64,
    pub control: Control,
    started: Instant,
    outcome: watch::Sender<Option<Outcome>>,
}

/// A job's progress, as a caller or the log sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MI: f64 = (1 << 20) as f64;
        write!(
            f,
            "{:.0} of {:.0} MiB copied ({}%), {:.1} MiB/s",
            self.done as f64 / MI,
            self.total as f64 / MI,
            self.done * 100 / self.total.max(1),
            copy::mib_per_second(self.done, self.elapsed)
        )?;
        match copy::eta_seconds(self.done, self.total, self.elapsed) {
            Some(s) => write!(f, ", about {s} s left"),
            None => Ok(()),
        }
    }
}

impl Job {
    pub fn progress(&self) -> Progress {
        Progress {
            done: self.control.done.load(Ordering::SeqCst),
            total: self.total,
            elapsed: self.started.elapsed(),
        }
    }

    /// How the job ended; `None` while it runs.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    /// Waits at most `limit` for the job to end; `None` if it is still running.
    pub async fn wait(&self, limit: Duration) -> Option<Outcome> {
        let mut rx = self.outcome.subscribe();
        let ended = tokio::time::timeout(limit, rx.wait_for(|o| o.is_some())).await;
        match ended {
            Ok(Ok(o)) => o.clone(),
            // The sender lives as long as the job: not reached.
            Ok(Err(_)) => Some(Outcome::Failed("the job vanished".into())),
            Err(_) => None,
        }
    }

    pub fn cancel(&self) {
        self.control.cancel.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub struct Jobs {
    running: Mutex<HashMap<String, Arc<Job>>>,
    /// The reason the last job of a key failed, kept (unlike the job) until
    /// a new job starts for the key or it is cancelled, so health reports
    /// can say why a volume is still unfinished.
    failed: Mutex<HashMap<String, String>>,
    /// Bytes copied by jobs that have ended (for the metrics' running total).
    ended_bytes: AtomicU64,
    /// Jobs ended: done, failed, cancelled.
    ended: [AtomicU64; 3],
}

/// What the jobs have done since start, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStats {
    /// Each job running now: its key and progress.
    pub running: Vec<(String, Progress)>,
    /// Bytes copied by every job, ended or running.
    pub copied_bytes: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// What [`Jobs::start`] found or did.
pub enum Started {
    /// A job is running for the key (just started, or started earlier).
    Running(Arc<Job>),
    /// The previous job for the key failed; its error, reported once.
    Failed(String),
}

impl Jobs {
    pub fn get(&self, key: &str) -> Option<Arc<Job>> {
        self.running.lock().expect("jobs lock").get(key).cloned()
    }

    /// The job for `key`: the one already running, or a new one running
    /// `work` on its own task. `work` gets the job (for its progress counter
    /// and cancel flag) and returns how it went.
    pub fn start<F, Fut>(self: &Arc<Self>, key: &str, what: String, total: u64, work: F) -> Started
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let mut running = self.running.lock().expect("jobs lock");
        let previous = running
            .get(key)
            .map(|job| (job.clone(), job.outcome.borrow().clone()));
        match previous {
            Some((job, None)) => return Started::Running(job),
            Some((_, Some(Outcome::Failed(e)))) => {
                running.remove(key);
                return Started::Failed(e);
            }
            // Cancelled or done: a new job may start.
            _ => {}
        }
        let (tx, _) = watch::channel(None);
        let job = Arc::new(Job {
            key: key.to_string(),
            what,
            total,
            control: Control::default(),
            started: Instant::now(),
            outcome: tx,
        });
        running.insert(key.to_string(), job.clone());
        self.failed.lock().expect("jobs lock").remove(key);
        let fut = work(job.clone());
        let me = self.clone();
        let j = job.clone();
        tokio::spawn(async move {
            let outcome = fut.await;
            let mut running = me.running.lock().expect("jobs lock");
            // Under the running lock, so a reader of stats() never counts
            // this job's bytes twice or not at all.
            me.ended_bytes
                .fetch_add(j.control.done.load(Ordering::SeqCst), Ordering::SeqCst);
            let slot = match outcome {
                Outcome::Done => 0,
                Outcome::Failed(_) => 1,
                Outcome::Cancelled => 2,
            };
            me.ended[slot].fetch_add(1, Ordering::SeqCst);
            // A failure stays registered until a caller takes it.
            if !matches!(outcome, Outcome::Failed(_))
                && running.get(&j.key).is_some_and(|r| Arc::ptr_eq(r, &j))
            {
                running.remove(&j.key);
            }
            if let Outcome::Failed(e) = &outcome {
                let mut failed = me.failed.lock().expect("jobs lock");
                failed.insert(j.key.clone(), e.clone());
            }
            j.outcome.send_replace(Some(outcome));
        });
        Started::Running(job)
    }

    /// Forgets a failed job once its error has been reported.
    pub fn take_failure(&self, key: &str) {
        let mut running = self.running.lock().expect("jobs lock");
        if running
            .get(key)
            .is_some_and(|j| matches!(*j.outcome.borrow(), Some(Outcome::Failed(_))))
        {
            running.remove(key);
        }
    }

    /// Why the last job for `key` failed, if it did and none started since.
    pub fn last_failure(&self, key: &str) -> Option<String> {
        self.failed.lock().expect("jobs lock").get(key).cloned()
    }

    /// Stops the job for `key`, if one runs, and waits until it has cleaned up.
    pub async fn cancel(&self, key: &str) {
        self.failed.lock().expect("jobs lock").remove(key);
        let job = self.running.lock().expect("jobs lock").remove(key);
        if let Some(job) = job {
            job.cancel();
            let mut rx = job.outcome.subscribe();
            let _ = rx.wait_for(|o| o.is_some()).await;
        }
    }

    /// Jobs running now, and what all jobs did since start.
    pub fn stats(&self) -> JobStats {
        let running = self.running.lock().expect("jobs lock");
        let now: Vec<(String, Progress)> = running
            .values()
            .filter(|j| j.outcome().is_none())
            .map(|j| (j.key.clone(), j.progress()))
            .collect();
        JobStats {
            copied_bytes: self.ended_bytes.load(Ordering::SeqCst)
                + now.iter().map(|(_, p)| p.done).sum::<u64>(),
            running: now,
            done: self.ended[0].load(Ordering::SeqCst),
            failed: self.ended[1].load(Ordering::SeqCst),
            cancelled: self.ended[2].load(Ordering::SeqCst),
        }
    }

    /// Keys of the jobs registered now.
    pub fn keys(&self) -> Vec<String> {
        self.running
            .lock()
            .expect("jobs lock")
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_job_per_key_and_it_outlives_its_caller() {
        let jobs = Arc::new(Jobs::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = match jobs.start("vg/a", "t".into(), 10, |_| async move {
            let _ = rx.await;
            Outcome::Done
        }) {
            Started::Running(j) => j,
            Started::Failed(e) => panic!("{e}"),
        };
        // A second start finds the same job; its work is never even built.
        let built = std::sync::atomic::AtomicBool::new(false);
        let second = match jobs.start("vg/a", "t".into(), 10, |_| {
            built.store(true, Ordering::SeqCst);
            async { Outcome::Done }
        }) {
            Started::Running(j) => j,
            Started::Failed(e) => panic!("{e}"),
        };
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!built.load(Ordering::SeqCst), "a second job was started");
        assert_eq!(first.wait(Duration::from_millis(20)).await, None);
        tx.send(()).unwrap();
        assert_eq!(
            first.wait(Duration::from_secs(5)).await,
            Some(Outcome::Done)
        );
        tokio::task::yield_now().await;
        assert!(
            jobs.get("vg/a").is_none(),
            "a finished job leaves the registry"
        );
    }

    #[tokio::test]
    async fn a_failure_is_reported_once_then_the_next_start_runs_anew() {
        let jobs = Arc::new(Jobs::default());
        let Started::Running(j) = jobs.start("k", "t".into(), 1, |_| async {
            Outcome::Failed("disk on fire".into())
        }) else {
            panic!()
        };
        assert_eq!(
            j.wait(Duration::from_secs(5)).await,
            Some(Outcome::Failed("disk on fire".into()))
        );
        match jobs.start("k", "t".into(), 1, |_| async { Outcome::Done }) {
            Started::Failed(e) => assert_eq!(e, "disk on fire"),
            Started::Running(_) => panic!("the failure was not reported"),
        }
        assert!(matches!(
            jobs.start("k", "t".into(), 1, |_| async { Outcome::Done }),
            Started::Running(_)
        ));
    }

    #[tokio::test]
    async fn cancel_waits_for_the_job_to_stop() {
        let jobs = Arc::new(Jobs::default());
        let Started::Running(j) = jobs.start("k", "t".into(), 1, |job| async move {
            while !job.control.cancel.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Outcome::Cancelled
        }) else {
            panic!()
        };
        jobs.cancel("k").await;
        assert_eq!(j.wait(Duration::ZERO).await, Some(Outcome::Cancelled));
        assert!(jobs.get("k").is_none());
    }

    #[test]
    fn progress_reads_like_a_sentence() {
        let p = Progress {
            done: 256 << 20,
            total: 1 << 30,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            p.to_string(),
            "256 of 1024 MiB copied (25%), 128.0 MiB/s, about 6 s left"
        );
    }

    /// Issue 14, finding 7: why a copy failed stays known after the failure
    /// was reported (the volume's condition says it), until a new copy starts
    /// or the volume is deleted.
    #[tokio::test]
    async fn a_failure_is_kept_for_health_until_a_new_job_or_a_cancel() {
        let jobs = Arc::new(Jobs::default());
        let Started::Running(j) = jobs.start("k", "t".into(), 1, |_| async {
            Outcome::Failed("read error on /dev/vg/src".into())
        }) else {
            panic!()
        };
        j.wait(Duration::from_secs(5)).await;
        jobs.take_failure("k");
        assert_eq!(
            jobs.last_failure("k").as_deref(),
            Some("read error on /dev/vg/src")
        );
        let Started::Running(again) = jobs.start("k", "t".into(), 1, |_| async { Outcome::Done })
        else {
            panic!()
        };
        assert_eq!(jobs.last_failure("k"), None, "a new copy runs");
        again.wait(Duration::from_secs(5)).await;
        let Started::Running(third) = jobs.start("k2", "t".into(), 1, |_| async {
            Outcome::Failed("x".into())
        }) else {
            panic!()
        };
        third.wait(Duration::from_secs(5)).await;
        jobs.cancel("k2").await;
        assert_eq!(jobs.last_failure("k2"), None, "the volume is being deleted");
    }
}

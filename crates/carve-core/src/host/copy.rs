//! Block copy for thick restores and clones: source device to target device,
//! in fixed chunks on a blocking thread, with its progress published for the
//! job that owns it, progress and the copy rate in the log, and a cancel flag
//! checked between chunks.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Copy unit: large enough to stream, small enough to keep memory flat and
/// cancellation prompt.
const CHUNK: usize = 4 << 20;
/// Direct IO wants buffers, offsets and lengths aligned to the device's
/// logical block size; 4 KiB covers every device in use.
const ALIGN: usize = 4096;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Copied {
    pub fn mib_per_second(&self) -> f64 {
        mib_per_second(self.bytes, self.elapsed)
    }
}

pub fn mib_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Seconds left at the rate so far, when there is a rate to go by.
pub fn eta_seconds(done: u64, total: u64, elapsed: Duration) -> Option<u64> {
    (done > 0).then(|| {
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        (total.saturating_sub(done) as f64 / rate).ceil() as u64
    })
}

/// Shared with the job that owns the copy: bytes done so far, and whether to stop.
#[derive(Debug, Default)]
pub struct Control {
    pub done: AtomicU64,
    pub cancel: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cancelled after {0} bytes")]
    Cancelled(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens `path` with O_DIRECT, or plainly where its filesystem refuses
/// O_DIRECT (EINVAL: tmpfs, in unit tests).
fn open(path: &str, write: bool, direct: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(!write).write(write);
    if direct {
        match o.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    o.open(path)
}

/// Copies the first `bytes` bytes of `src` onto `dst` and flushes them to the
/// device before returning. Both devices are opened for direct IO, so the
/// copy never fills the page cache: a 1 GiB copy through the cache costs
/// 2 GiB of it (source and target pages), charged to carve's container and
/// its memory limit. Only a length that is not a multiple of 4 KiB (never an
/// LV's) or a filesystem without O_DIRECT goes through the cache.
pub fn copy_blocking(
    src: &str,
    dst: &str,
    bytes: u64,
    label: &str,
    control: &Control,
) -> Result<Copied, CopyError> {
    let started = Instant::now();
    let aligned = bytes.is_multiple_of(ALIGN as u64);
    let mut input = open(src, false, aligned)?;
    let mut output = open(dst, true, aligned)?;
    // One chunk at an address aligned for direct IO, without unsafe code.
    let mut raw = vec![0u8; CHUNK + ALIGN];
    let at = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[at..at + CHUNK];
    let mut done = 0u64;
    let mut last_log = Instant::now();
    while done < bytes {
        if control.cancel.load(Ordering::SeqCst) {
            return Err(CopyError::Cancelled(done));
        }
        let want = ((bytes - done) as usize).min(CHUNK);
        input.read_exact(&mut buf[..want])?;
        output.write_all(&buf[..want])?;
        let before = done;
        done += want as u64;
        control.done.store(done, Ordering::SeqCst);
        if before < bytes / 2 && done >= bytes / 2 {
            crate::crash::point("copy-midway");
        }
        crate::crash::slow_copy_chunk();
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            let elapsed = started.elapsed();
            tracing::info!(
                copy = label,
                done,
                total = bytes,
                percent = done * 100 / bytes.max(1),
                mib_per_s = format!("{:.1}", mib_per_second(done, elapsed)),
                seconds_left = eta_seconds(done, bytes, elapsed),
                "block copy in progress"
            );
        }
    }
    output.sync_all()?;
    Ok(Copied {
        bytes: done,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(data: &[u8], dst_len: usize) -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, data).unwrap();
        std::fs::write(&b, vec![0xffu8; dst_len]).unwrap();
        let s = |p: std::path::PathBuf| p.display().to_string();
        (dir, s(a), s(b))
    }

    #[test]
    fn copies_exactly_the_requested_bytes() {
        let data: Vec<u8> = (0..(9 << 20)).map(|i: u32| (i % 253) as u8).collect();
        let (_dir, a, b) = files(&data, 10 << 20);
        let control = Control::default();
        let c = copy_blocking(&a, &b, 9 << 20, "t", &control).unwrap();
        assert_eq!(c.bytes, 9 << 20);
        assert_eq!(control.done.load(Ordering::SeqCst), 9 << 20);
        let out = std::fs::read(&b).unwrap();
        assert_eq!(&out[..9 << 20], &data[..]);
        assert!(
            out[9 << 20..].iter().all(|&x| x == 0xff),
            "nothing past the end is touched"
        );
    }

    #[test]
    fn a_cancelled_copy_stops_before_the_next_chunk() {
        let data = vec![7u8; 12 << 20];
        let (_dir, a, b) = files(&data, 12 << 20);
        let control = Control::default();
        control.cancel.store(true, Ordering::SeqCst);
        let e = copy_blocking(&a, &b, 12 << 20, "t", &control).unwrap_err();
        assert!(matches!(e, CopyError::Cancelled(0)), "{e}");
        assert!(std::fs::read(&b).unwrap().iter().all(|&x| x == 0xff));
    }

    #[test]
    fn eta_from_the_rate_so_far() {
        assert_eq!(eta_seconds(0, 100, Duration::from_secs(1)), None);
        assert_eq!(eta_seconds(25, 100, Duration::from_secs(1)), Some(3));
    }
}

//! Block copy for thick restores and clones: source device to target device,
//! with progress and the copy rate in the log. Runs on a blocking thread.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Copy unit: large enough to stream, small enough to keep memory flat.
const CHUNK: usize = 4 << 20;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Copied {
    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Copies the first `bytes` bytes of `src` onto `dst` and flushes them to the
/// device before returning.
pub fn copy_blocking(src: &str, dst: &str, bytes: u64, label: &str) -> std::io::Result<Copied> {
    let started = Instant::now();
    let mut input = std::fs::File::open(src)?;
    let mut output = std::fs::OpenOptions::new().write(true).open(dst)?;
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut last_log = Instant::now();
    while done < bytes {
        let want = ((bytes - done) as usize).min(CHUNK);
        input.read_exact(&mut buf[..want])?;
        output.write_all(&buf[..want])?;
        let before = done;
        done += want as u64;
        if before < bytes / 2 && done >= bytes / 2 {
            crate::crash::point("copy-midway");
        }
        if last_log.elapsed() >= PROGRESS_EVERY {
            last_log = Instant::now();
            let rate = done as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64();
            tracing::info!(
                copy = label,
                done,
                total = bytes,
                percent = done * 100 / bytes.max(1),
                mib_per_s = format!("{rate:.1}"),
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

pub async fn copy(src: String, dst: String, bytes: u64, label: String) -> std::io::Result<Copied> {
    tokio::task::spawn_blocking(move || copy_blocking(&src, &dst, bytes, &label))
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_exactly_the_requested_bytes() {
        let dir = std::env::temp_dir().join(format!("carve-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let data: Vec<u8> = (0..(9 << 20)).map(|i: u32| (i % 253) as u8).collect();
        std::fs::write(&a, &data).unwrap();
        std::fs::write(&b, vec![0xffu8; 10 << 20]).unwrap();
        let c = copy_blocking(a.to_str().unwrap(), b.to_str().unwrap(), 9 << 20, "t").unwrap();
        assert_eq!(c.bytes, 9 << 20);
        let out = std::fs::read(&b).unwrap();
        assert_eq!(&out[..9 << 20], &data[..]);
        assert!(
            out[9 << 20..].iter().all(|&x| x == 0xff),
            "nothing past the end is touched"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The kernel's mount table (/proc/self/mountinfo), the one source of truth for
//! Node idempotency: what is mounted where, from which device, read-only or not.
//! The format is small and stable (proc(5)), so it is parsed here rather than
//! through a crate that would bring all of procfs along.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// `major:minor` of the mounted filesystem's device.
    pub major: u32,
    pub minor: u32,
    /// Path inside the source filesystem that is mounted (`/` for a whole fs).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, `nosuid`, …).
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    if l.len() < 6 || r.len() < 2 {
        return None;
    }
    let (major, minor) = l[2].split_once(':')?;
    Some(Mount {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(l[3]),
        mount_point: PathBuf::from(unescape(l[4])),
        options: l[5].split(',').map(str::to_string).collect(),
        fs_type: r[0].to_string(),
        source: unescape(r[1]),
    })
}

pub fn read() -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn at(mounts: &[Mount], path: &Path) -> Option<Mount> {
    mounts.iter().rev().find(|m| m.mount_point == path).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as the UML guest's kernel printed them.
    const SAMPLE: &str = "\
22 1 0:20 / / rw,relatime - hostfs none rw,/
30 22 0:27 / /tmp rw,relatime - tmpfs tmpfs rw,size=3145728k
41 30 254:3 / /tmp/sanity/stage rw,relatime - ext4 /dev/mapper/carve--thick-cv--a rw
42 30 254:3 / /tmp/sanity/mnt/target rw,relatime - ext4 /dev/mapper/carve--thick-cv--a rw
43 30 0:5 /mapper/carve--thick-cv--b /tmp/pod\\040dir/block ro,relatime - devtmpfs devtmpfs rw
";

    #[test]
    fn parses_and_unescapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!((m[2].major, m[2].minor), (254, 3));
        assert_eq!(m[2].fs_type, "ext4");
        assert_eq!(m[4].mount_point, PathBuf::from("/tmp/pod dir/block"));
        assert_eq!(m[4].root, "/mapper/carve--thick-cv--b");
        assert!(m[4].read_only());
        assert!(!m[3].read_only());
        assert_eq!(
            at(&m, Path::new("/tmp/sanity/stage")).unwrap().source,
            "/dev/mapper/carve--thick-cv--a"
        );
        assert!(at(&m, Path::new("/tmp/sanity")).is_none());
    }

    #[test]
    fn ignores_garbage_lines() {
        assert!(parse("nonsense\n1 2 3\n").is_empty());
    }
}

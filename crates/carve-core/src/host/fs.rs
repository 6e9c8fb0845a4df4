//! Filesystem and mount commands for the Node service: pure argv builders
//! (table-tested) and one runner that executes them with a timeout and keeps
//! stderr for the error.

use std::path::Path;
use std::time::Duration;

use crate::host::exec;

/// The filesystems carve formats, mounts and grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
    Btrfs,
}

impl FsType {
    pub const ALL: [FsType; 3] = [FsType::Ext4, FsType::Xfs, FsType::Btrfs];

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }
}

impl std::str::FromStr for FsType {
    type Err = String;
    fn from_str(s: &str) -> Result<FsType, String> {
        FsType::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = FsType::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "filesystem {s:?} is not supported (use one of {})",
                    all.join(", ")
                )
            })
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options carve always adds to a filesystem mount.
pub fn default_mount_options(fs: FsType) -> Vec<String> {
    let mut o = vec!["defaults".to_string()];
    if fs == FsType::Xfs {
        // Snapshots and clones carry the origin's UUID; xfs refuses a second
        // mount of one UUID without this.
        o.push("nouuid".into());
    }
    o
}

/// Mount options that would change what a mount *is* rather than how the
/// filesystem behaves: a bind or move, a remount of something else, or mount
/// propagation. carve decides those itself.
const SEMANTIC_FLAGS: &[&str] = &[
    "bind",
    "rbind",
    "move",
    "remount",
    "shared",
    "rshared",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

/// A mount flag from a VolumeCapability must be a plain option word: no
/// separators, no spaces, nothing that could smuggle a second option or path,
/// and nothing that changes mount semantics (bind, move, remount, propagation).
pub fn check_mount_flag(flag: &str) -> Result<(), String> {
    if SEMANTIC_FLAGS.contains(&flag) || flag.starts_with("make-") {
        return Err(format!(
            "mount flag {flag:?} changes mount semantics (bind, move, remount or propagation); carve sets those itself"
        ));
    }
    let ok = !flag.is_empty()
        && flag.len() <= 256
        && flag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=.:/@+".contains(&b))
        && !flag.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("mount flag {flag:?} is not a mount option"))
    }
}

/// A path from the CO must be absolute, normalised and free of `..`, or carve
/// refuses to create or mount anything there.
pub fn check_path(what: &str, p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(format!("{what} is required"));
    }
    let path = Path::new(p);
    if !path.is_absolute() || p.contains('\0') || p.len() > 4096 {
        return Err(format!("{what} {p:?} must be an absolute path"));
    }
    // Path::components drops `.` silently, so the raw segments are checked.
    if p.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!("{what} {p:?} must not contain . or .. components"));
    }
    Ok(())
}

/// mkfs for a new, empty LV. No discard pass (the LV is new: thick LVs are
/// zeroed at the start, thin ones read as zero) and lazy inode-table init where
/// the filesystem has it, so formatting a large volume takes seconds.
pub fn mkfs(fs: FsType, device: &str) -> (String, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match fs {
        FsType::Xfs => ("mkfs.xfs".into(), s(&["-q", "-f", "-K", device])),
        FsType::Btrfs => ("mkfs.btrfs".into(), s(&["-q", "-f", "--nodiscard", device])),
        FsType::Ext4 => (
            "mkfs.ext4".into(),
            s(&[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                device,
            ]),
        ),
    }
}

/// Grows a mounted filesystem (named as the mount table names it) to its
/// device's size; `None` for a filesystem carve cannot grow.
pub fn grow(fs: &str, device: &str, mount_point: &str) -> Option<(String, Vec<String>)> {
    let fs = match fs {
        // resize2fs grows every ext generation.
        "ext3" | "ext2" => FsType::Ext4,
        other => other.parse().ok()?,
    };
    Some(grow_command(fs, device, mount_point))
}

/// The command that grows a mounted `fs` to its device's size.
pub fn grow_command(fs: FsType, device: &str, mount_point: &str) -> (String, Vec<String>) {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match fs {
        FsType::Ext4 => ("resize2fs".into(), s(&[device])),
        FsType::Xfs => ("xfs_growfs".into(), s(&[mount_point])),
        FsType::Btrfs => (
            "btrfs".into(),
            s(&["filesystem", "resize", "max", mount_point]),
        ),
    }
}

/// A command that failed: which, how, and what it said.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {detail}")]
pub struct CommandError {
    pub command: String,
    pub code: Option<i32>,
    pub detail: String,
}

/// Runs `program args` and returns its stdout, or the failure with stderr.
pub async fn run(
    program: &str,
    args: &[String],
    timeout: Duration,
) -> Result<exec::Finished, CommandError> {
    run_fed(program, args, timeout, None).await
}

/// [`run`], with `input` on the program's stdin when given (a secret that
/// must stay out of argv).
pub async fn run_fed(
    program: &str,
    args: &[String],
    timeout: Duration,
    input: Option<&[u8]>,
) -> Result<exec::Finished, CommandError> {
    let line = exec::display(program, args);
    let started = std::time::Instant::now();
    let r = match input {
        Some(bytes) => exec::run_with_input(program, args, &[], timeout, bytes).await,
        None => exec::run(program, args, &[], timeout).await,
    };
    let took = started.elapsed();
    let ok = matches!(&r, Ok(f) if f.success());
    crate::telemetry::commands().tool(program, took, ok);
    tracing::debug!(command = %line, elapsed_ms = took.as_millis() as u64, ok, "exec");
    match r {
        Ok(f) if f.success() => Ok(f),
        Ok(f) => Err(CommandError {
            command: line,
            code: f.code,
            detail: format!("exit status {:?}: {}", f.code, f.stderr.trim()),
        }),
        Err(e) => Err(CommandError {
            command: line,
            code: None,
            detail: e.to_string(),
        }),
    }
}

/// What `blkid -p` finds on a device: a filesystem type, some other signature
/// (partition table, LVM PV, RAID member…), or nothing.
#[derive(Debug, PartialEq)]
pub enum Signature {
    None,
    Filesystem(String),
    Other(String),
}

/// Classifies what libblkid found: a filesystem carve may mount, or a
/// signature it must not format over.
pub fn classify(found: crate::host::blkid::Found) -> Signature {
    use crate::host::blkid::Found;
    match found {
        Found::Nothing => Signature::None,
        Found::Ambiguous => Signature::Other("several contradicting signatures".into()),
        Found::Values {
            fs_type: Some(t), ..
        } if t.ends_with("_member") || t == "swap" => Signature::Other(t),
        Found::Values {
            fs_type: Some(t), ..
        } => Signature::Filesystem(t),
        Found::Values {
            pt_type: Some(p), ..
        } => Signature::Other(format!("partition table {p}")),
        Found::Values { .. } => Signature::Other("an unnamed signature".into()),
    }
}

/// Probes a device for signatures (in-process libblkid, off the async threads).
pub async fn probe(device: &str) -> Result<Signature, CommandError> {
    let dev = device.to_string();
    let found = tokio::task::spawn_blocking(move || crate::host::blkid::probe(&dev))
        .await
        .map_err(|e| CommandError {
            command: format!("probe {device}"),
            code: None,
            detail: e.to_string(),
        })?
        .map_err(|e| CommandError {
            command: format!("probe {device}"),
            code: None,
            detail: e.to_string(),
        })?;
    Ok(classify(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkfs_table() {
        assert_eq!(
            mkfs(FsType::Ext4, "/dev/vg/lv").1.join(" "),
            "-q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard /dev/vg/lv"
        );
        assert_eq!(
            mkfs(FsType::Xfs, "/dev/vg/lv"),
            (
                "mkfs.xfs".into(),
                vec!["-q".into(), "-f".into(), "-K".into(), "/dev/vg/lv".into()]
            )
        );
        assert_eq!(mkfs(FsType::Btrfs, "/d").0, "mkfs.btrfs");
        assert_eq!(grow("xfs", "/d", "/m").unwrap().1, vec!["/m".to_string()]);
        assert_eq!(grow("ext4", "/d", "/m").unwrap().1, vec!["/d".to_string()]);
        assert!(grow("vfat", "/d", "/m").is_none());
        assert_eq!(grow("ext3", "/d", "/m").unwrap().0, "resize2fs");
        assert_eq!(
            default_mount_options(FsType::Xfs),
            vec!["defaults", "nouuid"]
        );
        assert_eq!("xfs".parse::<FsType>(), Ok(FsType::Xfs));
        assert!("ntfs"
            .parse::<FsType>()
            .unwrap_err()
            .contains("ext4, xfs, btrfs"));
    }

    #[test]
    fn flags_and_paths() {
        for ok in [
            "noatime",
            "discard",
            "commit=60",
            "context=system_u:object_r:x:s0",
        ] {
            check_mount_flag(ok).unwrap();
        }
        for bad in [
            "",
            "a,b",
            "ro bind",
            "-o",
            "x;y",
            "a\nb",
            "bind",
            "rbind",
            "move",
            "remount",
            "shared",
            "rprivate",
            "make-rslave",
        ] {
            assert!(check_mount_flag(bad).is_err(), "{bad:?}");
        }
        check_path("target_path", "/var/lib/kubelet/pods/x/volumes/y").unwrap();
        for bad in ["", "relative/path", "/a/../b", "/a/./b"] {
            assert!(check_path("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signatures_are_classified() {
        use crate::host::blkid::Found;
        let v = |fs: Option<&str>, pt: Option<&str>| Found::Values {
            fs_type: fs.map(Into::into),
            pt_type: pt.map(Into::into),
        };
        assert_eq!(classify(Found::Nothing), Signature::None);
        assert_eq!(
            classify(v(Some("ext4"), None)),
            Signature::Filesystem("ext4".into())
        );
        assert_eq!(
            classify(v(Some("LVM2_member"), None)),
            Signature::Other("LVM2_member".into())
        );
        assert_eq!(
            classify(v(None, Some("gpt"))),
            Signature::Other("partition table gpt".into())
        );
        assert!(matches!(classify(Found::Ambiguous), Signature::Other(_)));
    }
}

//! mount(2) and umount2(2) directly (through nix, no unsafe here): no process
//! per mount, and the same semantics as mount(8) for the option words carve
//! accepts. Option words that are VFS flags become MS_* bits; the rest
//! (`nouuid`, `discard`, `commit=60`…) go to the filesystem as its data string.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::host::fs::CommandError;

/// Splits mount(8)-style option words into MS_* flags and filesystem data.
pub fn split_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let none = MsFlags::empty();
        let (set, clear) = match o.as_str() {
            "defaults" => (none, none),
            "ro" => (MsFlags::MS_RDONLY, none),
            "rw" => (none, MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, none),
            "suid" => (none, MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, none),
            "dev" => (none, MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, none),
            "exec" => (none, MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, none),
            "async" => (none, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, none),
            "noatime" => (MsFlags::MS_NOATIME, none),
            "atime" => (none, MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, none),
            "diratime" => (none, MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, none),
            "norelatime" => (none, MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, none),
            "lazytime" => (MsFlags::MS_LAZYTIME, none),
            "nolazytime" => (none, MsFlags::MS_LAZYTIME),
            _ => {
                data.push(o.clone());
                (none, none)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

fn failed(what: String) -> impl FnOnce(nix::Error) -> CommandError {
    move |e| CommandError {
        command: what,
        code: Some(e as i32),
        detail: e.desc().to_string(),
    }
}

/// Mounts a filesystem with mount(8)-style options.
pub fn mount_fs(
    device: &str,
    target: &Path,
    fs_type: &str,
    options: &[String],
) -> Result<(), CommandError> {
    let (flags, data) = split_options(options);
    let what = format!(
        "mount(2) {device} on {} as {fs_type} ({})",
        target.display(),
        options.join(",")
    );
    let data = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(Some(device), target, Some(fs_type), flags, data).map_err(failed(what))
}

/// Bind-mounts `source` (a directory or a device node) onto `target`.
pub fn bind(source: &str, target: &Path) -> Result<(), CommandError> {
    let what = format!("mount(2) --bind {source} {}", target.display());
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(failed(what))
}

/// Makes the bind mount at `target` read-only (a bind mount inherits its
/// source's flags until it is remounted on its own). A remount sets the
/// per-mount flags whole, so the ones the mount has now (nosuid, nodev,
/// noexec, the atime choice: a StorageClass's mountOptions) are read first
/// and carried over, as util-linux's mount does; otherwise the pod's
/// read-only view would lose them.
pub fn remount_bind_read_only(target: &Path) -> Result<(), CommandError> {
    let what = format!("mount(2) -o remount,bind,ro {}", target.display());
    let now = nix::sys::statvfs::statvfs(target)
        .map_err(failed(format!("statvfs {}", target.display())))?
        .flags();
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | kept_flags(now),
        None::<&str>,
    )
    .map_err(failed(what))
}

/// The per-mount flags statvfs reports, as the MS_* bits that set them.
fn kept_flags(now: nix::sys::statvfs::FsFlags) -> MsFlags {
    use nix::sys::statvfs::FsFlags as F;
    [
        (F::ST_NOSUID, MsFlags::MS_NOSUID),
        (F::ST_NODEV, MsFlags::MS_NODEV),
        (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (F::ST_SYNCHRONOUS, MsFlags::MS_SYNCHRONOUS),
        (F::ST_NOATIME, MsFlags::MS_NOATIME),
        (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (F::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| now.contains(*st))
    .fold(MsFlags::empty(), |all, (_, ms)| all | ms)
}

pub fn umount(target: &Path) -> Result<(), CommandError> {
    nix::mount::umount2(target, MntFlags::empty())
        .map_err(failed(format!("umount2(2) {}", target.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (f, d) = split_options(&v(&["defaults", "nouuid", "noatime", "ro", "commit=60"]));
        assert_eq!(f, MsFlags::MS_NOATIME | MsFlags::MS_RDONLY);
        assert_eq!(d, "nouuid,commit=60");
        let (f, d) = split_options(&v(&["ro", "rw", "nosuid"]));
        assert_eq!(f, MsFlags::MS_NOSUID, "a later rw clears an earlier ro");
        assert_eq!(d, "");
    }

    #[test]
    fn a_remount_keeps_what_statvfs_reports() {
        use nix::sys::statvfs::FsFlags as F;
        assert_eq!(
            kept_flags(F::ST_NOSUID | F::ST_NODEV | F::ST_NOEXEC | F::ST_RDONLY),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        );
        assert_eq!(kept_flags(F::ST_RELATIME), MsFlags::MS_RELATIME);
        assert_eq!(kept_flags(F::empty()), MsFlags::empty());
    }
}

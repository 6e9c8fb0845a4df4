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
/// source's flags until it is remounted on its own).
pub fn remount_bind_read_only(target: &Path) -> Result<(), CommandError> {
    let what = format!("mount(2) -o remount,bind,ro {}", target.display());
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(failed(what))
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
}

//! mount(2) and umount2(2) directly: no process per mount, and the same
//! semantics as mount(8) for the option words carve accepts. Option words that
//! are VFS flags become MS_* bits; the rest (`nouuid`, `discard`, `commit=60`…)
//! go to the filesystem as its data string.

use std::ffi::CString;
use std::path::Path;

use crate::host::fs::CommandError;

/// Splits mount(8)-style option words into MS_* flags and filesystem data.
pub fn split_options(options: &[String]) -> (libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in options {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            _ => {
                data.push(o.clone());
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

fn cstr(s: &str) -> Result<CString, std::io::Error> {
    CString::new(s)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in argument"))
}

fn call(
    what: String,
    f: impl FnOnce() -> std::io::Result<libc::c_int>,
) -> Result<(), CommandError> {
    match f() {
        Ok(0) => Ok(()),
        Ok(_) => Err(CommandError {
            command: what,
            code: std::io::Error::last_os_error().raw_os_error(),
            detail: std::io::Error::last_os_error().to_string(),
        }),
        Err(e) => Err(CommandError {
            command: what,
            code: None,
            detail: e.to_string(),
        }),
    }
}

fn mount_raw(
    source: Option<&str>,
    target: &Path,
    fs_type: Option<&str>,
    flags: libc::c_ulong,
    data: &str,
    what: String,
) -> Result<(), CommandError> {
    call(what, || {
        let src = source.map(cstr).transpose()?;
        let tgt = cstr(&target.display().to_string())?;
        let fst = fs_type.map(cstr).transpose()?;
        let dat = cstr(data)?;
        // SAFETY: every pointer is a valid NUL-terminated string or null, alive
        // for the duration of the call.
        Ok(unsafe {
            libc::mount(
                src.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                tgt.as_ptr(),
                fst.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                flags,
                if data.is_empty() {
                    std::ptr::null()
                } else {
                    dat.as_ptr() as *const libc::c_void
                },
            )
        })
    })
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
    mount_raw(Some(device), target, Some(fs_type), flags, &data, what)
}

/// Bind-mounts `source` (a directory or a device node) onto `target`.
pub fn bind(source: &str, target: &Path) -> Result<(), CommandError> {
    let what = format!("mount(2) --bind {source} {}", target.display());
    mount_raw(Some(source), target, None, libc::MS_BIND, "", what)
}

/// Makes the bind mount at `target` read-only (a bind mount inherits its
/// source's flags until it is remounted on its own).
pub fn remount_bind_read_only(target: &Path) -> Result<(), CommandError> {
    let what = format!("mount(2) -o remount,bind,ro {}", target.display());
    mount_raw(
        None,
        target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        "",
        what,
    )
}

pub fn umount(target: &Path) -> Result<(), CommandError> {
    call(format!("umount2(2) {}", target.display()), || {
        let tgt = cstr(&target.display().to_string())?;
        // SAFETY: valid NUL-terminated path.
        Ok(unsafe { libc::umount2(tgt.as_ptr(), 0) })
    })
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
        assert_eq!(f, libc::MS_NOATIME | libc::MS_RDONLY);
        assert_eq!(d, "nouuid,commit=60");
        let (f, d) = split_options(&v(&["ro", "rw", "nosuid"]));
        assert_eq!(f, libc::MS_NOSUID, "a later rw clears an earlier ro");
        assert_eq!(d, "");
    }
}

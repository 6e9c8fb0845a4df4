//! The only place carve calls C, and so the only module with `unsafe`:
//! libblkid's probing API (signature detection without spawning `blkid -p`
//! per NodeStageVolume), glibc's mallopt, and the descriptor passed to the
//! lvm shell. Every other system call goes
//! through nix's safe wrappers. Each unsafe block says why it is sound.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};

#[allow(non_camel_case_types)]
type blkid_probe = *mut c_void;

#[link(name = "blkid")]
extern "C" {
    fn blkid_new_probe_from_filename(filename: *const c_char) -> blkid_probe;
    fn blkid_free_probe(pr: blkid_probe);
    fn blkid_probe_enable_superblocks(pr: blkid_probe, enable: c_int) -> c_int;
    fn blkid_probe_set_superblocks_flags(pr: blkid_probe, flags: c_int) -> c_int;
    fn blkid_probe_enable_partitions(pr: blkid_probe, enable: c_int) -> c_int;
    fn blkid_do_safeprobe(pr: blkid_probe) -> c_int;
    fn blkid_probe_lookup_value(
        pr: blkid_probe,
        name: *const c_char,
        data: *mut *const c_char,
        len: *mut usize,
    ) -> c_int;
}

const BLKID_SUBLKS_TYPE: c_int = 1 << 5;

struct Probe(blkid_probe);

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: the pointer came from blkid_new_probe_from_filename and is freed once.
        unsafe { blkid_free_probe(self.0) }
    }
}

impl Probe {
    fn value(&self, name: &str) -> Option<String> {
        let key = CString::new(name).ok()?;
        let mut data: *const c_char = std::ptr::null();
        let mut len = 0usize;
        // SAFETY: valid probe, NUL-terminated key, valid out-pointers.
        let r = unsafe { blkid_probe_lookup_value(self.0, key.as_ptr(), &mut data, &mut len) };
        if r != 0 || data.is_null() {
            return None;
        }
        // SAFETY: libblkid returns a NUL-terminated string owned by the probe,
        // alive until the probe is freed (after this copy).
        Some(
            unsafe { CStr::from_ptr(data) }
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// What a probe found.
#[derive(Debug, PartialEq)]
pub enum Found {
    Nothing,
    /// `TYPE` (filesystem, RAID member, swap…) and/or `PTTYPE`.
    Values {
        fs_type: Option<String>,
        pt_type: Option<String>,
    },
    /// Several signatures that contradict each other.
    Ambiguous,
}

/// Probes `device` (blocking: call from spawn_blocking).
pub fn blkid_probe(device: &str) -> std::io::Result<Found> {
    let path = CString::new(device)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: path is a valid C string; a null result is handled below.
    let raw = unsafe { blkid_new_probe_from_filename(path.as_ptr()) };
    if raw.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let p = Probe(raw);
    // SAFETY: valid probe for all calls below.
    let r = unsafe {
        blkid_probe_enable_superblocks(p.0, 1);
        blkid_probe_set_superblocks_flags(p.0, BLKID_SUBLKS_TYPE);
        blkid_probe_enable_partitions(p.0, 1);
        blkid_do_safeprobe(p.0)
    };
    match r {
        0 => Ok(Found::Values {
            fs_type: p.value("TYPE"),
            pt_type: p.value("PTTYPE"),
        }),
        1 => Ok(Found::Nothing),
        -2 => Ok(Found::Ambiguous),
        _ => Err(std::io::Error::other(format!(
            "libblkid could not probe {device}"
        ))),
    }
}

/// One malloc arena: carve's few threads do little allocation, and glibc's
/// per-thread arenas would keep freed memory as idle RSS. Call before any
/// other thread starts.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only tunes the allocator; M_ARENA_MAX takes an int.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Makes the child `cmd` starts find `fd` (a close-on-exec descriptor of
/// carve's) open as descriptor `target`, and only that child: the lvm
/// shell's report pipe.
pub fn pass_fd_as(cmd: &mut tokio::process::Command, fd: c_int, target: c_int) {
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (fcntl, dup2) on descriptors it does not own;
    // dup2 leaves the copy without close-on-exec, and when `fd` already is
    // `target` the flag is cleared by hand.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

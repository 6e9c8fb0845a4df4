//! Signature probing through libblkid, in-process: the same detection as
//! `blkid -p` (superblocks and partition tables, "safe" mode that reports
//! ambiguous results instead of guessing) without spawning a process per
//! NodeStageVolume.

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

/// Probes `device` (blocking: call from spawn_blocking).
pub fn probe(device: &str) -> std::io::Result<Found> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(
        dir: &tempfile::TempDir,
        name: &str,
        write: impl FnOnce(&mut std::fs::File),
    ) -> String {
        let p = dir.path().join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        write(&mut f);
        p.display().to_string()
    }

    #[test]
    fn blank_image_has_no_signature() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            probe(&image(&dir, "blank", |_| {})).unwrap(),
            Found::Nothing
        );
    }

    #[test]
    fn finds_a_real_filesystem_and_a_partition_table() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        // A filesystem made by the real mkfs (e2fsprogs, installed by setup).
        let ext = image(&dir, "ext", |_| {});
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", &ext])
            .output()
            .expect("mkfs.ext4 runs (hack/setup.sh installs e2fsprogs)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            probe(&ext).unwrap(),
            Found::Values {
                fs_type: Some("ext4".into()),
                pt_type: None
            }
        );
        // An MBR: boot signature 0x55AA and one partition entry.
        let mbr = image(&dir, "mbr", |f| {
            f.seek(SeekFrom::Start(446)).unwrap();
            f.write_all(&[0x00, 0, 2, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 0xff, 0x3f, 0, 0])
                .unwrap();
            f.seek(SeekFrom::Start(510)).unwrap();
            f.write_all(&[0x55, 0xaa]).unwrap();
        });
        match probe(&mbr).unwrap() {
            Found::Values { pt_type, .. } => assert_eq!(pt_type.as_deref(), Some("dos")),
            other => panic!("MBR not found: {other:?}"),
        }
    }

    #[test]
    fn missing_device_is_an_error() {
        assert!(probe("/nonexistent/carve-device").is_err());
    }
}

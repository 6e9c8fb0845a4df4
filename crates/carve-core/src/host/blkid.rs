//! Signature probing through libblkid, in-process: the same detection as
//! `blkid -p` (superblocks and partition tables, "safe" mode that reports
//! ambiguous results instead of guessing) without spawning a process per
//! NodeStageVolume. The C calls are in [`super::ffi`].

pub use super::ffi::Found;

/// Probes `device` (blocking: call from spawn_blocking).
pub fn probe(device: &str) -> std::io::Result<Found> {
    super::ffi::blkid_probe(device)
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

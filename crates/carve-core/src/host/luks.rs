//! cryptsetup for encrypted volumes: format a LUKS2 header, open it as a
//! dm-crypt mapping, resize the mapping, close it, and tell what an open
//! mapping sits on.
//!
//! The passphrase reaches cryptsetup on stdin (`--key-file -`): never argv,
//! never the environment (both readable in /proc by any user), never a file.
//! [`Passphrase`] prints as `<redacted>` and is zeroed when dropped.
//!
//! Mappings are opened with `--disable-keyring`: the volume key then stays in
//! the dm-crypt table rather than in the opening process's kernel keyring,
//! so a later `cryptsetup resize` (online expansion) needs no passphrase.
//! Root on the node can read the key either way; the threat model is a disk
//! taken away, not root on a running node.

use std::time::Duration;

use crate::encryption::Luks;
use crate::host::fs::{run_fed, CommandError};

/// A volume's passphrase, as the node-stage secret gave it (every byte
/// counts, a trailing newline too, as with `cryptsetup --key-file`).
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    pub fn new(bytes: Vec<u8>) -> Passphrase {
        Passphrase(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the zeroing of memory about to be freed from being elided.
        std::hint::black_box(&self.0);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("the passphrase opens no key slot of the LUKS2 header on {device}")]
    WrongKey { device: String },
    #[error("{device} holds no valid LUKS2 header")]
    NotLuks { device: String },
    /// cryptsetup's exit 1 at luksFormat: "wrong parameters" (a cipher or
    /// key size the kernel does not offer, a PBKDF cost out of range).
    #[error("cryptsetup luksFormat refused the volume's LUKS2 settings ({settings}): {detail}")]
    Settings { settings: String, detail: String },
    #[error("the dm-crypt mapping {name} is in use (mounted or held open)")]
    Busy { name: String },
    #[error(transparent)]
    Failed(#[from] CommandError),
}

const CRYPTSETUP: &str = "cryptsetup";

/// /dev/mapper/NAME.
pub fn mapper_path(name: &str) -> String {
    format!("/dev/mapper/{name}")
}

/// Writes a new LUKS2 header on `device` with `key` in key slot 0. Callers
/// check first that the device holds no signature at all.
pub async fn format(
    luks: &Luks,
    device: &str,
    key: &Passphrase,
    timeout: Duration,
) -> Result<(), LuksError> {
    let args = luks.format_args(device);
    match run_fed(CRYPTSETUP, &args, timeout, Some(key.bytes())).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == Some(1) => Err(LuksError::Settings {
            settings: format!(
                "cipher {}, key size {} bits, pbkdf {}: the StorageClass's carve.dev/luks-* parameters",
                luks.cipher,
                luks.key_size,
                luks.pbkdf.as_str()
            ),
            detail: e.detail,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Opens the LUKS2 header on `device` as /dev/mapper/`name`.
pub async fn open(
    device: &str,
    name: &str,
    key: &Passphrase,
    timeout: Duration,
) -> Result<(), LuksError> {
    let args: Vec<String> = [
        "open",
        "--type",
        "luks2",
        "--disable-keyring",
        "--key-file",
        "-",
        device,
        name,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match run_fed(CRYPTSETUP, &args, timeout, Some(key.bytes())).await {
        Ok(_) => Ok(()),
        // cryptsetup's exit codes: 2 "no permission (bad passphrase)".
        Err(e) if e.code == Some(2) => Err(LuksError::WrongKey {
            device: device.to_string(),
        }),
        Err(e) if e.code == Some(1) && e.detail.contains("not a valid LUKS device") => {
            Err(LuksError::NotLuks {
                device: device.to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Closes /dev/mapper/`name`; one not open is closed already.
pub async fn close(name: &str, timeout: Duration) -> Result<(), LuksError> {
    let args = vec!["close".to_string(), name.to_string()];
    match run_fed(CRYPTSETUP, &args, timeout, None).await {
        Ok(_) => Ok(()),
        // 4: "Device NAME is not active."
        Err(e) if e.code == Some(4) => Ok(()),
        // 5: "Device NAME is still in use."
        Err(e) if e.code == Some(5) => Err(LuksError::Busy {
            name: name.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Grows the open mapping to its (grown) LV.
pub async fn resize(name: &str, timeout: Duration) -> Result<(), LuksError> {
    let args = vec!["resize".to_string(), name.to_string()];
    run_fed(CRYPTSETUP, &args, timeout, None).await?;
    Ok(())
}

/// Whether /dev/mapper/`name` is open (a stat; for conditions and metrics).
pub fn is_open(name: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(mapper_path(name)).is_ok_and(|m| m.file_type().is_block_device())
}

/// When a device-mapper device named `name` exists: the device numbers it
/// sits on (sysfs `slaves`), so a caller can tell that the mapping is on its
/// volume's LV before using it. Found by name in sysfs, not through
/// /dev/mapper, so a mapping whose node is missing is still found (and its
/// node remade, [`make_node`]). `None` when no such mapping exists.
pub fn backing(name: &str) -> Option<Vec<(u32, u32)>> {
    let dm = std::fs::read_dir("/sys/block").ok()?.flatten().find(|e| {
        e.file_name().to_string_lossy().starts_with("dm-")
            && std::fs::read_to_string(e.path().join("dm/name"))
                .is_ok_and(|n| n.trim_end_matches('\n') == name)
    })?;
    let entries = std::fs::read_dir(dm.path().join("slaves")).ok()?;
    Some(
        entries
            .filter_map(|e| {
                let dev = std::fs::read_to_string(e.ok()?.path().join("dev")).ok()?;
                let (a, b) = dev.trim().split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect(),
    )
}

/// Makes /dev/mapper/`name` for an existing mapping whose node is missing
/// (a /dev without udev's work, or cleaned): `dmsetup mknodes`.
pub async fn make_node(name: &str, timeout: Duration) -> Result<(), LuksError> {
    let args = vec!["mknodes".to_string(), name.to_string()];
    run_fed("dmsetup", &args, timeout, None).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passphrase_never_prints() {
        let p = Passphrase::new(b"hunter2".to_vec());
        assert_eq!(format!("{p:?}"), "Passphrase(<redacted>)");
        assert!(!format!("{:?}", Some(&p)).contains("hunter2"));
    }

    #[test]
    fn no_mapping_is_none() {
        assert_eq!(backing("carve-luks-no--such-volume"), None);
    }
}

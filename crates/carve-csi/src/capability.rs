//! Which volume capabilities carve can honour: single-node access modes only
//! (an LV lives on one node), block or mount with a supported filesystem.

use crate::csi::volume_capability::{access_mode::Mode, AccessType};
use crate::csi::VolumeCapability;
use carve_core::host::fs::FsType;

/// Why carve cannot honour a volume capability (always InvalidArgument where
/// a request carries it; ValidateVolumeCapabilities reports it as its message).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapabilityError {
    #[error("volume_capabilities must not be empty")]
    None,
    #[error("volume capability has no access type (block or mount)")]
    NoAccessType,
    #[error("volume capability has no access mode")]
    NoAccessMode,
    #[error("access mode {0} is not a known mode")]
    UnknownMode(i32),
    #[error("access mode {0} needs several nodes; a carve volume lives on one node")]
    MultiNode(&'static str),
    #[error("{0}")]
    Filesystem(String),
}

/// `Ok` if carve supports the capability, else why not.
pub fn check(cap: &VolumeCapability) -> Result<(), CapabilityError> {
    match &cap.access_type {
        None => return Err(CapabilityError::NoAccessType),
        Some(AccessType::Block(_)) => {}
        Some(AccessType::Mount(m)) => {
            if !m.fs_type.is_empty() {
                m.fs_type
                    .parse::<FsType>()
                    .map_err(CapabilityError::Filesystem)?;
            }
        }
    }
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or(CapabilityError::NoAccessMode)?
        .mode;
    match Mode::try_from(mode) {
        Ok(
            Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter,
        ) => Ok(()),
        Ok(Mode::Unknown) | Err(_) => Err(CapabilityError::UnknownMode(mode)),
        Ok(m) => Err(CapabilityError::MultiNode(m.as_str_name())),
    }
}

pub fn check_all(caps: &[VolumeCapability]) -> Result<(), CapabilityError> {
    if caps.is_empty() {
        return Err(CapabilityError::None);
    }
    caps.iter().try_for_each(check)
}

pub fn is_block(caps: &[VolumeCapability]) -> bool {
    caps.iter()
        .any(|c| matches!(c.access_type, Some(AccessType::Block(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn cap(access: AccessType, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn table() {
        let mount = |fs: &str| {
            AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            })
        };
        assert!(check(&cap(mount("ext4"), Mode::SingleNodeWriter)).is_ok());
        assert!(check(&cap(mount(""), Mode::SingleNodeMultiWriter)).is_ok());
        assert!(check(&cap(
            AccessType::Block(BlockVolume {}),
            Mode::SingleNodeReaderOnly
        ))
        .is_ok());
        assert!(check(&cap(mount("ntfs"), Mode::SingleNodeWriter)).is_err());
        assert!(check(&cap(mount("xfs"), Mode::MultiNodeMultiWriter)).is_err());
        assert!(check(&cap(mount("xfs"), Mode::Unknown)).is_err());
        assert!(check(&VolumeCapability::default()).is_err());
        assert!(check_all(&[]).is_err());
    }
}

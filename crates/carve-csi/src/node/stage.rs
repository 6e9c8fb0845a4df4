//! NodeStageVolume and NodeUnstageVolume: a filesystem volume is formatted
//! (only when libblkid finds no signature at all) and mounted at the staging
//! path; a raw block volume needs only its device. An encrypted volume's
//! dm-crypt mapping is opened first (see `crypt`) and is the device for both.
//! Unstage unmounts what is the volume's at the staging path, and nothing
//! else, then closes an encrypted volume's mapping.

use std::path::Path;

use carve_core::host::fs::{self, FsType, Signature};
use carve_core::host::mountinfo;
use carve_core::host::offload;
use carve_core::host::paths::Device;
use carve_core::lvm::LvInfo;
use carve_core::names;

use super::crypt::encryption_of;
use super::errors::{BadRequest, StageError, UnstageError};
use super::{check_cap, mounts, prepare_mount_point, remove_if_empty, required, NodeService};
use crate::csi::{self, volume_capability::AccessType};
use crate::error::{LookupError, Missing, ToolFailure};
use crate::params::VolumeContext;

type StageResult<T> = Result<T, StageError>;

/// The filesystem to stage with: the capability's, else the one recorded at
/// create (volume context, then the LV's tag), else ext4.
fn stage_fs(
    m: &csi::volume_capability::MountVolume,
    req: &csi::NodeStageVolumeRequest,
    lv: &LvInfo,
) -> Result<FsType, BadRequest> {
    if !m.fs_type.is_empty() {
        return m.fs_type.parse().map_err(|e| {
            BadRequest::Capability(crate::capability::CapabilityError::Filesystem(e))
        });
    }
    let ctx = VolumeContext::from_map(&req.volume_context).map_err(BadRequest::Context)?;
    if let Some(fs) = ctx.fs_type {
        return Ok(fs);
    }
    Ok(lv
        .tag(names::TAG_FS_TYPE)
        .and_then(|f| names::decode_tag_value(f).parse().ok())
        .unwrap_or(FsType::Ext4))
}

impl NodeService {
    pub(super) async fn stage(
        &self,
        req: csi::NodeStageVolumeRequest,
    ) -> StageResult<csi::NodeStageVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        let staging = self
            .confined("staging_target_path", &req.staging_target_path)
            .await?;
        let cap = check_cap(req.volume_capability.as_ref())?;
        let lv = self.volume(&req.volume_id).await?;
        self.check_complete(&lv, &req.volume_id)?;
        let _busy = self.guard(&lv)?;
        let luks = encryption_of(&lv, &req.volume_id)?;
        // Checked before anything is opened or written.
        let mount = match &cap.access_type {
            Some(AccessType::Mount(m)) => Some((m, stage_fs(m, &req, &lv)?)),
            _ => None,
        };
        self.ensure_active(&lv).await?;
        // An encrypted volume's data goes through its dm-crypt mapping,
        // opened here (and formatted first when the LV is blank).
        let (dev, opened) = match &luks {
            Some(l) => {
                self.open_encrypted(&req.volume_id, &lv, l, &req.secrets)
                    .await?
            }
            None => (Device::of(&lv), false),
        };
        let Some((m, fs_type)) = mount else {
            // Raw block: publish bind-mounts the device node itself.
            return Ok(csi::NodeStageVolumeResponse {});
        };
        let result = self
            .stage_filesystem(&req.volume_id, &lv, &dev, staging.as_path(), m, fs_type)
            .await;
        if result.is_err() && opened {
            // kubelet takes most failures as final and then never unstages:
            // a mapping this call opened goes again (the retry reopens it).
            let _ = self.close_encrypted(&req.volume_id, &lv).await;
        }
        result.map(|()| csi::NodeStageVolumeResponse {})
    }

    /// Formats (only a blank device) and mounts the volume's filesystem at
    /// the staging path; a restored or cloned one is grown to its device.
    async fn stage_filesystem(
        &self,
        volume_id: &str,
        lv: &LvInfo,
        dev: &Device,
        staging: &Path,
        m: &csi::volume_capability::MountVolume,
        fs_type: FsType,
    ) -> StageResult<()> {
        if dev.number.is_none() {
            return Err(StageError::NoDevice {
                device: dev.path.clone(),
                id: volume_id.to_string(),
            });
        }
        if let Some(existing) = mountinfo::at(&mounts().await?, staging) {
            if dev.is_mounted_by(&existing) && existing.fs_type == fs_type.as_str() {
                return Ok(());
            }
            return Err(StageError::StagedElse {
                path: staging.to_path_buf(),
                what: format!(
                    "{} {} from {}:{}",
                    existing.fs_type, existing.source, existing.major, existing.minor
                ),
                id: volume_id.to_string(),
                fs: fs_type.to_string(),
            });
        }
        let created: bool = prepare_mount_point::<StageError>(staging, true).await?;
        let mut result = self
            .format_and_mount(volume_id, dev, staging, fs_type, m)
            .await;
        if result.is_ok() && lv.tag(names::TAG_SOURCE).is_some() {
            result = self.grow_to_device(volume_id, dev, staging, fs_type).await;
            if result.is_err() {
                // Unstaged again, so the retry does the whole stage (an
                // existing mount would be taken as staged already).
                let p = staging.to_path_buf();
                let _ = offload(move || carve_core::host::mount::umount(&p)).await;
            }
        }
        if result.is_err() && created {
            let _ = remove_if_empty(staging).await;
        }
        result
    }

    async fn format_and_mount(
        &self,
        volume_id: &str,
        dev: &Device,
        staging: &Path,
        fs_type: FsType,
        m: &csi::volume_capability::MountVolume,
    ) -> StageResult<()> {
        let device = &dev.path;
        match fs::probe(device)
            .await
            .map_err(ToolFailure::ctx("probing for a filesystem"))?
        {
            Signature::None => {
                let (prog, args) = fs::mkfs(fs_type, device);
                tracing::info!(volume_id, fs = %fs_type, "formatting new volume");
                self.cmd(&prog, args, format!("formatting {device} as {fs_type}"))
                    .await?;
            }
            Signature::Filesystem(found) if found == fs_type.as_str() => {}
            Signature::Filesystem(found) => {
                return Err(StageError::OtherFilesystem {
                    id: volume_id.to_string(),
                    found,
                    want: fs_type.to_string(),
                })
            }
            Signature::Other(what) => {
                return Err(StageError::Signature {
                    id: volume_id.to_string(),
                    what,
                })
            }
        }
        let mut opts = fs::default_mount_options(fs_type);
        opts.extend(m.mount_flags.iter().cloned());
        let (d, p) = (device.clone(), staging.to_path_buf());
        offload(move || carve_core::host::mount::mount_fs(&d, &p, fs_type.as_str(), &opts))
            .await
            .map_err(ToolFailure::ctx(format!(
                "mounting {device} on {}",
                staging.display()
            )))?;
        match mountinfo::at(&mounts().await?, staging) {
            Some(m) if dev.is_mounted_by(&m) => Ok(()),
            _ => Err(StageError::NotMounted {
                device: device.clone(),
                path: staging.to_path_buf(),
            }),
        }
    }

    /// A restore or clone may be larger than its source, whose filesystem
    /// it holds: the filesystem is grown to the device, as mount-utils'
    /// NeedResize does for other drivers. On a filesystem already the
    /// device's size the grow command changes nothing.
    async fn grow_to_device(
        &self,
        volume_id: &str,
        dev: &Device,
        staging: &Path,
        fs_type: FsType,
    ) -> StageResult<()> {
        let mount_point = staging.display().to_string();
        let (prog, args) = fs::grow_command(fs_type, &dev.path, &mount_point);
        tracing::info!(volume_id, fs = %fs_type, "growing a restored or cloned filesystem to its volume's size");
        self.cmd(
            &prog,
            args,
            format!("growing the {fs_type} filesystem of {volume_id}"),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn unstage(
        &self,
        req: csi::NodeUnstageVolumeRequest,
    ) -> Result<csi::NodeUnstageVolumeResponse, UnstageError> {
        required("volume_id", &req.volume_id)?;
        let staging = self
            .confined("staging_target_path", &req.staging_target_path)
            .await?;
        let staging = staging.as_path();
        let mounted = mountinfo::at(&mounts().await?, staging);
        let lv = match self.volume(&req.volume_id).await {
            Ok(lv) => lv,
            // Nothing staged and no such volume: unstaged already.
            Err(LookupError::Missing(Missing::Gone { .. } | Missing::Elsewhere { .. }))
                if mounted.is_none() =>
            {
                return Ok(csi::NodeUnstageVolumeResponse {})
            }
            Err(e) => return Err(e.into()),
        };
        let _busy = self.guard(&lv)?;
        let luks = encryption_of(&lv, &req.volume_id)?;
        let dev = Self::data_device(&lv, &req.volume_id)?;
        if mounted.is_some() && !self.unmount_ours(staging, &dev).await? {
            return Err(self
                .not_at(
                    &req.volume_id,
                    staging,
                    "another filesystem is mounted there",
                )
                .into());
        }
        if luks.is_some() {
            // Closed only once nothing of it is mounted here; a raw block
            // publication still bound elsewhere keeps it busy (the CO
            // unpublishes first).
            self.close_encrypted(&req.volume_id, &lv).await?;
        }
        Ok(csi::NodeUnstageVolumeResponse {})
    }
}

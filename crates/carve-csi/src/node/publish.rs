//! NodePublishVolume and NodeUnpublishVolume: a filesystem volume is
//! bind-mounted from its staging path (then remounted read-only when asked);
//! a raw block volume's device node is bind-mounted onto a file. Access modes
//! follow CSI's second-publish table. Unpublish unmounts only what is the
//! volume's and removes only what carve made (an empty directory or file).

use std::path::Path;

use carve_core::host::paths;
use carve_core::host::{mountinfo, offload};
use carve_core::names;

use super::errors::{PublishError, UnpublishError};
use super::{
    check_cap, is_block, mounts, node_at, one_target_only, path_failure, prepare_mount_point,
    remove_if_empty, required, NodeService,
};
use crate::csi::{self, volume_capability::access_mode::Mode};
use crate::error::{LookupError, Missing, ToolFailure};

impl NodeService {
    pub(super) async fn publish(
        &self,
        req: csi::NodePublishVolumeRequest,
    ) -> Result<csi::NodePublishVolumeResponse, PublishError> {
        required("volume_id", &req.volume_id)?;
        let target = self.confined("target_path", &req.target_path).await?;
        let staging = self
            .confined("staging_target_path", &req.staging_target_path)
            .await?;
        let cap = check_cap(req.volume_capability.as_ref())?;
        let lv = self.volume(&req.volume_id).await?;
        self.check_complete(&lv, &req.volume_id)?;
        let _busy = self.guard(&lv)?;
        let read_only = req.readonly
            || cap.access_mode.as_ref().map(|m| m.mode) == Some(Mode::SingleNodeReaderOnly as i32);
        let (target, staging) = (target.as_path(), staging.as_path());
        let block = is_block(cap);
        if block {
            self.ensure_active(&lv).await?;
        }
        let dev = Self::data_device(&lv, &req.volume_id)?;
        // An encrypted raw block volume is its mapping, which only stage opens.
        if block && dev.number.is_none() && lv.tag(names::TAG_ENCRYPTION).is_some() {
            return Err(PublishError::NotStaged {
                id: req.volume_id.clone(),
                path: staging.to_path_buf(),
            });
        }
        let all = mounts().await?;
        let staged = if block {
            None
        } else {
            let staged = mountinfo::at(&all, staging).filter(|m| dev.is_mounted_by(m));
            Some(staged.ok_or_else(|| PublishError::NotStaged {
                id: req.volume_id.clone(),
                path: staging.to_path_buf(),
            })?)
        };
        // The same target again: idempotent if it is this volume as asked.
        if let Some(existing) = mountinfo::at(&all, target) {
            let same = match &staged {
                Some(s) => (existing.major, existing.minor) == (s.major, s.minor),
                None => node_at(&dev, target).await,
            };
            let ro = existing.read_only();
            if same && ro == read_only {
                return Ok(csi::NodePublishVolumeResponse {});
            }
            return Err(PublishError::TargetTaken {
                path: target.to_path_buf(),
                whose: if same {
                    "for this volume"
                } else {
                    "for another volume"
                },
                ro,
                id: req.volume_id,
                want_ro: read_only,
            });
        }
        if let Some(mode) = one_target_only(cap) {
            let others = paths::other_publications(&all, &dev, staged.as_ref(), &[staging, target]);
            if let Some(other) = others.into_iter().next() {
                return Err(PublishError::OneTargetOnly {
                    id: req.volume_id,
                    other,
                    mode: mode.as_str_name(),
                });
            }
        }
        let created: bool = prepare_mount_point::<PublishError>(target, !block).await?;
        let source = if block {
            dev.path.clone()
        } else {
            req.staging_target_path.clone()
        };
        let t = target.to_path_buf();
        let result = offload(move || {
            let result = bind(&source, &t, read_only);
            if result.is_err() && created {
                let _ = paths::remove_if_empty(&t);
            }
            result
        })
        .await;
        result?;
        Ok(csi::NodePublishVolumeResponse {})
    }

    pub(super) async fn unpublish(
        &self,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> Result<csi::NodeUnpublishVolumeResponse, UnpublishError> {
        required("volume_id", &req.volume_id)?;
        let target = self.confined("target_path", &req.target_path).await?;
        let target = target.as_path();
        let mounted = mountinfo::at(&mounts().await?, target).is_some();
        let lv = match self.volume(&req.volume_id).await {
            Ok(lv) => Some(lv),
            // No such volume and nothing mounted: only a leftover path may go.
            Err(LookupError::Missing(Missing::Gone { .. } | Missing::Elsewhere { .. }))
                if !mounted =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(lv) = &lv {
            let _busy = self.guard(lv)?;
            let dev = Self::data_device(lv, &req.volume_id)?;
            if mounted && !self.unmount_ours(target, &dev).await? {
                return Err(self
                    .not_at(&req.volume_id, target, "something else is mounted there")
                    .into());
            }
        }
        // Only what carve made is removed: an empty directory or file.
        let removed = remove_if_empty(target)
            .await
            .map_err(path_failure(format!("removing {}", target.display())))?;
        if !removed {
            return Err(self
                .not_at(
                    &req.volume_id,
                    target,
                    "the path holds data that is not this volume's",
                )
                .into());
        }
        Ok(csi::NodeUnpublishVolumeResponse {})
    }
}

/// Bind-mounts `source` onto `target`, read-only when asked (a bind mount
/// inherits its source's flags, so read-only needs a remount of the new mount
/// point alone; if that fails, the bind goes again).
fn bind(source: &str, target: &Path, read_only: bool) -> Result<(), ToolFailure> {
    carve_core::host::mount::bind(source, target).map_err(ToolFailure::ctx(format!(
        "bind-mounting {source} on {}",
        target.display()
    )))?;
    if read_only {
        carve_core::host::mount::remount_bind_read_only(target).map_err(|e| {
            let _ = carve_core::host::mount::umount(target);
            ToolFailure::ctx(format!("remounting {} read-only", target.display()))(e)
        })?;
    }
    Ok(())
}

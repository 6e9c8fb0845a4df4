//! NodeGetVolumeStats and NodeExpandVolume: what a published or staged
//! volume holds, and growing it in place. Both act on a path only when the
//! kernel shows the volume there.

use carve_core::host::mountinfo;
use carve_core::host::paths;
use carve_core::host::{fs, offload};
use carve_core::names;

use super::errors::{NodeExpandError, StatsError};
use super::{check_cap, mounts, node_at, path_failure, required, NodeService};
use crate::csi;

impl NodeService {
    pub(super) async fn stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> Result<csi::NodeGetVolumeStatsResponse, StatsError> {
        required("volume_id", &req.volume_id)?;
        required("volume_path", &req.volume_path)?;
        // A fresh report: health should be current.
        let lv = self.controller.volume_lv(&req.volume_id, true).await?;
        let view = self.controller.view()?;
        let path = self.volume_path(&req.volume_id, &req.volume_path).await?;
        let path = path.as_path();
        let dev = Self::data_device(&lv, &req.volume_id)?;
        let condition = self.controller.condition(&lv, &view.lvm);
        use csi::volume_usage::Unit;
        let (p, d) = (path.to_path_buf(), dev.clone());
        let (block_node, node_here) = offload(move || {
            let block = std::fs::metadata(&p).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_block_device()
            });
            (block, block && d.is_node_at(&p))
        })
        .await;
        // A raw block target is the LV's node; an inactive LV has no device
        // number to compare, and then its abnormal condition is what is reported.
        let usage = if block_node && (node_here || dev.number.is_none()) {
            // An encrypted volume's mapping is its LV less the LUKS2 header.
            let total = match dev.number {
                Some(n) if lv.tag(names::TAG_ENCRYPTION).is_some() => {
                    offload(move || paths::block_size(n))
                        .await
                        .unwrap_or(lv.size)
                }
                _ => lv.size,
            };
            vec![csi::VolumeUsage {
                available: 0,
                total: total as i64,
                used: 0,
                unit: Unit::Bytes as i32,
            }]
        } else if paths::holds_volume(&mounts().await?, path, &dev) == Some(true) {
            let p = path.to_path_buf();
            let u = offload(move || paths::fs_usage(&p))
                .await
                .map_err(path_failure(format!("statvfs {}", path.display())))?;
            vec![
                csi::VolumeUsage {
                    available: u.available_bytes as i64,
                    total: u.total_bytes as i64,
                    used: u.used_bytes as i64,
                    unit: Unit::Bytes as i32,
                },
                csi::VolumeUsage {
                    available: u.free_inodes as i64,
                    total: u.total_inodes as i64,
                    used: u.used_inodes as i64,
                    unit: Unit::Inodes as i32,
                },
            ]
        } else {
            return Err(self
                .not_at(&req.volume_id, path, "it is not mounted there")
                .into());
        };
        Ok(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition),
        })
    }

    pub(super) async fn expand(
        &self,
        req: csi::NodeExpandVolumeRequest,
    ) -> Result<csi::NodeExpandVolumeResponse, NodeExpandError> {
        required("volume_id", &req.volume_id)?;
        required("volume_path", &req.volume_path)?;
        if let Some(c) = &req.volume_capability {
            check_cap(Some(c))?;
        }
        let lv = self.volume(&req.volume_id).await?;
        let path = self.volume_path(&req.volume_id, &req.volume_path).await?;
        let path = path.as_path();
        let dev = Self::data_device(&lv, &req.volume_id)?;
        let mount = mountinfo::at(&mounts().await?, path).filter(|m| dev.is_mounted_by(m));
        if mount.is_none() && !node_at(&dev, path).await {
            return Err(self
                .not_at(&req.volume_id, path, "it is not published there")
                .into());
        }
        // Grow the LV first (a no-op when the controller already did), with the
        // controller's own checks for size, class and capacity.
        let mut size = lv.size;
        if let Some(range) = &req.capacity_range {
            let r = self
                .controller
                .expand(csi::ControllerExpandVolumeRequest {
                    volume_id: req.volume_id.clone(),
                    capacity_range: Some(*range),
                    volume_capability: req.volume_capability.clone(),
                    ..Default::default()
                })
                .await?;
            size = r.capacity_bytes as u64;
        }
        if lv.tag(names::TAG_ENCRYPTION).is_some() {
            // The mapping first: the filesystem grows to the mapping's size.
            let _busy = self.guard(&lv)?;
            self.resize_encrypted(&req.volume_id, &lv).await?;
        }
        if let Some(mount) = mount {
            let _busy = self.guard(&lv)?;
            let Some((prog, args)) = fs::grow(&mount.fs_type, &dev.path, &req.volume_path) else {
                return Err(NodeExpandError::CannotGrow(mount.fs_type));
            };
            tracing::info!(volume_id = %req.volume_id, fs = %mount.fs_type, size, "growing filesystem online");
            self.cmd(
                &prog,
                args,
                format!(
                    "growing the {} filesystem of {}",
                    mount.fs_type, req.volume_id
                ),
            )
            .await?;
        }
        Ok(csi::NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }
}

//! CSI Node: makes a carve volume usable by a pod on this node. Stage formats
//! (only a device with no signature) and mounts; publish bind-mounts; expand
//! grows LV and filesystem online; stats and health come from statvfs and LVM.
//! Idempotency is judged from the kernel's mount table, never from memory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::capability;
use crate::controller::{ControllerService, CTX_FS_TYPE, TOPOLOGY_KEY};
use crate::csi::volume_capability::{access_mode::Mode, AccessType};
use crate::csi::{self, node_server::Node};
use crate::error::{logged, CsiError, CsiResult};
use crate::fs::{self, Signature};
use crate::lvm::LvInfo;
use crate::mountinfo;

pub struct NodeService {
    pub node_id: String,
    pub max_volumes: i64,
    pub controller: Arc<ControllerService>,
    pub timeout: Duration,
}

/// (major, minor) of a device number, as glibc's gnu_dev_major/minor.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn device_number(path: &str) -> CsiResult<(u32, u32)> {
    let m = std::fs::metadata(path).map_err(|e| {
        CsiError::FailedPrecondition(format!("device {path} is not available: {e}"))
    })?;
    Ok(split_dev(m.rdev()))
}

/// Whether a mount is of the block device `dev`. btrfs reports an anonymous
/// device number in mountinfo, so the mount's source path is checked too.
fn mount_is_device(m: &mountinfo::Mount, dev: (u32, u32)) -> bool {
    (m.major, m.minor) == dev
        || std::fs::metadata(&m.source)
            .map(|md| md.file_type().is_block_device() && split_dev(md.rdev()) == dev)
            .unwrap_or(false)
}

fn mounts() -> CsiResult<Vec<mountinfo::Mount>> {
    mountinfo::read()
        .map_err(|e| CsiError::Unavailable(format!("cannot read /proc/self/mountinfo: {e}")))
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> CsiError {
    move |e| CsiError::FailedPrecondition(format!("{what}: {e}"))
}

fn required<'a>(what: &str, v: &'a str) -> CsiResult<&'a str> {
    if v.is_empty() {
        Err(CsiError::InvalidArgument(format!("{what} is required")))
    } else {
        Ok(v)
    }
}

fn check_path(what: &str, p: &str) -> CsiResult<()> {
    fs::check_path(what, p).map_err(CsiError::InvalidArgument)
}

/// Validates a capability and its mount flags; returns it.
fn check_cap(cap: Option<&csi::VolumeCapability>) -> CsiResult<&csi::VolumeCapability> {
    let cap =
        cap.ok_or_else(|| CsiError::InvalidArgument("volume_capability is required".into()))?;
    capability::check(cap).map_err(CsiError::InvalidArgument)?;
    if let Some(AccessType::Mount(m)) = &cap.access_type {
        for f in &m.mount_flags {
            fs::check_mount_flag(f).map_err(CsiError::InvalidArgument)?;
        }
    }
    Ok(cap)
}

fn is_block(cap: &csi::VolumeCapability) -> bool {
    matches!(cap.access_type, Some(AccessType::Block(_)))
}

fn device_path(lv: &LvInfo) -> String {
    format!("/dev/{}/{}", lv.vg, lv.name)
}

impl NodeService {
    async fn cmd(&self, program: &str, args: Vec<String>, context: String) -> CsiResult<()> {
        fs::run(program, &args, self.timeout)
            .await
            .map(drop)
            .map_err(CsiError::command(context))
    }

    /// The carve volume behind `volume_id`, or NotFound. Served from the
    /// cached view when it knows the volume; [`Self::ensure_active`] then checks
    /// the device node itself.
    async fn volume(&self, volume_id: &str) -> CsiResult<LvInfo> {
        self.controller.lookup_cached(volume_id).await
    }

    fn guard(&self, lv: &LvInfo) -> CsiResult<crate::inflight::Guard> {
        self.controller
            .inflight
            .try_acquire(&lv.name)
            .ok_or_else(|| {
                CsiError::Aborted(format!(
                    "an operation on volume {}/{} is already in progress",
                    lv.vg, lv.name
                ))
            })
    }

    /// Makes sure the LV's device node exists, activating the LV if needed.
    /// The device node, not a possibly cached lv_attr, is the test.
    async fn ensure_active(&self, lv: &LvInfo) -> CsiResult<()> {
        if Path::new(&device_path(lv)).exists() {
            return Ok(());
        }
        tracing::info!(lv = %format!("{}/{}", lv.vg, lv.name), "activating LV");
        let _vg = self.controller.lvm.lock_vg(&lv.vg).await;
        self.controller
            .lvm
            .activate(&lv.vg, &lv.name)
            .await
            .map_err(CsiError::lvm(format!("activating {}/{}", lv.vg, lv.name)))?;
        self.controller.state.apply(|_| {});
        Ok(())
    }

    async fn stage(
        &self,
        req: csi::NodeStageVolumeRequest,
    ) -> CsiResult<csi::NodeStageVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("staging_target_path", &req.staging_target_path)?;
        let cap = check_cap(req.volume_capability.as_ref())?;
        let lv = self.volume(&req.volume_id).await?;
        let _g = self.guard(&lv)?;
        self.ensure_active(&lv).await?;
        if is_block(cap) {
            // Raw block: publish bind-mounts the device node itself.
            return Ok(csi::NodeStageVolumeResponse {});
        }
        let Some(AccessType::Mount(m)) = &cap.access_type else {
            unreachable!("checked above")
        };
        let fs_type = [
            m.fs_type.as_str(),
            req.volume_context
                .get(CTX_FS_TYPE)
                .map(String::as_str)
                .unwrap_or(""),
        ]
        .into_iter()
        .find(|f| !f.is_empty())
        .unwrap_or("ext4")
        .to_string();
        let device = device_path(&lv);
        let dev = device_number(&device)?;
        let staging = Path::new(&req.staging_target_path);
        std::fs::create_dir_all(staging)
            .map_err(io_err(format!("creating {}", staging.display())))?;
        if let Some(existing) = mountinfo::at(&mounts()?, staging) {
            if mount_is_device(&existing, dev) && existing.fs_type == fs_type {
                return Ok(csi::NodeStageVolumeResponse {});
            }
            return Err(CsiError::AlreadyExists(format!(
                "{} is already mounted ({} {} from {}), not volume {} as {fs_type}",
                staging.display(),
                existing.fs_type,
                existing.source,
                format_args!("{}:{}", existing.major, existing.minor),
                req.volume_id
            )));
        }
        match fs::probe(&device).await.map_err(CsiError::command("probing for a filesystem"))? {
            Signature::None => {
                let (prog, args) = fs::mkfs(&fs_type, &device);
                tracing::info!(volume_id = %req.volume_id, fs = %fs_type, "formatting new volume");
                self.cmd(&prog, args, format!("formatting {device} as {fs_type}")).await?;
            }
            Signature::Filesystem(found) if found == fs_type => {}
            Signature::Filesystem(found) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} holds a {found} filesystem, not {fs_type}; carve never reformats existing data",
                    req.volume_id
                )))
            }
            Signature::Other(what) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} carries a {what} signature; carve will not format over it",
                    req.volume_id
                )))
            }
        }
        let mut opts = fs::default_mount_options(&fs_type);
        opts.extend(m.mount_flags.iter().cloned());
        crate::sysmount::mount_fs(&device, staging, &fs_type, &opts).map_err(CsiError::command(
            format!("mounting {device} on {}", staging.display()),
        ))?;
        match mountinfo::at(&mounts()?, staging) {
            Some(m) if mount_is_device(&m, dev) => Ok(csi::NodeStageVolumeResponse {}),
            _ => Err(CsiError::FailedPrecondition(format!(
                "mount of {device} on {} reported success but the mount table does not show it",
                staging.display()
            ))),
        }
    }

    async fn unmount_all(&self, path: &Path) -> CsiResult<()> {
        // Stacked mounts (a retried publish by an older kubelet) are all removed.
        for _ in 0..8 {
            if mountinfo::at(&mounts()?, path).is_none() {
                return Ok(());
            }
            crate::sysmount::umount(path)
                .map_err(CsiError::command(format!("unmounting {}", path.display())))?;
        }
        Err(CsiError::FailedPrecondition(format!(
            "{} is still mounted after 8 unmounts",
            path.display()
        )))
    }

    async fn unstage(
        &self,
        req: csi::NodeUnstageVolumeRequest,
    ) -> CsiResult<csi::NodeUnstageVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("staging_target_path", &req.staging_target_path)?;
        let key = req
            .volume_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let _g = self.controller.inflight.try_acquire(&key).ok_or_else(|| {
            CsiError::Aborted(format!(
                "an operation on volume {} is already in progress",
                req.volume_id
            ))
        })?;
        self.unmount_all(Path::new(&req.staging_target_path))
            .await?;
        Ok(csi::NodeUnstageVolumeResponse {})
    }

    async fn publish(
        &self,
        req: csi::NodePublishVolumeRequest,
    ) -> CsiResult<csi::NodePublishVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("target_path", &req.target_path)?;
        check_path("staging_target_path", &req.staging_target_path)?;
        let cap = check_cap(req.volume_capability.as_ref())?;
        let lv = self.volume(&req.volume_id).await?;
        let _g = self.guard(&lv)?;
        let read_only = req.readonly
            || cap.access_mode.as_ref().map(|m| m.mode) == Some(Mode::SingleNodeReaderOnly as i32);
        let target = Path::new(&req.target_path);
        let all = mounts()?;
        let source = if is_block(cap) {
            self.ensure_active(&lv).await?;
            let device = device_path(&lv);
            let dev = device_number(&device)?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            if mountinfo::at(&all, target).is_some() {
                let same = std::fs::metadata(target)
                    .map(|m| split_dev(m.rdev()) == dev)
                    .unwrap_or(false);
                return self.already(target, same, read_only, &all, &req.volume_id);
            }
            if !target.exists() {
                std::fs::File::create(target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
            }
            device
        } else {
            let staging = Path::new(&req.staging_target_path);
            let staged = mountinfo::at(&all, staging).ok_or_else(|| {
                CsiError::FailedPrecondition(format!(
                    "volume {} is not staged at {}: call NodeStageVolume first",
                    req.volume_id,
                    staging.display()
                ))
            })?;
            if let Some(existing) = mountinfo::at(&all, target) {
                let same = (existing.major, existing.minor) == (staged.major, staged.minor);
                return self.already(target, same, read_only, &all, &req.volume_id);
            }
            std::fs::create_dir_all(target)
                .map_err(io_err(format!("creating {}", target.display())))?;
            req.staging_target_path.clone()
        };
        crate::sysmount::bind(&source, target).map_err(CsiError::command(format!(
            "bind-mounting {source} on {}",
            target.display()
        )))?;
        if read_only {
            // A bind mount inherits the source's flags; read-only needs a remount
            // of the new mount point alone.
            crate::sysmount::remount_bind_read_only(target).map_err(CsiError::command(format!(
                "remounting {} read-only",
                target.display()
            )))?;
        }
        Ok(csi::NodePublishVolumeResponse {})
    }

    /// The target is mounted already: fine if it is this volume with the same
    /// read-only flag, AlreadyExists otherwise.
    fn already(
        &self,
        target: &Path,
        same_volume: bool,
        read_only: bool,
        all: &[mountinfo::Mount],
        volume_id: &str,
    ) -> CsiResult<csi::NodePublishVolumeResponse> {
        let ro = mountinfo::at(all, target).is_some_and(|m| m.read_only());
        if same_volume && ro == read_only {
            Ok(csi::NodePublishVolumeResponse {})
        } else {
            Err(CsiError::AlreadyExists(format!(
                "{} is already published {} (read-only: {ro}); volume {volume_id} was asked with read-only: {read_only}",
                target.display(),
                if same_volume { "for this volume" } else { "for another volume" },
            )))
        }
    }

    async fn unpublish(
        &self,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> CsiResult<csi::NodeUnpublishVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("target_path", &req.target_path)?;
        let target = Path::new(&req.target_path);
        self.unmount_all(target).await?;
        match std::fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(target),
            Ok(_) => std::fs::remove_file(target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(io_err(format!("removing {}", target.display())))?;
        Ok(csi::NodeUnpublishVolumeResponse {})
    }

    async fn stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> CsiResult<csi::NodeGetVolumeStatsResponse> {
        required("volume_id", &req.volume_id)?;
        required("volume_path", &req.volume_path)?;
        let (_, lv, view) = self.controller.lookup(&req.volume_id).await?;
        let path = Path::new(&req.volume_path);
        let meta = std::fs::metadata(path).map_err(|e| {
            CsiError::NotFound(format!(
                "volume path {} of volume {}: {e}",
                path.display(),
                req.volume_id
            ))
        })?;
        let mut condition = crate::health::condition(&lv, &view.lvm);
        use csi::volume_usage::Unit;
        let usage = if meta.file_type().is_block_device() || !meta.is_dir() {
            vec![csi::VolumeUsage {
                available: 0,
                total: lv.size as i64,
                used: 0,
                unit: Unit::Bytes as i32,
            }]
        } else {
            if mountinfo::at(&mounts()?, path).is_none() && !condition.abnormal {
                condition = csi::VolumeCondition {
                    abnormal: true,
                    message: format!(
                        "{} is not a mount point: the volume is not mounted there",
                        path.display()
                    ),
                };
            }
            let st = statvfs(path).map_err(io_err(format!("statvfs {}", path.display())))?;
            let f = st.f_frsize as i64;
            vec![
                csi::VolumeUsage {
                    available: st.f_bavail as i64 * f,
                    total: st.f_blocks as i64 * f,
                    used: (st.f_blocks - st.f_bfree) as i64 * f,
                    unit: Unit::Bytes as i32,
                },
                csi::VolumeUsage {
                    available: st.f_ffree as i64,
                    total: st.f_files as i64,
                    used: (st.f_files - st.f_ffree) as i64,
                    unit: Unit::Inodes as i32,
                },
            ]
        };
        Ok(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition),
        })
    }

    async fn expand(
        &self,
        req: csi::NodeExpandVolumeRequest,
    ) -> CsiResult<csi::NodeExpandVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        required("volume_path", &req.volume_path)?;
        if let Some(c) = &req.volume_capability {
            check_cap(Some(c))?;
        }
        let lv = self.volume(&req.volume_id).await?;
        let path = Path::new(&req.volume_path);
        if !path.exists() {
            return Err(CsiError::NotFound(format!(
                "volume path {} does not exist",
                path.display()
            )));
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
        let block = req.volume_capability.as_ref().is_some_and(is_block)
            || std::fs::metadata(path)
                .map(|m| !m.is_dir())
                .unwrap_or(false);
        if !block {
            let _g = self.guard(&lv)?;
            let mount = mountinfo::at(&mounts()?, path).ok_or_else(|| {
                CsiError::FailedPrecondition(format!(
                    "{} is not a mount point; cannot grow its filesystem",
                    path.display()
                ))
            })?;
            let device = device_path(&lv);
            match fs::grow(&mount.fs_type, &device, &req.volume_path) {
                Some((prog, args)) => {
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
                None => {
                    return Err(CsiError::FailedPrecondition(format!(
                        "carve cannot grow a {} filesystem",
                        mount.fs_type
                    )))
                }
            }
        }
        Ok(csi::NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c is a valid C string and st a valid out-pointer for statvfs.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled st.
    Ok(unsafe { st.assume_init() })
}

use std::os::unix::fs::FileTypeExt;

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        logged("NodeStageVolume", self.stage(r.into_inner())).await
    }

    async fn node_unstage_volume(
        &self,
        r: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        logged("NodeUnstageVolume", self.unstage(r.into_inner())).await
    }

    async fn node_publish_volume(
        &self,
        r: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        logged("NodePublishVolume", self.publish(r.into_inner())).await
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        logged("NodeUnpublishVolume", self.unpublish(r.into_inner())).await
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        logged("NodeGetVolumeStats", self.stats(r.into_inner())).await
    }

    async fn node_expand_volume(
        &self,
        r: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        logged("NodeExpandVolume", self.expand(r.into_inner())).await
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{rpc::Type, Rpc, Type as Cap};
        let caps = [
            Type::StageUnstageVolume,
            Type::GetVolumeStats,
            Type::ExpandVolume,
            Type::VolumeCondition,
            Type::SingleNodeMultiWriter,
        ];
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: caps
                .iter()
                .map(|t| csi::NodeServiceCapability {
                    r#type: Some(Cap::Rpc(Rpc { r#type: *t as i32 })),
                })
                .collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(csi::Topology {
                segments: [(TOPOLOGY_KEY.to_string(), self.node_id.clone())].into(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_like_glibc() {
        // 254:3 (device-mapper) and 259:65536 (large minor).
        assert_eq!(split_dev((254 << 8) | 3), (254, 3));
        let (major, minor) = (259u64, 65536u64);
        let dev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(split_dev(dev), (259, 65536));
    }
}

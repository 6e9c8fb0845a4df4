//! CSI Node: makes a carve volume usable by a pod on this node. Stage formats
//! (only a device with no signature) and mounts; publish bind-mounts; expand
//! grows LV and filesystem online; stats and health come from statvfs and LVM.
//!
//! The node service acts only on what is the volume's own: it mounts only onto
//! an empty directory or a path it creates, and unmounts, removes, measures or
//! grows a path only when the kernel shows that volume there (`node_paths`).
//! Idempotency is judged from the kernel's mount table, never from memory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::capability;
use crate::controller::{ControllerService, TOPOLOGY_KEY};
use crate::csi::volume_capability::{access_mode::Mode, AccessType};
use crate::csi::{self, node_server::Node};
use crate::error::{detached_blocking, CsiError, CsiResult};
use crate::params::VolumeContext;
use carve_core::host::fs::FsType;
use carve_core::host::fs::{self, Signature};
use carve_core::host::mountinfo;
use carve_core::host::paths::{self as paths, Device, Spot};
use carve_core::lvm::LvInfo;
use carve_core::names;

#[derive(Clone)]
pub struct NodeService {
    pub node_id: String,
    pub max_volumes: i64,
    pub controller: Arc<ControllerService>,
    pub timeout: Duration,
}

fn mounts() -> CsiResult<Vec<mountinfo::Mount>> {
    paths::mounts()
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

/// Access modes under which a volume may be published at one target only
/// (CSI's second-NodePublishVolume table, with SINGLE_NODE_MULTI_WRITER
/// advertised): all single-node modes but SINGLE_NODE_MULTI_WRITER.
fn one_target_only(cap: &csi::VolumeCapability) -> Option<Mode> {
    let mode = Mode::try_from(cap.access_mode.as_ref()?.mode).ok()?;
    match mode {
        Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly | Mode::SingleNodeSingleWriter => {
            Some(mode)
        }
        _ => None,
    }
}

/// Refuses to mount onto anything but an empty directory (or file, for a
/// raw block target) or a path carve creates; returns whether carve created it.
fn prepare_mount_point(path: &Path, dir: bool) -> CsiResult<bool> {
    match paths::inspect(path).map_err(io_err(format!("inspecting {}", path.display())))? {
        Spot::Missing => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            if dir {
                std::fs::create_dir(path)
            } else {
                std::fs::File::create(path).map(drop)
            }
            .map_err(io_err(format!("creating {}", path.display())))?;
            Ok(true)
        }
        Spot::Empty => {
            let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
            if is_dir != dir {
                return Err(CsiError::FailedPrecondition(format!(
                    "{} is {}; a {} volume needs {}",
                    path.display(),
                    if is_dir { "a directory" } else { "a file" },
                    if dir { "filesystem" } else { "raw block" },
                    if dir { "a directory" } else { "a file" }
                )));
            }
            Ok(false)
        }
        Spot::Occupied(what) => Err(CsiError::FailedPrecondition(format!(
            "{} is {what}; carve mounts only onto an empty directory or a path it creates",
            path.display()
        ))),
    }
}

impl NodeService {
    async fn cmd(&self, program: &str, args: Vec<String>, context: String) -> CsiResult<()> {
        fs::run(program, &args, self.timeout)
            .await
            .map(drop)
            .map_err(CsiError::command(context))
    }

    /// The carve volume behind `volume_id`, or NotFound. Served from the
    /// cached view when it knows the volume; callers check the device itself.
    async fn volume(&self, volume_id: &str) -> CsiResult<LvInfo> {
        self.controller.volume_lv(volume_id, false).await
    }

    fn guard(&self, lv: &LvInfo) -> CsiResult<carve_core::engine::inflight::Guard> {
        self.controller
            .guard(&format!("volume {}/{}", lv.vg, lv.name), &lv.name)
    }

    /// A volume still being made from its source is never staged or
    /// published: its data is not whole yet.
    fn check_complete(&self, lv: &LvInfo, volume_id: &str) -> CsiResult<()> {
        if lv.tag(names::TAG_INCOMPLETE).is_none() {
            return Ok(());
        }
        let key = ControllerService::job_key(&lv.vg, &lv.name);
        Err(match self.controller.jobs.get(&key) {
            Some(job) => CsiError::Aborted(format!(
                "volume {volume_id} is still being filled from its source ({}); it can be used once CreateVolume has succeeded",
                job.progress()
            )),
            None => CsiError::FailedPrecondition(format!(
                "volume {volume_id} is not whole yet: CreateVolume has not finished making it from its source"
            )),
        })
    }

    /// Makes sure the LV's device node exists, activating the LV if needed.
    /// The device node, not a possibly cached lv_attr, is the test.
    async fn ensure_active(&self, lv: &LvInfo) -> CsiResult<()> {
        if Path::new(&paths::device_path(lv)).exists() {
            return Ok(());
        }
        tracing::info!(lv = %format!("{}/{}", lv.vg, lv.name), "activating LV");
        self.controller
            .lvm
            .lock_vg(&lv.vg)
            .await
            .ensure_device(&lv.name)
            .await
            .map_err(CsiError::lvm(format!("activating {}/{}", lv.vg, lv.name)))?;
        self.controller.state.poke();
        Ok(())
    }

    /// The filesystem to stage with: the capability's, else the one recorded at
    /// create (volume context, then the LV's tag), else ext4.
    fn fs_type(
        m: &csi::volume_capability::MountVolume,
        req: &csi::NodeStageVolumeRequest,
        lv: &LvInfo,
    ) -> CsiResult<FsType> {
        if !m.fs_type.is_empty() {
            return m.fs_type.parse().map_err(CsiError::InvalidArgument);
        }
        let ctx =
            VolumeContext::from_map(&req.volume_context).map_err(CsiError::InvalidArgument)?;
        if let Some(fs) = ctx.fs_type {
            return Ok(fs);
        }
        Ok(lv
            .tag(names::TAG_FS_TYPE)
            .and_then(|f| names::decode_tag_value(f).parse().ok())
            .unwrap_or(FsType::Ext4))
    }

    async fn stage(
        &self,
        req: csi::NodeStageVolumeRequest,
    ) -> CsiResult<csi::NodeStageVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("staging_target_path", &req.staging_target_path)?;
        let cap = check_cap(req.volume_capability.as_ref())?;
        let lv = self.volume(&req.volume_id).await?;
        self.check_complete(&lv, &req.volume_id)?;
        let _g = self.guard(&lv)?;
        self.ensure_active(&lv).await?;
        let Some(AccessType::Mount(m)) = &cap.access_type else {
            // Raw block: publish bind-mounts the device node itself.
            return Ok(csi::NodeStageVolumeResponse {});
        };
        let fs_type = Self::fs_type(m, &req, &lv)?;
        let dev = Device::of(&lv);
        if dev.number.is_none() {
            return Err(CsiError::FailedPrecondition(format!(
                "device {} of volume {} is not available",
                dev.path, req.volume_id
            )));
        }
        let staging = Path::new(&req.staging_target_path);
        if let Some(existing) = mountinfo::at(&mounts()?, staging) {
            if dev.is_mounted_by(&existing) && existing.fs_type == fs_type.as_str() {
                return Ok(csi::NodeStageVolumeResponse {});
            }
            return Err(CsiError::AlreadyExists(format!(
                "{} is already mounted ({} {} from {}:{}), not volume {} as {fs_type}",
                staging.display(),
                existing.fs_type,
                existing.source,
                existing.major,
                existing.minor,
                req.volume_id
            )));
        }
        let created = prepare_mount_point(staging, true)?;
        let result = self
            .format_and_mount(&req.volume_id, &dev, staging, fs_type, m)
            .await;
        if result.is_err() && created {
            let _ = paths::remove_if_empty(staging);
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
    ) -> CsiResult<csi::NodeStageVolumeResponse> {
        let device = &dev.path;
        match fs::probe(device)
            .await
            .map_err(CsiError::command("probing for a filesystem"))?
        {
            Signature::None => {
                let (prog, args) = fs::mkfs(fs_type, device);
                tracing::info!(volume_id, fs = %fs_type, "formatting new volume");
                self.cmd(&prog, args, format!("formatting {device} as {fs_type}"))
                    .await?;
            }
            Signature::Filesystem(found) if found == fs_type.as_str() => {}
            Signature::Filesystem(found) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {volume_id} holds a {found} filesystem, not {fs_type}; carve never reformats existing data"
                )))
            }
            Signature::Other(what) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {volume_id} carries a {what} signature; carve will not format over it"
                )))
            }
        }
        let mut opts = fs::default_mount_options(fs_type);
        opts.extend(m.mount_flags.iter().cloned());
        carve_core::host::mount::mount_fs(device, staging, fs_type.as_str(), &opts).map_err(
            CsiError::command(format!("mounting {device} on {}", staging.display())),
        )?;
        match mountinfo::at(&mounts()?, staging) {
            Some(m) if dev.is_mounted_by(&m) => Ok(csi::NodeStageVolumeResponse {}),
            _ => Err(CsiError::FailedPrecondition(format!(
                "mount of {device} on {} reported success but the mount table does not show it",
                staging.display()
            ))),
        }
    }

    /// Unmounts every mount of this volume stacked at `path` (a retried publish
    /// by an older kubelet can stack them); a mount that is not the volume's
    /// stops it. Returns whether the path is free of mounts afterwards.
    fn unmount_ours(&self, path: &Path, dev: &Device) -> CsiResult<bool> {
        for _ in 0..8 {
            match paths::holds_volume(&mounts()?, path, dev) {
                None => return Ok(true),
                Some(false) => return Ok(false),
                Some(true) => carve_core::host::mount::umount(path)
                    .map_err(CsiError::command(format!("unmounting {}", path.display())))?,
            }
        }
        Err(CsiError::FailedPrecondition(format!(
            "{} is still mounted after 8 unmounts",
            path.display()
        )))
    }

    /// NotFound for a path where the volume is not: touches nothing.
    fn not_at(&self, volume_id: &str, path: &Path, what: &str) -> CsiError {
        CsiError::NotFound(format!(
            "volume {volume_id} is not at {} ({what}); nothing there was touched",
            path.display()
        ))
    }

    async fn unstage(
        &self,
        req: csi::NodeUnstageVolumeRequest,
    ) -> CsiResult<csi::NodeUnstageVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("staging_target_path", &req.staging_target_path)?;
        let staging = Path::new(&req.staging_target_path);
        let mounted = mountinfo::at(&mounts()?, staging);
        let lv = match self.volume(&req.volume_id).await {
            Ok(lv) => lv,
            // Nothing staged and no such volume: unstaged already.
            Err(CsiError::NotFound(_)) if mounted.is_none() => {
                return Ok(csi::NodeUnstageVolumeResponse {})
            }
            Err(e) => return Err(e),
        };
        let _g = self.guard(&lv)?;
        let dev = Device::of(&lv);
        if mounted.is_some() && !self.unmount_ours(staging, &dev)? {
            return Err(self.not_at(
                &req.volume_id,
                staging,
                "another filesystem is mounted there",
            ));
        }
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
        self.check_complete(&lv, &req.volume_id)?;
        let _g = self.guard(&lv)?;
        let read_only = req.readonly
            || cap.access_mode.as_ref().map(|m| m.mode) == Some(Mode::SingleNodeReaderOnly as i32);
        let target = Path::new(&req.target_path);
        let staging = Path::new(&req.staging_target_path);
        let block = is_block(cap);
        if block {
            self.ensure_active(&lv).await?;
        }
        let dev = Device::of(&lv);
        let all = mounts()?;
        let staged = if block {
            None
        } else {
            Some(
                mountinfo::at(&all, staging)
                    .filter(|m| dev.is_mounted_by(m))
                    .ok_or_else(|| {
                        CsiError::FailedPrecondition(format!(
                            "volume {} is not staged at {}: call NodeStageVolume first",
                            req.volume_id,
                            staging.display()
                        ))
                    })?,
            )
        };
        // The same target again: idempotent if it is this volume as asked.
        if let Some(existing) = mountinfo::at(&all, target) {
            let same = match &staged {
                Some(s) => (existing.major, existing.minor) == (s.major, s.minor),
                None => dev.is_node_at(target),
            };
            let ro = existing.read_only();
            if same && ro == read_only {
                return Ok(csi::NodePublishVolumeResponse {});
            }
            return Err(CsiError::AlreadyExists(format!(
                "{} is already published {} (read-only: {ro}); volume {} was asked with read-only: {read_only}",
                target.display(),
                if same { "for this volume" } else { "for another volume" },
                req.volume_id
            )));
        }
        if let Some(mode) = one_target_only(cap) {
            let others = paths::other_publications(&all, &dev, staged.as_ref(), &[staging, target]);
            if let Some(other) = others.first() {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} is already published at {}; access mode {} allows one target path on a node",
                    req.volume_id,
                    other.display(),
                    mode.as_str_name()
                )));
            }
        }
        let created = prepare_mount_point(target, !block)?;
        let source = if block {
            dev.path.clone()
        } else {
            req.staging_target_path.clone()
        };
        let result = carve_core::host::mount::bind(&source, target)
            .map_err(CsiError::command(format!(
                "bind-mounting {source} on {}",
                target.display()
            )))
            .and_then(|()| {
                if !read_only {
                    return Ok(());
                }
                // A bind mount inherits the source's flags; read-only needs a
                // remount of the new mount point alone.
                carve_core::host::mount::remount_bind_read_only(target).map_err(|e| {
                    let _ = carve_core::host::mount::umount(target);
                    CsiError::command(format!("remounting {} read-only", target.display()))(e)
                })
            });
        if result.is_err() && created {
            let _ = paths::remove_if_empty(target);
        }
        result.map(|()| csi::NodePublishVolumeResponse {})
    }

    async fn unpublish(
        &self,
        req: csi::NodeUnpublishVolumeRequest,
    ) -> CsiResult<csi::NodeUnpublishVolumeResponse> {
        required("volume_id", &req.volume_id)?;
        check_path("target_path", &req.target_path)?;
        let target = Path::new(&req.target_path);
        let mounted = mountinfo::at(&mounts()?, target).is_some();
        let lv = match self.volume(&req.volume_id).await {
            Ok(lv) => Some(lv),
            Err(CsiError::NotFound(_)) if !mounted => None,
            Err(e) => return Err(e),
        };
        if let Some(lv) = &lv {
            let _g = self.guard(lv)?;
            let dev = Device::of(lv);
            if mounted && !self.unmount_ours(target, &dev)? {
                return Err(self.not_at(&req.volume_id, target, "something else is mounted there"));
            }
        }
        // Only what carve made is removed: an empty directory or file.
        if !paths::remove_if_empty(target)
            .map_err(io_err(format!("removing {}", target.display())))?
        {
            return Err(self.not_at(
                &req.volume_id,
                target,
                "the path holds data that is not this volume's",
            ));
        }
        Ok(csi::NodeUnpublishVolumeResponse {})
    }

    async fn stats(
        &self,
        req: csi::NodeGetVolumeStatsRequest,
    ) -> CsiResult<csi::NodeGetVolumeStatsResponse> {
        required("volume_id", &req.volume_id)?;
        required("volume_path", &req.volume_path)?;
        // A fresh report: health should be current.
        let lv = self.controller.volume_lv(&req.volume_id, true).await?;
        let view = self.controller.view()?;
        let path = Path::new(&req.volume_path);
        let dev = Device::of(&lv);
        let condition = self.controller.condition(&lv, &view.lvm);
        use csi::volume_usage::Unit;
        let block_node = std::fs::metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_block_device()
        });
        // A raw block target is the LV's node; an inactive LV has no device
        // number to compare, and then its abnormal condition is what is reported.
        let usage = if block_node && (dev.is_node_at(path) || dev.number.is_none()) {
            vec![csi::VolumeUsage {
                available: 0,
                total: lv.size as i64,
                used: 0,
                unit: Unit::Bytes as i32,
            }]
        } else if paths::holds_volume(&mounts()?, path, &dev) == Some(true) {
            let u = paths::fs_usage(path).map_err(io_err(format!("statvfs {}", path.display())))?;
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
            return Err(self.not_at(&req.volume_id, path, "it is not mounted there"));
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
        let dev = Device::of(&lv);
        let mount = mountinfo::at(&mounts()?, path).filter(|m| dev.is_mounted_by(m));
        let block = dev.is_node_at(path);
        if mount.is_none() && !block {
            return Err(self.not_at(&req.volume_id, path, "it is not published there"));
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
        if let Some(mount) = mount {
            let _g = self.guard(&lv)?;
            match fs::grow(&mount.fs_type, &dev.path, &req.volume_path) {
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

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let me = self.clone();
        detached_blocking(
            "NodeStageVolume",
            async move { me.stage(r.into_inner()).await },
        )
        .await
    }

    async fn node_unstage_volume(
        &self,
        r: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let me = self.clone();
        detached_blocking("NodeUnstageVolume", async move {
            me.unstage(r.into_inner()).await
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        r: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let me = self.clone();
        detached_blocking("NodePublishVolume", async move {
            me.publish(r.into_inner()).await
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let me = self.clone();
        detached_blocking("NodeUnpublishVolume", async move {
            me.unpublish(r.into_inner()).await
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let me = self.clone();
        detached_blocking("NodeGetVolumeStats", async move {
            me.stats(r.into_inner()).await
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        r: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let me = self.clone();
        detached_blocking("NodeExpandVolume", async move {
            me.expand(r.into_inner()).await
        })
        .await
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
            // Enforced in publish: SINGLE_NODE_SINGLE_WRITER (and the older
            // single-node modes) get one target path, MULTI_WRITER several.
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
    use crate::csi::volume_capability::{AccessMode, MountVolume};

    fn cap(mode: Mode) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn only_multi_writer_allows_a_second_target() {
        for m in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
        ] {
            assert_eq!(one_target_only(&cap(m)), Some(m));
        }
        assert_eq!(one_target_only(&cap(Mode::SingleNodeMultiWriter)), None);
    }

    #[test]
    fn mount_points_must_be_empty_or_new() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b/target");
        assert!(prepare_mount_point(&new, true).unwrap(), "created");
        assert!(new.is_dir());
        assert!(!prepare_mount_point(&new, true).unwrap(), "empty: reused");
        assert!(matches!(
            prepare_mount_point(&new, false),
            Err(CsiError::FailedPrecondition(_))
        ));
        std::fs::write(new.join("f"), b"x").unwrap();
        assert!(matches!(
            prepare_mount_point(&new, true),
            Err(CsiError::FailedPrecondition(_))
        ));
        let file = dir.path().join("block");
        assert!(prepare_mount_point(&file, false).unwrap());
        assert!(file.is_file());
    }
}

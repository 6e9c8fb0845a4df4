//! CSI Node: makes a carve volume usable by a pod on this node. Stage formats
//! (only a device with no signature) and mounts; publish bind-mounts; expand
//! grows LV and filesystem online; stats and health come from statvfs and LVM.
//! [`stage`] serves NodeStage/NodeUnstage, [`publish`] NodePublish/
//! NodeUnpublish, [`usage`] NodeGetVolumeStats and NodeExpandVolume; each
//! RPC's failures are in [`errors`].
//!
//! The node service acts only on what is the volume's own: it mounts only onto
//! an empty directory or a path it creates, and unmounts, removes, measures or
//! grows a path only when the kernel shows that volume there
//! (carve_core::host::paths). Idempotency is judged from the kernel's mount
//! table, never from memory. Bodies are async; each mount, umount, stat and
//! read of the mount table goes to the blocking pool on its own
//! (carve_core::host::offload), so slow mounts never stall the async workers
//! and concurrent RPCs never wait on each other for a pool thread.

mod crypt;
pub mod errors;
mod publish;
mod stage;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use carve_core::engine::inflight::Guard;
use carve_core::host::mountinfo::Mount;
use carve_core::host::paths::{self, Device, Spot};
use carve_core::host::{fs, offload};
use carve_core::lvm::LvInfo;
use carve_core::names;
use tonic::{Request, Response, Status};

use crate::capability;
use crate::controller::{ControllerService, TOPOLOGY_KEY};
use crate::csi::volume_capability::{access_mode::Mode, AccessType};
use crate::csi::{self, node_server::Node};
use crate::error::{detached, Busy, LookupError, LvmFailure, ToolFailure};
use errors::{BadRequest, MountTable, NotAt, Occupied, PathFailure, Unfinished, UnmountError};

#[derive(Clone)]
pub struct NodeService {
    pub node_id: String,
    pub max_volumes: i64,
    pub controller: Arc<ControllerService>,
    pub timeout: Duration,
}

async fn mounts() -> Result<Vec<Mount>, MountTable> {
    offload(paths::mounts).await.map_err(MountTable)
}

/// [`Device::is_node_at`] (a stat) on the blocking pool.
async fn node_at(dev: &Device, path: &Path) -> bool {
    let (dev, path) = (dev.clone(), path.to_path_buf());
    offload(move || dev.is_node_at(&path)).await
}

/// [`paths::remove_if_empty`] on the blocking pool.
async fn remove_if_empty(path: &Path) -> std::io::Result<bool> {
    let path = path.to_path_buf();
    offload(move || paths::remove_if_empty(&path)).await
}

fn path_failure(what: String) -> impl FnOnce(std::io::Error) -> PathFailure {
    move |source| PathFailure { what, source }
}

fn required(what: &'static str, v: &str) -> Result<(), BadRequest> {
    if v.is_empty() {
        Err(BadRequest::Required(what))
    } else {
        Ok(())
    }
}

fn check_path(what: &'static str, p: &str) -> Result<(), BadRequest> {
    fs::check_path(what, p).map_err(BadRequest::Path)
}

/// Validates a capability and its mount flags; returns it.
fn check_cap(cap: Option<&csi::VolumeCapability>) -> Result<&csi::VolumeCapability, BadRequest> {
    let cap = cap.ok_or(BadRequest::NoCapability)?;
    capability::check(cap)?;
    if let Some(AccessType::Mount(m)) = &cap.access_type {
        for f in &m.mount_flags {
            fs::check_mount_flag(f).map_err(BadRequest::MountFlag)?;
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

const MOUNT_ONLY_EMPTY: &str = "carve mounts only onto an empty directory or a path it creates";

/// Refuses to mount onto anything but an empty directory (or file, for a
/// raw block target) or a path carve creates; returns whether carve created it.
async fn prepare_mount_point<E>(path: &Path, dir: bool) -> Result<bool, E>
where
    E: From<Occupied> + From<PathFailure> + Send + 'static,
{
    let path = path.to_path_buf();
    offload(move || mount_point_at::<E>(&path, dir)).await
}

fn mount_point_at<E>(path: &Path, dir: bool) -> Result<bool, E>
where
    E: From<Occupied> + From<PathFailure>,
{
    let spot =
        paths::inspect(path).map_err(path_failure(format!("inspecting {}", path.display())))?;
    match spot {
        Spot::Missing => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(path_failure(format!("creating {}", parent.display())))?;
            }
            if dir {
                std::fs::create_dir(path)
            } else {
                std::fs::File::create(path).map(drop)
            }
            .map_err(path_failure(format!("creating {}", path.display())))?;
            Ok(true)
        }
        Spot::Empty => {
            let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
            if is_dir != dir {
                return Err(Occupied {
                    path: path.to_path_buf(),
                    what: if is_dir { "a directory" } else { "a file" }.into(),
                    why: if dir {
                        "a filesystem volume needs a directory"
                    } else {
                        "a raw block volume needs a file"
                    },
                }
                .into());
            }
            Ok(false)
        }
        Spot::Occupied(what) => Err(Occupied {
            path: path.to_path_buf(),
            what,
            why: MOUNT_ONLY_EMPTY,
        }
        .into()),
    }
}

impl NodeService {
    /// `p`, a path from the CO, checked and resolved strictly inside the
    /// configured `node_path_roots` (paths::confine): the form every later
    /// step uses, so mounts, the mount table and removals agree, and nothing
    /// outside carve's directories (`/run/xtables.lock`, `/proc`…) is ever
    /// touched.
    async fn confined(&self, what: &'static str, p: &str) -> Result<PathBuf, BadRequest> {
        check_path(what, p)?;
        let (roots, path) = (
            self.controller.config.node_path_roots.clone(),
            PathBuf::from(p),
        );
        offload(move || paths::confine(&roots, &path))
            .await
            .map_err(|e| BadRequest::Path(format!("{what} {p:?} {e}")))
    }

    /// The volume_path of NodeGetVolumeStats or NodeExpandVolume, resolved
    /// inside the roots. These only measure or grow what is mounted there, so
    /// a path that cannot hold the volume (relative, or outside the roots) is
    /// NotFound, as CSI says for a volume not at the path, and nothing there
    /// is looked at.
    async fn volume_path(&self, volume_id: &str, p: &str) -> Result<PathBuf, NotAt> {
        self.confined("volume_path", p).await.map_err(|e| {
            tracing::debug!(error = %e, "volume_path refused");
            self.not_at(
                volume_id,
                Path::new(p),
                "the path is outside the directories carve uses",
            )
        })
    }

    async fn cmd(
        &self,
        program: &str,
        args: Vec<String>,
        context: String,
    ) -> Result<(), ToolFailure> {
        fs::run(program, &args, self.timeout)
            .await
            .map(drop)
            .map_err(ToolFailure::ctx(context))
    }

    /// The carve volume behind `volume_id`. Served from the cached view when
    /// it knows the volume; callers check the device itself.
    async fn volume(&self, volume_id: &str) -> Result<LvInfo, LookupError> {
        self.controller.volume_lv(volume_id, false).await
    }

    fn guard(&self, lv: &LvInfo) -> Result<Guard, Busy> {
        self.controller
            .guard(&format!("volume {}/{}", lv.vg, lv.name), &lv.name)
    }

    /// A volume still being made from its source is never staged or
    /// published: its data is not whole yet.
    fn check_complete(&self, lv: &LvInfo, volume_id: &str) -> Result<(), Unfinished> {
        if lv.tag(names::TAG_INCOMPLETE).is_none() {
            return Ok(());
        }
        let key = ControllerService::job_key(&lv.vg, &lv.name);
        Err(match self.controller.jobs.get(&key) {
            Some(job) => Unfinished::Copying {
                id: volume_id.to_string(),
                progress: job.progress().to_string(),
            },
            None => Unfinished::NotWhole(volume_id.to_string()),
        })
    }

    /// Makes sure the LV's device node exists, activating the LV if needed.
    /// The device node, not a possibly cached lv_attr, is the test.
    async fn ensure_active(&self, lv: &LvInfo) -> Result<(), LvmFailure> {
        let device = paths::device_path(lv);
        if offload(move || Path::new(&device).exists()).await {
            return Ok(());
        }
        tracing::info!(lv = %format!("{}/{}", lv.vg, lv.name), "activating LV");
        self.controller
            .lvm
            .lock_vg(&lv.vg)
            .await
            .ensure_device(&lv.name)
            .await
            .map_err(LvmFailure::ctx(format!("activating {}/{}", lv.vg, lv.name)))?;
        self.controller.state.poke();
        Ok(())
    }

    /// Unmounts every mount of this volume stacked at `path` (a retried publish
    /// by an older kubelet can stack them); a mount that is not the volume's
    /// stops it. Returns whether the path is free of mounts afterwards.
    async fn unmount_ours(&self, path: &Path, dev: &Device) -> Result<bool, UnmountError> {
        for _ in 0..8 {
            match paths::holds_volume(&mounts().await?, path, dev) {
                None => return Ok(true),
                Some(false) => return Ok(false),
                Some(true) => {
                    let p = path.to_path_buf();
                    offload(move || carve_core::host::mount::umount(&p))
                        .await
                        .map_err(ToolFailure::ctx(format!("unmounting {}", path.display())))?
                }
            }
        }
        Err(UnmountError::StillMounted(path.to_path_buf()))
    }

    /// A path where the volume is not: nothing there is touched.
    fn not_at(&self, volume_id: &str, path: &Path, what: &'static str) -> NotAt {
        NotAt {
            id: volume_id.to_string(),
            path: path.to_path_buf(),
            what,
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.clone();
        detached(
            "NodeStageVolume",
            async move { me.stage(r.into_inner()).await },
        )
        .await
    }

    async fn node_unstage_volume(
        &self,
        r: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.clone();
        detached("NodeUnstageVolume", async move {
            me.unstage(r.into_inner()).await
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        r: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.clone();
        detached("NodePublishVolume", async move {
            me.publish(r.into_inner()).await
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.clone();
        detached("NodeUnpublishVolume", async move {
            me.unpublish(r.into_inner()).await
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.clone();
        detached("NodeGetVolumeStats", async move {
            me.stats(r.into_inner()).await
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        r: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.clone();
        detached("NodeExpandVolume", async move {
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
        use errors::PublishError;
        let prepare = |p: &Path, dir| mount_point_at::<PublishError>(p, dir);
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b/target");
        assert!(prepare(&new, true).unwrap(), "created");
        assert!(new.is_dir());
        assert!(!prepare(&new, true).unwrap(), "empty: reused");
        assert!(matches!(
            prepare(&new, false),
            Err(PublishError::Occupied(_))
        ));
        std::fs::write(new.join("f"), b"x").unwrap();
        let e = prepare(&new, true).unwrap_err();
        assert!(matches!(e, PublishError::Occupied(_)), "{e}");
        assert_eq!(
            crate::error::RpcError::code(&e),
            tonic::Code::FailedPrecondition
        );
        let file = dir.path().join("block");
        assert!(prepare(&file, false).unwrap());
        assert!(file.is_file());
    }
}

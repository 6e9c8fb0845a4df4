//! CSI Controller. carve's controller runs on every node beside its LVs (the
//! provisioner runs in node mode), so each RPC acts on local LVM only. Requests
//! are validated completely before any lvm command runs.
//!
//! This file holds the service, what every RPC shares (lookups by ID, device
//! classes, topology, the in-flight guard) and the dispatch of the gRPC trait;
//! each RPC is served by a module of its own: [`create`], [`delete`],
//! [`expand`], [`read`] (get, list, capacity, validate), [`snapshot`], with
//! content sources and the copies that fill volumes in [`restore`].

mod create;
mod delete;
mod expand;
mod read;
pub mod restore;
mod size;
mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::csi::{self, controller_server::Controller};
use crate::error::{detached, logged, Busy, LookupError, LvmFailure, Missing, NotReady, RpcError};
use crate::params::{Params, VolumeContext};
use carve_core::config::{Config, DeviceClass, Provisioning};
use carve_core::engine::copiers::Copiers;
use carve_core::engine::inflight::{Guard, InFlight};
use carve_core::engine::jobs::Jobs;
use carve_core::engine::state::{StateCache, View};
use carve_core::lvm::{LvInfo, Lvm, LvmError, LvmErrorKind, LvmState};
use carve_core::names::{self, LvKind, NodeRef, VolumeId};

pub use expand::ExpandVolumeError;
pub use size::{choose_size, DEFAULT_SIZE};

/// Topology key every carve volume and node carries.
pub const TOPOLOGY_KEY: &str = "topology.carve.dev/node";

pub struct ControllerService {
    /// The service itself, for RPC bodies that run on their own task.
    pub me: std::sync::Weak<ControllerService>,
    pub driver_name: String,
    pub node_id: String,
    pub config: Arc<Config>,
    pub lvm: Arc<Lvm>,
    pub state: Arc<StateCache>,
    pub inflight: InFlight,
    pub jobs: Arc<Jobs>,
    /// The threads thick copies run on (`copy_workers` of them).
    pub copiers: Arc<Copiers>,
}

/// What an ID names, as far as this node can tell.
pub(crate) enum Located {
    /// A carve LV on this node.
    Here(Box<LvInfo>),
    /// Not here; the ID says another node holds it.
    Elsewhere(NodeRef),
    /// Not here, and not anywhere else either (or no carve ID at all).
    Gone,
}

/// A device class this node does not have (InvalidArgument).
#[derive(Debug, thiserror::Error)]
#[error("device class {name:?} is not configured on node {node} (known: {known})")]
pub struct UnknownClass {
    name: String,
    node: String,
    known: String,
}

/// A volume whose class this node no longer configures (FailedPrecondition).
#[derive(Debug, thiserror::Error)]
#[error("LV {vg}/{lv} belongs to no configured device class")]
pub struct NoClass {
    vg: String,
    lv: String,
}

/// Topology that does not include this node (ResourceExhausted: the
/// provisioner asks the scheduler for another node).
#[derive(Debug, thiserror::Error)]
#[error("accessibility requirements do not include this node ({TOPOLOGY_KEY}={0}); carve creates volumes only on the node it runs on")]
pub struct NotThisNode(String);

impl RpcError for UnknownClass {
    fn code(&self) -> tonic::Code {
        tonic::Code::InvalidArgument
    }
}

impl RpcError for NoClass {
    fn code(&self) -> tonic::Code {
        tonic::Code::FailedPrecondition
    }
}

impl RpcError for NotThisNode {
    fn code(&self) -> tonic::Code {
        tonic::Code::ResourceExhausted
    }
}

impl ControllerService {
    fn arc(&self) -> Arc<ControllerService> {
        self.me.upgrade().expect("the controller outlives its RPCs")
    }

    pub(crate) fn owned(&self, lv: &LvInfo) -> bool {
        lv.tag(names::TAG_OWNER) == Some(self.driver_name.as_str())
    }

    pub(crate) fn managed_vg(&self, vg: &str) -> bool {
        self.config
            .device_classes
            .iter()
            .any(|c| c.volume_group == vg)
    }

    pub(crate) fn owner_tag(&self) -> String {
        names::tag(names::TAG_OWNER, &self.driver_name)
    }

    pub(crate) fn class_of(&self, lv: &LvInfo) -> Option<&DeviceClass> {
        let tagged = lv.tag(names::TAG_CLASS).map(names::decode_tag_value);
        tagged
            .and_then(|n| self.config.class(&n))
            .filter(|c| c.volume_group == lv.vg)
            .or_else(|| {
                self.config.device_classes.iter().find(|c| {
                    c.volume_group == lv.vg
                        && match c.provisioning {
                            Provisioning::Thin => {
                                lv.is_thin_volume()
                                    && Some(lv.pool.as_str()) == c.thin_pool.as_deref()
                            }
                            Provisioning::Thick => !lv.is_thin_volume(),
                        }
                })
            })
    }

    /// The configured class a carve LV belongs to.
    pub(crate) fn class_for(&self, lv: &LvInfo) -> Result<&DeviceClass, NoClass> {
        self.class_of(lv).ok_or_else(|| NoClass {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
        })
    }

    /// The ID of a carve LV on this node.
    pub(crate) fn id_of(&self, lv: &LvInfo) -> String {
        VolumeId::new(&self.node_id, &lv.vg, &lv.name).to_string()
    }

    fn topology(&self) -> Vec<csi::Topology> {
        vec![csi::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.to_string(), self.node_id.clone())]),
        }]
    }

    pub(crate) fn volume(&self, lv: &LvInfo) -> csi::Volume {
        let ctx = VolumeContext {
            device_class: self.class_of(lv).map(|c| c.name.clone()),
            fs_type: lv
                .tag(names::TAG_FS_TYPE)
                .and_then(|f| names::decode_tag_value(f).parse().ok()),
            encryption: lv.tag(names::TAG_ENCRYPTION).map(|_| "luks2".to_string()),
        };
        use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
        let content_source = lv
            .tag(names::TAG_SOURCE)
            .map(names::decode_tag_value)
            .map(|id| {
                let t = if VolumeId::parse_snapshot(&id).is_some() {
                    Type::Snapshot(SnapshotSource { snapshot_id: id })
                } else {
                    Type::Volume(VolumeSource { volume_id: id })
                };
                csi::VolumeContentSource { r#type: Some(t) }
            });
        csi::Volume {
            capacity_bytes: lv.size as i64,
            volume_id: self.id_of(lv),
            volume_context: ctx.into_map(),
            content_source,
            accessible_topology: self.topology(),
        }
    }

    /// A carve-owned LV of `kind` at `vg/lv` in a managed VG, from a report.
    pub(crate) fn find<'a>(
        &self,
        state: &'a LvmState,
        vg: &str,
        lv: &str,
        kind: LvKind,
    ) -> Option<&'a LvInfo> {
        state.lv(vg, lv).filter(|l| self.is_carve(l, kind))
    }

    /// Whether `lv` is a carve LV of `kind`: in a managed VG, owned, named so.
    pub(crate) fn is_carve(&self, lv: &LvInfo, kind: LvKind) -> bool {
        self.managed_vg(&lv.vg) && self.owned(lv) && LvKind::of(&lv.name) == Some(kind)
    }

    /// Every carve LV of `kind` in a report.
    pub(crate) fn carve_lvs<'a>(
        &'a self,
        state: &'a LvmState,
        kind: LvKind,
    ) -> impl Iterator<Item = &'a LvInfo> {
        state.lvs.iter().filter(move |l| self.is_carve(l, kind))
    }

    /// Every carve volume (not snapshot, not temporary) in a report.
    pub(crate) fn volumes<'a>(&'a self, state: &'a LvmState) -> impl Iterator<Item = &'a LvInfo> {
        self.carve_lvs(state, LvKind::Volume)
    }

    /// Finds what `id` names. With `fresh`, the LV's VG is re-read (its current
    /// state matters to the caller); otherwise the cached view answers when it
    /// knows the LV, and a fresh read of the VG when it does not.
    pub(crate) async fn locate(
        &self,
        id: &str,
        kind: LvKind,
        fresh: bool,
    ) -> Result<Located, LvmFailure> {
        let parsed = match kind {
            LvKind::Snapshot => VolumeId::parse_snapshot(id),
            _ => VolumeId::parse(id),
        };
        let Some(id) = parsed else {
            return Ok(Located::Gone);
        };
        if self.managed_vg(&id.vg) {
            if !fresh {
                if let Some(v) = self.state.get() {
                    if let Some(lv) = self.find(&v.lvm, &id.vg, &id.lv, kind) {
                        return Ok(Located::Here(Box::new(lv.clone())));
                    }
                }
            }
            let absent = |detail: String| {
                // A configured VG that is absent (its disk not attached yet)
                // says nothing about the LV: answering "gone" would let the
                // CO forget a volume that comes back with the disk.
                LvmFailure::ctx(format!(
                    "volume group {} is configured but not on this node now",
                    id.vg
                ))(LvmError {
                    kind: LvmErrorKind::VgAbsent,
                    command: format!("lvm fullreport {}", id.vg),
                    detail,
                })
            };
            match self.state.refresh_vg(&id.vg).await {
                Ok(v) if !v.lvm.vgs.contains_key(&id.vg) && id.node.is(&self.node_id) => {
                    return Err(absent("not in LVM's report".into()))
                }
                Ok(v) => {
                    if let Some(lv) = self.find(&v.lvm, &id.vg, &id.lv, kind) {
                        return Ok(Located::Here(Box::new(lv.clone())));
                    }
                    if v.lvm.lv(&id.vg, &id.lv).is_some() {
                        tracing::warn!(lv = %format!("{}/{}", id.vg, id.lv), "an LV of that name exists but lacks carve's owner tag: treated as absent and left untouched");
                    }
                }
                Err(e)
                    if matches!(e.kind, LvmErrorKind::VgAbsent | LvmErrorKind::NotFound)
                        && id.node.is(&self.node_id) =>
                {
                    return Err(absent(e.detail))
                }
                // The ID names another node, and this node lacks the VG.
                Err(e) if matches!(e.kind, LvmErrorKind::VgAbsent | LvmErrorKind::NotFound) => {}
                Err(e) => return Err(LvmFailure::ctx("reading LVM state")(e)),
            }
        }
        // LVM is the truth: the node part only says where else to look.
        Ok(if id.node.is(&self.node_id) {
            Located::Gone
        } else {
            Located::Elsewhere(id.node)
        })
    }

    /// That `id` (a `what`: volume or snapshot) is not here, saying where it
    /// lives when the ID names another node.
    pub(crate) fn missing(&self, what: &'static str, id: &str, located: &Located) -> Missing {
        match located {
            Located::Elsewhere(node) => Missing::Elsewhere {
                what,
                id: id.to_string(),
                holder: node.to_string(),
                node: self.node_id.clone(),
            },
            _ => Missing::Gone {
                what,
                id: id.to_string(),
                node: self.node_id.clone(),
            },
        }
    }

    /// The carve volume or snapshot `id` names here. See [`Self::locate`] for
    /// `fresh`.
    pub(crate) async fn lv_named(
        &self,
        id: &str,
        kind: LvKind,
        fresh: bool,
    ) -> Result<LvInfo, LookupError> {
        let (field, what) = match kind {
            LvKind::Snapshot => ("snapshot_id", "snapshot"),
            _ => ("volume_id", "volume"),
        };
        if id.is_empty() {
            return Err(Missing::Required(field).into());
        }
        match self.locate(id, kind, fresh).await? {
            Located::Here(lv) => Ok(*lv),
            other => Err(self.missing(what, id, &other).into()),
        }
    }

    /// The carve volume `volume_id` names here.
    pub(crate) async fn volume_lv(
        &self,
        volume_id: &str,
        fresh: bool,
    ) -> Result<LvInfo, LookupError> {
        self.lv_named(volume_id, LvKind::Volume, fresh).await
    }

    pub(crate) fn pick_class(&self, p: &Params) -> Result<&DeviceClass, UnknownClass> {
        match &p.device_class {
            None => Ok(self.config.default_class()),
            Some(n) => self.config.class(n).ok_or_else(|| UnknownClass {
                name: n.clone(),
                node: self.node_id.clone(),
                known: self
                    .config
                    .device_classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The topology requirement must allow this node, when one is given.
    pub(crate) fn check_topology(
        &self,
        req: Option<&csi::TopologyRequirement>,
    ) -> Result<(), NotThisNode> {
        let Some(req) = req else { return Ok(()) };
        if req.requisite.is_empty() && req.preferred.is_empty() {
            return Ok(());
        }
        let here = |t: &csi::Topology| {
            t.segments
                .get(TOPOLOGY_KEY)
                .is_some_and(|n| n == &self.node_id)
        };
        if req.requisite.iter().any(here)
            || (req.requisite.is_empty() && req.preferred.iter().any(here))
        {
            Ok(())
        } else {
            Err(NotThisNode(self.node_id.clone()))
        }
    }

    /// The cached view, or Unavailable while LVM has never answered.
    pub(crate) fn view(&self) -> Result<Arc<View>, NotReady> {
        self.state.get().ok_or_else(|| {
            NotReady(
                self.state
                    .last_error()
                    .unwrap_or_else(|| "first report pending".into()),
            )
        })
    }

    /// The cached view, or a report taken now when there is none yet.
    pub(crate) async fn view_or_refresh(&self) -> Result<Arc<View>, LvmFailure> {
        match self.state.get() {
            Some(v) => Ok(v),
            None => self
                .state
                .refresh()
                .await
                .map_err(LvmFailure::ctx("reading LVM state")),
        }
    }

    /// The in-flight guard of an LV: one operation per volume at a time.
    pub(crate) fn guard(&self, what: &str, lv: &str) -> Result<Guard, Busy> {
        self.inflight
            .try_acquire(lv)
            .ok_or_else(|| Busy(what.to_string()))
    }

    /// Key of the copy job that fills a volume LV.
    pub(crate) fn job_key(vg: &str, lv: &str) -> String {
        format!("{vg}/{lv}")
    }

    /// The volume's health, with the progress of its copy when one runs.
    pub(crate) fn condition(&self, lv: &LvInfo, state: &LvmState) -> csi::VolumeCondition {
        use carve_core::engine::health::{condition, Fill};
        let key = Self::job_key(&lv.vg, &lv.name);
        let running = self.jobs.get(&key).filter(|j| j.outcome().is_none());
        let fill = match (running, self.jobs.last_failure(&key)) {
            (Some(j), _) => Fill::Running(j.progress()),
            (None, Some(e)) => Fill::Failed(e),
            (None, None) => Fill::Idle,
        };
        let c = condition(lv, state, fill, &self.config.pool_limits);
        let mut message = c.message;
        if let Some(open) = Self::encrypted_open(lv) {
            message.push_str(if open {
                "; LUKS2-encrypted, open on this node"
            } else {
                "; LUKS2-encrypted, not open on this node"
            });
        }
        csi::VolumeCondition {
            abnormal: c.abnormal,
            message,
        }
    }

    /// For an encrypted volume, whether its dm-crypt mapping is open on this
    /// node (a stat of /dev/mapper); `None` for a plain volume.
    pub(crate) fn encrypted_open(lv: &LvInfo) -> Option<bool> {
        lv.tag(names::TAG_ENCRYPTION).map(|_| {
            carve_core::host::luks::is_open(&carve_core::encryption::mapper_name(&lv.vg, &lv.name))
        })
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "carve does not offer {what}"
    )))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        r: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let wait = create::copy_wait(r.metadata(), self.config.copy_wait());
        let me = self.arc();
        detached("CreateVolume", async move {
            me.create(r.into_inner(), wait).await
        })
        .await
    }

    async fn delete_volume(
        &self,
        r: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.arc();
        detached(
            "DeleteVolume",
            async move { me.delete(r.into_inner()).await },
        )
        .await
    }

    async fn controller_publish_volume(
        &self,
        _: Request<csi::ControllerPublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerPublishVolumeResponse>, Status> {
        unimplemented("ControllerPublishVolume (volumes are local; there is nothing to attach)")
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<csi::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<csi::ControllerUnpublishVolumeResponse>, Status> {
        unimplemented("ControllerUnpublishVolume (volumes are local; there is nothing to detach)")
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        crate::metrics::rpc::note(&r);
        logged("ValidateVolumeCapabilities", self.validate(r.into_inner())).await
    }

    async fn list_volumes(
        &self,
        r: Request<csi::ListVolumesRequest>,
    ) -> Result<Response<csi::ListVolumesResponse>, Status> {
        logged("ListVolumes", self.list(r.into_inner())).await
    }

    async fn get_capacity(
        &self,
        r: Request<csi::GetCapacityRequest>,
    ) -> Result<Response<csi::GetCapacityResponse>, Status> {
        logged("GetCapacity", self.capacity(r.into_inner())).await
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        use csi::controller_service_capability::{rpc::Type, Rpc, Type as Cap};
        let caps = [
            Type::CreateDeleteVolume,
            Type::ListVolumes,
            Type::GetCapacity,
            Type::ExpandVolume,
            Type::GetVolume,
            Type::VolumeCondition,
            Type::SingleNodeMultiWriter,
            Type::CreateDeleteSnapshot,
            Type::ListSnapshots,
            Type::CloneVolume,
            // GetSnapshot is implemented but not advertised: the capability is
            // alpha in CSI 1.12, no sidecar uses it, and csi-sanity v5.4 fails
            // a driver that lists a capability it does not know.
        ];
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: caps
                .iter()
                .map(|t| csi::ControllerServiceCapability {
                    r#type: Some(Cap::Rpc(Rpc { r#type: *t as i32 })),
                })
                .collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        r: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.arc();
        detached("CreateSnapshot", async move {
            me.create_snapshot(r.into_inner()).await
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        r: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.arc();
        detached("DeleteSnapshot", async move {
            me.delete_snapshot(r.into_inner()).await
        })
        .await
    }

    async fn list_snapshots(
        &self,
        r: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        crate::metrics::rpc::note(&r);
        logged("ListSnapshots", self.list_snapshots(r.into_inner())).await
    }

    async fn get_snapshot(
        &self,
        r: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        crate::metrics::rpc::note(&r);
        logged("GetSnapshot", self.get_snapshot(r.into_inner())).await
    }

    async fn controller_expand_volume(
        &self,
        r: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        let me = self.arc();
        detached("ControllerExpandVolume", async move {
            me.expand(r.into_inner()).await
        })
        .await
    }

    async fn controller_get_volume(
        &self,
        r: Request<csi::ControllerGetVolumeRequest>,
    ) -> Result<Response<csi::ControllerGetVolumeResponse>, Status> {
        crate::metrics::rpc::note(&r);
        logged("ControllerGetVolume", self.get_volume(r.into_inner())).await
    }

    async fn controller_modify_volume(
        &self,
        _: Request<csi::ControllerModifyVolumeRequest>,
    ) -> Result<Response<csi::ControllerModifyVolumeResponse>, Status> {
        unimplemented("ControllerModifyVolume")
    }
}

#[cfg(test)]
mod tests;

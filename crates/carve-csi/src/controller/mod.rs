//! CSI Controller. carve's controller runs on every node beside its LVs (the
//! provisioner runs in node mode), so each RPC acts on local LVM only. Requests
//! are validated completely before any lvm command runs. This file holds the
//! service, its lookups and the small RPCs; CreateVolume is in `create`,
//! DeleteVolume in `delete`, content sources and copies in `restore`,
//! snapshots in `snapshot`.

mod create;
mod delete;
pub mod restore;
mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::capability;
use crate::csi::{self, controller_server::Controller};
use crate::error::{detached, logged, CsiError, CsiResult};
use crate::params::{Params, VolumeContext};
use carve_core::config::{Config, DeviceClass, Provisioning};
use carve_core::engine::inflight::InFlight;
use carve_core::engine::jobs::Jobs;
use carve_core::engine::state::{Change, StateCache};
use carve_core::lvm::{LvInfo, Lvm, LvmErrorKind, LvmState};
use carve_core::names::{self, LvKind, NodeRef, VolumeId};

/// Topology key every carve volume and node carries.
pub const TOPOLOGY_KEY: &str = "topology.carve.dev/node";
/// Size when a request names none.
pub const DEFAULT_SIZE: u64 = 1 << 30;

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

/// The size carve will allocate for a capacity range: the request rounded up to
/// the class's granule, or the largest granule multiple under the limit.
pub fn choose_size(range: Option<&csi::CapacityRange>, granule: u64) -> CsiResult<u64> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(CsiError::InvalidArgument(format!(
            "capacity_range must not be negative (required_bytes {required}, limit_bytes {limit})"
        )));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(CsiError::InvalidArgument(format!(
            "required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let base = match (required, limit) {
        (0, 0) => DEFAULT_SIZE,
        (0, l) => DEFAULT_SIZE.min(l),
        (r, _) => r,
    };
    let size = base
        .div_ceil(granule)
        .checked_mul(granule)
        .filter(|s| *s <= i64::MAX as u64)
        .ok_or_else(|| {
            CsiError::OutOfRange(format!("{base} bytes is larger than LVM can address"))
        })?;
    if limit > 0 && size > limit {
        let down = limit - limit % granule;
        if down >= required.max(1) {
            return Ok(down);
        }
        return Err(CsiError::OutOfRange(format!(
            "no multiple of the {granule}-byte allocation unit lies between required_bytes {required} and limit_bytes {limit}"
        )));
    }
    Ok(size)
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

    /// The configured class a carve LV belongs to, or FailedPrecondition.
    pub(crate) fn class_for(&self, lv: &LvInfo) -> CsiResult<&DeviceClass> {
        self.class_of(lv).ok_or_else(|| {
            CsiError::FailedPrecondition(format!(
                "LV {}/{} belongs to no configured device class",
                lv.vg, lv.name
            ))
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
    pub(crate) async fn locate(&self, id: &str, kind: LvKind, fresh: bool) -> CsiResult<Located> {
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
            match self.state.refresh_vg(&id.vg).await {
                Ok(v) => {
                    if let Some(lv) = self.find(&v.lvm, &id.vg, &id.lv, kind) {
                        return Ok(Located::Here(Box::new(lv.clone())));
                    }
                    if v.lvm.lv(&id.vg, &id.lv).is_some() {
                        tracing::warn!(lv = %format!("{}/{}", id.vg, id.lv), "an LV of that name exists but lacks carve's owner tag: treated as absent and left untouched");
                    }
                }
                Err(e) if e.kind == LvmErrorKind::NotFound => {}
                Err(e) => return Err(CsiError::lvm("reading LVM state")(e)),
            }
        }
        // LVM is the truth: the node part only says where else to look.
        Ok(if id.node.is(&self.node_id) {
            Located::Gone
        } else {
            Located::Elsewhere(id.node)
        })
    }

    /// NotFound for `id` (a volume or snapshot ID), saying where it lives when
    /// the ID names another node.
    pub(crate) fn not_here(&self, what: &str, id: &str, located: &Located) -> CsiError {
        match located {
            Located::Elsewhere(node) => CsiError::NotFound(format!(
                "{what} {id:?} is on node {node}, not on this node ({})",
                self.node_id
            )),
            _ => CsiError::NotFound(format!(
                "{what} {id:?} does not exist on node {}",
                self.node_id
            )),
        }
    }

    /// The carve volume `volume_id` names, or NotFound (InvalidArgument when
    /// the ID is empty). See [`Self::locate`] for `fresh`.
    pub(crate) async fn volume_lv(&self, volume_id: &str, fresh: bool) -> CsiResult<LvInfo> {
        if volume_id.is_empty() {
            return Err(CsiError::InvalidArgument("volume_id is required".into()));
        }
        match self.locate(volume_id, LvKind::Volume, fresh).await? {
            Located::Here(lv) => Ok(*lv),
            other => Err(self.not_here("volume", volume_id, &other)),
        }
    }

    pub(crate) fn pick_class(&self, p: &Params) -> CsiResult<&DeviceClass> {
        match &p.device_class {
            None => Ok(self.config.default_class()),
            Some(n) => self.config.class(n).ok_or_else(|| {
                let known: Vec<&str> = self
                    .config
                    .device_classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                CsiError::InvalidArgument(format!(
                    "device class {n:?} is not configured on node {} (known: {})",
                    self.node_id,
                    known.join(", ")
                ))
            }),
        }
    }

    /// The topology requirement must allow this node, when one is given.
    pub(crate) fn check_topology(&self, req: Option<&csi::TopologyRequirement>) -> CsiResult<()> {
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
            Err(CsiError::ResourceExhausted(format!(
                "accessibility requirements do not include this node ({TOPOLOGY_KEY}={}); carve creates volumes only on the node it runs on",
                self.node_id
            )))
        }
    }

    /// The cached view, or Unavailable while LVM has never answered.
    pub(crate) fn view(&self) -> CsiResult<Arc<carve_core::engine::state::View>> {
        self.state.get().ok_or_else(|| {
            CsiError::Unavailable(format!(
                "LVM state is not known yet: {}",
                self.state
                    .last_error()
                    .unwrap_or_else(|| "first report pending".into())
            ))
        })
    }

    /// The cached view, or a report taken now when there is none yet.
    pub(crate) async fn view_or_refresh(&self) -> CsiResult<Arc<carve_core::engine::state::View>> {
        match self.state.get() {
            Some(v) => Ok(v),
            None => self
                .state
                .refresh()
                .await
                .map_err(CsiError::lvm("reading LVM state")),
        }
    }

    /// The in-flight guard of an LV: one operation per volume at a time.
    pub(crate) fn guard(
        &self,
        what: &str,
        lv: &str,
    ) -> CsiResult<carve_core::engine::inflight::Guard> {
        self.inflight.try_acquire(lv).ok_or_else(|| {
            CsiError::Aborted(format!("an operation on {what} is already in progress"))
        })
    }

    /// Key of the copy job that fills a volume LV.
    pub(crate) fn job_key(vg: &str, lv: &str) -> String {
        format!("{vg}/{lv}")
    }

    /// The volume's health, with the progress of its copy when one runs.
    pub(crate) fn condition(&self, lv: &LvInfo, state: &LvmState) -> csi::VolumeCondition {
        let copy = self.jobs.get(&Self::job_key(&lv.vg, &lv.name));
        let c = carve_core::engine::health::condition(lv, state, copy.map(|j| j.progress()));
        csi::VolumeCondition {
            abnormal: c.abnormal,
            message: c.message,
        }
    }

    async fn validate(
        &self,
        req: csi::ValidateVolumeCapabilitiesRequest,
    ) -> CsiResult<csi::ValidateVolumeCapabilitiesResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::InvalidArgument("volume_id is required".into()));
        }
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::InvalidArgument(
                "volume_capabilities must not be empty".into(),
            ));
        }
        let params = Params::parse(&req.parameters).map_err(CsiError::InvalidArgument)?;
        self.volume_lv(&req.volume_id, true).await?;
        if let Some(n) = &params.device_class {
            self.pick_class(&Params {
                device_class: Some(n.clone()),
                ..Default::default()
            })?;
        }
        Ok(match capability::check_all(&req.volume_capabilities) {
            Ok(()) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(why) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: why,
            },
        })
    }

    async fn list(&self, req: csi::ListVolumesRequest) -> CsiResult<csi::ListVolumesResponse> {
        // Validate the token before anything else runs.
        crate::pagination::check(req.max_entries, &req.starting_token)?;
        let view = self.view_or_refresh().await?;
        let vols: Vec<(String, &LvInfo)> = self
            .volumes(&view.lvm)
            .map(|l| (self.id_of(l), l))
            .collect();
        let (page, next_token) = crate::pagination::page(
            vols,
            |(id, _)| id.as_str(),
            req.max_entries,
            &req.starting_token,
        )?;
        Ok(csi::ListVolumesResponse {
            entries: page
                .iter()
                .map(|(_, lv)| csi::list_volumes_response::Entry {
                    volume: Some(self.volume(lv)),
                    status: Some(csi::list_volumes_response::VolumeStatus {
                        published_node_ids: vec![],
                        volume_condition: Some(self.condition(lv, &view.lvm)),
                    }),
                })
                .collect(),
            next_token,
        })
    }

    async fn capacity(&self, req: csi::GetCapacityRequest) -> CsiResult<csi::GetCapacityResponse> {
        let params = Params::parse(&req.parameters).map_err(CsiError::InvalidArgument)?;
        let class = self.pick_class(&params)?;
        let zero = csi::GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: Some(0),
            minimum_volume_size: None,
        };
        if let Some(t) = &req.accessible_topology {
            if t.segments.get(TOPOLOGY_KEY) != Some(&self.node_id) {
                return Ok(zero);
            }
        }
        if !req.volume_capabilities.is_empty()
            && capability::check_all(&req.volume_capabilities).is_err()
        {
            return Ok(zero);
        }
        let view = self.view()?;
        match view.capacity.get(&class.name) {
            Some(Ok(c)) => Ok(csi::GetCapacityResponse {
                available_capacity: c.available as i64,
                maximum_volume_size: Some(c.maximum_volume_size as i64),
                minimum_volume_size: Some(c.minimum_volume_size as i64),
            }),
            Some(Err(e)) => {
                tracing::warn!(class = %class.name, error = %e, "GetCapacity: class unusable, reporting 0");
                Ok(zero)
            }
            None => Err(CsiError::Unavailable("capacity not computed yet".into())),
        }
    }

    pub(crate) async fn expand(
        &self,
        req: csi::ControllerExpandVolumeRequest,
    ) -> CsiResult<csi::ControllerExpandVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::InvalidArgument("volume_id is required".into()));
        }
        let Some(range) = req.capacity_range.as_ref() else {
            return Err(CsiError::InvalidArgument(
                "capacity_range is required".into(),
            ));
        };
        if let Some(c) = &req.volume_capability {
            capability::check(c).map_err(CsiError::InvalidArgument)?;
        }
        let node_expansion_required = !req
            .volume_capability
            .as_ref()
            .is_some_and(|c| capability::is_block(std::slice::from_ref(c)));
        let lv = self.volume_lv(&req.volume_id, false).await?;
        let _guard = self.guard(&format!("volume {}", req.volume_id), &lv.name)?;
        let guard = self.lvm.lock_vg(&lv.vg).await;
        // Under the lock, LVM's current word on the LV's size.
        let view = self
            .state
            .refresh_vg(&lv.vg)
            .await
            .map_err(CsiError::lvm("reading LVM state"))?;
        let lv = self
            .find(&view.lvm, &lv.vg, &lv.name, LvKind::Volume)
            .cloned()
            .ok_or_else(|| self.not_here("volume", &req.volume_id, &Located::Gone))?;
        if lv.tag(names::TAG_INCOMPLETE).is_some() {
            return Err(CsiError::FailedPrecondition(format!(
                "volume {} is still being filled from its source; expand it once CreateVolume has succeeded",
                req.volume_id
            )));
        }
        let class = self.class_for(&lv)?;
        let cap = view
            .capacity
            .get(&class.name)
            .and_then(|c| c.as_ref().ok())
            .cloned()
            .ok_or_else(|| {
                CsiError::FailedPrecondition(format!(
                    "device class {} is not usable now",
                    class.name
                ))
            })?;
        let size = choose_size(Some(range), cap.granule)?;
        if size <= lv.size {
            if range.limit_bytes > 0 && lv.size > range.limit_bytes as u64 {
                return Err(CsiError::OutOfRange(format!(
                    "volume is already {} bytes, above limit_bytes {}; LVs are never shrunk",
                    lv.size, range.limit_bytes
                )));
            }
            return Ok(csi::ControllerExpandVolumeResponse {
                capacity_bytes: lv.size as i64,
                node_expansion_required,
            });
        }
        let grow = size - lv.size;
        if grow > cap.available {
            return Err(CsiError::ResourceExhausted(format!(
                "growing volume {} by {grow} bytes needs more than the {} bytes device class {} has available",
                req.volume_id, cap.available, class.name
            )));
        }
        tracing::info!(volume_id = %req.volume_id, from = lv.size, to = size, "expanding volume");
        guard
            .extend(&lv.name, size)
            .await
            .map_err(CsiError::lvm(format!("expanding volume {}", req.volume_id)))?;
        self.state.apply(Change::Resized {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
            size,
        });
        Ok(csi::ControllerExpandVolumeResponse {
            capacity_bytes: size as i64,
            node_expansion_required,
        })
    }

    async fn get_volume(
        &self,
        req: csi::ControllerGetVolumeRequest,
    ) -> CsiResult<csi::ControllerGetVolumeResponse> {
        let lv = self.volume_lv(&req.volume_id, true).await?;
        let view = self.view()?;
        Ok(csi::ControllerGetVolumeResponse {
            volume: Some(self.volume(&lv)),
            status: Some(csi::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![],
                volume_condition: Some(self.condition(&lv, &view.lvm)),
            }),
        })
    }
}

/// How long a CreateVolume may wait for a copy: until shortly before the
/// caller's own deadline (so it hears progress, not DeadlineExceeded), or the
/// configured wait when the caller set none.
pub(crate) fn copy_wait(metadata: &tonic::metadata::MetadataMap, configured: Duration) -> Duration {
    match metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(d) => d.saturating_sub((d / 10).max(Duration::from_secs(1))),
        None => configured,
    }
}

/// The gRPC `grpc-timeout` header: an integer and a unit (H M S m u n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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
        let wait = copy_wait(r.metadata(), self.config.copy_wait());
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
        logged("ListSnapshots", self.list_snapshots(r.into_inner())).await
    }

    async fn get_snapshot(
        &self,
        r: Request<csi::GetSnapshotRequest>,
    ) -> Result<Response<csi::GetSnapshotResponse>, Status> {
        logged("GetSnapshot", self.get_snapshot(r.into_inner())).await
    }

    async fn controller_expand_volume(
        &self,
        r: Request<csi::ControllerExpandVolumeRequest>,
    ) -> Result<Response<csi::ControllerExpandVolumeResponse>, Status> {
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

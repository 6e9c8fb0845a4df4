//! CSI Controller. carve's controller runs on every node beside its LVs (the
//! provisioner runs in node mode), so each RPC acts on local LVM only. Requests
//! are validated completely before any lvm command runs.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::capability;
use crate::config::{Config, DeviceClass, Provisioning};
use crate::csi::{self, controller_server::Controller};
use crate::error::{logged, CsiError, CsiResult};
use crate::inflight::InFlight;
use crate::lvm::{args::CreateLv, LvInfo, Lvm, LvmErrorKind, LvmState};
use crate::names::{self, VolumeId};
use crate::params::Params;
use crate::state::StateCache;

/// Topology key every carve volume and node carries.
pub const TOPOLOGY_KEY: &str = "topology.carve.dev/node";
/// Size when a request names none.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Keys carve puts into volume_context for the node side.
pub const CTX_DEVICE_CLASS: &str = "carve.dev/device-class";
pub const CTX_FS_TYPE: &str = "carve.dev/fs-type";

pub struct ControllerService {
    pub driver_name: String,
    pub node_id: String,
    pub config: Arc<Config>,
    pub lvm: Arc<Lvm>,
    pub state: Arc<StateCache>,
    pub inflight: InFlight,
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

fn fits_range(size: u64, range: Option<&csi::CapacityRange>) -> bool {
    range.is_none_or(|r| {
        size >= r.required_bytes.max(0) as u64
            && (r.limit_bytes <= 0 || size <= r.limit_bytes as u64)
    })
}

impl ControllerService {
    pub(crate) fn owned(&self, lv: &LvInfo) -> bool {
        lv.tag(names::TAG_OWNER) == Some(self.driver_name.as_str())
    }

    pub(crate) fn managed_vg(&self, vg: &str) -> bool {
        self.config
            .device_classes
            .iter()
            .any(|c| c.volume_group == vg)
    }

    fn class_of(&self, lv: &LvInfo) -> Option<&DeviceClass> {
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

    fn topology(&self) -> Vec<csi::Topology> {
        vec![csi::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.to_string(), self.node_id.clone())]),
        }]
    }

    fn volume(&self, lv: &LvInfo) -> csi::Volume {
        let mut ctx = HashMap::new();
        if let Some(c) = self.class_of(lv) {
            ctx.insert(CTX_DEVICE_CLASS.to_string(), c.name.clone());
        }
        if let Some(fs) = lv.tag(names::TAG_FS_TYPE) {
            ctx.insert(CTX_FS_TYPE.to_string(), names::decode_tag_value(fs));
        }
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
            volume_id: VolumeId {
                vg: lv.vg.clone(),
                lv: lv.name.clone(),
            }
            .to_string(),
            volume_context: ctx,
            content_source,
            accessible_topology: self.topology(),
        }
    }

    /// A carve-owned LV in a managed VG, from a state report.
    pub(crate) fn find<'a>(&self, state: &'a LvmState, id: &VolumeId) -> Option<&'a LvInfo> {
        state
            .lv(&id.vg, &id.lv)
            .filter(|lv| self.managed_vg(&lv.vg) && self.owned(lv) && lv.name.starts_with("cv-"))
    }

    fn pick_class(&self, p: &Params) -> CsiResult<&DeviceClass> {
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
    fn check_topology(&self, req: Option<&csi::TopologyRequirement>) -> CsiResult<()> {
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
    pub(crate) fn view(&self) -> CsiResult<Arc<crate::state::View>> {
        self.state.get().ok_or_else(|| {
            CsiError::Unavailable(format!(
                "LVM state is not known yet: {}",
                self.state
                    .last_error()
                    .unwrap_or_else(|| "first report pending".into())
            ))
        })
    }

    fn busy(key: &str) -> CsiError {
        CsiError::Aborted(format!(
            "an operation on volume {key} is already in progress"
        ))
    }

    async fn create(&self, req: csi::CreateVolumeRequest) -> CsiResult<csi::CreateVolumeResponse> {
        if req.name.is_empty() {
            return Err(CsiError::InvalidArgument("name is required".into()));
        }
        if req.name.len() > 1024 {
            return Err(CsiError::InvalidArgument(
                "name is longer than 1024 bytes".into(),
            ));
        }
        capability::check_all(&req.volume_capabilities).map_err(CsiError::InvalidArgument)?;
        let params = Params::parse(&req.parameters).map_err(CsiError::InvalidArgument)?;
        if let Some(fs) = &params.fs_type {
            for c in &req.volume_capabilities {
                if let Some(csi::volume_capability::AccessType::Mount(m)) = &c.access_type {
                    if !m.fs_type.is_empty() && &m.fs_type != fs {
                        return Err(CsiError::InvalidArgument(format!(
                            "parameter fsType {fs:?} contradicts the capability's fs_type {:?}",
                            m.fs_type
                        )));
                    }
                }
            }
        }
        let class = self.pick_class(&params)?;
        self.check_topology(req.accessibility_requirements.as_ref())?;
        let source = match &req.volume_content_source {
            Some(src) => Some(self.resolve_source(src, class).await?),
            None => None,
        };
        // Sizes are checked before anything is locked or run.
        choose_size(req.capacity_range.as_ref(), 1)?;
        let lv_name = names::lv_name(&req.name);
        let _guard = self
            .inflight
            .try_acquire(&lv_name)
            .ok_or_else(|| Self::busy(&req.name))?;
        // Held for the LVM writes; released before a block copy, which can run
        // for minutes and must not stall every other write to the VG.
        let mut vg_lock = Some(self.lvm.lock_vg(&class.volume_group).await);
        // Read the view only now: a create that held the VG lock before us has
        // already applied its change to it.
        let view = self.view()?;
        let cap = match view.capacity.get(&class.name) {
            Some(Ok(c)) => c.clone(),
            Some(Err(e)) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "device class {}: {e}",
                    class.name
                )))
            }
            None => return Err(CsiError::Unavailable("capacity not computed yet".into())),
        };
        let mut size = choose_size(req.capacity_range.as_ref(), cap.granule)?;
        if let Some(src) = &source {
            let (required, limit) = req.capacity_range.as_ref().map_or((0, 0), |r| {
                (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
            });
            let src_size = src.size.div_ceil(cap.granule) * cap.granule;
            if (limit > 0 && limit < src.size) || (required > 0 && required < src.size) {
                return Err(CsiError::OutOfRange(format!(
                    "content source {} holds {} bytes; the requested range ({required}..{limit}) is smaller",
                    src.id, src.size
                )));
            }
            if required == 0 {
                size = src_size;
            }
        }

        // A retry of an earlier create finds its LV in the cache; a create the
        // cache has not seen yet shows up as "already exists" from lvcreate.
        if let Some((v, lv)) = self.existing(&view.lvm, &req, class, &lv_name)? {
            if let (Some(src), true) = (&source, lv.tag(names::TAG_INCOMPLETE).is_some()) {
                // A thick restore or clone interrupted by a crash: copy again.
                tracing::warn!(volume = %v.volume.as_ref().map(|v| v.volume_id.clone()).unwrap_or_default(), "restarting an unfinished block copy");
                vg_lock.take();
                self.fill_from_source(class, &lv_name, src).await?;
            }
            return Ok(v);
        }
        if size > cap.maximum_volume_size {
            return Err(CsiError::ResourceExhausted(format!(
                "device class {} can hold at most {} bytes in one volume now ({} available); {size} requested",
                class.name, cap.maximum_volume_size, cap.available
            )));
        }
        let mut tags = vec![
            names::tag(names::TAG_OWNER, &self.driver_name),
            names::tag(names::TAG_NAME, &req.name),
            names::tag(names::TAG_CLASS, &class.name),
        ];
        if let Some(src) = &source {
            tags.push(names::tag(names::TAG_SOURCE, &src.id));
            if class.provisioning == Provisioning::Thick {
                tags.push(names::tag(names::TAG_INCOMPLETE, "1"));
            }
        }
        for (key, v) in [
            (names::TAG_FS_TYPE, &params.fs_type),
            (names::TAG_PVC, &params.pvc_name),
            (names::TAG_PVC_NAMESPACE, &params.pvc_namespace),
            (names::TAG_PV, &params.pv_name),
        ] {
            if let Some(v) = v {
                tags.push(names::tag(key, v));
            }
        }
        let spec = CreateLv {
            class,
            name: &lv_name,
            size_bytes: size,
            tags,
        };
        tracing::info!(name = %req.name, lv = %format!("{}/{lv_name}", class.volume_group), size, class = %class.name, "creating volume");
        let created = match (&source, class.provisioning) {
            (Some(src), Provisioning::Thin) => {
                self.lvm
                    .write(crate::lvm::args::lvcreate_thin_copy(
                        &class.volume_group,
                        &src.lv.name,
                        &lv_name,
                        &spec.tags,
                    ))
                    .await
            }
            _ => self.lvm.create(&spec).await,
        };
        match created {
            Ok(()) => {}
            Err(e) if e.kind == LvmErrorKind::Exists => {
                let fresh = self
                    .state
                    .refresh_vg(&class.volume_group)
                    .await
                    .map_err(CsiError::lvm("reading LVM state"))?;
                if let Some((v, lv)) = self.existing(&fresh.lvm, &req, class, &lv_name)? {
                    if let (Some(src), true) = (&source, lv.tag(names::TAG_INCOMPLETE).is_some()) {
                        vg_lock.take();
                        self.fill_from_source(class, &lv_name, src).await?;
                    }
                    return Ok(v);
                }
                return Err(CsiError::AlreadyExists(format!(
                    "LV {}/{lv_name} exists but is not carve's volume {:?}",
                    class.volume_group, req.name
                )));
            }
            Err(e) => return Err(CsiError::lvm(format!("creating volume {:?}", req.name))(e)),
        }
        if source.is_some() {
            crate::crash::point("create-after-lvcreate");
        }
        if let Some(src) = &source {
            match class.provisioning {
                // A thin copy starts at its source's size; grow it if asked.
                Provisioning::Thin if size > src.lv.size => self
                    .lvm
                    .extend(&class.volume_group, &lv_name, size)
                    .await
                    .map_err(CsiError::lvm(format!(
                        "growing restored volume {:?}",
                        req.name
                    )))?,
                Provisioning::Thin => {}
                Provisioning::Thick => {
                    vg_lock.take();
                    self.fill_from_source(class, &lv_name, src).await?
                }
            }
        }
        let mut tags = spec.tags.clone();
        tags.retain(|t| !t.starts_with(names::TAG_INCOMPLETE));
        let lv = LvInfo {
            uuid: String::new(),
            name: lv_name.clone(),
            vg: class.volume_group.clone(),
            size,
            tags,
            attr: match class.provisioning {
                Provisioning::Thin => "Vwi-a-tz--".into(),
                Provisioning::Thick => "-wi-a-----".into(),
            },
            pool: class.thin_pool.clone().unwrap_or_default(),
            origin: String::new(),
            data_percent: None,
            metadata_percent: None,
            path: format!("/dev/{}/{lv_name}", class.volume_group),
            health: String::new(),
            created: 0,
            layout: String::new(),
        };
        drop(vg_lock);
        let volume = self.volume(&lv);
        let thick_class = (class.provisioning == Provisioning::Thick).then(|| class.clone());
        self.state.apply(move |s| {
            if let (Some(c), Some(vg)) = (thick_class, s.vgs.get_mut(&lv.vg)) {
                vg.free =
                    vg.free
                        .saturating_sub(crate::capacity::vg_cost(&c, size, vg.extent_size));
            }
            s.lvs.push(lv);
        });
        Ok(csi::CreateVolumeResponse {
            volume: Some(volume),
        })
    }

    /// An LV with this name already exists: the same request (idempotent
    /// success) or a conflicting one (AlreadyExists).
    fn existing(
        &self,
        state: &LvmState,
        req: &csi::CreateVolumeRequest,
        class: &DeviceClass,
        lv_name: &str,
    ) -> CsiResult<Option<(csi::CreateVolumeResponse, LvInfo)>> {
        let Some(lv) = state
            .lvs
            .iter()
            .find(|l| l.name == lv_name && self.managed_vg(&l.vg))
        else {
            return Ok(None);
        };
        let conflict = |why: String| {
            Err(CsiError::AlreadyExists(format!(
                "volume {:?} exists with {why}",
                req.name
            )))
        };
        if !self.owned(lv)
            || lv
                .tag(names::TAG_NAME)
                .map(names::decode_tag_value)
                .as_deref()
                != Some(req.name.as_str())
        {
            return conflict(format!(
                "an LV {}/{} that carve does not own for this name",
                lv.vg, lv.name
            ));
        }
        if lv.vg != class.volume_group
            || self.class_of(lv).map(|c| c.name.as_str()) != Some(class.name.as_str())
        {
            return conflict(format!("another device class (LV {}/{})", lv.vg, lv.name));
        }
        if !fits_range(lv.size, req.capacity_range.as_ref()) {
            return conflict(format!(
                "size {} outside the requested capacity range",
                lv.size
            ));
        }
        use csi::volume_content_source::Type;
        let wanted = req
            .volume_content_source
            .as_ref()
            .and_then(|s| match &s.r#type {
                Some(Type::Snapshot(x)) => Some(x.snapshot_id.clone()),
                Some(Type::Volume(x)) => Some(x.volume_id.clone()),
                None => None,
            });
        let recorded = lv.tag(names::TAG_SOURCE).map(names::decode_tag_value);
        if wanted != recorded {
            return conflict(format!(
                "another content source ({})",
                recorded.unwrap_or_else(|| "none".into())
            ));
        }
        Ok(Some((
            csi::CreateVolumeResponse {
                volume: Some(self.volume(lv)),
            },
            lv.clone(),
        )))
    }

    async fn delete(&self, req: csi::DeleteVolumeRequest) -> CsiResult<csi::DeleteVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::InvalidArgument("volume_id is required".into()));
        }
        let Some(id) = VolumeId::parse(&req.volume_id).filter(|id| self.managed_vg(&id.vg)) else {
            // No carve volume can have this ID, so it is already gone.
            return Ok(csi::DeleteVolumeResponse {});
        };
        let _guard = self
            .inflight
            .try_acquire(&id.lv)
            .ok_or_else(|| Self::busy(&req.volume_id))?;
        let _vg = self.lvm.lock_vg(&id.vg).await;
        // The cached view finds the LV without a report; a volume it does not
        // know (created moments ago, or outside carve's view) is looked up in a
        // fresh one. Either way lvremove itself re-checks the owner tag inside
        // LVM's lock (--select), so a stale view can never remove a foreign LV.
        let cached = self
            .view()
            .ok()
            .filter(|v| self.find(&v.lvm, &id).is_some());
        let view = match cached {
            Some(v) => v,
            None => self
                .state
                .refresh_vg(&id.vg)
                .await
                .map_err(CsiError::lvm("reading LVM state"))?,
        };
        let Some(lv) = view.lvm.lv(&id.vg, &id.lv) else {
            return Ok(csi::DeleteVolumeResponse {});
        };
        if !self.owned(lv) {
            tracing::warn!(volume_id = %req.volume_id, "DeleteVolume: LV exists but lacks carve's owner tag; left untouched");
            return Ok(csi::DeleteVolumeResponse {});
        }
        tracing::info!(volume_id = %req.volume_id, size = lv.size, "deleting volume");
        let size = lv.size;
        let thick_class = self
            .class_of(lv)
            .filter(|c| c.provisioning == Provisioning::Thick)
            .cloned();
        let owner_tag = names::tag(names::TAG_OWNER, &self.driver_name);
        match self.lvm.remove(&id.vg, &id.lv, &owner_tag).await {
            Ok(true) => {}
            Ok(false) => return self.explain_not_removed(&id).await,
            Err(e) if e.kind == LvmErrorKind::NotFound => {}
            Err(e) if e.kind == LvmErrorKind::InUse => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} is in use (mounted or open) on node {}: {e}",
                    req.volume_id, self.node_id
                )))
            }
            Err(e) => {
                return Err(CsiError::lvm(format!("deleting volume {}", req.volume_id))(
                    e,
                ))
            }
        }
        self.state.apply(move |s| {
            s.lvs.retain(|l| !(l.vg == id.vg && l.name == id.lv));
            if let (Some(c), Some(vg)) = (thick_class, s.vgs.get_mut(&id.vg)) {
                vg.free += crate::capacity::vg_cost(&c, size, vg.extent_size);
            }
        });
        Ok(csi::DeleteVolumeResponse {})
    }

    /// lvremove's selection did not match: find out why from LVM itself.
    async fn explain_not_removed(&self, id: &VolumeId) -> CsiResult<csi::DeleteVolumeResponse> {
        let view = self
            .state
            .refresh_vg(&id.vg)
            .await
            .map_err(CsiError::lvm("reading LVM state"))?;
        let Some(lv) = view.lvm.lv(&id.vg, &id.lv) else {
            return Ok(csi::DeleteVolumeResponse {});
        };
        if !self.owned(lv) {
            tracing::warn!(volume_id = %id, "DeleteVolume: LV lacks carve's owner tag; left untouched");
            return Ok(csi::DeleteVolumeResponse {});
        }
        let snapshots: Vec<&str> = view
            .lvm
            .lvs_in(&id.vg)
            .filter(|l| l.origin == id.lv && !l.is_thin_volume())
            .map(|l| l.name.as_str())
            .collect();
        if !snapshots.is_empty() {
            return Err(CsiError::FailedPrecondition(format!(
                "volume {id} is the origin of snapshot LV(s) {}: removing it would remove them too; delete them first",
                snapshots.join(", ")
            )));
        }
        Err(CsiError::FailedPrecondition(format!(
            "lvremove left volume {id} in place (attr {}); see the lvm log",
            lv.attr
        )))
    }

    /// Like [`Self::lookup`], but answered from the cached view when it knows the
    /// volume: for node calls on the hot path (stage, publish), which check the
    /// device node itself and fall back to [`Self::lookup`] when it is missing.
    pub(crate) async fn lookup_cached(&self, volume_id: &str) -> CsiResult<LvInfo> {
        if let (Some(id), Some(view)) = (VolumeId::parse(volume_id), self.state.get()) {
            if self.managed_vg(&id.vg) {
                if let Some(lv) = self.find(&view.lvm, &id) {
                    return Ok(lv.clone());
                }
            }
        }
        self.lookup(volume_id).await.map(|(_, lv, _)| lv)
    }

    /// The carve volume behind `volume_id` from a fresh report of its VG (its
    /// current state matters to the caller), or NotFound.
    pub(crate) async fn lookup(
        &self,
        volume_id: &str,
    ) -> CsiResult<(VolumeId, LvInfo, Arc<crate::state::View>)> {
        if volume_id.is_empty() {
            return Err(CsiError::InvalidArgument("volume_id is required".into()));
        }
        let not_found = || {
            CsiError::NotFound(format!(
                "volume {volume_id:?} does not exist on node {}",
                self.node_id
            ))
        };
        let id = VolumeId::parse(volume_id)
            .filter(|id| self.managed_vg(&id.vg))
            .ok_or_else(not_found)?;
        // Only this volume's VG is re-read: its current state matters here.
        let view = match self.state.refresh_vg(&id.vg).await {
            Ok(v) => v,
            Err(e) if e.kind == LvmErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(CsiError::lvm("reading LVM state")(e)),
        };
        let lv = self.find(&view.lvm, &id).cloned().ok_or_else(not_found)?;
        Ok((id, lv, view))
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
        self.lookup(&req.volume_id).await?;
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
        let view = match self.state.get() {
            Some(v) => v,
            None => self
                .state
                .refresh()
                .await
                .map_err(CsiError::lvm("reading LVM state"))?,
        };
        let vols: Vec<(String, &LvInfo)> = view
            .lvm
            .lvs
            .iter()
            .filter(|l| self.managed_vg(&l.vg) && self.owned(l) && l.name.starts_with("cv-"))
            .map(|l| (format!("{}/{}", l.vg, l.name), l))
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
                        volume_condition: Some(crate::health::condition(lv, &view.lvm)),
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
        let not_found = || {
            CsiError::NotFound(format!(
                "volume {:?} does not exist on node {}",
                req.volume_id, self.node_id
            ))
        };
        let id = VolumeId::parse(&req.volume_id)
            .filter(|id| self.managed_vg(&id.vg))
            .ok_or_else(not_found)?;
        let _guard = self
            .inflight
            .try_acquire(&id.lv)
            .ok_or_else(|| Self::busy(&req.volume_id))?;
        let _vg = self.lvm.lock_vg(&id.vg).await;
        let view = self
            .state
            .refresh_vg(&id.vg)
            .await
            .map_err(CsiError::lvm("reading LVM state"))?;
        let lv = self.find(&view.lvm, &id).cloned().ok_or_else(not_found)?;
        let class = self.class_of(&lv).ok_or_else(|| {
            CsiError::FailedPrecondition(format!(
                "volume {} belongs to no configured device class",
                req.volume_id
            ))
        })?;
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
        self.lvm
            .extend(&id.vg, &id.lv, size)
            .await
            .map_err(CsiError::lvm(format!("expanding volume {}", req.volume_id)))?;
        let (num, den) = class.space_factor();
        let thick = class.provisioning == Provisioning::Thick;
        self.state.apply(move |s| {
            for l in s
                .lvs
                .iter_mut()
                .filter(|l| l.vg == id.vg && l.name == id.lv)
            {
                l.size = size;
            }
            if thick {
                if let Some(vg) = s.vgs.get_mut(&id.vg) {
                    vg.free = vg.free.saturating_sub(grow / den * num);
                }
            }
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
        let (_, lv, view) = self.lookup(&req.volume_id).await?;
        Ok(csi::ControllerGetVolumeResponse {
            volume: Some(self.volume(&lv)),
            status: Some(csi::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![],
                volume_condition: Some(crate::health::condition(&lv, &view.lvm)),
            }),
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
        logged("CreateVolume", self.create(r.into_inner())).await
    }

    async fn delete_volume(
        &self,
        r: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        logged("DeleteVolume", self.delete(r.into_inner())).await
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
        logged("CreateSnapshot", self.create_snapshot(r.into_inner())).await
    }

    async fn delete_snapshot(
        &self,
        r: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        logged("DeleteSnapshot", self.delete_snapshot(r.into_inner())).await
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
        logged("ControllerExpandVolume", self.expand(r.into_inner())).await
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
#[path = "controller_tests.rs"]
mod tests;

//! CreateVolume. The LV name comes from the request name, so a retried or
//! crashed create converges on the same LV. A create is one lvcreate, or, for
//! a volume made from a content source, a sequence of steps that LVM's tags
//! record: the LV is created tagged `incomplete` and the tag goes only once the
//! volume is whole (grown, or filled by its block copy), so a retry after any
//! crash resumes the missing steps and nothing unfinished is reported ready.

use std::time::Duration;

use crate::capability;
use crate::controller::restore::Source;
use crate::controller::ControllerService;
use crate::csi::{self, volume_capability::AccessType};
use crate::error::{CsiError, CsiResult};
use crate::params::Params;
use carve_core::config::{DeviceClass, Provisioning};
use carve_core::engine::state::Change;
use carve_core::host::fs::FsType;
use carve_core::lvm::{args, LvInfo, LvmErrorKind, LvmState};
use carve_core::names;

/// A CreateVolumeRequest, validated.
pub(crate) struct Wanted<'a> {
    pub name: &'a str,
    pub class: &'a DeviceClass,
    pub params: Params,
    /// The filesystem: the parameter, else the capabilities' fs_type.
    pub fs_type: Option<FsType>,
}

fn fits_range(size: u64, range: Option<&csi::CapacityRange>) -> bool {
    range.is_none_or(|r| {
        size >= r.required_bytes.max(0) as u64
            && (r.limit_bytes <= 0 || size <= r.limit_bytes as u64)
    })
}

/// The filesystem a request asks for: the StorageClass parameter, or the
/// capabilities' fs_type (external-provisioner passes `csi.storage.k8s.io/fstype`
/// there); both, or several capabilities, must agree.
fn requested_fs(params: &Params, caps: &[csi::VolumeCapability]) -> CsiResult<Option<FsType>> {
    let mut from_caps: Option<FsType> = None;
    for c in caps {
        if let Some(AccessType::Mount(m)) = &c.access_type {
            if m.fs_type.is_empty() {
                continue;
            }
            let fs: FsType = m.fs_type.parse().map_err(CsiError::InvalidArgument)?;
            match from_caps {
                Some(f) if f != fs => {
                    return Err(CsiError::InvalidArgument(format!(
                        "volume capabilities ask for two filesystems, {f} and {fs}"
                    )))
                }
                _ => from_caps = Some(fs),
            }
        }
    }
    match (params.fs_type, from_caps) {
        (Some(p), Some(c)) if p != c => Err(CsiError::InvalidArgument(format!(
            "parameter fsType {p} contradicts the capability's fs_type {c}"
        ))),
        (Some(p), _) => Ok(Some(p)),
        (None, c) => Ok(c),
    }
}

impl ControllerService {
    fn wanted<'a>(&'a self, req: &'a csi::CreateVolumeRequest) -> CsiResult<Wanted<'a>> {
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
        let fs_type = requested_fs(&params, &req.volume_capabilities)?;
        let class = self.pick_class(&params)?;
        self.check_topology(req.accessibility_requirements.as_ref())?;
        // Sizes are checked before anything is locked or run.
        super::choose_size(req.capacity_range.as_ref(), 1)?;
        Ok(Wanted {
            name: &req.name,
            class,
            params,
            fs_type,
        })
    }

    pub(crate) async fn create(
        &self,
        req: csi::CreateVolumeRequest,
        copy_wait: Duration,
    ) -> CsiResult<csi::CreateVolumeResponse> {
        let want = self.wanted(&req)?;
        let lv_name = names::lv_name(&req.name);
        let source = match &req.volume_content_source {
            None => None,
            Some(src) => match self.resolve_source(src, want.class).await {
                Ok(s) => Some(s),
                Err(e) => {
                    // A volume half made from a source that is gone now can
                    // never be finished: it goes, and the error is final.
                    if matches!(e, CsiError::NotFound(_)) {
                        self.drop_unfinished(&req.name, &lv_name).await?;
                    }
                    return Err(e);
                }
            },
        };
        let _guard = self.guard(&format!("volume {:?}", req.name), &lv_name)?;
        let view = self.view()?;
        let class = want.class;
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
        let mut size = super::choose_size(req.capacity_range.as_ref(), cap.granule)?;
        if let Some(src) = &source {
            let (required, limit) = req.capacity_range.as_ref().map_or((0, 0), |r| {
                (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
            });
            if (limit > 0 && limit < src.size) || (required > 0 && required < src.size) {
                return Err(CsiError::OutOfRange(format!(
                    "content source {} holds {} bytes; the requested range ({required}..{limit}) is smaller",
                    src.id, src.size
                )));
            }
            if required == 0 {
                size = src.size.div_ceil(cap.granule) * cap.granule;
            }
        }
        let lv = match self.existing(&view.lvm, &req, &want, &lv_name)? {
            Some(lv) => lv,
            None => {
                if size > cap.maximum_volume_size {
                    return Err(CsiError::ResourceExhausted(format!(
                        "device class {} can hold at most {} bytes in one volume now ({} available); {size} requested",
                        class.name, cap.maximum_volume_size, cap.available
                    )));
                }
                self.create_lv(&req, &want, &lv_name, size, source.as_ref())
                    .await?
            }
        };
        let lv = match (&source, lv.tag(names::TAG_INCOMPLETE).is_some()) {
            (Some(src), true) => self.finish(class, lv, size, src, copy_wait).await?,
            _ => lv,
        };
        Ok(csi::CreateVolumeResponse {
            volume: Some(self.volume(&lv)),
        })
    }

    /// Runs the lvcreate of a new volume (tagged incomplete when more steps
    /// follow) and records it in the cache.
    async fn create_lv(
        &self,
        req: &csi::CreateVolumeRequest,
        want: &Wanted<'_>,
        lv_name: &str,
        size: u64,
        source: Option<&Source>,
    ) -> CsiResult<LvInfo> {
        let class = want.class;
        let mut tags = vec![
            self.owner_tag(),
            names::tag(names::TAG_NAME, want.name),
            names::tag(names::TAG_CLASS, &class.name),
        ];
        if let Some(src) = source {
            tags.push(names::tag(names::TAG_SOURCE, &src.id));
            // Thick: a block copy follows. Thin: an lvextend follows when the
            // volume is to be larger than its source.
            let more = match class.provisioning {
                Provisioning::Thick => true,
                Provisioning::Thin => size > src.lv.size,
            };
            if more {
                tags.push(names::tag(names::TAG_INCOMPLETE, "1"));
            }
        }
        if let Some(fs) = want.fs_type {
            tags.push(names::tag(names::TAG_FS_TYPE, fs.as_str()));
        }
        for (key, v) in [
            (names::TAG_PVC, &want.params.pvc_name),
            (names::TAG_PVC_NAMESPACE, &want.params.pvc_namespace),
            (names::TAG_PV, &want.params.pv_name),
        ] {
            if let Some(v) = v {
                tags.push(names::tag(key, v));
            }
        }
        let vg = &class.volume_group;
        tracing::info!(name = %req.name, lv = %format!("{vg}/{lv_name}"), size, class = %class.name, source = ?source.map(|s| &s.id), "creating volume");
        let vg_lock = self.lvm.lock_vg(vg).await;
        let created = match (source, class.provisioning) {
            (Some(src), Provisioning::Thin) => {
                vg_lock.create_thin_copy(&src.lv.name, lv_name, &tags).await
            }
            _ => {
                vg_lock
                    .create(&args::CreateLv {
                        class,
                        name: lv_name,
                        size_bytes: size,
                        tags: tags.clone(),
                    })
                    .await
            }
        };
        match created {
            Ok(()) => {}
            Err(e) if e.kind == LvmErrorKind::Exists => {
                // Made by a call the cached view has not seen yet.
                let fresh = self
                    .state
                    .refresh_vg(vg)
                    .await
                    .map_err(CsiError::lvm("reading LVM state"))?;
                return match self.existing(&fresh.lvm, req, want, lv_name)? {
                    Some(lv) => Ok(lv),
                    None => Err(CsiError::AlreadyExists(format!(
                        "LV {vg}/{lv_name} exists but is not carve's volume {:?}",
                        req.name
                    ))),
                };
            }
            Err(e) => return Err(CsiError::lvm(format!("creating volume {:?}", req.name))(e)),
        }
        let (lv_size, thin_copy) = match (source, class.provisioning) {
            // A thin copy starts at its source's size.
            (Some(src), Provisioning::Thin) => (src.lv.size, true),
            _ => (size, false),
        };
        let lv = LvInfo::new_volume(
            vg,
            lv_name,
            lv_size,
            tags,
            class.provisioning == Provisioning::Thin,
            class.thin_pool.clone().unwrap_or_default(),
            if thin_copy {
                source.map(|s| s.lv.name.clone()).unwrap_or_default()
            } else {
                String::new()
            },
        );
        self.state.apply(Change::Created(Box::new(lv.clone())));
        drop(vg_lock);
        if source.is_some() {
            carve_core::crash::point("create-after-lvcreate");
        }
        Ok(lv)
    }

    /// An LV with this request's name already exists: the same request
    /// (idempotent success, or the steps left to do when it is unfinished)
    /// or a conflicting one (AlreadyExists).
    fn existing(
        &self,
        state: &LvmState,
        req: &csi::CreateVolumeRequest,
        want: &Wanted<'_>,
        lv_name: &str,
    ) -> CsiResult<Option<LvInfo>> {
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
        let class = want.class;
        if lv.vg != class.volume_group
            || self.class_of(lv).map(|c| c.name.as_str()) != Some(class.name.as_str())
        {
            return conflict(format!("another device class (LV {}/{})", lv.vg, lv.name));
        }
        // An unfinished volume may still be smaller than asked (its lvextend
        // is one of the steps left).
        if lv.tag(names::TAG_INCOMPLETE).is_none()
            && !fits_range(lv.size, req.capacity_range.as_ref())
        {
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
        Ok(Some(lv.clone()))
    }

    /// Removes the unfinished volume of a create whose source has gone (it can
    /// never be completed, and the CO never learnt its ID to delete it).
    async fn drop_unfinished(&self, name: &str, lv_name: &str) -> CsiResult<()> {
        let Some(view) = self.state.get() else {
            return Ok(());
        };
        let Some(lv) = self
            .volumes(&view.lvm)
            .find(|l| {
                l.name == lv_name
                    && l.tag(names::TAG_INCOMPLETE).is_some()
                    && l.tag(names::TAG_NAME)
                        .map(names::decode_tag_value)
                        .as_deref()
                        == Some(name)
            })
            .cloned()
        else {
            return Ok(());
        };
        let _guard = self.guard(&format!("volume {name:?}"), lv_name)?;
        tracing::warn!(lv = %format!("{}/{}", lv.vg, lv.name), "the source of this unfinished volume is gone; removing it");
        self.remove_volume_lv(&lv).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{access_mode::Mode, AccessMode, BlockVolume, MountVolume};

    fn cap(fs: Option<&str>) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_type: Some(match fs {
                Some(f) => AccessType::Mount(MountVolume {
                    fs_type: f.into(),
                    ..Default::default()
                }),
                None => AccessType::Block(BlockVolume {}),
            }),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }
    }

    #[test]
    fn fs_type_comes_from_the_parameter_or_the_capabilities() {
        let none = Params::default();
        let xfs = Params {
            fs_type: Some(FsType::Xfs),
            ..Default::default()
        };
        let f = |p: &Params, caps: &[csi::VolumeCapability]| requested_fs(p, caps);
        assert_eq!(f(&none, &[cap(Some("xfs"))]).unwrap(), Some(FsType::Xfs));
        assert_eq!(f(&none, &[cap(Some("")), cap(None)]).unwrap(), None);
        assert_eq!(f(&xfs, &[cap(Some(""))]).unwrap(), Some(FsType::Xfs));
        assert_eq!(f(&xfs, &[cap(Some("xfs"))]).unwrap(), Some(FsType::Xfs));
        assert!(f(&xfs, &[cap(Some("ext4"))]).is_err());
        assert!(f(&none, &[cap(Some("ext4")), cap(Some("btrfs"))]).is_err());
        assert!(f(&none, &[cap(Some("ntfs"))]).is_err());
    }
}

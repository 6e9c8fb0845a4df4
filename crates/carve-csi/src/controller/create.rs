//! CreateVolume. The LV name comes from the request name, so a retried or
//! crashed create converges on the same LV. A create is one lvcreate, or, for
//! a volume made from a content source, a sequence of steps that LVM's tags
//! record: the LV is created tagged `incomplete` and the tag goes only once the
//! volume is whole (grown, or filled by its block copy), so a retry after any
//! crash resumes the missing steps and nothing unfinished is reported ready.

use std::time::Duration;

use carve_core::config::{DeviceClass, Provisioning};
use carve_core::engine::capacity::{CapacityError, ClassCapacity};
use carve_core::engine::state::Change;
use carve_core::host::fs::FsType;
use carve_core::lvm::{args, LvInfo, LvmErrorKind, LvmState};
use carve_core::names;
use tonic::Code;

use super::delete::RemoveError;
use super::restore::{FinishError, Source, SourceError};
use super::size::{fits_range, SizeError};
use super::{ControllerService, NotThisNode, UnknownClass};
use crate::capability::{self, CapabilityError};
use crate::csi::{self, volume_capability::AccessType};
use crate::error::{into_status, Busy, LvmFailure, NotReady, RpcError};
use crate::params::{BadParams, Params};

#[derive(Debug, thiserror::Error)]
pub enum CreateVolumeError {
    #[error("name is required")]
    NoName,
    #[error("name is longer than 1024 bytes")]
    NameTooLong,
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Params(#[from] BadParams),
    #[error("volume capabilities ask for two filesystems, {0} and {1}")]
    TwoFilesystems(FsType, FsType),
    #[error("parameter fsType {param} contradicts the capability's fs_type {cap}")]
    FsConflict { param: FsType, cap: FsType },
    #[error(transparent)]
    Class(#[from] UnknownClass),
    #[error(transparent)]
    Topology(#[from] NotThisNode),
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("content source {id} holds {size} bytes; the requested range ({required}..{limit}) is smaller")]
    SmallerThanSource {
        id: String,
        size: u64,
        required: u64,
        limit: u64,
    },
    #[error("content source {id} is {}; the new volume's class asks for {}: a restore or clone holds its source's data as it is (encrypted with the source's key, or plain), so both must say the same {}", if *.source_encrypted { "LUKS2-encrypted" } else { "not encrypted" }, if *.source_encrypted { "a plain volume" } else { "encryption" }, carve_core::encryption::ENCRYPTION)]
    EncryptionMismatch { id: String, source_encrypted: bool },
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("device class {class} cannot be used now")]
    ClassUnusable {
        class: String,
        #[source]
        source: CapacityError,
    },
    #[error("the capacity of device class {0} is not computed yet")]
    NotComputed(String),
    #[error("device class {class} can hold at most {max} bytes in one volume now ({available} available{why}); {requested} requested")]
    NoRoom {
        class: String,
        max: u64,
        available: u64,
        requested: u64,
        /// "; thin pool vg/p data is 96.0% used (full at 95%)", or nothing.
        why: String,
    },
    #[error("volume {name:?} exists with {why}")]
    Conflict { name: String, why: String },
    #[error(
        "volume group {vg} cannot be read on this node now (a failing or missing disk?): {detail}"
    )]
    VgUnreadable { vg: String, detail: String },
    #[error(transparent)]
    Lvm(#[from] LvmFailure),
    #[error(transparent)]
    Finish(#[from] FinishError),
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

impl RpcError for CreateVolumeError {
    fn code(&self) -> Code {
        use CreateVolumeError as E;
        match self {
            E::NoName | E::NameTooLong | E::TwoFilesystems(..) | E::FsConflict { .. } => {
                Code::InvalidArgument
            }
            E::Capability(_) => Code::InvalidArgument,
            E::Params(e) => e.code(),
            E::Class(e) => e.code(),
            E::Topology(e) => e.code(),
            E::Size(e) => e.code(),
            E::Source(e) => e.code(),
            E::SmallerThanSource { .. } => Code::OutOfRange,
            E::EncryptionMismatch { .. } => Code::InvalidArgument,
            E::Busy(e) => e.code(),
            E::NotReady(e) => e.code(),
            // Its VG or pool is absent on this node: another node may have
            // it, and the provisioner hands the claim back to the scheduler.
            E::ClassUnusable { .. } | E::VgUnreadable { .. } => Code::ResourceExhausted,
            E::NotComputed(_) => Code::Unavailable,
            E::NoRoom { .. } => Code::ResourceExhausted,
            E::Conflict { .. } => Code::AlreadyExists,
            E::Lvm(e) => e.code(),
            E::Finish(e) => e.code(),
            E::Remove(e) => e.code(),
        }
    }
}

into_status!(CreateVolumeError);

type Result<T, E = CreateVolumeError> = std::result::Result<T, E>;

/// A CreateVolumeRequest, validated.
pub(crate) struct Wanted<'a> {
    pub name: &'a str,
    pub class: &'a DeviceClass,
    pub params: Params,
    /// The filesystem: the parameter, else the capabilities' fs_type.
    pub fs_type: Option<FsType>,
}

/// The filesystem a request asks for: the StorageClass parameter, or the
/// capabilities' fs_type (external-provisioner passes `csi.storage.k8s.io/fstype`
/// there); both, or several capabilities, must agree.
fn requested_fs(params: &Params, caps: &[csi::VolumeCapability]) -> Result<Option<FsType>> {
    let mut from_caps: Option<FsType> = None;
    for c in caps {
        if let Some(AccessType::Mount(m)) = &c.access_type {
            if m.fs_type.is_empty() {
                continue;
            }
            let fs: FsType = m.fs_type.parse().map_err(CapabilityError::Filesystem)?;
            match from_caps {
                Some(f) if f != fs => return Err(CreateVolumeError::TwoFilesystems(f, fs)),
                _ => from_caps = Some(fs),
            }
        }
    }
    match (params.fs_type, from_caps) {
        (Some(param), Some(cap)) if param != cap => {
            Err(CreateVolumeError::FsConflict { param, cap })
        }
        (Some(p), _) => Ok(Some(p)),
        (None, c) => Ok(c),
    }
}

/// How long a CreateVolume may wait for a copy: until shortly before the
/// caller's own deadline (so it hears progress, not DeadlineExceeded), or the
/// configured wait when the caller set none.
pub(super) fn copy_wait(metadata: &tonic::metadata::MetadataMap, configured: Duration) -> Duration {
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

impl ControllerService {
    fn wanted<'a>(&'a self, req: &'a csi::CreateVolumeRequest) -> Result<Wanted<'a>> {
        if req.name.is_empty() {
            return Err(CreateVolumeError::NoName);
        }
        if req.name.len() > 1024 {
            return Err(CreateVolumeError::NameTooLong);
        }
        capability::check_all(&req.volume_capabilities)?;
        let params = Params::parse(&req.parameters)?;
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
    ) -> Result<csi::CreateVolumeResponse> {
        let want = self.wanted(&req)?;
        let lv_name = names::lv_name(&req.name);
        let source = match &req.volume_content_source {
            None => None,
            Some(src) => match self.resolve_source(src, want.class).await {
                Ok(s) => Some(s),
                Err(e) => {
                    // A volume half made from a source that is gone now can
                    // never be finished: it goes, and the error is final.
                    if matches!(e, SourceError::Gone { .. }) {
                        self.drop_unfinished(&req, &lv_name).await?;
                    }
                    return Err(e.into());
                }
            },
        };
        if let Some(src) = &source {
            let source_encrypted = src.lv.tag(names::TAG_ENCRYPTION).is_some();
            if source_encrypted != want.params.encryption.is_some() {
                return Err(CreateVolumeError::EncryptionMismatch {
                    id: src.id.clone(),
                    source_encrypted,
                });
            }
        }
        let _busy = self.guard(&format!("volume {:?}", req.name), &lv_name)?;
        let view = self.view()?;
        let class = want.class;
        let cap = self.class_capacity(class, &view.capacity)?;
        let size = target_size(&req, &cap, source.as_ref())?;
        let lv = match self.existing(&view.lvm, &req, &want, &lv_name)? {
            Some(lv) => lv,
            None => {
                if size > cap.maximum_volume_size {
                    return Err(CreateVolumeError::NoRoom {
                        class: class.name.clone(),
                        max: cap.maximum_volume_size,
                        available: cap.available,
                        requested: size,
                        why: cap
                            .pool_full
                            .as_ref()
                            .map(|w| format!(": {w}"))
                            .unwrap_or_default(),
                    });
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

    fn class_capacity(
        &self,
        class: &DeviceClass,
        capacity: &std::collections::BTreeMap<
            String,
            std::result::Result<ClassCapacity, CapacityError>,
        >,
    ) -> Result<ClassCapacity> {
        match capacity.get(&class.name) {
            Some(Ok(c)) => Ok(c.clone()),
            Some(Err(e)) => Err(CreateVolumeError::ClassUnusable {
                class: class.name.clone(),
                source: e.clone(),
            }),
            None => Err(CreateVolumeError::NotComputed(class.name.clone())),
        }
    }

    /// The tags a new volume carries: owner, name, class, source, fs type, the
    /// CO's metadata, and `incomplete` when more steps follow the lvcreate
    /// (thick: a block copy; thin: an lvextend when larger than its source).
    fn tags(&self, want: &Wanted<'_>, size: u64, source: Option<&Source>) -> Vec<String> {
        let class = want.class;
        let mut tags = vec![
            self.owner_tag(),
            names::tag(names::TAG_NAME, want.name),
            names::tag(names::TAG_CLASS, &class.name),
        ];
        if let Some(src) = source {
            tags.push(names::tag(names::TAG_SOURCE, &src.id));
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
        // A restore or clone is encrypted as its source is (the header came
        // with the data); a new volume as its class asks.
        match (source, &want.params.encryption) {
            (Some(src), _) => {
                if let Some(enc) = src.lv.tag(names::TAG_ENCRYPTION) {
                    tags.push(format!("{}={enc}", names::TAG_ENCRYPTION));
                }
            }
            (None, Some(luks)) => tags.push(names::tag(names::TAG_ENCRYPTION, &luks.tag_value())),
            (None, None) => {}
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
        tags
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
    ) -> Result<LvInfo> {
        let class = want.class;
        let tags = self.tags(want, size, source);
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
                    .map_err(LvmFailure::ctx("reading LVM state"))?;
                return match self.existing(&fresh.lvm, req, want, lv_name)? {
                    Some(lv) => Ok(lv),
                    None => Err(CreateVolumeError::Conflict {
                        name: req.name.clone(),
                        why: format!("an LV {vg}/{lv_name} that is not carve's volume"),
                    }),
                };
            }
            // lvm finds no such VG although the view has it: its disk went
            // away or fails every read. This node cannot take the volume
            // now, like a node without the VG; the next refresh says so.
            Err(e) if e.kind == LvmErrorKind::VgAbsent => {
                self.state.poke();
                return Err(CreateVolumeError::VgUnreadable {
                    vg: vg.clone(),
                    detail: e.to_string(),
                });
            }
            Err(e) => {
                return Err(LvmFailure::ctx(format!("creating volume {:?}", req.name))(e).into())
            }
        }
        // A thin copy starts at its source's size.
        let thin_copy = source.filter(|_| class.provisioning == Provisioning::Thin);
        let lv = LvInfo::new_volume(
            vg,
            lv_name,
            thin_copy.map_or(size, |s| s.lv.size),
            tags,
            class.provisioning == Provisioning::Thin,
            class.thin_pool.clone().unwrap_or_default(),
            thin_copy.map(|s| s.lv.name.clone()).unwrap_or_default(),
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
    ) -> Result<Option<LvInfo>> {
        let Some(lv) = state
            .lvs
            .iter()
            .find(|l| l.name == lv_name && self.managed_vg(&l.vg))
        else {
            return Ok(None);
        };
        match conflict(self, lv, req, want) {
            None => Ok(Some(lv.clone())),
            Some(why) => Err(CreateVolumeError::Conflict {
                name: req.name.clone(),
                why,
            }),
        }
    }

    /// Removes the unfinished volume of a create whose source has gone (it can
    /// never be completed, and the CO never learnt its ID to delete it) — but
    /// only when it was made from that same source: a request that reuses the
    /// name with another (or a garbage) source is AlreadyExists, and the
    /// volume being made is not touched.
    async fn drop_unfinished(&self, req: &csi::CreateVolumeRequest, lv_name: &str) -> Result<()> {
        let name = req.name.as_str();
        let Some(view) = self.state.get() else {
            return Ok(());
        };
        let Some(lv) = self
            .volumes(&view.lvm)
            .find(|l| l.name == lv_name && names::tag_holds(l.tag(names::TAG_NAME), name))
            .cloned()
        else {
            return Ok(());
        };
        if let Some(why) = source_conflict(&lv, req) {
            return Err(CreateVolumeError::Conflict {
                name: name.to_string(),
                why,
            });
        }
        if lv.tag(names::TAG_INCOMPLETE).is_none() {
            return Ok(());
        }
        let _busy = self.guard(&format!("volume {name:?}"), lv_name)?;
        tracing::warn!(lv = %format!("{}/{}", lv.vg, lv.name), "the source of this unfinished volume is gone; removing it");
        Ok(self.remove_volume_lv(&lv).await?)
    }
}

/// The size a new volume gets: the capacity range rounded to the class's
/// granule, at least its content source's size (the source's size when the
/// request names none).
fn target_size(
    req: &csi::CreateVolumeRequest,
    cap: &ClassCapacity,
    source: Option<&Source>,
) -> Result<u64> {
    let size = super::choose_size(req.capacity_range.as_ref(), cap.granule)?;
    let Some(src) = source else {
        return Ok(size);
    };
    let (required, limit) = req.capacity_range.as_ref().map_or((0, 0), |r| {
        (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64)
    });
    if (limit > 0 && limit < src.size) || (required > 0 && required < src.size) {
        return Err(CreateVolumeError::SmallerThanSource {
            id: src.id.clone(),
            size: src.size,
            required,
            limit,
        });
    }
    Ok(if required == 0 {
        src.size.div_ceil(cap.granule) * cap.granule
    } else {
        size
    })
}

/// Why an existing LV of the request's name is not this request's volume, if
/// it is not.
fn conflict(
    svc: &ControllerService,
    lv: &LvInfo,
    req: &csi::CreateVolumeRequest,
    want: &Wanted<'_>,
) -> Option<String> {
    if !svc.owned(lv) || !names::tag_holds(lv.tag(names::TAG_NAME), &req.name) {
        return Some(format!(
            "an LV {}/{} that carve does not own for this name",
            lv.vg, lv.name
        ));
    }
    let class = want.class;
    if lv.vg != class.volume_group
        || svc.class_of(lv).map(|c| c.name.as_str()) != Some(class.name.as_str())
    {
        return Some(format!("another device class (LV {}/{})", lv.vg, lv.name));
    }
    // An unfinished volume may still be smaller than asked (its lvextend is
    // one of the steps left).
    if lv.tag(names::TAG_INCOMPLETE).is_none() && !fits_range(lv.size, req.capacity_range.as_ref())
    {
        return Some(format!(
            "size {} outside the requested capacity range",
            lv.size
        ));
    }
    if lv.tag(names::TAG_ENCRYPTION).is_some() != want.params.encryption.is_some() {
        return Some(if want.params.encryption.is_some() {
            "no encryption".to_string()
        } else {
            "LUKS2 encryption".to_string()
        });
    }
    source_conflict(lv, req)
}

/// Why `lv` cannot be the volume `req` asks for as far as its content source
/// goes: it was made from another source (or none).
fn source_conflict(lv: &LvInfo, req: &csi::CreateVolumeRequest) -> Option<String> {
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
    (wanted != recorded).then(|| {
        format!(
            "another content source ({})",
            recorded.unwrap_or_else(|| "none".into())
        )
    })
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

//! Snapshots, and volumes made from a snapshot or another volume. Thin device
//! classes use native thin snapshots (instant; restores and clones are writable
//! thin snapshots). Thick classes use classic copy-on-write snapshots with a
//! reserve from the device class; restores and clones are new thick LVs filled
//! by a block copy, tagged incomplete until the copy has finished.
//!
//! Consistency: a mounted origin is frozen by LVM itself for the snapshot
//! instant — device-mapper suspends the origin with lockfs, which freezes its
//! filesystem (freeze_bdev). An extra FIFREEZE from carve makes that suspend
//! fail with EBUSY (tried under UML: "suspend ioctl ... Device or resource
//! busy", and for a classic snapshot a half-made LV), so carve does not add one.

use std::collections::HashMap;

use crate::config::{DeviceClass, Provisioning};
use crate::controller::ControllerService;
use crate::csi;
use crate::error::{CsiError, CsiResult};
use crate::lvm::{args, LvInfo, LvmErrorKind, LvmState};
use crate::names::{self, VolumeId};

/// Where a new volume's content comes from, resolved and checked.
pub struct Source {
    /// The LV to copy or snapshot from.
    pub lv: LvInfo,
    /// Bytes of content (the origin's size for a snapshot).
    pub size: u64,
    /// The ID as the request named it, recorded in the new LV's tag.
    pub id: String,
    pub is_snapshot: bool,
}

/// Bytes of content an LV holds: a snapshot's origin size as recorded when it
/// was taken (a classic snapshot LV's own size is only its COW space), else
/// the LV's size.
fn content_size(lv: &LvInfo) -> u64 {
    lv.tag(names::TAG_SIZE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(lv.size)
}

fn snapshot_params_ok(p: &HashMap<String, String>) -> CsiResult<()> {
    // external-snapshotter adds csi.storage.k8s.io/volumesnapshot/* metadata;
    // carve takes no snapshot parameters of its own.
    match p.keys().find(|k| !k.starts_with("csi.storage.k8s.io/")) {
        Some(k) => Err(CsiError::InvalidArgument(format!(
            "unknown snapshot parameter {k:?}: carve takes none"
        ))),
        None => Ok(()),
    }
}

impl ControllerService {
    fn snapshot_lv<'a>(&self, state: &'a LvmState, id: &VolumeId) -> Option<&'a LvInfo> {
        state
            .lv(&id.vg, &id.lv)
            .filter(|l| self.managed_vg(&l.vg) && self.owned(l) && l.name.starts_with("cs-"))
    }

    pub(crate) fn snapshot_of(&self, lv: &LvInfo) -> csi::Snapshot {
        let size = content_size(lv);
        csi::Snapshot {
            size_bytes: size as i64,
            snapshot_id: format!("{}/{}", lv.vg, lv.name),
            source_volume_id: lv
                .tag(names::TAG_SOURCE)
                .map(names::decode_tag_value)
                .unwrap_or_default(),
            // carve's own creation tag: stable across retries and restarts,
            // and known without asking LVM.
            creation_time: Some(prost_types::Timestamp {
                seconds: lv
                    .tag(names::TAG_CREATED)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(lv.created),
                nanos: 0,
            }),
            // A classic snapshot whose copy-on-write space overflowed is invalid.
            ready_to_use: lv.attr.chars().nth(4) != Some('I'),
            group_snapshot_id: String::new(),
        }
    }

    pub(crate) async fn create_snapshot(
        &self,
        req: csi::CreateSnapshotRequest,
    ) -> CsiResult<csi::CreateSnapshotResponse> {
        if req.name.is_empty() {
            return Err(CsiError::InvalidArgument("name is required".into()));
        }
        if req.name.len() > 1024 {
            return Err(CsiError::InvalidArgument(
                "name is longer than 1024 bytes".into(),
            ));
        }
        if req.source_volume_id.is_empty() {
            return Err(CsiError::InvalidArgument(
                "source_volume_id is required".into(),
            ));
        }
        snapshot_params_ok(&req.parameters)?;
        let snap_name = names::snapshot_lv_name(&req.name);
        let _guard = self.inflight.try_acquire(&snap_name).ok_or_else(|| {
            CsiError::Aborted(format!("snapshot {:?} is already being created", req.name))
        })?;
        // The source from the cached view (a fresh VG report when the view does
        // not know it): the common path runs a single lvm command, lvcreate.
        let src = self.lookup_cached(&req.source_volume_id).await?;
        let src_id = VolumeId {
            vg: src.vg.clone(),
            lv: src.name.clone(),
        };
        let _vg = self.lvm.lock_vg(&src_id.vg).await;
        let view = self.view()?;
        if let Some(s) = self.existing_snapshot(&view.lvm, &snap_name, &req)? {
            return Ok(csi::CreateSnapshotResponse { snapshot: Some(s) });
        }
        let class = self.class_for(&src)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let tags = vec![
            names::tag(names::TAG_OWNER, &self.driver_name),
            names::tag(names::TAG_NAME, &req.name),
            names::tag(names::TAG_CLASS, &class.name),
            names::tag(names::TAG_SOURCE, &req.source_volume_id),
            names::tag(names::TAG_SIZE, &src.size.to_string()),
            names::tag(names::TAG_CREATED, &created.to_string()),
        ];
        let cow = match class.provisioning {
            Provisioning::Thin => None,
            Provisioning::Thick => {
                let vg = view
                    .lvm
                    .vgs
                    .get(&src_id.vg)
                    .ok_or_else(|| CsiError::NotFound(format!("VG {} is gone", src_id.vg)))?;
                let reserve = class.snapshot_reserve(src.size, vg.extent_size);
                if reserve > vg.free.saturating_sub(class.spare.0) {
                    return Err(CsiError::ResourceExhausted(format!(
                        "a snapshot of {} needs {reserve} bytes of copy-on-write space in VG {}; {} are free beyond the spare",
                        req.source_volume_id,
                        src_id.vg,
                        vg.free.saturating_sub(class.spare.0)
                    )));
                }
                Some(reserve)
            }
        };
        tracing::info!(name = %req.name, source = %req.source_volume_id, snapshot = %format!("{}/{snap_name}", src_id.vg), cow_bytes = ?cow, "creating snapshot");
        match self
            .lvm
            .write(args::lvcreate_snapshot(
                &src_id.vg, &src_id.lv, &snap_name, cow, &tags,
            ))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == LvmErrorKind::Exists => {
                // Made by a call the cached view has not seen yet.
                let fresh = self
                    .state
                    .refresh_vg(&src_id.vg)
                    .await
                    .map_err(CsiError::lvm("reading LVM state"))?;
                if let Some(s) = self.existing_snapshot(&fresh.lvm, &snap_name, &req)? {
                    return Ok(csi::CreateSnapshotResponse { snapshot: Some(s) });
                }
                return Err(CsiError::AlreadyExists(format!(
                    "LV {}/{snap_name} exists but is not this snapshot",
                    src_id.vg
                )));
            }
            Err(e) => {
                return Err(CsiError::lvm(format!("creating snapshot {:?}", req.name))(
                    e,
                ))
            }
        }
        let lv = LvInfo {
            uuid: String::new(),
            name: snap_name.clone(),
            vg: src_id.vg.clone(),
            size: cow.unwrap_or(src.size),
            tags,
            attr: if cow.is_some() {
                "swi-a-s---".into()
            } else {
                "Vwi---tz-k".into()
            },
            pool: src.pool.clone(),
            origin: src.name.clone(),
            data_percent: None,
            metadata_percent: None,
            path: format!("/dev/{}/{snap_name}", src_id.vg),
            health: String::new(),
            created,
            layout: String::new(),
        };
        let snapshot = self.snapshot_of(&lv);
        self.state.apply(move |s| {
            if let (Some(b), Some(vg)) = (cow, s.vgs.get_mut(&lv.vg)) {
                vg.free = vg.free.saturating_sub(b);
            }
            s.lvs.push(lv);
        });
        Ok(csi::CreateSnapshotResponse {
            snapshot: Some(snapshot),
        })
    }

    /// A snapshot LV of this request's name already exists: the same request
    /// (idempotent success) or another source (AlreadyExists).
    fn existing_snapshot(
        &self,
        state: &LvmState,
        snap_name: &str,
        req: &csi::CreateSnapshotRequest,
    ) -> CsiResult<Option<csi::Snapshot>> {
        let Some(existing) = state
            .lvs
            .iter()
            .find(|l| l.name == snap_name && self.managed_vg(&l.vg))
        else {
            return Ok(None);
        };
        let tag = |k| existing.tag(k).map(names::decode_tag_value);
        if self.owned(existing)
            && tag(names::TAG_NAME).as_deref() == Some(req.name.as_str())
            && tag(names::TAG_SOURCE).as_deref() == Some(req.source_volume_id.as_str())
        {
            return Ok(Some(self.snapshot_of(existing)));
        }
        Err(CsiError::AlreadyExists(format!(
            "snapshot {:?} exists for another source ({})",
            req.name,
            tag(names::TAG_SOURCE).unwrap_or_default()
        )))
    }

    pub(crate) async fn delete_snapshot(
        &self,
        req: csi::DeleteSnapshotRequest,
    ) -> CsiResult<csi::DeleteSnapshotResponse> {
        if req.snapshot_id.is_empty() {
            return Err(CsiError::InvalidArgument("snapshot_id is required".into()));
        }
        let Some(id) =
            VolumeId::parse_snapshot(&req.snapshot_id).filter(|id| self.managed_vg(&id.vg))
        else {
            return Ok(csi::DeleteSnapshotResponse {});
        };
        let _guard = self.inflight.try_acquire(&id.lv).ok_or_else(|| {
            CsiError::Aborted(format!(
                "an operation on snapshot {} is in progress",
                req.snapshot_id
            ))
        })?;
        let _vg = self.lvm.lock_vg(&id.vg).await;
        let view = match self.state.refresh_vg(&id.vg).await {
            Ok(v) => v,
            Err(e) if e.kind == LvmErrorKind::NotFound => {
                return Ok(csi::DeleteSnapshotResponse {})
            }
            Err(e) => return Err(CsiError::lvm("reading LVM state")(e)),
        };
        if self.snapshot_lv(&view.lvm, &id).is_none() {
            return Ok(csi::DeleteSnapshotResponse {});
        }
        // Restored and cloned volumes never depend on a snapshot LV: thin ones
        // are independent thin LVs, thick ones full copies.
        tracing::info!(snapshot_id = %req.snapshot_id, "deleting snapshot");
        let owner = names::tag(names::TAG_OWNER, &self.driver_name);
        match self.lvm.remove(&id.vg, &id.lv, &owner).await {
            Ok(_) => {}
            Err(e) if e.kind == LvmErrorKind::NotFound => {}
            Err(e) => {
                return Err(CsiError::lvm(format!(
                    "deleting snapshot {}",
                    req.snapshot_id
                ))(e))
            }
        }
        self.state
            .refresh_vg(&id.vg)
            .await
            .map_err(CsiError::lvm("reading LVM state"))?;
        Ok(csi::DeleteSnapshotResponse {})
    }

    pub(crate) async fn list_snapshots(
        &self,
        req: csi::ListSnapshotsRequest,
    ) -> CsiResult<csi::ListSnapshotsResponse> {
        // Validate the token before anything else runs.
        crate::pagination::check(req.max_entries, &req.starting_token)?;
        let view = self
            .state
            .refresh()
            .await
            .map_err(CsiError::lvm("reading LVM state"))?;
        let snaps: Vec<csi::Snapshot> = view
            .lvm
            .lvs
            .iter()
            .filter(|l| self.managed_vg(&l.vg) && self.owned(l) && l.name.starts_with("cs-"))
            // A clone's temporary snapshot is carve's working state, not a snapshot.
            .filter(|l| !l.name.starts_with("cs-clone-"))
            .map(|l| self.snapshot_of(l))
            .filter(|s| req.snapshot_id.is_empty() || s.snapshot_id == req.snapshot_id)
            .filter(|s| {
                req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id
            })
            .collect();
        let (page, next_token) = crate::pagination::page(
            snaps,
            |s| s.snapshot_id.as_str(),
            req.max_entries,
            &req.starting_token,
        )?;
        Ok(csi::ListSnapshotsResponse {
            entries: page
                .into_iter()
                .map(|s| csi::list_snapshots_response::Entry { snapshot: Some(s) })
                .collect(),
            next_token,
        })
    }

    pub(crate) async fn get_snapshot(
        &self,
        req: csi::GetSnapshotRequest,
    ) -> CsiResult<csi::GetSnapshotResponse> {
        if req.snapshot_id.is_empty() {
            return Err(CsiError::InvalidArgument("snapshot_id is required".into()));
        }
        let not_found = || {
            CsiError::NotFound(format!(
                "snapshot {:?} does not exist on node {}",
                req.snapshot_id, self.node_id
            ))
        };
        let id = VolumeId::parse_snapshot(&req.snapshot_id)
            .filter(|id| self.managed_vg(&id.vg))
            .ok_or_else(not_found)?;
        let view = match self.state.refresh_vg(&id.vg).await {
            Ok(v) => v,
            Err(e) if e.kind == LvmErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(CsiError::lvm("reading LVM state")(e)),
        };
        let lv = self.snapshot_lv(&view.lvm, &id).ok_or_else(not_found)?;
        Ok(csi::GetSnapshotResponse {
            snapshot: Some(self.snapshot_of(lv)),
        })
    }

    /// Resolves a CreateVolume content source: it must exist on this node,
    /// belong to carve, and live in the requested class's VG and class.
    pub(crate) async fn resolve_source(
        &self,
        src: &csi::VolumeContentSource,
        class: &DeviceClass,
    ) -> CsiResult<Source> {
        use csi::volume_content_source::Type;
        let (id_str, is_snapshot) = match &src.r#type {
            Some(Type::Snapshot(s)) => (s.snapshot_id.clone(), true),
            Some(Type::Volume(v)) => (v.volume_id.clone(), false),
            None => {
                return Err(CsiError::InvalidArgument(
                    "volume_content_source names neither a snapshot nor a volume".into(),
                ))
            }
        };
        if id_str.is_empty() {
            return Err(CsiError::InvalidArgument(
                "volume_content_source has an empty ID".into(),
            ));
        }
        let not_found = || {
            CsiError::NotFound(format!(
                "content source {id_str:?} does not exist on node {}",
                self.node_id
            ))
        };
        let id = if is_snapshot {
            VolumeId::parse_snapshot(&id_str)
        } else {
            VolumeId::parse(&id_str)
        }
        .filter(|id| self.managed_vg(&id.vg))
        .ok_or_else(not_found)?;
        let view = match self.state.refresh_vg(&id.vg).await {
            Ok(v) => v,
            Err(e) if e.kind == LvmErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(CsiError::lvm("reading LVM state")(e)),
        };
        let lv = if is_snapshot {
            self.snapshot_lv(&view.lvm, &id)
        } else {
            self.find(&view.lvm, &id)
        }
        .cloned()
        .ok_or_else(not_found)?;
        let src_class = lv
            .tag(names::TAG_CLASS)
            .map(names::decode_tag_value)
            .unwrap_or_default();
        if lv.vg != class.volume_group || src_class != class.name {
            return Err(CsiError::InvalidArgument(format!(
                "content source {id_str} is in device class {src_class:?} (VG {}); the new volume asks for class {:?} (VG {}): they must match",
                lv.vg, class.name, class.volume_group
            )));
        }
        let size = content_size(&lv);
        Ok(Source {
            lv,
            size,
            id: id_str,
            is_snapshot,
        })
    }

    /// Fills a new volume from its source. Thin: one lvcreate of a writable
    /// thin snapshot. Thick: the caller made the LV (tagged incomplete); this
    /// copies the content in and clears the tag.
    /// Called without the VG lock: the copy can take minutes, so each LVM
    /// write below takes the lock for itself.
    pub(crate) async fn fill_from_source(
        &self,
        class: &DeviceClass,
        lv_name: &str,
        source: &Source,
    ) -> CsiResult<()> {
        let vg = &class.volume_group;
        let label = format!("{} -> {vg}/{lv_name}", source.id);
        let (read_from, temp) = if source.is_snapshot {
            (source.lv.name.clone(), None)
        } else {
            // A clone reads from a short-lived snapshot of the source so the
            // copy sees one instant even while the source is written.
            let temp = format!("cs-clone-{}", &lv_name[3..lv_name.len().min(3 + 60)]);
            let extent = self
                .state
                .get()
                .and_then(|v| v.lvm.vgs.get(vg).map(|g| g.extent_size))
                .unwrap_or(4 << 20);
            let tags = vec![names::tag(names::TAG_OWNER, &self.driver_name)];
            let _vg = self.lvm.lock_vg(vg).await;
            let _ = self.lvm.remove(vg, &temp, &tags[0]).await;
            self.lvm
                .write(args::lvcreate_snapshot(
                    vg,
                    &source.lv.name,
                    &temp,
                    Some(class.snapshot_reserve(source.size, extent)),
                    &tags,
                ))
                .await
                .map_err(CsiError::lvm(format!(
                    "snapshotting {} for the clone",
                    source.id
                )))?;
            crate::crash::point("clone-after-temp-snapshot");
            (temp.clone(), Some(temp))
        };
        let src_dev = format!("/dev/{vg}/{read_from}");
        if !std::path::Path::new(&src_dev).exists() {
            let _vg = self.lvm.lock_vg(vg).await;
            self.lvm
                .activate(vg, &read_from)
                .await
                .map_err(CsiError::lvm(format!("activating {vg}/{read_from}")))?;
        }
        tracing::info!(copy = %label, bytes = source.size, "block copy started");
        let result = crate::copy::copy(
            src_dev,
            format!("/dev/{vg}/{lv_name}"),
            source.size,
            label.clone(),
        )
        .await;
        if result.is_ok() {
            crate::crash::point("copy-after-data");
        }
        if let Some(temp) = &temp {
            let _vg = self.lvm.lock_vg(vg).await;
            let owner = names::tag(names::TAG_OWNER, &self.driver_name);
            if let Err(e) = self.lvm.remove(vg, temp, &owner).await {
                tracing::warn!(lv = %format!("{vg}/{temp}"), error = %e, "could not remove the clone's temporary snapshot");
            }
        }
        let copied = result
            .map_err(|e| CsiError::FailedPrecondition(format!("block copy {label} failed: {e}")))?;
        tracing::info!(copy = %label, bytes = copied.bytes, seconds = copied.elapsed.as_secs_f64(), mib_per_s = format!("{:.1}", copied.mib_per_second()), "block copy finished");
        crate::crash::point("fill-before-complete");
        let _vg = self.lvm.lock_vg(vg).await;
        self.lvm
            .write(args::lvchange_deltag(
                vg,
                lv_name,
                &names::tag(names::TAG_INCOMPLETE, "1"),
            ))
            .await
            .map_err(CsiError::lvm(format!("marking {vg}/{lv_name} complete")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_k8s_metadata_parameters_are_accepted() {
        let ok = HashMap::from([(
            "csi.storage.k8s.io/volumesnapshot/name".to_string(),
            "x".to_string(),
        )]);
        assert!(snapshot_params_ok(&ok).is_ok());
        let bad = HashMap::from([("reserve".to_string(), "50".to_string())]);
        assert!(snapshot_params_ok(&bad).is_err());
    }
}

//! Snapshots. Thin device classes take native thin snapshots (instant, in the
//! pool); thick classes take classic copy-on-write snapshots with a reserve
//! from the device class. Volumes made from snapshots are in `restore`.
//!
//! Consistency: a mounted origin is frozen by LVM itself for the snapshot
//! instant — device-mapper suspends the origin with lockfs, which freezes its
//! filesystem (freeze_bdev). An extra FIFREEZE from carve makes that suspend
//! fail with EBUSY (tried under UML: "suspend ioctl ... Device or resource
//! busy", and for a classic snapshot a half-made LV), so carve does not add one.

use std::collections::HashMap;

use crate::controller::restore::content_size;
use crate::controller::{ControllerService, Located};
use crate::csi;
use crate::error::{CsiError, CsiResult};
use carve_core::config::Provisioning;
use carve_core::engine::state::Change;
use carve_core::lvm::{LvInfo, LvmErrorKind, LvmState};
use carve_core::names::LvKind;
use carve_core::names::{self, VolumeId};

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
    pub(crate) fn snapshot_of(&self, lv: &LvInfo) -> csi::Snapshot {
        let size = content_size(lv);
        csi::Snapshot {
            size_bytes: size as i64,
            snapshot_id: self.id_of(lv),
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
            ready_to_use: !lv.is_invalid_snapshot(),
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
        let _guard = self.guard(&format!("snapshot {:?}", req.name), &snap_name)?;
        // The source from the cached view (a fresh VG report when the view does
        // not know it): the common path runs a single lvm command, lvcreate.
        let src = self.volume_lv(&req.source_volume_id, false).await?;
        if src.tag(names::TAG_INCOMPLETE).is_some() {
            return Err(CsiError::Aborted(format!(
                "volume {} is still being filled from its source; snapshot it once it is complete",
                req.source_volume_id
            )));
        }
        let vg = src.vg.clone();
        let guard = self.lvm.lock_vg(&vg).await;
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
            self.owner_tag(),
            names::tag(names::TAG_NAME, &req.name),
            names::tag(names::TAG_CLASS, &class.name),
            names::tag(names::TAG_SOURCE, &req.source_volume_id),
            names::tag(names::TAG_SIZE, &src.size.to_string()),
            names::tag(names::TAG_CREATED, &created.to_string()),
        ];
        let cow = match class.provisioning {
            Provisioning::Thin => None,
            Provisioning::Thick => {
                let g = view
                    .lvm
                    .vgs
                    .get(&vg)
                    .ok_or_else(|| CsiError::NotFound(format!("VG {vg} is gone")))?;
                let reserve = class.snapshot_reserve(src.size, g.extent_size);
                let free = g.free.saturating_sub(class.spare);
                if reserve > free {
                    return Err(CsiError::ResourceExhausted(format!(
                        "a snapshot of {} needs {reserve} bytes of copy-on-write space in VG {vg}; {free} are free beyond the spare",
                        req.source_volume_id
                    )));
                }
                Some(reserve)
            }
        };
        tracing::info!(name = %req.name, source = %req.source_volume_id, snapshot = %format!("{vg}/{snap_name}"), cow_bytes = ?cow, "creating snapshot");
        match guard
            .create_snapshot(&src.name, &snap_name, cow, &tags)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == LvmErrorKind::Exists => {
                // Made by a call the cached view has not seen yet.
                let fresh = self
                    .state
                    .refresh_vg(&vg)
                    .await
                    .map_err(CsiError::lvm("reading LVM state"))?;
                if let Some(s) = self.existing_snapshot(&fresh.lvm, &snap_name, &req)? {
                    return Ok(csi::CreateSnapshotResponse { snapshot: Some(s) });
                }
                return Err(CsiError::AlreadyExists(format!(
                    "LV {vg}/{snap_name} exists but is not this snapshot"
                )));
            }
            Err(e) => {
                return Err(CsiError::lvm(format!("creating snapshot {:?}", req.name))(
                    e,
                ))
            }
        }
        let mut lv = match cow {
            Some(bytes) => LvInfo::new_classic_snapshot(&vg, &snap_name, bytes, tags, &src.name),
            None => {
                LvInfo::new_thin_snapshot(&vg, &snap_name, src.size, tags, &src.pool, &src.name)
            }
        };
        lv.created = created;
        let snapshot = self.snapshot_of(&lv);
        self.state.apply(Change::Created(Box::new(lv)));
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
        let lv = match self
            .locate(&req.snapshot_id, LvKind::Snapshot, true)
            .await?
        {
            Located::Here(lv) => *lv,
            Located::Gone => return Ok(csi::DeleteSnapshotResponse {}),
            Located::Elsewhere(node) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "snapshot {} is on node {node}; it can only be deleted there, not on node {}",
                    req.snapshot_id, self.node_id
                )))
            }
        };
        let _guard = self.guard(&format!("snapshot {}", req.snapshot_id), &lv.name)?;
        // An unfinished restore still copies from it (or will, after a restart).
        let view = self.view()?;
        if let Some(dst) = self.volumes(&view.lvm).find(|v| {
            v.tag(names::TAG_INCOMPLETE).is_some()
                && v.tag(names::TAG_SOURCE)
                    .map(names::decode_tag_value)
                    .and_then(|id| VolumeId::parse_snapshot(&id))
                    .is_some_and(|id| id.vg == lv.vg && id.lv == lv.name)
        }) {
            return Err(CsiError::FailedPrecondition(format!(
                "snapshot {} is being restored into {}/{}; delete it once that restore is complete or deleted",
                req.snapshot_id, dst.vg, dst.name
            )));
        }
        // Restored and cloned volumes never depend on a snapshot LV: thin ones
        // are independent thin LVs, thick ones full copies.
        tracing::info!(snapshot_id = %req.snapshot_id, "deleting snapshot");
        let guard = self.lvm.lock_vg(&lv.vg).await;
        match guard.remove(&lv.name, &self.owner_tag()).await {
            Ok(_) => {}
            Err(e) if e.kind == LvmErrorKind::NotFound => {}
            Err(e) if e.kind == LvmErrorKind::InUse => {
                return Err(CsiError::FailedPrecondition(format!(
                    "snapshot {} is in use: {e}",
                    req.snapshot_id
                )))
            }
            Err(e) => {
                return Err(CsiError::lvm(format!(
                    "deleting snapshot {}",
                    req.snapshot_id
                ))(e))
            }
        }
        self.state.apply(Change::Removed {
            vg: lv.vg.clone(),
            lv: lv.name.clone(),
        });
        Ok(csi::DeleteSnapshotResponse {})
    }

    pub(crate) async fn list_snapshots(
        &self,
        req: csi::ListSnapshotsRequest,
    ) -> CsiResult<csi::ListSnapshotsResponse> {
        // Validate the token before anything else runs.
        crate::pagination::check(req.max_entries, &req.starting_token)?;
        // From the cached view: carve's own snapshots enter it as they are made.
        let view = self.view_or_refresh().await?;
        let snaps: Vec<csi::Snapshot> = view
            .lvm
            .lvs
            .iter()
            .filter(|l| {
                self.managed_vg(&l.vg)
                    && self.owned(l)
                    && l.name.starts_with(names::SNAPSHOT_PREFIX)
            })
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
        match self
            .locate(&req.snapshot_id, LvKind::Snapshot, true)
            .await?
        {
            Located::Here(lv) => Ok(csi::GetSnapshotResponse {
                snapshot: Some(self.snapshot_of(&lv)),
            }),
            other => Err(self.not_here("snapshot", &req.snapshot_id, &other)),
        }
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

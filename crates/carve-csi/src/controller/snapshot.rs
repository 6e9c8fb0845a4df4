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

use super::NoClass;
use crate::controller::restore::content_size;
use crate::controller::{ControllerService, Located};
use crate::csi;
use crate::error::{into_status, Busy, LookupError, LvmFailure, Missing, NotReady, RpcError};
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum CreateSnapshotError {
    #[error("name is required")]
    NoName,
    #[error("name is longer than 1024 bytes")]
    NameTooLong,
    #[error("unknown snapshot parameter {0:?}: carve takes none")]
    UnknownParameter(String),
    #[error(transparent)]
    Source(#[from] LookupError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("volume {0} is still being filled from its source; snapshot it once it is complete")]
    SourceUnfinished(String),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error(transparent)]
    NoClass(#[from] NoClass),
    /// The source's VG is missing from LVM's last report (its disk detached
    /// or failing): retryable, the volume may come back with it.
    #[error(
        "volume group {0} is configured but not on this node now (a failing or missing disk?)"
    )]
    VgGone(String),
    #[error("a snapshot of {source_id} needs {reserve} bytes of copy-on-write space in VG {vg}; {free} are free beyond the spare")]
    NoRoom {
        source_id: String,
        reserve: u64,
        vg: String,
        free: u64,
    },
    #[error("snapshot {name:?} exists for another source ({other})")]
    Conflict { name: String, other: String },
    #[error(transparent)]
    Lvm(#[from] LvmFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteSnapshotError {
    #[error("snapshot_id is required")]
    NoId,
    #[error("snapshot {id} is on node {holder}; it can only be deleted there, not on node {node}")]
    Elsewhere {
        id: String,
        holder: String,
        node: String,
    },
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("snapshot {id} is being restored into {vg}/{volume}; delete it once that restore is complete or deleted")]
    BeingRestored {
        id: String,
        vg: String,
        volume: String,
    },
    #[error("snapshot {id} is in use")]
    InUse {
        id: String,
        #[source]
        source: carve_core::lvm::LvmError,
    },
    #[error(transparent)]
    Lvm(#[from] LvmFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum ListSnapshotsError {
    #[error(transparent)]
    Page(#[from] crate::pagination::PageError),
    #[error(transparent)]
    Read(#[from] LvmFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum GetSnapshotError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

impl RpcError for CreateSnapshotError {
    fn code(&self) -> Code {
        use CreateSnapshotError as E;
        match self {
            E::NoName | E::NameTooLong | E::UnknownParameter(_) => Code::InvalidArgument,
            E::Source(e) => e.code(),
            E::Busy(e) => e.code(),
            E::SourceUnfinished(_) => Code::Aborted,
            E::NotReady(e) => e.code(),
            E::NoClass(e) => e.code(),
            E::VgGone(_) => Code::Unavailable,
            E::NoRoom { .. } => Code::ResourceExhausted,
            E::Conflict { .. } => Code::AlreadyExists,
            E::Lvm(e) => e.code(),
        }
    }
}

impl RpcError for DeleteSnapshotError {
    fn code(&self) -> Code {
        use DeleteSnapshotError as E;
        match self {
            E::NoId => Code::InvalidArgument,
            E::Elsewhere { .. } | E::BeingRestored { .. } | E::InUse { .. } => {
                Code::FailedPrecondition
            }
            E::Busy(e) => e.code(),
            E::NotReady(e) => e.code(),
            E::Lvm(e) => e.code(),
        }
    }
}

impl RpcError for ListSnapshotsError {
    fn code(&self) -> Code {
        match self {
            ListSnapshotsError::Page(e) => e.code(),
            ListSnapshotsError::Read(e) => e.code(),
        }
    }
}

impl RpcError for GetSnapshotError {
    fn code(&self) -> Code {
        match self {
            GetSnapshotError::Lookup(e) => e.code(),
        }
    }
}

into_status!(
    CreateSnapshotError,
    DeleteSnapshotError,
    ListSnapshotsError,
    GetSnapshotError
);
use carve_core::config::{DeviceClass, Provisioning};
use carve_core::engine::state::Change;
use carve_core::lvm::{LvInfo, LvmErrorKind, LvmState};
use carve_core::names::LvKind;
use carve_core::names::{self, VolumeId};

fn snapshot_params_ok(p: &HashMap<String, String>) -> Result<(), CreateSnapshotError> {
    // external-snapshotter adds csi.storage.k8s.io/volumesnapshot/* metadata;
    // carve takes no snapshot parameters of its own.
    match p.keys().find(|k| !k.starts_with("csi.storage.k8s.io/")) {
        Some(k) => Err(CreateSnapshotError::UnknownParameter(k.clone())),
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
    ) -> Result<csi::CreateSnapshotResponse, CreateSnapshotError> {
        if req.name.is_empty() {
            return Err(CreateSnapshotError::NoName);
        }
        if req.name.len() > 1024 {
            return Err(CreateSnapshotError::NameTooLong);
        }
        if req.source_volume_id.is_empty() {
            return Err(LookupError::from(Missing::Required("source_volume_id")).into());
        }
        snapshot_params_ok(&req.parameters)?;
        let snap_name = names::snapshot_lv_name(&req.name);
        let _guard = self.guard(&format!("snapshot {:?}", req.name), &snap_name)?;
        // The source from the cached view (a fresh VG report when the view does
        // not know it): the common path runs a single lvm command, lvcreate.
        let src = self.volume_lv(&req.source_volume_id, false).await?;
        if src.tag(names::TAG_INCOMPLETE).is_some() {
            return Err(CreateSnapshotError::SourceUnfinished(req.source_volume_id));
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
        let mut tags = vec![
            self.owner_tag(),
            names::tag(names::TAG_NAME, &req.name),
            names::tag(names::TAG_CLASS, &class.name),
            names::tag(names::TAG_SOURCE, &req.source_volume_id),
            names::tag(names::TAG_SIZE, &src.size.to_string()),
            names::tag(names::TAG_CREATED, &created.to_string()),
        ];
        // A snapshot of an encrypted volume holds its ciphertext: restores
        // from it are encrypted the same way, with the same key.
        if let Some(enc) = src.tag(names::TAG_ENCRYPTION) {
            tags.push(format!("{}={enc}", names::TAG_ENCRYPTION));
        }
        let cow = cow_reserve(class, &view.lvm, &src, &req.source_volume_id)?;
        tracing::info!(name = %req.name, source = %req.source_volume_id, snapshot = %format!("{vg}/{snap_name}"), cow_bytes = ?cow, "creating snapshot");
        match guard
            .create_snapshot(&src.name, &snap_name, cow, &tags)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == LvmErrorKind::Exists => {
                return self.taken(&vg, &snap_name, &req).await;
            }
            Err(e) => {
                return Err(LvmFailure::ctx(format!("creating snapshot {:?}", req.name))(e).into())
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

    /// An lvcreate of `snap_name` that found the name taken: a call the cached
    /// view has not seen made it (this snapshot), or it is something else.
    async fn taken(
        &self,
        vg: &str,
        snap_name: &str,
        req: &csi::CreateSnapshotRequest,
    ) -> Result<csi::CreateSnapshotResponse, CreateSnapshotError> {
        let fresh = self
            .state
            .refresh_vg(vg)
            .await
            .map_err(LvmFailure::ctx("reading LVM state"))?;
        match self.existing_snapshot(&fresh.lvm, snap_name, req)? {
            Some(s) => Ok(csi::CreateSnapshotResponse { snapshot: Some(s) }),
            None => Err(CreateSnapshotError::Conflict {
                name: req.name.clone(),
                other: format!("an LV {vg}/{snap_name} that is not this snapshot"),
            }),
        }
    }

    /// A snapshot LV of this request's name already exists: the same request
    /// (idempotent success) or another source (AlreadyExists).
    fn existing_snapshot(
        &self,
        state: &LvmState,
        snap_name: &str,
        req: &csi::CreateSnapshotRequest,
    ) -> Result<Option<csi::Snapshot>, CreateSnapshotError> {
        let Some(existing) = state
            .lvs
            .iter()
            .find(|l| l.name == snap_name && self.managed_vg(&l.vg))
        else {
            return Ok(None);
        };
        let tag = |k| existing.tag(k).map(names::decode_tag_value);
        if self.owned(existing)
            && names::tag_holds(existing.tag(names::TAG_NAME), &req.name)
            && tag(names::TAG_SOURCE).as_deref() == Some(req.source_volume_id.as_str())
        {
            return Ok(Some(self.snapshot_of(existing)));
        }
        Err(CreateSnapshotError::Conflict {
            name: req.name.clone(),
            other: tag(names::TAG_SOURCE).unwrap_or_default(),
        })
    }

    pub(crate) async fn delete_snapshot(
        &self,
        req: csi::DeleteSnapshotRequest,
    ) -> Result<csi::DeleteSnapshotResponse, DeleteSnapshotError> {
        if req.snapshot_id.is_empty() {
            return Err(DeleteSnapshotError::NoId);
        }
        let lv = match self
            .locate(&req.snapshot_id, LvKind::Snapshot, true)
            .await?
        {
            Located::Here(lv) => *lv,
            Located::Gone => return Ok(csi::DeleteSnapshotResponse {}),
            Located::Elsewhere(node) => {
                return Err(DeleteSnapshotError::Elsewhere {
                    id: req.snapshot_id,
                    holder: node.to_string(),
                    node: self.node_id.clone(),
                })
            }
        };
        let _busy = self.guard(&format!("snapshot {}", req.snapshot_id), &lv.name)?;
        // An unfinished restore still copies from it (or will, after a restart).
        let view = self.view()?;
        if let Some(dst) = self.volumes(&view.lvm).find(|v| {
            v.tag(names::TAG_INCOMPLETE).is_some()
                && v.tag(names::TAG_SOURCE)
                    .map(names::decode_tag_value)
                    .and_then(|id| VolumeId::parse_snapshot(&id))
                    .is_some_and(|id| id.vg == lv.vg && id.lv == lv.name)
        }) {
            return Err(DeleteSnapshotError::BeingRestored {
                id: req.snapshot_id,
                vg: dst.vg.clone(),
                volume: dst.name.clone(),
            });
        }
        // Restored and cloned volumes never depend on a snapshot LV: thin ones
        // are independent thin LVs, thick ones full copies.
        tracing::info!(snapshot_id = %req.snapshot_id, "deleting snapshot");
        let guard = self.lvm.lock_vg(&lv.vg).await;
        match guard.remove(&lv.name, &self.owner_tag()).await {
            Ok(_) => {}
            Err(e) if e.kind == LvmErrorKind::NotFound => {}
            Err(source) if source.kind == LvmErrorKind::InUse => {
                return Err(DeleteSnapshotError::InUse {
                    id: req.snapshot_id,
                    source,
                })
            }
            Err(e) => {
                return Err(
                    LvmFailure::ctx(format!("deleting snapshot {}", req.snapshot_id))(e).into(),
                )
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
    ) -> Result<csi::ListSnapshotsResponse, ListSnapshotsError> {
        // Validate the token before anything else runs.
        crate::pagination::check(req.max_entries, &req.starting_token)?;
        // From the cached view: carve's own snapshots enter it as they are made.
        let view = self.view_or_refresh().await?;
        let snaps: Vec<csi::Snapshot> = self
            .carve_lvs(&view.lvm, LvKind::Snapshot)
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
    ) -> Result<csi::GetSnapshotResponse, GetSnapshotError> {
        let lv = self
            .lv_named(&req.snapshot_id, LvKind::Snapshot, true)
            .await?;
        Ok(csi::GetSnapshotResponse {
            snapshot: Some(self.snapshot_of(&lv)),
        })
    }
}

/// Copy-on-write space a thick snapshot of `src` takes (`None` for thin), if
/// the VG has it beyond the class's spare.
fn cow_reserve(
    class: &DeviceClass,
    state: &LvmState,
    src: &LvInfo,
    source_id: &str,
) -> Result<Option<u64>, CreateSnapshotError> {
    if class.provisioning == Provisioning::Thin {
        return Ok(None);
    }
    let vg = state
        .vgs
        .get(&src.vg)
        .ok_or_else(|| CreateSnapshotError::VgGone(src.vg.clone()))?;
    let reserve = class.snapshot_reserve(src.size, vg.extent_size);
    let free = vg.free.saturating_sub(class.spare);
    if reserve > free {
        return Err(CreateSnapshotError::NoRoom {
            source_id: source_id.to_string(),
            reserve,
            vg: src.vg.clone(),
            free,
        });
    }
    Ok(Some(reserve))
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

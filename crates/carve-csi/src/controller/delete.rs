//! DeleteVolume. Removal is one `lvremove` restricted by `--select` to LVs
//! that carry carve's owner tag and are not the origin of classic snapshots,
//! so LVM itself refuses a foreign LV and never cascades into snapshots. A
//! volume still being filled has its copy job stopped first, and everything
//! the fill made (the clone's temporary snapshot) goes with it.

use carve_core::engine::fill::remove_owned;
use carve_core::engine::state::Change;
use carve_core::lvm::{LvInfo, LvmError, LvmErrorKind};
use carve_core::names::{self, LvKind};
use tonic::Code;

use super::{ControllerService, Located};
use crate::csi;
use crate::error::{into_status, Busy, LvmFailure, RpcError};

/// Why a volume's LV (or what an unfinished fill made for it) stays.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(
        "removing {vg}/{temp}, the temporary snapshot of unfinished clone {vg}/{volume}: {why}"
    )]
    TempSnapshot {
        vg: String,
        temp: String,
        volume: String,
        why: String,
    },
    #[error("volume {id} is in use (mounted or open) on node {node}")]
    InUse {
        id: String,
        node: String,
        #[source]
        source: LvmError,
    },
    #[error("volume {vg}/{volume} is being cloned into {vg}/{target}; delete it once that clone is complete or deleted")]
    BeingCloned {
        vg: String,
        volume: String,
        target: String,
    },
    #[error("volume {vg}/{volume} is the origin of snapshot LV(s) {snapshots}: removing it would remove them too; delete them first")]
    Origin {
        vg: String,
        volume: String,
        snapshots: String,
    },
    #[error("lvremove left volume {vg}/{volume} in place (attr {attr}); see the lvm log")]
    NotRemoved {
        vg: String,
        volume: String,
        attr: String,
    },
    #[error(transparent)]
    Lvm(#[from] LvmFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteVolumeError {
    #[error("volume_id is required")]
    NoId,
    /// Answering OK would let the CO forget a volume that still holds data
    /// on another node.
    #[error("volume {id} is on node {holder}; it can only be deleted there, not on node {node}")]
    Elsewhere {
        id: String,
        holder: String,
        node: String,
    },
    #[error(transparent)]
    Lookup(#[from] LvmFailure),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Remove(#[from] RemoveError),
}

impl RpcError for RemoveError {
    fn code(&self) -> Code {
        match self {
            RemoveError::TempSnapshot { .. }
            | RemoveError::InUse { .. }
            | RemoveError::BeingCloned { .. }
            | RemoveError::Origin { .. }
            | RemoveError::NotRemoved { .. } => Code::FailedPrecondition,
            RemoveError::Lvm(e) => e.code(),
        }
    }
}

impl RpcError for DeleteVolumeError {
    fn code(&self) -> Code {
        match self {
            DeleteVolumeError::NoId => Code::InvalidArgument,
            DeleteVolumeError::Elsewhere { .. } => Code::FailedPrecondition,
            DeleteVolumeError::Lookup(e) => e.code(),
            DeleteVolumeError::Busy(e) => e.code(),
            DeleteVolumeError::Remove(e) => e.code(),
        }
    }
}

into_status!(DeleteVolumeError);

impl ControllerService {
    pub(crate) async fn delete(
        &self,
        req: csi::DeleteVolumeRequest,
    ) -> Result<csi::DeleteVolumeResponse, DeleteVolumeError> {
        if req.volume_id.is_empty() {
            return Err(DeleteVolumeError::NoId);
        }
        let lv = match self.locate(&req.volume_id, LvKind::Volume, false).await? {
            Located::Here(lv) => *lv,
            // No carve volume with this ID exists here or anywhere: gone.
            Located::Gone => return Ok(csi::DeleteVolumeResponse {}),
            Located::Elsewhere(node) => {
                return Err(DeleteVolumeError::Elsewhere {
                    id: req.volume_id,
                    holder: node.to_string(),
                    node: self.node_id.clone(),
                })
            }
        };
        let _busy = self.guard(&format!("volume {}", req.volume_id), &lv.name)?;
        tracing::info!(volume_id = %req.volume_id, size = lv.size, "deleting volume");
        self.remove_volume_lv(&lv).await?;
        Ok(csi::DeleteVolumeResponse {})
    }

    /// Removes a volume LV and whatever an unfinished fill made for it: its
    /// copy job is stopped, its temporary clone snapshot removed. Call with
    /// the volume's in-flight guard held.
    pub(crate) async fn remove_volume_lv(&self, lv: &LvInfo) -> Result<(), RemoveError> {
        let (vg, name) = (lv.vg.as_str(), lv.name.as_str());
        self.jobs.cancel(&Self::job_key(vg, name)).await;
        let guard = self.lvm.lock_vg(vg).await;
        let temp = names::clone_temp_name(name);
        let has_temp = self
            .state
            .get()
            .is_some_and(|v| self.find(&v.lvm, vg, &temp, LvKind::CloneTemp).is_some());
        if has_temp {
            remove_owned(&guard, &self.state, &temp, &self.owner_tag())
                .await
                .map_err(|why| RemoveError::TempSnapshot {
                    vg: vg.to_string(),
                    temp: temp.clone(),
                    volume: name.to_string(),
                    why,
                })?;
        }
        // The copy is stopped and its temporary snapshot gone; the volume next.
        carve_core::crash::point("delete-after-temp-removed");
        match guard.remove(name, &self.owner_tag()).await {
            Ok(true) => {}
            Ok(false) => return self.explain_not_removed(vg, name).await,
            Err(e) if e.kind == LvmErrorKind::NotFound => {}
            Err(source) if source.kind == LvmErrorKind::InUse => {
                return Err(RemoveError::InUse {
                    id: self.id_of(lv),
                    node: self.node_id.clone(),
                    source,
                })
            }
            Err(e) => {
                return Err(
                    LvmFailure::ctx(format!("deleting volume {}", self.id_of(lv)))(e).into(),
                )
            }
        }
        self.state.apply(Change::Removed {
            vg: vg.to_string(),
            lv: name.to_string(),
        });
        Ok(())
    }

    /// lvremove's selection did not match: find out why from LVM itself.
    async fn explain_not_removed(&self, vg: &str, name: &str) -> Result<(), RemoveError> {
        let view = self
            .state
            .refresh_vg(vg)
            .await
            .map_err(LvmFailure::ctx("reading LVM state"))?;
        let Some(lv) = view.lvm.lv(vg, name) else {
            return Ok(());
        };
        if !self.owned(lv) {
            tracing::warn!(lv = %format!("{vg}/{name}"), "DeleteVolume: LV lacks carve's owner tag; left untouched");
            return Ok(());
        }
        let snapshots: Vec<&LvInfo> = view
            .lvm
            .lvs_in(vg)
            .filter(|l| l.origin == name && l.is_classic_snapshot())
            .collect();
        if let Some(temp) = snapshots
            .iter()
            .find(|l| LvKind::of(&l.name) == Some(LvKind::CloneTemp))
        {
            return Err(RemoveError::BeingCloned {
                vg: vg.to_string(),
                volume: name.to_string(),
                target: names::clone_target_name(&temp.name).unwrap_or_default(),
            });
        }
        if !snapshots.is_empty() {
            return Err(RemoveError::Origin {
                vg: vg.to_string(),
                volume: name.to_string(),
                snapshots: snapshots
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Err(RemoveError::NotRemoved {
            vg: vg.to_string(),
            volume: name.to_string(),
            attr: lv.attr.to_string(),
        })
    }
}

//! ControllerExpandVolume: grows the LV (`lvextend`) under the VG's lock,
//! after reading its current size from LVM; LVs are never shrunk. Filesystem
//! volumes then need the node to grow the filesystem (NodeExpandVolume).

use carve_core::engine::state::Change;
use carve_core::names::{self, LvKind};
use tonic::Code;

use super::{size::SizeError, ControllerService, Located, NoClass};
use crate::capability::{self, CapabilityError};
use crate::csi;
use crate::error::{into_status, Busy, LookupError, LvmFailure, Missing, RpcError};

#[derive(Debug, thiserror::Error)]
pub enum ExpandVolumeError {
    #[error("capacity_range is required")]
    NoRange,
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("volume {0} is still being filled from its source; expand it once CreateVolume has succeeded")]
    Unfinished(String),
    #[error(transparent)]
    NoClass(#[from] NoClass),
    #[error("device class {0} is not usable now")]
    ClassUnusable(String),
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error("volume is already {size} bytes, above limit_bytes {limit}; LVs are never shrunk")]
    WouldShrink { size: u64, limit: i64 },
    #[error("growing volume {id} by {grow} bytes needs more than the {available} bytes device class {class} has available")]
    NoRoom {
        id: String,
        grow: u64,
        available: u64,
        class: String,
    },
    #[error("volume {id} has snapshots ({snapshots}); LVM grows a snapshot origin only while it is inactive, which an online expansion cannot do: delete its VolumeSnapshots first, or restore one into a larger volume")]
    HasSnapshots { id: String, snapshots: String },
    #[error(transparent)]
    Lvm(#[from] LvmFailure),
}

impl RpcError for ExpandVolumeError {
    fn code(&self) -> Code {
        match self {
            ExpandVolumeError::NoRange | ExpandVolumeError::Capability(_) => Code::InvalidArgument,
            ExpandVolumeError::Lookup(e) => e.code(),
            ExpandVolumeError::Busy(e) => e.code(),
            ExpandVolumeError::Unfinished(_)
            | ExpandVolumeError::ClassUnusable(_)
            | ExpandVolumeError::HasSnapshots { .. } => Code::FailedPrecondition,
            ExpandVolumeError::NoClass(e) => e.code(),
            ExpandVolumeError::Size(e) => e.code(),
            ExpandVolumeError::WouldShrink { .. } => Code::OutOfRange,
            ExpandVolumeError::NoRoom { .. } => Code::ResourceExhausted,
            ExpandVolumeError::Lvm(e) => e.code(),
        }
    }
}

into_status!(ExpandVolumeError);

impl ControllerService {
    pub(crate) async fn expand(
        &self,
        req: csi::ControllerExpandVolumeRequest,
    ) -> Result<csi::ControllerExpandVolumeResponse, ExpandVolumeError> {
        let (range, node_expansion_required) = checked(&req)?;
        let lv = self.volume_lv(&req.volume_id, false).await?;
        let _busy = self.guard(&format!("volume {}", req.volume_id), &lv.name)?;
        let guard = self.lvm.lock_vg(&lv.vg).await;
        // Under the lock, LVM's current word on the LV's size.
        let view = self
            .state
            .refresh_vg(&lv.vg)
            .await
            .map_err(LvmFailure::ctx("reading LVM state"))?;
        let lv = self
            .find(&view.lvm, &lv.vg, &lv.name, LvKind::Volume)
            .cloned()
            .ok_or_else(|| {
                LookupError::from(self.missing("volume", &req.volume_id, &Located::Gone))
            })?;
        if lv.tag(names::TAG_INCOMPLETE).is_some() {
            return Err(ExpandVolumeError::Unfinished(req.volume_id));
        }
        // An encrypted volume's dm-crypt mapping is grown on the node
        // (`cryptsetup resize`), raw block or not.
        let node_expansion_required =
            node_expansion_required || lv.tag(names::TAG_ENCRYPTION).is_some();
        let class = self.class_for(&lv)?;
        let cap = view
            .capacity
            .get(&class.name)
            .and_then(|c| c.as_ref().ok())
            .cloned()
            .ok_or_else(|| ExpandVolumeError::ClassUnusable(class.name.clone()))?;
        let size = super::choose_size(Some(&range), cap.granule)?;
        if size <= lv.size {
            if range.limit_bytes > 0 && lv.size > range.limit_bytes as u64 {
                return Err(ExpandVolumeError::WouldShrink {
                    size: lv.size,
                    limit: range.limit_bytes,
                });
            }
            return Ok(csi::ControllerExpandVolumeResponse {
                capacity_bytes: lv.size as i64,
                node_expansion_required,
            });
        }
        // A thick volume with classic snapshots is their origin: lvextend
        // refuses it while active (found by the storm test).
        let snapshots: Vec<&str> = view
            .lvm
            .lvs_in(&lv.vg)
            .filter(|l| l.origin == lv.name && l.is_classic_snapshot())
            .map(|l| l.name.as_str())
            .collect();
        if !snapshots.is_empty() {
            return Err(ExpandVolumeError::HasSnapshots {
                id: req.volume_id,
                snapshots: snapshots.join(", "),
            });
        }
        let grow = size - lv.size;
        if grow > cap.available {
            return Err(ExpandVolumeError::NoRoom {
                id: req.volume_id,
                grow,
                available: cap.available,
                class: class.name.clone(),
            });
        }
        tracing::info!(volume_id = %req.volume_id, from = lv.size, to = size, "expanding volume");
        guard
            .extend(&lv.name, size)
            .await
            .map_err(LvmFailure::ctx(format!(
                "expanding volume {}",
                req.volume_id
            )))?;
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
}

/// The request's capacity range, and whether the node must grow a filesystem
/// afterwards (not for a block volume), once the request is well-formed.
fn checked(
    req: &csi::ControllerExpandVolumeRequest,
) -> Result<(csi::CapacityRange, bool), ExpandVolumeError> {
    if req.volume_id.is_empty() {
        return Err(LookupError::from(Missing::Required("volume_id")).into());
    }
    let range = req.capacity_range.ok_or(ExpandVolumeError::NoRange)?;
    if let Some(c) = &req.volume_capability {
        capability::check(c)?;
    }
    let node_expansion_required = !req
        .volume_capability
        .as_ref()
        .is_some_and(|c| capability::is_block(std::slice::from_ref(c)));
    Ok((range, node_expansion_required))
}

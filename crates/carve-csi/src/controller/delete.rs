//! DeleteVolume. Removal is one `lvremove` restricted by `--select` to LVs
//! that carry carve's owner tag and are not the origin of classic snapshots,
//! so LVM itself refuses a foreign LV and never cascades into snapshots. A
//! volume still being filled has its copy job stopped first, and everything
//! the fill made (the clone's temporary snapshot) goes with it.

use crate::controller::{ControllerService, Located};
use crate::csi;
use crate::error::{CsiError, CsiResult};
use carve_core::engine::fill::remove_owned;
use carve_core::engine::state::Change;
use carve_core::lvm::{LvInfo, LvmErrorKind};
use carve_core::names;
use carve_core::names::LvKind;

impl ControllerService {
    pub(crate) async fn delete(
        &self,
        req: csi::DeleteVolumeRequest,
    ) -> CsiResult<csi::DeleteVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::InvalidArgument("volume_id is required".into()));
        }
        let lv = match self.locate(&req.volume_id, LvKind::Volume, false).await? {
            Located::Here(lv) => *lv,
            // No carve volume with this ID exists here or anywhere: gone.
            Located::Gone => return Ok(csi::DeleteVolumeResponse {}),
            // Answering OK would let the CO forget a volume that still holds
            // data on another node.
            Located::Elsewhere(node) => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} is on node {node}; it can only be deleted there, not on node {}",
                    req.volume_id, self.node_id
                )))
            }
        };
        let _guard = self.guard(&format!("volume {}", req.volume_id), &lv.name)?;
        tracing::info!(volume_id = %req.volume_id, size = lv.size, "deleting volume");
        self.remove_volume_lv(&lv).await?;
        Ok(csi::DeleteVolumeResponse {})
    }

    /// Removes a volume LV and whatever an unfinished fill made for it: its
    /// copy job is stopped, its temporary clone snapshot removed. Call with
    /// the volume's in-flight guard held.
    pub(crate) async fn remove_volume_lv(&self, lv: &LvInfo) -> CsiResult<()> {
        let (vg, name) = (lv.vg.as_str(), lv.name.as_str());
        self.jobs.cancel(&Self::job_key(vg, name)).await;
        let guard = self.lvm.lock_vg(vg).await;
        let temp = names::clone_temp_name(name);
        let has_temp = self
            .state
            .get()
            .is_some_and(|v| v.lvm.lv(vg, &temp).is_some_and(|t| self.owned(t)));
        if has_temp {
            remove_owned(&guard, &self.state, &temp, &self.owner_tag())
                .await
                .map_err(|e| {
                    CsiError::FailedPrecondition(format!(
                        "removing {vg}/{temp}, the temporary snapshot of unfinished clone {vg}/{name}: {e}"
                    ))
                })?;
        }
        // The copy is stopped and its temporary snapshot gone; the volume next.
        carve_core::crash::point("delete-after-temp-removed");
        match guard.remove(name, &self.owner_tag()).await {
            Ok(true) => {}
            Ok(false) => return self.explain_not_removed(vg, name).await,
            Err(e) if e.kind == LvmErrorKind::NotFound => {}
            Err(e) if e.kind == LvmErrorKind::InUse => {
                return Err(CsiError::FailedPrecondition(format!(
                    "volume {} is in use (mounted or open) on node {}: {e}",
                    self.id_of(lv),
                    self.node_id
                )))
            }
            Err(e) => return Err(CsiError::lvm(format!("deleting volume {}", self.id_of(lv)))(e)),
        }
        self.state.apply(Change::Removed {
            vg: vg.to_string(),
            lv: name.to_string(),
        });
        Ok(())
    }

    /// lvremove's selection did not match: find out why from LVM itself.
    async fn explain_not_removed(&self, vg: &str, name: &str) -> CsiResult<()> {
        let view = self
            .state
            .refresh_vg(vg)
            .await
            .map_err(CsiError::lvm("reading LVM state"))?;
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
            let target = names::clone_target_name(&temp.name).unwrap_or_default();
            return Err(CsiError::FailedPrecondition(format!(
                "volume {vg}/{name} is being cloned into {vg}/{target}; delete it once that clone is complete or deleted"
            )));
        }
        if !snapshots.is_empty() {
            let names: Vec<&str> = snapshots.iter().map(|l| l.name.as_str()).collect();
            return Err(CsiError::FailedPrecondition(format!(
                "volume {vg}/{name} is the origin of snapshot LV(s) {}: removing it would remove them too; delete them first",
                names.join(", ")
            )));
        }
        Err(CsiError::FailedPrecondition(format!(
            "lvremove left volume {vg}/{name} in place (attr {}); see the lvm log",
            lv.attr
        )))
    }
}

//! A volume's health, from LVM's own fields: the LV's activation and health
//! attributes and, for thin volumes, their pool's state; and whether it is
//! whole yet. Shared by ControllerGetVolume, ListVolumes and NodeGetVolumeStats
//! (as CSI's VolumeCondition).

use crate::config::PoolLimits;
use crate::engine::jobs::Progress;
use crate::engine::pools::{Level, PoolFill};
use crate::lvm::report::LvHealth;
use crate::lvm::{LvInfo, LvmState};

/// A volume's condition: abnormal or not, with a message an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub abnormal: bool,
    pub message: String,
}

/// What carve knows of the copy that fills an unfinished volume.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// No copy runs for it now, and none failed since carve started.
    Idle,
    Running(Progress),
    /// The last copy failed, with this reason.
    Failed(String),
}

/// `abnormal` with a message an operator can act on, or "volume is healthy".
/// `fill` is what carve knows of the job that fills the volume.
/// A thin volume is abnormal too while its pool is at or above
/// `limits.warning_percent` of data or metadata: writes start failing when
/// the pool runs out, and the volume's owner should hear it first.
pub fn condition(lv: &LvInfo, state: &LvmState, fill: Fill, limits: &PoolLimits) -> Condition {
    let mut problems = Vec::new();
    if lv.tag(crate::names::TAG_INCOMPLETE).is_some() {
        problems.push(match fill {
            Fill::Running(p) => format!("the volume is still being filled from its source: {p}"),
            Fill::Failed(e) => format!("the copy that fills the volume from its source failed ({e}); the next CreateVolume copies again, DeleteVolume removes the volume"),
            Fill::Idle => "the volume is not yet whole: the steps that make it from its source have not finished; CreateVolume resumes them".to_string(),
        });
    }
    if !state.vgs.contains_key(&lv.vg) {
        problems.push(format!(
            "its volume group {} cannot be read on this node now (a disk missing or failing); this is its last known state",
            lv.vg
        ));
    } else if !lv.is_active() {
        problems.push("the LV is not active".to_string());
    }
    match lv.attr.health {
        LvHealth::Partial => problems.push("the LV is partial: a PV under it is missing".into()),
        LvHealth::RefreshNeeded => {
            problems.push("a RAID image needs a refresh after a device error".into())
        }
        LvHealth::Mismatches => problems.push("RAID mismatches were found by scrubbing".into()),
        LvHealth::Unknown => problems.push("LVM cannot tell the LV's health".into()),
        _ => {}
    }
    if !lv.health.is_empty() && problems.is_empty() {
        problems.push(format!("LVM reports health {:?}", lv.health));
    }
    if lv.is_thin_volume() {
        match state.lv(&lv.vg, &lv.pool) {
            None => problems.push(format!("its thin pool {}/{} is missing", lv.vg, lv.pool)),
            Some(pool) => {
                match pool.attr.health {
                    LvHealth::PoolFailed => {
                        problems.push(format!("thin pool {}/{} has failed", pool.vg, pool.name))
                    }
                    LvHealth::PoolOutOfData => problems.push(format!(
                        "thin pool {}/{} is out of data space",
                        pool.vg, pool.name
                    )),
                    LvHealth::PoolMetadataReadOnly => problems.push(format!(
                        "thin pool {}/{} is out of metadata space (read-only)",
                        pool.vg, pool.name
                    )),
                    _ => {}
                }
                let f = PoolFill::of(pool, state, limits);
                if f.level >= Level::Warning {
                    problems.push(f.describe(limits));
                }
            }
        }
    }
    Condition {
        abnormal: !problems.is_empty(),
        message: if problems.is_empty() {
            "volume is healthy".into()
        } else {
            problems.join("; ")
        },
    }
}

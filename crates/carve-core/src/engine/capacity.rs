//! How much a device class can still hold, computed from one LVM report.
//! Pure functions: the cache in [`crate::engine::state`] calls them once per refresh
//! and GetCapacity only reads the result.

use crate::config::{DeviceClass, PoolLimits, Provisioning};
use crate::engine::pools::{Level, PoolFill};
use crate::lvm::{LvmState, VgInfo};

#[derive(Debug, Clone, PartialEq)]
pub struct ClassCapacity {
    /// Bytes a new volume (or several) can still take.
    pub available: u64,
    /// The largest single volume that would really fit.
    pub maximum_volume_size: u64,
    /// Volumes are carved in extents; nothing smaller exists.
    pub minimum_volume_size: u64,
    /// Size granule: requests are rounded up to a multiple of this.
    pub granule: u64,
    /// Why a thin class offers nothing: its pool is at or above
    /// `thin_pool_full_percent` (the pool and the figure).
    pub pool_full: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    #[error("volume group {0:?} does not exist on this node")]
    NoVg(String),
    #[error("thin pool {vg}/{pool} does not exist on this node")]
    NoPool { vg: String, pool: String },
}

fn round_down(v: u64, granule: u64) -> u64 {
    if granule == 0 {
        v
    } else {
        v - v % granule
    }
}

/// Capacity of `class` in `state`.
///
/// - thick: VG free minus `spare`, divided by the layout's copies/parity; the
///   largest volume is also bounded by how much the k-th emptiest PV can give
///   when a layout needs k PVs.
/// - thin: pool size × over-provision ratio minus `spare` minus the virtual size
///   already promised to thin LVs in the pool (anyone's, not only carve's);
///   zero when the pool's data or metadata is at or above `limits.full_percent`.
pub fn compute(
    class: &DeviceClass,
    state: &LvmState,
    limits: &PoolLimits,
) -> Result<ClassCapacity, CapacityError> {
    let vg = state
        .vgs
        .get(&class.volume_group)
        .ok_or_else(|| CapacityError::NoVg(class.volume_group.clone()))?;
    let extent = vg.extent_size.max(1);
    let granule = class.size_granule(extent);
    match class.provisioning {
        Provisioning::Thick => Ok(thick(class, vg, extent, granule)),
        Provisioning::Thin => {
            let pool_name = class.thin_pool.as_deref().unwrap_or_default();
            let pool = state
                .lv(&class.volume_group, pool_name)
                .filter(|l| l.is_thin_pool())
                .ok_or_else(|| CapacityError::NoPool {
                    vg: class.volume_group.clone(),
                    pool: pool_name.to_string(),
                })?;
            let fill = PoolFill::of(pool, state, limits);
            let offered = (pool.size as f64 * class.over_provision_ratio) as u64;
            let full = fill.level == Level::Full;
            let available = if full {
                0
            } else {
                round_down(
                    offered
                        .saturating_sub(class.spare)
                        .saturating_sub(fill.committed),
                    granule,
                )
            };
            Ok(ClassCapacity {
                available,
                maximum_volume_size: available,
                minimum_volume_size: granule,
                granule,
                pool_full: full.then(|| fill.describe(limits)),
            })
        }
    }
}

/// Thick: what the VG's free space (and, for layouts spanning k PVs, the
/// k-th emptiest PV) can still give, after spare, copies, parity and RAID
/// metadata.
fn thick(class: &DeviceClass, vg: &VgInfo, extent: u64, granule: u64) -> ClassCapacity {
    let layout = &class.layout;
    let (num, den) = layout.space_factor();
    let pvs_needed = layout.pvs_needed();
    let usable = vg
        .free
        .saturating_sub(class.spare)
        .saturating_sub(layout.metadata_extents() * extent);
    let available = round_down(usable / num * den, granule);
    let mut frees: Vec<u64> = vg
        .pvs
        .iter()
        .filter(|p| !p.missing)
        .map(|p| p.free)
        .collect();
    frees.sort_unstable_by(|a, b| b.cmp(a));
    let per_pv_limit = if pvs_needed <= 1 {
        u64::MAX
    } else {
        match frees.get(pvs_needed as usize - 1) {
            // Each image keeps one metadata extent on its PV.
            Some(kth) => {
                let meta = if layout.is_raid() { extent } else { 0 };
                kth.saturating_sub(meta) * layout.data_stripes()
            }
            None => 0,
        }
    };
    ClassCapacity {
        available,
        maximum_volume_size: round_down(available.min(per_pv_limit), granule),
        minimum_volume_size: granule,
        granule,
        pool_full: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::lvm::report::parse_fullreport;

    const FIXTURE: &str = include_str!("../../fixtures/fullreport.json");
    const MI: u64 = 1 << 20;

    fn class(toml_body: &str) -> DeviceClass {
        Config::parse(&format!("[[device_class]]\nname='c'\n{toml_body}"), "t")
            .unwrap()
            .device_classes
            .remove(0)
    }

    #[test]
    fn thick_is_vg_free_minus_spare() {
        let s = parse_fullreport(FIXTURE).unwrap();
        let c = class("volume_group='vgthick'\ntype='thick'\nspare='100Mi'");
        let cap = compute(&c, &s, &PoolLimits::default()).unwrap();
        let free = s.vgs["vgthick"].free;
        assert_eq!(cap.available, free - 100 * MI);
        assert_eq!(cap.maximum_volume_size, cap.available);
        assert_eq!(cap.minimum_volume_size, 4 * MI);
    }

    #[test]
    fn raid1_halves_and_needs_two_pvs() {
        let s = parse_fullreport(FIXTURE).unwrap();
        let c = class("volume_group='vgraid'\ntype='thick'\nraid='raid1'");
        let cap = compute(&c, &s, &PoolLimits::default()).unwrap();
        let vg = &s.vgs["vgraid"];
        assert_eq!(
            cap.available,
            round_down((vg.free - 2 * 4 * MI) / 2, 4 * MI)
        );
        assert!(cap.maximum_volume_size <= vg.pvs[1].free);
        // Three copies cannot fit on two PVs at all.
        let c3 = class("volume_group='vgraid'\ntype='thick'\nraid='raid1'\nmirrors=2");
        assert_eq!(
            compute(&c3, &s, &PoolLimits::default())
                .unwrap()
                .maximum_volume_size,
            0
        );
    }

    #[test]
    fn thin_is_ratio_times_pool_minus_committed() {
        let s = parse_fullreport(FIXTURE).unwrap();
        let c = class(
            "volume_group='vgthick'\ntype='thin'\nthin_pool='pool0'\nover_provision_ratio=4.0",
        );
        let cap = compute(&c, &s, &PoolLimits::default()).unwrap();
        // pool 1 GiB x 4 = 4 GiB, 2 GiB already promised to the thin LV.
        assert_eq!(cap.available, 2048 * MI);
        assert_eq!(cap.maximum_volume_size, 2048 * MI);
    }

    #[test]
    fn thin_pool_nearly_full_offers_nothing() {
        let mut s = parse_fullreport(FIXTURE).unwrap();
        for l in s.lvs.iter_mut().filter(|l| l.name == "pool0") {
            l.metadata_percent = Some(96.0);
        }
        let c = class(
            "volume_group='vgthick'\ntype='thin'\nthin_pool='pool0'\nover_provision_ratio=10.0",
        );
        let cap = compute(&c, &s, &PoolLimits::default()).unwrap();
        assert_eq!(cap.available, 0);
        assert_eq!(
            cap.pool_full.as_deref(),
            Some("thin pool vgthick/pool0 metadata is 96.0% used (full at 95%)")
        );
        // The threshold is the configured one.
        let lax = PoolLimits {
            warning_percent: 80.0,
            full_percent: 97.0,
        };
        assert!(compute(&c, &s, &lax).unwrap().available > 0);
    }

    #[test]
    fn vg_cost_counts_copies_and_raid_metadata() {
        let c = class("volume_group='vgraid'\ntype='thick'\nraid='raid1'");
        assert_eq!(c.layout.vg_cost(100 * MI, 4 * MI), 208 * MI);
        let c = class("volume_group='vgthick'\ntype='thick'");
        assert_eq!(c.layout.vg_cost(100 * MI, 4 * MI), 100 * MI);
    }

    #[test]
    fn missing_vg_or_pool_is_an_error() {
        let s = parse_fullreport(FIXTURE).unwrap();
        let c = class("volume_group='nope'\ntype='thick'");
        assert_eq!(
            compute(&c, &s, &PoolLimits::default()),
            Err(CapacityError::NoVg("nope".into()))
        );
        let c = class("volume_group='vgthick'\ntype='thin'\nthin_pool='foreign'");
        assert!(matches!(
            compute(&c, &s, &PoolLimits::default()),
            Err(CapacityError::NoPool { .. })
        ));
    }
}

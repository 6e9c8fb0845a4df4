//! How full the thin pools carve's classes use are, against the configured
//! thresholds: the one reading that capacity (no new volumes in a full pool),
//! health (a pool past its warning makes its volumes abnormal), the metrics
//! and the log all share, so they cannot tell different stories.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{Config, PoolLimits, Provisioning};
use crate::lvm::{LvInfo, LvmState};

/// Where a pool stands against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Normal,
    /// At or above `thin_pool_warning_percent`: its volumes are abnormal.
    Warning,
    /// At or above `thin_pool_full_percent`: no new volumes.
    Full,
}

/// One thin pool's fill, as LVM reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolFill {
    pub vg: String,
    pub pool: String,
    pub size: u64,
    pub data_percent: f64,
    pub metadata_percent: f64,
    /// Virtual size of every thin LV in the pool (anyone's).
    pub committed: u64,
    pub level: Level,
}

impl PoolFill {
    pub fn of(pool: &LvInfo, state: &LvmState, limits: &PoolLimits) -> PoolFill {
        let data = pool.data_percent.unwrap_or(0.0);
        let meta = pool.metadata_percent.unwrap_or(0.0);
        PoolFill {
            vg: pool.vg.clone(),
            pool: pool.name.clone(),
            size: pool.size,
            data_percent: data,
            metadata_percent: meta,
            committed: state
                .lvs_in(&pool.vg)
                .filter(|l| l.is_thin_volume() && l.pool == pool.name)
                .map(|l| l.size)
                .sum(),
            level: level(data, meta, limits),
        }
    }

    /// Which of data and metadata is fuller, and how full: for messages.
    pub fn worst(&self) -> (&'static str, f64) {
        if self.metadata_percent > self.data_percent {
            ("metadata", self.metadata_percent)
        } else {
            ("data", self.data_percent)
        }
    }

    /// "thin pool vg/pool data is 83.0% used (warning at 80%)".
    pub fn describe(&self, limits: &PoolLimits) -> String {
        let (what, pct) = self.worst();
        let (name, at) = match self.level {
            Level::Full => ("full", limits.full_percent),
            _ => ("warning", limits.warning_percent),
        };
        format!(
            "thin pool {}/{} {what} is {pct:.1}% used ({name} at {at}%)",
            self.vg, self.pool
        )
    }
}

pub fn level(data_percent: f64, metadata_percent: f64, limits: &PoolLimits) -> Level {
    let worst = data_percent.max(metadata_percent);
    if worst >= limits.full_percent {
        Level::Full
    } else if worst >= limits.warning_percent {
        Level::Warning
    } else {
        Level::Normal
    }
}

/// The thin pools the configured classes name that exist in `state`, each once.
pub fn configured(config: &Config, state: &LvmState) -> Vec<PoolFill> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut out = Vec::new();
    for c in &config.device_classes {
        let (Provisioning::Thin, Some(pool)) = (c.provisioning, c.thin_pool.as_deref()) else {
            continue;
        };
        if seen.contains(&(c.volume_group.as_str(), pool)) {
            continue;
        }
        seen.push((c.volume_group.as_str(), pool));
        if let Some(lv) = state.lv(&c.volume_group, pool).filter(|l| l.is_thin_pool()) {
            out.push(PoolFill::of(lv, state, &config.pool_limits));
        }
    }
    out
}

/// Remembers each pool's last level, so a crossing (up or down) is logged
/// once, not at every refresh.
#[derive(Default)]
pub struct Crossings(Mutex<HashMap<(String, String), Level>>);

impl Crossings {
    pub fn observe(&self, pools: &[PoolFill], limits: &PoolLimits) {
        let mut last = self.0.lock().expect("crossings lock");
        for p in pools {
            let key = (p.vg.clone(), p.pool.clone());
            let before = last.insert(key, p.level).unwrap_or(Level::Normal);
            if before == p.level {
                continue;
            }
            let (what, pct) = p.worst();
            let pool = format!("{}/{}", p.vg, p.pool);
            match p.level {
                Level::Full => {
                    tracing::error!(%pool, fill = what, percent = pct, threshold = limits.full_percent, "thin pool is full: no new volumes are created in it until it has room again")
                }
                Level::Warning => {
                    tracing::warn!(%pool, fill = what, percent = pct, threshold = limits.warning_percent, "thin pool is filling up: its volumes are reported abnormal")
                }
                Level::Normal => {
                    tracing::info!(%pool, data_percent = p.data_percent, metadata_percent = p.metadata_percent, "thin pool is below its warning threshold again")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PoolLimits = PoolLimits {
        warning_percent: 80.0,
        full_percent: 95.0,
    };

    #[test]
    fn the_fuller_of_data_and_metadata_decides() {
        assert_eq!(level(10.0, 10.0, &LIMITS), Level::Normal);
        assert_eq!(level(80.0, 10.0, &LIMITS), Level::Warning);
        assert_eq!(level(10.0, 94.9, &LIMITS), Level::Warning);
        assert_eq!(level(10.0, 95.0, &LIMITS), Level::Full);
        assert_eq!(level(100.0, 0.0, &LIMITS), Level::Full);
    }

    #[test]
    fn the_message_names_the_pool_and_the_figure() {
        let p = PoolFill {
            vg: "vg".into(),
            pool: "pool".into(),
            size: 1,
            data_percent: 83.04,
            metadata_percent: 12.0,
            committed: 0,
            level: Level::Warning,
        };
        assert_eq!(
            p.describe(&LIMITS),
            "thin pool vg/pool data is 83.0% used (warning at 80%)"
        );
    }
}

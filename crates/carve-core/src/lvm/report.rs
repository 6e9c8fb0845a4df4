//! Typed decoding of lvm2's JSON reports (`--reportformat json --units b --nosuffix`).
//! lvm prints every value as a string; this module turns them into numbers and
//! flags once, so nothing else in carve parses lvm text.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::attr::{LvAttr, LvHealth, LvState, LvType};

/// Fields of the one `lvm fullreport` call that reads all state carve needs.
pub const VG_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,pv_count,vg_missing_pv_count";
pub const PV_FIELDS: &str = "pv_name,pv_size,pv_free,pv_missing";
pub const LV_FIELDS: &str = "lv_name,vg_name,lv_size,lv_tags,lv_attr,pool_lv,origin,data_percent,metadata_percent,lv_health_status,lv_time";
/// lv_time as seconds since the Unix epoch (lvm.conf's report/time_format).
pub const TIME_FORMAT: &str = "report/time_format=\"%s\"";

#[derive(Debug, Clone, PartialEq)]
pub struct PvInfo {
    pub name: String,
    pub size: u64,
    pub free: u64,
    pub missing: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VgInfo {
    pub name: String,
    pub size: u64,
    pub free: u64,
    pub extent_size: u64,
    pub extent_count: u64,
    pub free_count: u64,
    pub pv_count: u64,
    pub missing_pv_count: u64,
    pub pvs: Vec<PvInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LvInfo {
    pub name: String,
    pub vg: String,
    pub size: u64,
    pub tags: Vec<String>,
    pub attr: LvAttr,
    /// The thin pool of a thin LV.
    pub pool: String,
    /// The origin of a snapshot.
    pub origin: String,
    pub data_percent: Option<f64>,
    pub metadata_percent: Option<f64>,
    /// lv_health_status as LVM words it ("partial", "refresh needed", …).
    pub health: String,
    /// Creation time, seconds since the Unix epoch (0 when lvm gave none).
    pub created: i64,
}

impl LvInfo {
    pub fn is_thin_pool(&self) -> bool {
        self.attr.lv_type == LvType::ThinPool
    }
    pub fn is_thin_volume(&self) -> bool {
        self.attr.lv_type == LvType::ThinVolume
    }
    pub fn is_active(&self) -> bool {
        self.attr.state == LvState::Active
    }
    /// A classic (copy-on-write) snapshot.
    pub fn is_classic_snapshot(&self) -> bool {
        self.attr.lv_type == LvType::Snapshot
    }
    /// A classic snapshot whose copy-on-write space overflowed.
    pub fn is_invalid_snapshot(&self) -> bool {
        self.attr.state == LvState::InvalidSnapshot
    }

    /// The value of tag `key=value`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// LVs as carve's own writes leave them, for the cache to show until the next
/// report does.
impl LvInfo {
    fn made(vg: &str, name: &str, size: u64, tags: Vec<String>, attr: &str) -> LvInfo {
        LvInfo {
            name: name.to_string(),
            vg: vg.to_string(),
            size,
            tags,
            attr: LvAttr::parse(attr),
            pool: String::new(),
            origin: String::new(),
            data_percent: None,
            metadata_percent: None,
            health: String::new(),
            // Made just now; the next report gives LVM's own lv_time, within
            // a second of it. (Never 0: a reader must not see a new LV as
            // one of unknown age.)
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }

    /// A new volume: thick, or thin in `pool` (a thin copy of `origin`).
    pub fn new_volume(
        vg: &str,
        name: &str,
        size: u64,
        tags: Vec<String>,
        thin: bool,
        pool: String,
        origin: String,
    ) -> LvInfo {
        if thin {
            LvInfo {
                pool,
                origin,
                ..Self::made(vg, name, size, tags, "Vwi-a-tz--")
            }
        } else {
            Self::made(vg, name, size, tags, "-wi-a-----")
        }
    }

    /// A classic snapshot of `origin` with `cow` bytes of copy-on-write space.
    pub fn new_classic_snapshot(
        vg: &str,
        name: &str,
        cow: u64,
        tags: Vec<String>,
        origin: &str,
    ) -> LvInfo {
        LvInfo {
            origin: origin.to_string(),
            ..Self::made(vg, name, cow, tags, "swi-a-s---")
        }
    }

    /// A thin snapshot of thin LV `origin` in `pool` (activation skipped).
    pub fn new_thin_snapshot(
        vg: &str,
        name: &str,
        size: u64,
        tags: Vec<String>,
        pool: &str,
        origin: &str,
    ) -> LvInfo {
        LvInfo {
            pool: pool.to_string(),
            origin: origin.to_string(),
            ..Self::made(vg, name, size, tags, "Vwi---tz-k")
        }
    }
}

/// The state of every VG on the host, as one report saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LvmState {
    pub vgs: BTreeMap<String, VgInfo>,
    pub lvs: Vec<LvInfo>,
}

impl LvmState {
    pub fn lv(&self, vg: &str, name: &str) -> Option<&LvInfo> {
        self.lvs.iter().find(|l| l.vg == vg && l.name == name)
    }
    pub fn lvs_in<'a>(&'a self, vg: &'a str) -> impl Iterator<Item = &'a LvInfo> + 'a {
        self.lvs.iter().filter(move |l| l.vg == vg)
    }
}

#[derive(Deserialize)]
struct Root {
    report: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    vg: Vec<RawVg>,
    #[serde(default)]
    pv: Vec<RawPv>,
    #[serde(default)]
    lv: Vec<RawLv>,
}

#[derive(Deserialize)]
struct RawVg {
    vg_name: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
    vg_extent_count: String,
    vg_free_count: String,
    pv_count: String,
    vg_missing_pv_count: String,
}

#[derive(Deserialize)]
struct RawPv {
    pv_name: String,
    pv_size: String,
    pv_free: String,
    pv_missing: String,
}

#[derive(Deserialize)]
struct RawLv {
    lv_name: String,
    vg_name: String,
    lv_size: String,
    lv_tags: String,
    lv_attr: String,
    pool_lv: String,
    origin: String,
    data_percent: String,
    metadata_percent: String,
    lv_health_status: String,
    lv_time: String,
}

fn num(field: &str, v: &str) -> Result<u64, String> {
    if v.is_empty() {
        return Ok(0);
    }
    v.parse::<u64>()
        .map_err(|_| format!("field {field}: {v:?} is not a byte count"))
}

fn percent(v: &str) -> Option<f64> {
    v.parse::<f64>().ok()
}

/// Decodes the output of `lvm fullreport` with carve's field lists.
pub fn parse_fullreport(json: &str) -> Result<LvmState, String> {
    let root: Root = serde_json::from_str(json).map_err(|e| format!("invalid report JSON: {e}"))?;
    let mut state = LvmState::default();
    for group in root.report {
        let pvs = group
            .pv
            .iter()
            .map(|p| {
                Ok(PvInfo {
                    name: p.pv_name.clone(),
                    size: num("pv_size", &p.pv_size)?,
                    free: num("pv_free", &p.pv_free)?,
                    missing: !p.pv_missing.is_empty(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        for v in group.vg {
            state.vgs.insert(
                v.vg_name.clone(),
                VgInfo {
                    size: num("vg_size", &v.vg_size)?,
                    free: num("vg_free", &v.vg_free)?,
                    extent_size: num("vg_extent_size", &v.vg_extent_size)?,
                    extent_count: num("vg_extent_count", &v.vg_extent_count)?,
                    free_count: num("vg_free_count", &v.vg_free_count)?,
                    pv_count: num("pv_count", &v.pv_count)?,
                    missing_pv_count: num("vg_missing_pv_count", &v.vg_missing_pv_count)?,
                    name: v.vg_name,
                    pvs: pvs.clone(),
                },
            );
        }
        for l in group.lv {
            state.lvs.push(LvInfo {
                size: num("lv_size", &l.lv_size)?,
                tags: l
                    .lv_tags
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
                data_percent: percent(&l.data_percent),
                metadata_percent: percent(&l.metadata_percent),
                created: num("lv_time", &l.lv_time)? as i64,
                attr: LvAttr::parse(&l.lv_attr),
                name: l.lv_name,
                vg: l.vg_name,
                pool: l.pool_lv,
                origin: l.origin,
                health: l.lv_health_status,
            });
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../fixtures/fullreport.json");

    #[test]
    fn parses_real_fullreport() {
        let s = parse_fullreport(FIXTURE).unwrap();
        assert_eq!(s.vgs.len(), 2);
        let thick = &s.vgs["vgthick"];
        assert_eq!(thick.extent_size, 4 * 1024 * 1024);
        assert_eq!(thick.free, thick.free_count * thick.extent_size);
        assert_eq!(thick.pvs.len(), 1);
        let raid = &s.vgs["vgraid"];
        assert_eq!(raid.pv_count, 2);
        assert_eq!(raid.pvs.len(), 2);

        let one = s.lv("vgthick", "cv-one-1a2b3c4d00112233").unwrap();
        assert_eq!(one.size, 100 * 1024 * 1024);
        assert_eq!(one.tag("carve.dev/owner"), Some("carve.dev"));
        assert_eq!(one.tag("carve.dev/class"), Some("fast"));
        assert!(one.is_active());
        assert!(!one.is_thin_volume());
        assert!(one.created > 1_700_000_000);

        let pool = s.lv("vgthick", "pool0").unwrap();
        assert!(pool.is_thin_pool());
        assert_eq!(pool.data_percent, Some(0.0));
        assert!(pool.metadata_percent.unwrap() > 0.0);

        let thin = s.lv("vgthick", "cv-thin-00aa11bb22334455").unwrap();
        assert!(thin.is_thin_volume());
        assert_eq!(thin.pool, "pool0");

        let inactive = s.lv("vgthick", "inactive").unwrap();
        assert!(!inactive.is_active());

        let foreign = s.lv("vgthick", "foreign").unwrap();
        assert!(foreign.tags.is_empty());
        assert_eq!(s.lv("vgthick", "snap1").unwrap().origin, "foreign");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_fullreport("not json").is_err());
        let bad = r#"{"report":[{"vg":[{"vg_name":"v","vg_size":"x","vg_free":"0","vg_extent_size":"0","vg_extent_count":"0","vg_free_count":"0","pv_count":"0","vg_missing_pv_count":"0"}]}]}"#;
        assert!(parse_fullreport(bad).unwrap_err().contains("vg_size"));
    }
}

//! `lv_attr`, decoded once: the ten characters lvs(8) prints for an LV, of
//! which carve reads the volume type (1), the state (5), whether it is open
//! (6), its health (9) and whether activation skips it (10).

/// What kind of LV it is (lv_attr character 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvType {
    /// A linear or striped LV (`-`).
    Plain,
    /// An LV with classic snapshots of it (`o`, or `O` while one merges).
    Origin,
    /// A classic copy-on-write snapshot (`s`, or `S` while merging).
    Snapshot,
    /// A thin LV (`V`).
    ThinVolume,
    /// A thin pool (`t`).
    ThinPool,
    /// A RAID LV (`r`, or `R` without initial sync).
    Raid,
    /// Anything else LVM has (mirror images, pool data and metadata, …).
    Other(char),
}

/// The LV's state (lv_attr character 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvState {
    Active,
    Inactive,
    Suspended,
    /// A classic snapshot whose copy-on-write space overflowed (`I`, or `S`
    /// while suspended): it holds no usable data any more.
    InvalidSnapshot,
    Other(char),
}

/// The LV's health (lv_attr character 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvHealth {
    Ok,
    /// A PV under the LV is missing (`p`).
    Partial,
    /// A RAID image needs a refresh after a device error (`r`).
    RefreshNeeded,
    /// Scrubbing found RAID mismatches (`m`).
    Mismatches,
    /// A thin pool failed (`F`).
    PoolFailed,
    /// A thin pool ran out of data space (`D`).
    PoolOutOfData,
    /// A thin pool's metadata went read-only (`M`).
    PoolMetadataReadOnly,
    /// LVM cannot tell (`X`).
    Unknown,
    Other(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvAttr {
    pub lv_type: LvType,
    pub state: LvState,
    /// Open by a mount or a process.
    pub open: bool,
    pub health: LvHealth,
    /// Activation skips the LV unless asked explicitly (thin snapshots).
    pub skip_activation: bool,
    /// As LVM printed it, for messages.
    raw: String,
}

impl LvAttr {
    /// Decodes lvs's lv_attr; missing characters count as `-`.
    pub fn parse(attr: &str) -> LvAttr {
        let c: Vec<char> = attr.chars().collect();
        let at = |i: usize| c.get(i).copied().unwrap_or('-');
        LvAttr {
            lv_type: match at(0) {
                '-' => LvType::Plain,
                'o' | 'O' => LvType::Origin,
                's' | 'S' => LvType::Snapshot,
                'V' => LvType::ThinVolume,
                't' => LvType::ThinPool,
                'r' | 'R' => LvType::Raid,
                x => LvType::Other(x),
            },
            state: match at(4) {
                'a' => LvState::Active,
                '-' => LvState::Inactive,
                's' => LvState::Suspended,
                'I' | 'S' => LvState::InvalidSnapshot,
                x => LvState::Other(x),
            },
            open: at(5) == 'o',
            health: match at(8) {
                '-' => LvHealth::Ok,
                'p' => LvHealth::Partial,
                'r' => LvHealth::RefreshNeeded,
                'm' => LvHealth::Mismatches,
                'F' => LvHealth::PoolFailed,
                'D' => LvHealth::PoolOutOfData,
                'M' => LvHealth::PoolMetadataReadOnly,
                'X' => LvHealth::Unknown,
                x => LvHealth::Other(x),
            },
            skip_activation: at(9) == 'k',
            raw: attr.to_string(),
        }
    }
}

impl std::fmt::Display for LvAttr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_lvs_prints() {
        // Each as lvm2 2.03 printed it in the test ground.
        let thick = LvAttr::parse("-wi-a-----");
        assert_eq!(
            (thick.lv_type, thick.state, thick.open),
            (LvType::Plain, LvState::Active, false)
        );
        let mounted_origin = LvAttr::parse("owi-aos---");
        assert_eq!(mounted_origin.lv_type, LvType::Origin);
        assert!(mounted_origin.open);
        let snap = LvAttr::parse("swi-a-s---");
        assert_eq!(
            (snap.lv_type, snap.state),
            (LvType::Snapshot, LvState::Active)
        );
        assert_eq!(LvAttr::parse("swi-I-s---").state, LvState::InvalidSnapshot);
        let thin_snap = LvAttr::parse("Vwi---tz-k");
        assert_eq!(
            (thin_snap.lv_type, thin_snap.state),
            (LvType::ThinVolume, LvState::Inactive)
        );
        assert!(thin_snap.skip_activation);
        assert_eq!(LvAttr::parse("twi-aotzD-").health, LvHealth::PoolOutOfData);
        assert_eq!(LvAttr::parse("rwi-a-r-p-").health, LvHealth::Partial);
        assert_eq!(LvAttr::parse("rwi-a-r---").lv_type, LvType::Raid);
        assert_eq!(
            LvAttr::parse("").lv_type,
            LvType::Plain,
            "short input reads as dashes"
        );
        assert_eq!(LvAttr::parse("owi-aos---").to_string(), "owi-aos---");
    }
}

//! How a thick device class lays its volumes out over the VG's PVs, and the
//! arithmetic that follows from it: the VG space a volume costs, how many PVs
//! it needs, the size granule, and the lvcreate options that ask for it.
//! Thin volumes take their pool's layout; their class's layout is `Linear`.

/// A thick volume's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Linear,
    /// Striped over `stripes` PVs (LVM's `striped` segment type).
    Striped {
        stripes: u32,
        stripe_size: Option<u64>,
    },
    Raid0 {
        stripes: u32,
        stripe_size: Option<u64>,
    },
    /// `mirrors` extra copies, each on its own PV.
    Raid1 {
        mirrors: u32,
    },
    /// `stripes` data stripes plus one parity stripe.
    Raid5 {
        stripes: u32,
        stripe_size: Option<u64>,
    },
    /// `stripes` data stripes plus two parity stripes.
    Raid6 {
        stripes: u32,
        stripe_size: Option<u64>,
    },
    /// `stripes` stripes, each mirrored once.
    Raid10 {
        stripes: u32,
        stripe_size: Option<u64>,
    },
}

/// RAID levels the configuration may name (`raid = "…"`).
pub const RAID_LEVELS: &[&str] = &["raid0", "raid1", "raid5", "raid6", "raid10"];

impl Layout {
    /// The layout a class's `raid`, `mirrors`, `stripes` and `stripe_size`
    /// describe, or why they do not describe one (the field to blame first).
    pub fn from_options(
        raid: Option<&str>,
        mirrors: Option<u32>,
        stripes: Option<u32>,
        stripe_size: Option<u64>,
    ) -> Result<Layout, (&'static str, String)> {
        if let Some(s) = stripes {
            if !(1..=128).contains(&s) {
                return Err(("stripes", "must be between 1 and 128".into()));
            }
        }
        if let Some(sz) = stripe_size {
            if stripes.is_none() {
                return Err(("stripe_size", "needs stripes".into()));
            }
            if !sz.is_power_of_two() || !(4096..=(4u64 << 30)).contains(&sz) {
                return Err((
                    "stripe_size",
                    "must be a power of two from 4Ki to 4Gi".into(),
                ));
            }
        }
        if mirrors.is_some() && raid != Some("raid1") {
            return Err(("mirrors", "only with raid = \"raid1\"".into()));
        }
        let striped = |min: u32, level: &str| match stripes {
            Some(s) if s >= min => Ok(s),
            _ => Err(("stripes", format!("{level} needs stripes >= {min}"))),
        };
        Ok(match raid {
            None => match stripes {
                None => Layout::Linear,
                Some(stripes) => Layout::Striped {
                    stripes,
                    stripe_size,
                },
            },
            Some("raid1") => {
                if stripes.is_some() {
                    return Err(("stripes", "raid1 has no stripes; use raid10".into()));
                }
                let mirrors = mirrors.unwrap_or(1);
                if !(1..=4).contains(&mirrors) {
                    return Err(("mirrors", "must be between 1 and 4".into()));
                }
                Layout::Raid1 { mirrors }
            }
            Some("raid0") => Layout::Raid0 {
                stripes: striped(2, "raid0")?,
                stripe_size,
            },
            Some("raid5") => Layout::Raid5 {
                stripes: striped(2, "raid5")?,
                stripe_size,
            },
            Some("raid6") => Layout::Raid6 {
                stripes: striped(3, "raid6")?,
                stripe_size,
            },
            Some("raid10") => Layout::Raid10 {
                stripes: striped(2, "raid10")?,
                stripe_size,
            },
            Some(other) => {
                return Err((
                    "raid",
                    format!("{other:?} is not one of {}", RAID_LEVELS.join(", ")),
                ))
            }
        })
    }

    pub fn is_raid(&self) -> bool {
        !matches!(self, Layout::Linear | Layout::Striped { .. })
    }

    fn stripes(&self) -> u64 {
        match *self {
            Layout::Linear | Layout::Raid1 { .. } => 1,
            Layout::Striped { stripes, .. }
            | Layout::Raid0 { stripes, .. }
            | Layout::Raid5 { stripes, .. }
            | Layout::Raid6 { stripes, .. }
            | Layout::Raid10 { stripes, .. } => stripes as u64,
        }
    }

    /// How many bytes of VG space one byte of a volume costs, as (numerator,
    /// denominator): raid1 keeps `mirrors + 1` copies, raid5/6 add one or two
    /// parity stripes, raid10 keeps two copies.
    pub fn space_factor(&self) -> (u64, u64) {
        let stripes = self.stripes();
        match *self {
            Layout::Raid1 { mirrors } => (mirrors as u64 + 1, 1),
            Layout::Raid5 { .. } => (stripes + 1, stripes),
            Layout::Raid6 { .. } => (stripes + 2, stripes),
            Layout::Raid10 { .. } => (2, 1),
            _ => (1, 1),
        }
    }

    /// PVs one volume of this layout spans.
    pub fn pvs_needed(&self) -> u64 {
        let stripes = self.stripes();
        match *self {
            Layout::Raid1 { mirrors } => mirrors as u64 + 1,
            Layout::Raid5 { .. } => stripes + 1,
            Layout::Raid6 { .. } => stripes + 2,
            Layout::Raid10 { .. } => stripes * 2,
            _ => stripes,
        }
    }

    /// Data-carrying stripes: how many PVs' worth of space one volume's bytes
    /// spread over.
    pub fn data_stripes(&self) -> u64 {
        self.stripes()
    }

    /// RAID keeps one metadata extent per image.
    pub fn metadata_extents(&self) -> u64 {
        if self.is_raid() {
            self.pvs_needed()
        } else {
            0
        }
    }

    /// Sizes are rounded to whole extents across all data stripes so lvcreate
    /// allocates exactly what carve reports.
    pub fn granule(&self, extent: u64) -> u64 {
        extent * self.stripes()
    }

    /// VG bytes one volume of `size` bytes takes: its data times the copies or
    /// parity, plus RAID metadata.
    pub fn vg_cost(&self, size: u64, extent: u64) -> u64 {
        let (num, den) = self.space_factor();
        size / den * num + self.metadata_extents() * extent
    }

    /// lvcreate options that ask for this layout.
    pub fn lvcreate_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let stripe_size = match *self {
            Layout::Linear => None,
            Layout::Raid1 { mirrors } => {
                // No initial resync: a new volume's content is undefined until
                // written, and the sync would compete with the workload.
                a.extend(["--type", "raid1", "--mirrors"].map(String::from));
                a.push(mirrors.to_string());
                a.push("--nosync".into());
                None
            }
            Layout::Striped {
                stripes,
                stripe_size,
            } => {
                a.push("--stripes".into());
                a.push(stripes.to_string());
                stripe_size
            }
            Layout::Raid0 {
                stripes,
                stripe_size,
            }
            | Layout::Raid5 {
                stripes,
                stripe_size,
            }
            | Layout::Raid6 {
                stripes,
                stripe_size,
            }
            | Layout::Raid10 {
                stripes,
                stripe_size,
            } => {
                a.push("--type".into());
                a.push(self.level().into());
                a.push("--stripes".into());
                a.push(stripes.to_string());
                stripe_size
            }
        };
        if let Some(sz) = stripe_size {
            a.push("--stripesize".into());
            a.push(format!("{}k", sz / 1024));
        }
        a
    }

    fn level(&self) -> &'static str {
        match self {
            Layout::Linear | Layout::Striped { .. } => "striped",
            Layout::Raid0 { .. } => "raid0",
            Layout::Raid1 { .. } => "raid1",
            Layout::Raid5 { .. } => "raid5",
            Layout::Raid6 { .. } => "raid6",
            Layout::Raid10 { .. } => "raid10",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn options_become_a_layout_or_name_the_field() {
        let ok = |r, m, s, z| Layout::from_options(r, m, s, z).unwrap();
        assert_eq!(ok(None, None, None, None), Layout::Linear);
        assert_eq!(
            ok(Some("raid1"), None, None, None),
            Layout::Raid1 { mirrors: 1 }
        );
        assert_eq!(
            ok(Some("raid5"), None, Some(3), Some(64 << 10)),
            Layout::Raid5 {
                stripes: 3,
                stripe_size: Some(64 << 10)
            }
        );
        let field = |r, m, s, z| Layout::from_options(r, m, s, z).unwrap_err().0;
        assert_eq!(field(Some("raid7"), None, None, None), "raid");
        assert_eq!(field(Some("raid5"), None, None, None), "stripes");
        assert_eq!(field(Some("raid6"), None, Some(2), None), "stripes");
        assert_eq!(field(None, Some(2), None, None), "mirrors");
        assert_eq!(field(Some("raid1"), Some(5), None, None), "mirrors");
        assert_eq!(field(Some("raid1"), None, Some(2), None), "stripes");
        assert_eq!(field(None, None, Some(2), Some(3 << 10)), "stripe_size");
        assert_eq!(field(None, None, None, Some(64 << 10)), "stripe_size");
    }

    #[test]
    fn arithmetic_per_layout() {
        let r1 = Layout::Raid1 { mirrors: 2 };
        assert_eq!((r1.space_factor(), r1.pvs_needed()), ((3, 1), 3));
        assert_eq!(r1.vg_cost(100 * MI, 4 * MI), 300 * MI + 12 * MI);
        let r5 = Layout::Raid5 {
            stripes: 3,
            stripe_size: None,
        };
        assert_eq!((r5.space_factor(), r5.pvs_needed()), ((4, 3), 4));
        assert_eq!(r5.granule(4 * MI), 12 * MI);
        let r10 = Layout::Raid10 {
            stripes: 2,
            stripe_size: None,
        };
        assert_eq!((r10.space_factor(), r10.pvs_needed()), ((2, 1), 4));
        let st = Layout::Striped {
            stripes: 2,
            stripe_size: Some(64 << 10),
        };
        assert_eq!((st.vg_cost(16 * MI, 4 * MI), st.pvs_needed()), (16 * MI, 2));
        assert_eq!(Layout::Linear.vg_cost(100 * MI, 4 * MI), 100 * MI);
    }

    #[test]
    fn lvcreate_options_table() {
        let join = |l: Layout| l.lvcreate_args().join(" ");
        assert_eq!(join(Layout::Linear), "");
        assert_eq!(
            join(Layout::Raid1 { mirrors: 2 }),
            "--type raid1 --mirrors 2 --nosync"
        );
        assert_eq!(
            join(Layout::Striped {
                stripes: 2,
                stripe_size: Some(64 << 10)
            }),
            "--stripes 2 --stripesize 64k"
        );
        assert_eq!(
            join(Layout::Raid5 {
                stripes: 3,
                stripe_size: None
            }),
            "--type raid5 --stripes 3"
        );
    }
}

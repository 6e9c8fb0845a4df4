//! The per-node configuration file (TOML): device classes and tuning. Everything
//! is validated when carve starts; a bad file refuses to start with a message that
//! names the field, so a typo never surfaces later as a failed CreateVolume.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// RAID layouts carve will pass to `lvcreate --type`; anything else is refused.
pub const RAID_TYPES: &[&str] = &["raid0", "raid1", "raid5", "raid6", "raid10"];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How often the capacity cache is refreshed from LVM even without mutations.
    #[serde(default = "default_refresh")]
    pub capacity_refresh_seconds: u64,
    /// Timeout for one lvm command; its whole process group is killed after it.
    #[serde(default = "default_timeout")]
    pub lvm_timeout_seconds: u64,
    /// How long a CreateVolume waits for a thick restore's or clone's block
    /// copy before answering Aborted with its progress, when the caller set no
    /// deadline (with one, carve answers shortly before it).
    #[serde(default = "default_copy_wait")]
    pub copy_wait_seconds: u64,
    #[serde(rename = "device_class")]
    pub device_classes: Vec<DeviceClass>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    Thick,
    Thin,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceClass {
    pub name: String,
    pub volume_group: String,
    #[serde(rename = "type")]
    pub provisioning: Provisioning,
    #[serde(default)]
    pub default: bool,
    /// Bytes of the VG (thick) or pool (thin) that carve never hands out.
    #[serde(default)]
    pub spare: ByteSize,
    /// Thin only: the pool LV inside `volume_group`.
    pub thin_pool: Option<String>,
    /// Thin only: virtual bytes offered per byte of pool (>= 1.0).
    pub over_provision_ratio: Option<f64>,
    /// Thick only: stripe across this many PVs.
    pub stripes: Option<u32>,
    /// Thick only, with stripes: stripe size (power of two, 4Ki..=4Gi).
    pub stripe_size: Option<ByteSize>,
    /// Thick only: one of RAID_TYPES.
    pub raid: Option<String>,
    /// raid1 only: number of extra copies (1..=4).
    pub mirrors: Option<u32>,
    /// Thick only: copy-on-write space of a snapshot, in percent of its
    /// origin's size (1..=100, default 25).
    pub snapshot_reserve_percent: Option<u32>,
}

/// A byte count written as an integer or as a string with a binary suffix
/// (`"512Mi"`, `"10Gi"`, `"1Ti"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (use bytes or Ki/Mi/Gi/Ti)"))?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use Ki, Mi, Gi or Ti)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn default_refresh() -> u64 {
    30
}
fn default_timeout() -> u64 {
    60
}
fn default_copy_wait() -> u64 {
    5
}

/// A config error names the offending field the way the file spells it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// Longest VG name carve manages: volume and snapshot IDs hold it, and must
/// fit CSI's 128 bytes with the longest LV name and a hashed node name
/// (`v1:#<16 hex>:<vg>/<68-byte LV name>`, see names::VolumeId).
pub const MAX_VG_NAME_LEN: usize = 38;

/// Names LVM accepts for VGs and LVs: `[A-Za-z0-9+_.-]`, not starting with `-`,
/// not `.`/`..`.
pub fn is_lvm_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && !s.starts_with('-')
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

fn is_class_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Config::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.capacity_refresh_seconds)
    }

    pub fn lvm_timeout(&self) -> Duration {
        Duration::from_secs(self.lvm_timeout_seconds)
    }

    pub fn copy_wait(&self) -> Duration {
        Duration::from_secs(self.copy_wait_seconds)
    }

    pub fn class(&self, name: &str) -> Option<&DeviceClass> {
        self.device_classes.iter().find(|c| c.name == name)
    }

    /// The class marked `default`, or the only class when there is just one.
    pub fn default_class(&self) -> &DeviceClass {
        self.device_classes
            .iter()
            .find(|c| c.default)
            .unwrap_or(&self.device_classes[0])
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let bad = |field: String, message: &str| ConfigError::Invalid {
            path: path.to_string(),
            field,
            message: message.to_string(),
        };
        if self.device_classes.is_empty() {
            return Err(bad(
                "device_class".into(),
                "at least one device class is required",
            ));
        }
        if self.capacity_refresh_seconds == 0 {
            return Err(bad("capacity_refresh_seconds".into(), "must be at least 1"));
        }
        if self.lvm_timeout_seconds == 0 {
            return Err(bad("lvm_timeout_seconds".into(), "must be at least 1"));
        }
        let defaults = self.device_classes.iter().filter(|c| c.default).count();
        if defaults > 1 {
            return Err(bad(
                "device_class.default".into(),
                "only one class may be the default",
            ));
        }
        if defaults == 0 && self.device_classes.len() > 1 {
            return Err(bad(
                "device_class.default".into(),
                "several classes are configured: mark exactly one `default = true`",
            ));
        }
        let mut names = BTreeSet::new();
        let mut pools = BTreeSet::new();
        for (i, c) in self.device_classes.iter().enumerate() {
            let f = |name: &str| format!("device_class[{i}].{name}");
            if !is_class_name(&c.name) {
                return Err(bad(
                    f("name"),
                    "must be 1-63 characters of a-z, 0-9 and '-'",
                ));
            }
            if !names.insert(c.name.clone()) {
                return Err(bad(f("name"), &format!("{:?} is used twice", c.name)));
            }
            if !is_lvm_name(&c.volume_group) {
                return Err(bad(f("volume_group"), "not a valid LVM volume group name"));
            }
            if c.volume_group.len() > MAX_VG_NAME_LEN {
                return Err(bad(
                    f("volume_group"),
                    &format!("longer than {MAX_VG_NAME_LEN} bytes: volume IDs carry it and CSI caps them at 128 bytes"),
                ));
            }
            match c.provisioning {
                Provisioning::Thin => {
                    let Some(pool) = &c.thin_pool else {
                        return Err(bad(f("thin_pool"), "required for type = \"thin\""));
                    };
                    if !is_lvm_name(pool) {
                        return Err(bad(f("thin_pool"), "not a valid LVM name"));
                    }
                    if !pools.insert((c.volume_group.clone(), pool.clone())) {
                        return Err(bad(f("thin_pool"), "another class uses the same pool"));
                    }
                    match c.over_provision_ratio {
                        Some(r) if !(1.0..=100.0).contains(&r) || r.is_nan() => {
                            return Err(bad(
                                f("over_provision_ratio"),
                                "must be between 1.0 and 100.0",
                            ));
                        }
                        _ => {}
                    }
                    for (name, set) in [
                        (
                            "snapshot_reserve_percent",
                            c.snapshot_reserve_percent.is_some(),
                        ),
                        ("stripes", c.stripes.is_some()),
                        ("stripe_size", c.stripe_size.is_some()),
                        ("raid", c.raid.is_some()),
                        ("mirrors", c.mirrors.is_some()),
                    ] {
                        if set {
                            return Err(bad(
                                f(name),
                                "applies to thick classes only (a thin volume's layout is its pool's)",
                            ));
                        }
                    }
                }
                Provisioning::Thick => {
                    if c.thin_pool.is_some() {
                        return Err(bad(f("thin_pool"), "only for type = \"thin\""));
                    }
                    if c.over_provision_ratio.is_some() {
                        return Err(bad(f("over_provision_ratio"), "only for type = \"thin\""));
                    }
                    if let Some(p) = c.snapshot_reserve_percent {
                        if !(1..=100).contains(&p) {
                            return Err(bad(
                                f("snapshot_reserve_percent"),
                                "must be between 1 and 100",
                            ));
                        }
                    }
                    if let Some(r) = &c.raid {
                        if !RAID_TYPES.contains(&r.as_str()) {
                            return Err(bad(
                                f("raid"),
                                &format!("{r:?} is not one of {}", RAID_TYPES.join(", ")),
                            ));
                        }
                    }
                    if let Some(s) = c.stripes {
                        if !(1..=128).contains(&s) {
                            return Err(bad(f("stripes"), "must be between 1 and 128"));
                        }
                        if matches!(c.raid.as_deref(), Some("raid1")) {
                            return Err(bad(f("stripes"), "raid1 has no stripes; use raid10"));
                        }
                    }
                    if let Some(ByteSize(sz)) = c.stripe_size {
                        if c.stripes.is_none() {
                            return Err(bad(f("stripe_size"), "needs stripes"));
                        }
                        if !sz.is_power_of_two() || !(4096..=(4u64 << 30)).contains(&sz) {
                            return Err(bad(
                                f("stripe_size"),
                                "must be a power of two from 4Ki to 4Gi",
                            ));
                        }
                    }
                    if let Some(m) = c.mirrors {
                        if c.raid.as_deref() != Some("raid1") {
                            return Err(bad(f("mirrors"), "only with raid = \"raid1\""));
                        }
                        if !(1..=4).contains(&m) {
                            return Err(bad(f("mirrors"), "must be between 1 and 4"));
                        }
                    }
                    let min_stripes = match c.raid.as_deref() {
                        Some("raid0") => 2,
                        Some("raid5") => 2,
                        Some("raid6") => 3,
                        Some("raid10") => 2,
                        _ => 1,
                    };
                    if c.raid.is_some() && c.raid.as_deref() != Some("raid1") {
                        match c.stripes {
                            Some(s) if s >= min_stripes => {}
                            _ => {
                                return Err(bad(
                                    f("stripes"),
                                    &format!(
                                        "{} needs stripes >= {min_stripes}",
                                        c.raid.as_deref().unwrap_or_default()
                                    ),
                                ))
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl DeviceClass {
    /// Copy-on-write space for a thick snapshot of an origin of `size` bytes,
    /// in whole extents (at least one).
    pub fn snapshot_reserve(&self, size: u64, extent: u64) -> u64 {
        let pct = self.snapshot_reserve_percent.unwrap_or(25) as u64;
        (size * pct / 100).div_ceil(extent).max(1) * extent
    }

    pub fn ratio(&self) -> f64 {
        self.over_provision_ratio.unwrap_or(1.0)
    }

    /// How many bytes of VG space one byte of a new volume costs, as
    /// (numerator, denominator): raid1 keeps `mirrors + 1` copies, raid5/6 add one
    /// or two parity stripes, raid10 keeps two copies.
    pub fn space_factor(&self) -> (u64, u64) {
        let stripes = self.stripes.unwrap_or(1) as u64;
        match self.raid.as_deref() {
            Some("raid1") => (self.mirrors.unwrap_or(1) as u64 + 1, 1),
            Some("raid5") => (stripes + 1, stripes),
            Some("raid6") => (stripes + 2, stripes),
            Some("raid10") => (2, 1),
            _ => (1, 1),
        }
    }

    /// Sizes are rounded to whole extents across all data stripes so lvcreate
    /// allocates exactly what carve reports.
    pub fn size_granule(&self, extent: u64) -> u64 {
        extent * self.stripes.unwrap_or(1).max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/config.example.toml");

    #[test]
    fn example_config_is_valid() {
        let c = Config::parse(EXAMPLE, "example").unwrap();
        assert!(c.device_classes.len() >= 3);
        assert_eq!(c.default_class().name, "thick");
        let thin = c.class("thin").unwrap();
        assert_eq!(thin.provisioning, Provisioning::Thin);
        assert!(thin.ratio() >= 1.0);
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("10GB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999Ti").is_err());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            ("", "device_class"),
            (
                "[[device_class]]\nname='A'\nvolume_group='vg'\ntype='thick'\n",
                "device_class[0].name",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg/x'\ntype='thick'\n",
                "device_class[0].volume_group",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thin'\n",
                "device_class[0].thin_pool",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nraid='raid7'\n",
                "device_class[0].raid",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nraid='raid5'\n",
                "device_class[0].stripes",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nmirrors=2\n",
                "device_class[0].mirrors",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nstripes=2\nstripe_size='3Ki'\n",
                "device_class[0].stripe_size",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thin'\nthin_pool='p'\nover_provision_ratio=0.5\n",
                "device_class[0].over_provision_ratio",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thin'\nthin_pool='p'\nstripes=2\n",
                "device_class[0].stripes",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\n[[device_class]]\nname='b'\nvolume_group='vg'\ntype='thick'\n",
                "device_class.default",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\ndefault=true\n[[device_class]]\nname='a'\nvolume_group='vg2'\ntype='thick'\n",
                "device_class[1].name",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nspare='1GB'\n",
                "unknown unit",
            ),
            (
                "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nbogus=1\n",
                "bogus",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?} gave {e:?}, wanted {want:?}");
        }
    }

    #[test]
    fn space_factor_and_granule() {
        let mut c = Config::parse(
            "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nraid='raid1'\nmirrors=2\n",
            "t",
        )
        .unwrap()
        .device_classes
        .remove(0);
        assert_eq!(c.space_factor(), (3, 1));
        c.raid = Some("raid5".into());
        c.stripes = Some(3);
        assert_eq!(c.space_factor(), (4, 3));
        assert_eq!(c.size_granule(4 << 20), 12 << 20);
    }
}

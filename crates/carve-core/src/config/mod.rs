//! The per-node configuration file (TOML): device classes and tuning. Every
//! field is validated when carve starts, and the file is turned into typed
//! values once ([`Config`], [`DeviceClass`], [`Layout`]); a bad file refuses
//! to start with a message that names the field, so a typo never surfaces
//! later as a failed CreateVolume.

mod class;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::layout::Layout;
pub use class::{DeviceClass, Provisioning};

/// The node configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often the capacity cache is refreshed from LVM even without mutations.
    pub capacity_refresh_seconds: u64,
    /// Timeout for one lvm command; its whole process group is killed after it.
    pub lvm_timeout_seconds: u64,
    /// How lvm commands run: through long-lived `lvm shell` processes, or
    /// one process per command.
    pub lvm_runner: LvmRunnerKind,
    /// How many lvm shells run commands at once (with `LvmRunnerKind::Shell`).
    pub lvm_shells: usize,
    /// How long a CreateVolume waits for a thick restore's or clone's block
    /// copy before answering Aborted with its progress, when the caller set no
    /// deadline (with one, carve answers shortly before it).
    pub copy_wait_seconds: u64,
    /// Thick restores and clones copying at once; more wait in line. Each
    /// copy has a thread of its own, outside the pool that serves RPCs.
    pub copy_workers: usize,
    /// The directories under which the node service stages, publishes,
    /// measures and removes (kubelet's, on Kubernetes). A path from the CO
    /// that resolves anywhere else is refused.
    pub node_path_roots: Vec<std::path::PathBuf>,
    /// When a thin pool's fill makes its volumes abnormal, and when it stops
    /// taking new volumes.
    pub pool_limits: PoolLimits,
    /// Most volumes with metric series of their own (the rest are counted).
    pub metrics_volume_limit: usize,
    pub device_classes: Vec<DeviceClass>,
}

/// How carve runs lvm commands (`lvm_runner` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LvmRunnerKind {
    /// Long-lived `lvm shell` processes (lvmdbusd's protocol): no process
    /// start and library set-up per command.
    Shell,
    /// One `lvm` process per command: the fallback.
    Process,
}

/// Thin pool fill thresholds, in percent of data or metadata used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolLimits {
    /// At or above it, the pool's volumes are abnormal (a warning that the
    /// pool needs room before writes start to fail).
    pub warning_percent: f64,
    /// At or above it, the pool's classes offer no capacity and CreateVolume
    /// refuses new volumes in it: promising more to a pool about to run out
    /// turns into I/O errors.
    pub full_percent: f64,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            warning_percent: default_pool_warning(),
            full_percent: default_pool_full(),
        }
    }
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_refresh")]
    capacity_refresh_seconds: u64,
    #[serde(default = "default_timeout")]
    lvm_timeout_seconds: u64,
    #[serde(default = "default_lvm_runner")]
    lvm_runner: LvmRunnerKind,
    #[serde(default = "default_lvm_shells")]
    lvm_shells: usize,
    #[serde(default = "default_copy_wait")]
    copy_wait_seconds: u64,
    #[serde(default = "default_copy_workers")]
    copy_workers: usize,
    #[serde(default = "default_node_path_roots")]
    node_path_roots: Vec<String>,
    #[serde(default = "default_pool_warning")]
    thin_pool_warning_percent: f64,
    #[serde(default = "default_pool_full")]
    thin_pool_full_percent: f64,
    #[serde(default = "default_metrics_volume_limit")]
    metrics_volume_limit: usize,
    #[serde(rename = "device_class", default)]
    device_classes: Vec<class::RawDeviceClass>,
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
fn default_lvm_runner() -> LvmRunnerKind {
    LvmRunnerKind::Shell
}
fn default_lvm_shells() -> usize {
    2
}
fn default_copy_wait() -> u64 {
    5
}
fn default_copy_workers() -> usize {
    2
}
fn default_pool_warning() -> f64 {
    80.0
}
fn default_pool_full() -> f64 {
    95.0
}
fn default_metrics_volume_limit() -> usize {
    1000
}
fn default_node_path_roots() -> Vec<String> {
    vec!["/var/lib/kubelet".into()]
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let bad = |field: String, message: String| ConfigError::Invalid {
            path: path.to_string(),
            field,
            message,
        };
        check_tuning(&raw).map_err(|(f, m)| bad(f.into(), m.into()))?;
        let mut device_classes = Vec::with_capacity(raw.device_classes.len());
        for (i, c) in raw.device_classes.into_iter().enumerate() {
            device_classes.push(
                c.validate()
                    .map_err(|(f, m)| bad(format!("device_class[{i}].{f}"), m))?,
            );
        }
        check_classes(&device_classes).map_err(|(f, m)| bad(f, m))?;
        Ok(Config {
            capacity_refresh_seconds: raw.capacity_refresh_seconds,
            lvm_timeout_seconds: raw.lvm_timeout_seconds,
            lvm_runner: raw.lvm_runner,
            lvm_shells: raw.lvm_shells,
            copy_wait_seconds: raw.copy_wait_seconds,
            copy_workers: raw.copy_workers,
            node_path_roots: raw.node_path_roots.iter().map(Into::into).collect(),
            pool_limits: PoolLimits {
                warning_percent: raw.thin_pool_warning_percent,
                full_percent: raw.thin_pool_full_percent,
            },
            metrics_volume_limit: raw.metrics_volume_limit,
            device_classes,
        })
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
}

fn check_tuning(raw: &RawConfig) -> Result<(), (&'static str, &'static str)> {
    if raw.device_classes.is_empty() {
        return Err(("device_class", "at least one device class is required"));
    }
    if raw.capacity_refresh_seconds == 0 {
        return Err(("capacity_refresh_seconds", "must be at least 1"));
    }
    if raw.lvm_timeout_seconds == 0 {
        return Err(("lvm_timeout_seconds", "must be at least 1"));
    }
    if !(1..=16).contains(&raw.lvm_shells) {
        return Err(("lvm_shells", "must be between 1 and 16"));
    }
    if !(1..=64).contains(&raw.copy_workers) {
        return Err(("copy_workers", "must be between 1 and 64"));
    }
    if !(raw.thin_pool_full_percent > 0.0 && raw.thin_pool_full_percent <= 100.0) {
        return Err(("thin_pool_full_percent", "must be above 0 and at most 100"));
    }
    if !(raw.thin_pool_warning_percent > 0.0
        && raw.thin_pool_warning_percent <= raw.thin_pool_full_percent)
    {
        return Err((
            "thin_pool_warning_percent",
            "must be above 0 and at most thin_pool_full_percent",
        ));
    }
    if raw.node_path_roots.is_empty() {
        return Err(("node_path_roots", "at least one directory is required"));
    }
    for r in &raw.node_path_roots {
        if crate::host::fs::check_path("node_path_roots", r).is_err()
            || r.trim_end_matches('/').is_empty()
        {
            return Err((
                "node_path_roots",
                "each must be an absolute directory without . or .., not /",
            ));
        }
        if ["/proc", "/sys", "/dev"]
            .iter()
            .any(|k| std::path::Path::new(r).starts_with(k))
        {
            return Err(("node_path_roots", "must not be under /proc, /sys or /dev"));
        }
    }
    Ok(())
}

/// What holds across classes: one default, unique names, one class per pool.
fn check_classes(classes: &[DeviceClass]) -> Result<(), (String, String)> {
    let defaults = classes.iter().filter(|c| c.default).count();
    if defaults > 1 {
        return Err((
            "device_class.default".into(),
            "only one class may be the default".into(),
        ));
    }
    if defaults == 0 && classes.len() > 1 {
        return Err((
            "device_class.default".into(),
            "several classes are configured: mark exactly one `default = true`".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let mut pools = BTreeSet::new();
    for (i, c) in classes.iter().enumerate() {
        if !names.insert(&c.name) {
            return Err((
                format!("device_class[{i}].name"),
                format!("{:?} is used twice", c.name),
            ));
        }
        if let Some(pool) = &c.thin_pool {
            if !pools.insert((&c.volume_group, pool)) {
                return Err((
                    format!("device_class[{i}].thin_pool"),
                    "another class uses the same pool".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../../deploy/config.example.toml");

    #[test]
    fn example_config_is_valid() {
        let c = Config::parse(EXAMPLE, "example").unwrap();
        assert!(c.device_classes.len() >= 3);
        assert_eq!(c.default_class().name, "thick");
        let thin = c.class("thin").unwrap();
        assert_eq!(thin.provisioning, Provisioning::Thin);
        assert!(thin.over_provision_ratio >= 1.0);
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
            (
                "thin_pool_full_percent=101\n[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\n",
                "thin_pool_full_percent",
            ),
            (
                "thin_pool_warning_percent=96\n[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\n",
                "thin_pool_warning_percent",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?} gave {e:?}, wanted {want:?}");
        }
    }

    #[test]
    fn classes_become_typed_layouts() {
        let c = Config::parse(
            "[[device_class]]\nname='a'\nvolume_group='vg'\ntype='thick'\nraid='raid1'\nmirrors=2\n",
            "t",
        )
        .unwrap()
        .device_classes
        .remove(0);
        assert_eq!(c.layout, Layout::Raid1 { mirrors: 2 });
        assert_eq!(c.snapshot_reserve_percent, 25);
        let t = Config::parse(
            "[[device_class]]\nname='t'\nvolume_group='vg'\ntype='thin'\nthin_pool='p'\n",
            "t",
        )
        .unwrap()
        .device_classes
        .remove(0);
        assert_eq!((t.layout, t.over_provision_ratio), (Layout::Linear, 1.0));
    }
}

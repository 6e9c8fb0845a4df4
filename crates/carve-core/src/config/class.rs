//! One `[[device_class]]`: read as written, validated field by field, and
//! turned into a typed [`DeviceClass`].

use serde::Deserialize;

use super::{is_class_name, is_lvm_name, ByteSize, MAX_VG_NAME_LEN};
use crate::layout::Layout;

/// Thick LVs are fully allocated; thin ones live in a thin pool.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    Thick,
    Thin,
}

/// A device class, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceClass {
    pub name: String,
    pub volume_group: String,
    pub provisioning: Provisioning,
    pub default: bool,
    /// Bytes of the VG (thick) or of the over-provisioned pool (thin) that
    /// carve never hands out.
    pub spare: u64,
    /// Thin only: the pool LV inside `volume_group`.
    pub thin_pool: Option<String>,
    /// Virtual bytes offered per byte of pool (thin; 1.0 for thick).
    pub over_provision_ratio: f64,
    /// How thick volumes lie on the PVs (`Linear` for thin classes).
    pub layout: Layout,
    /// Thick only: copy-on-write space of a snapshot, in percent of its
    /// origin's size.
    pub snapshot_reserve_percent: u32,
}

/// The class as the file writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeviceClass {
    name: String,
    volume_group: String,
    #[serde(rename = "type")]
    provisioning: Provisioning,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    spare: ByteSize,
    thin_pool: Option<String>,
    over_provision_ratio: Option<f64>,
    stripes: Option<u32>,
    stripe_size: Option<ByteSize>,
    raid: Option<String>,
    mirrors: Option<u32>,
    snapshot_reserve_percent: Option<u32>,
}

/// A field to blame and why.
type Bad = (&'static str, String);

fn bad(field: &'static str, why: &str) -> Bad {
    (field, why.to_string())
}

impl RawDeviceClass {
    /// The typed class, or the first field (as the file names it) that is wrong.
    pub(super) fn validate(self) -> Result<DeviceClass, (String, String)> {
        self.check_names()
            .and_then(|()| match self.provisioning {
                Provisioning::Thin => self.thin(),
                Provisioning::Thick => self.thick(),
            })
            .map_err(|(f, m)| (f.to_string(), m))
    }

    fn check_names(&self) -> Result<(), Bad> {
        if !is_class_name(&self.name) {
            return Err(bad("name", "must be 1-63 characters of a-z, 0-9 and '-'"));
        }
        if !is_lvm_name(&self.volume_group) {
            return Err(bad("volume_group", "not a valid LVM volume group name"));
        }
        if self.volume_group.len() > MAX_VG_NAME_LEN {
            return Err((
                "volume_group",
                format!("longer than {MAX_VG_NAME_LEN} bytes: volume IDs carry it and CSI caps them at 128 bytes"),
            ));
        }
        Ok(())
    }

    fn class(&self, layout: Layout) -> DeviceClass {
        DeviceClass {
            name: self.name.clone(),
            volume_group: self.volume_group.clone(),
            provisioning: self.provisioning,
            default: self.default,
            spare: self.spare.0,
            thin_pool: self.thin_pool.clone(),
            over_provision_ratio: self.over_provision_ratio.unwrap_or(1.0),
            layout,
            snapshot_reserve_percent: self.snapshot_reserve_percent.unwrap_or(25),
        }
    }

    fn thin(&self) -> Result<DeviceClass, Bad> {
        let Some(pool) = &self.thin_pool else {
            return Err(bad("thin_pool", "required for type = \"thin\""));
        };
        if !is_lvm_name(pool) {
            return Err(bad("thin_pool", "not a valid LVM name"));
        }
        if let Some(r) = self.over_provision_ratio {
            if !(1.0..=100.0).contains(&r) || r.is_nan() {
                return Err(bad("over_provision_ratio", "must be between 1.0 and 100.0"));
            }
        }
        for (field, set) in [
            (
                "snapshot_reserve_percent",
                self.snapshot_reserve_percent.is_some(),
            ),
            ("stripes", self.stripes.is_some()),
            ("stripe_size", self.stripe_size.is_some()),
            ("raid", self.raid.is_some()),
            ("mirrors", self.mirrors.is_some()),
        ] {
            if set {
                return Err(bad(
                    field,
                    "applies to thick classes only (a thin volume's layout is its pool's)",
                ));
            }
        }
        Ok(self.class(Layout::Linear))
    }

    fn thick(&self) -> Result<DeviceClass, Bad> {
        if self.thin_pool.is_some() {
            return Err(bad("thin_pool", "only for type = \"thin\""));
        }
        if self.over_provision_ratio.is_some() {
            return Err(bad("over_provision_ratio", "only for type = \"thin\""));
        }
        if let Some(p) = self.snapshot_reserve_percent {
            if !(1..=100).contains(&p) {
                return Err(bad("snapshot_reserve_percent", "must be between 1 and 100"));
            }
        }
        let layout = Layout::from_options(
            self.raid.as_deref(),
            self.mirrors,
            self.stripes,
            self.stripe_size.map(|s| s.0),
        )?;
        Ok(self.class(layout))
    }
}

impl DeviceClass {
    /// Copy-on-write space for a thick snapshot of an origin of `size` bytes,
    /// in whole extents (at least one).
    pub fn snapshot_reserve(&self, size: u64, extent: u64) -> u64 {
        let pct = self.snapshot_reserve_percent as u64;
        (size * pct / 100).div_ceil(extent).max(1) * extent
    }

    /// Requests are rounded up to a multiple of this.
    pub fn size_granule(&self, extent: u64) -> u64 {
        self.layout.granule(extent)
    }
}

//! Deterministic names: the LV name derived from a CSI request name, the volume
//! ID that carries it, and the tags carve writes onto every LV it creates. A
//! retried or crashed CreateVolume computes the same name and converges on the
//! same LV.

use sha2::{Digest, Sha256};

/// Key prefix of every tag carve writes.
pub const TAG_PREFIX: &str = "carve.dev/";
pub const TAG_OWNER: &str = "carve.dev/owner";
pub const TAG_NAME: &str = "carve.dev/name";
pub const TAG_CLASS: &str = "carve.dev/class";
pub const TAG_PVC: &str = "carve.dev/pvc";
pub const TAG_PVC_NAMESPACE: &str = "carve.dev/pvc-namespace";
pub const TAG_PV: &str = "carve.dev/pv";
/// Snapshots and restored volumes: the volume or snapshot ID they came from.
pub const TAG_SOURCE: &str = "carve.dev/source";
/// Snapshots: the origin's size when the snapshot was taken.
pub const TAG_SIZE: &str = "carve.dev/size";
/// Snapshots: creation time (Unix seconds) as carve recorded it.
pub const TAG_CREATED: &str = "carve.dev/created";
/// A thick restore or clone whose block copy has not finished: never ready.
pub const TAG_INCOMPLETE: &str = "carve.dev/incomplete";
/// The StorageClass fsType, so the node formats as asked even when a CO leaves
/// the capability's fs_type empty.
pub const TAG_FS_TYPE: &str = "carve.dev/fs-type";

/// LV names are `cv-` + a readable part of the request name + `-` + 16 hex
/// digits of its SHA-256. The hash makes the name unique and safe whatever the
/// request name holds; the readable part lets an operator match `lvs` to PVs.
/// The result stays well below LVM's limits (127 bytes, and VG+LV fitting in a
/// device-mapper name).
pub fn lv_name(request_name: &str) -> String {
    prefixed_name("cv", request_name)
}

/// Snapshot LVs: `cs-…`, derived from the snapshot request name the same way.
pub fn snapshot_lv_name(request_name: &str) -> String {
    prefixed_name("cs", request_name)
}

fn prefixed_name(prefix: &str, request_name: &str) -> String {
    const READABLE: usize = 48;
    let digest = Sha256::digest(request_name.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let readable: String = request_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(READABLE)
        .collect();
    format!("{prefix}-{readable}-{hash}")
}

/// A volume ID is `<vg>/<lv>`: it names the node-local LV directly, so every RPC
/// finds its LV without a lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeId {
    pub vg: String,
    pub lv: String,
}

impl VolumeId {
    /// `None` for anything that cannot be a carve volume ID; callers answer NotFound
    /// without running lvm, since no such volume can exist.
    pub fn parse(id: &str) -> Option<VolumeId> {
        Self::parse_prefixed(id, "cv-")
    }

    /// A snapshot ID: the same `<vg>/<lv>` form, with `cs-` LV names.
    pub fn parse_snapshot(id: &str) -> Option<VolumeId> {
        Self::parse_prefixed(id, "cs-")
    }

    fn parse_prefixed(id: &str, prefix: &str) -> Option<VolumeId> {
        let (vg, lv) = id.split_once('/')?;
        if !crate::config::is_lvm_name(vg)
            || !crate::config::is_lvm_name(lv)
            || !lv.starts_with(prefix)
        {
            return None;
        }
        Some(VolumeId {
            vg: vg.to_string(),
            lv: lv.to_string(),
        })
    }
}

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

/// LVM tags allow `[A-Za-z0-9_+.-/=!:&#]`; any other byte of a value (and `#`
/// itself) is written as `#xx` so arbitrary request names round-trip.
pub fn encode_tag_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"_+.-/=!:&".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("#{b:02x}"));
        }
    }
    out
}

pub fn decode_tag_value(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` with the value encoded; LVM caps a tag at 1024 bytes, so values
/// are truncated at a character boundary well below that (the LV name, not the
/// tag, is what identifies a volume).
pub fn tag(key: &str, value: &str) -> String {
    let mut v = encode_tag_value(value);
    if v.len() > 900 {
        let mut cut = 900;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
    format!("{key}={v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lv_names_are_deterministic_safe_and_bounded() {
        let a = lv_name("pvc-8d1e2f3a-1b2c-4d5e-8f90-0123456789ab");
        assert_eq!(a, lv_name("pvc-8d1e2f3a-1b2c-4d5e-8f90-0123456789ab"));
        assert!(a.starts_with("cv-pvc-8d1e2f3a-"));
        for name in [
            "a",
            "../../etc/passwd",
            "name with spaces; rm -rf /",
            "$(reboot)`x`",
            &"x".repeat(4096),
            "ünïcødé",
        ] {
            let n = lv_name(name);
            assert!(crate::config::is_lvm_name(&n), "{name:?} -> {n:?}");
            assert!(n.len() <= 3 + 48 + 1 + 16, "{n}");
        }
        assert_ne!(lv_name("a b"), lv_name("a_b"), "hash separates look-alikes");
    }

    #[test]
    fn volume_ids_parse_strictly() {
        let id = VolumeId::parse("carve-thick/cv-x-0011223344556677").unwrap();
        assert_eq!(id.vg, "carve-thick");
        assert_eq!(id.to_string(), "carve-thick/cv-x-0011223344556677");
        for bad in [
            "",
            "nothing",
            "vg/lv",
            "vg/cv-a/b",
            "../cv-x",
            "vg/cv-a b",
            "/cv-x",
            "vg/",
            "some-volume-id",
        ] {
            assert!(VolumeId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn tag_values_round_trip() {
        for v in ["pvc-1", "ns/name", "with space", "a#b", "ünï", "semi;colon"] {
            let t = encode_tag_value(v);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+.-/=!:&#".contains(&b)));
            assert_eq!(decode_tag_value(&t), v);
        }
        assert_eq!(tag(TAG_NAME, "a b"), "carve.dev/name=a#20b");
    }
}

//! Deterministic names: the LV name derived from a CSI request name, the
//! volume and snapshot IDs that carry it ([`id`]), and the tags carve writes
//! onto every LV it creates ([`tags`]). A retried or crashed CreateVolume
//! computes the same name and converges on the same LV.

mod id;
mod tags;

use sha2::{Digest, Sha256};

pub use id::{is_node_name, NodeRef, VolumeId, MAX_ID_LEN};
pub use tags::*;

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

/// LV name prefixes: what kind of LV carve made.
pub const VOLUME_PREFIX: &str = "cv-";
pub const SNAPSHOT_PREFIX: &str = "cs-";
/// A clone's temporary snapshot of its source, alive only while the clone's
/// block copy runs. Its own prefix: never taken for a volume or a snapshot.
pub const CLONE_TEMP_PREFIX: &str = "ct-";

/// What an LV carve made is, told by its name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LvKind {
    Volume,
    Snapshot,
    CloneTemp,
}

impl LvKind {
    pub fn prefix(self) -> &'static str {
        match self {
            LvKind::Volume => VOLUME_PREFIX,
            LvKind::Snapshot => SNAPSHOT_PREFIX,
            LvKind::CloneTemp => CLONE_TEMP_PREFIX,
        }
    }

    /// The kind a carve LV name says (`None`: not a name carve makes).
    pub fn of(lv_name: &str) -> Option<LvKind> {
        [LvKind::Volume, LvKind::Snapshot, LvKind::CloneTemp]
            .into_iter()
            .find(|k| lv_name.starts_with(k.prefix()))
    }
}

/// The temporary snapshot a thick clone into volume LV `target` copies from:
/// `ct-` + the rest of the target's name, so each names the other.
pub fn clone_temp_name(target: &str) -> String {
    format!(
        "{CLONE_TEMP_PREFIX}{}",
        target.strip_prefix(VOLUME_PREFIX).unwrap_or(target)
    )
}

/// The volume LV a clone temp snapshot belongs to.
pub fn clone_target_name(temp: &str) -> Option<String> {
    temp.strip_prefix(CLONE_TEMP_PREFIX)
        .map(|rest| format!("{VOLUME_PREFIX}{rest}"))
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
    fn clone_temp_names_pair_with_their_target() {
        let t = lv_name("pvc-1");
        let temp = clone_temp_name(&t);
        assert!(temp.starts_with(CLONE_TEMP_PREFIX) && crate::config::is_lvm_name(&temp));
        assert_eq!(clone_target_name(&temp), Some(t));
        assert!(
            !temp.starts_with(SNAPSHOT_PREFIX),
            "never taken for a snapshot"
        );
    }

    #[test]
    fn kinds_from_prefixes() {
        assert_eq!(LvKind::of(&lv_name("a")), Some(LvKind::Volume));
        assert_eq!(
            LvKind::of(&snapshot_lv_name("clone-of-x")),
            Some(LvKind::Snapshot)
        );
        assert_eq!(
            LvKind::of(&clone_temp_name(&lv_name("a"))),
            Some(LvKind::CloneTemp)
        );
        assert_eq!(LvKind::of("foreign"), None);
    }
}

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

/// LV name prefixes: what kind of LV carve made.
pub const VOLUME_PREFIX: &str = "cv-";
pub const SNAPSHOT_PREFIX: &str = "cs-";
/// A clone's temporary snapshot of its source, alive only while the clone's
/// block copy runs. Its own prefix: never taken for a volume or a snapshot.
pub const CLONE_TEMP_PREFIX: &str = "ct-";

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

/// CSI limits every string field, volume and snapshot IDs included, to 128 bytes.
pub const MAX_ID_LEN: usize = 128;
const ID_VERSION: &str = "v1";

/// The node part of an ID: the node's name, or `#` and 16 hex digits of its
/// SHA-256 when the name would make the ID longer than CSI allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRef {
    Name(String),
    Hash(String),
}

fn node_hash(node: &str) -> String {
    Sha256::digest(node.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Node names carve accepts: they appear in IDs, so they must not hold the
/// separators `:` and `/` (Kubernetes node names never do).
pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('#')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl NodeRef {
    /// Whether this names `node`.
    pub fn is(&self, node: &str) -> bool {
        match self {
            NodeRef::Name(n) => n == node,
            NodeRef::Hash(h) => *h == node_hash(node),
        }
    }
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRef::Name(n) => f.write_str(n),
            NodeRef::Hash(h) => write!(f, "#{h}"),
        }
    }
}

/// A volume or snapshot ID: `v1:<node>:<vg>/<lv>`. It names the node-local LV
/// directly (every RPC finds its LV without a lookup table) and the node that
/// holds it, so any node can tell "gone" from "lives elsewhere" and say where.
/// The node part is the node name, or its hash when the name would take the
/// ID past CSI's 128 bytes (config validation keeps VG names short enough for
/// the hashed form to fit). The LV name's prefix tells a volume (`cv-`) from a
/// snapshot (`cs-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeId {
    pub node: NodeRef,
    pub vg: String,
    pub lv: String,
}

impl VolumeId {
    /// The ID of `vg/lv` on `node`.
    pub fn new(node: &str, vg: &str, lv: &str) -> VolumeId {
        let by_name = VolumeId {
            node: NodeRef::Name(node.to_string()),
            vg: vg.to_string(),
            lv: lv.to_string(),
        };
        if by_name.to_string().len() <= MAX_ID_LEN {
            return by_name;
        }
        VolumeId {
            node: NodeRef::Hash(node_hash(node)),
            ..by_name
        }
    }

    /// `None` for anything that cannot be a carve volume ID; callers answer
    /// NotFound without running lvm, since no such volume can exist.
    pub fn parse(id: &str) -> Option<VolumeId> {
        Self::parse_prefixed(id, VOLUME_PREFIX)
    }

    /// A snapshot ID: the same form, with a `cs-` LV name.
    pub fn parse_snapshot(id: &str) -> Option<VolumeId> {
        Self::parse_prefixed(id, SNAPSHOT_PREFIX)
    }

    fn parse_prefixed(id: &str, prefix: &str) -> Option<VolumeId> {
        if id.len() > MAX_ID_LEN {
            return None;
        }
        let rest = id.strip_prefix(ID_VERSION)?.strip_prefix(':')?;
        let (node, path) = rest.split_once(':')?;
        let (vg, lv) = path.split_once('/')?;
        let node = match node.strip_prefix('#') {
            Some(h) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                NodeRef::Hash(h.to_ascii_lowercase())
            }
            Some(_) => return None,
            None if is_node_name(node) => NodeRef::Name(node.to_string()),
            None => return None,
        };
        if !crate::config::is_lvm_name(vg)
            || !crate::config::is_lvm_name(lv)
            || !lv.starts_with(prefix)
        {
            return None;
        }
        Some(VolumeId {
            node,
            vg: vg.to_string(),
            lv: lv.to_string(),
        })
    }
}

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{ID_VERSION}:{}:{}/{}", self.node, self.vg, self.lv)
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
    fn volume_ids_carry_the_node_and_parse_strictly() {
        let id = VolumeId::new("worker-1", "carve-thick", "cv-x-0011223344556677");
        assert_eq!(
            id.to_string(),
            "v1:worker-1:carve-thick/cv-x-0011223344556677"
        );
        assert_eq!(VolumeId::parse(&id.to_string()), Some(id.clone()));
        assert!(id.node.is("worker-1") && !id.node.is("worker-2"));
        assert!(
            VolumeId::parse_snapshot(&id.to_string()).is_none(),
            "a volume is no snapshot"
        );
        let snap = VolumeId::new("worker-1", "vg", "cs-s-0011223344556677").to_string();
        assert!(VolumeId::parse_snapshot(&snap).is_some() && VolumeId::parse(&snap).is_none());
        for bad in [
            "",
            "nothing",
            "carve-thick/cv-x-0011223344556677",
            "v2:n:vg/cv-x",
            "v1:n:vg/lv",
            "v1:n:vg/cv-a/b",
            "v1:n:../cv-x",
            "v1:n:vg/cv-a b",
            "v1::vg/cv-x",
            "v1:a/b:vg/cv-x",
            "v1:#zz:vg/cv-x",
            "v1:n:vg/",
            "some-volume-id",
        ] {
            assert!(VolumeId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn long_node_names_are_hashed_to_keep_ids_within_csi_limits() {
        let node = format!("{}.compute.internal", "n".repeat(200));
        let lv = lv_name(&"pvc-".repeat(40));
        let vg = "v".repeat(crate::config::MAX_VG_NAME_LEN);
        let id = VolumeId::new(&node, &vg, &lv);
        let text = id.to_string();
        assert!(text.len() <= MAX_ID_LEN, "{} bytes: {text}", text.len());
        assert!(matches!(id.node, NodeRef::Hash(_)));
        let back = VolumeId::parse(&text).unwrap();
        assert!(back.node.is(&node) && !back.node.is("other"));
        assert_eq!(
            (back.vg.as_str(), back.lv.as_str()),
            (vg.as_str(), lv.as_str())
        );
        // A short name stays readable.
        assert!(matches!(
            VolumeId::new("w1", &vg, &lv).node,
            NodeRef::Name(_)
        ));
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

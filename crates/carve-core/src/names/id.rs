//! Volume and snapshot IDs: `v1:<node>:<vg>/<lv>`.

use sha2::{Digest, Sha256};

use super::{SNAPSHOT_PREFIX, VOLUME_PREFIX};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::lv_name;

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
}

//! The node's LV inventory as carve serves it at `GET /volumes` (carve-csi
//! builds it from the cached LVM view) and carve-agent reads it for its
//! orphan report: one definition for both ends of the wire.

use serde::{Deserialize, Serialize};

/// Entries per answer; past it `complete` is false, and the agent reports no
/// PV as missing its LV on that node (its LV could be past the cut).
pub const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// carve's node ID (the Kubernetes node name).
    pub node: String,
    /// False while carve has no LVM report yet, while a configured VG is
    /// missing from it, or past [`MAX_ENTRIES`].
    pub complete: bool,
    pub volumes: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Volume,
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The volume or snapshot ID, as in the PV's volumeHandle or the
    /// VolumeSnapshotContent's snapshotHandle.
    pub id: String,
    pub kind: Kind,
    pub size_bytes: u64,
    /// Seconds since the Unix epoch (LVM's lv_time).
    pub created: i64,
    /// The CSI request name (the PV's name for external-provisioner).
    pub name: String,
    pub pv: String,
    pub pvc: String,
    pub pvc_namespace: String,
    /// A restore or clone whose copy has not finished.
    pub incomplete: bool,
}

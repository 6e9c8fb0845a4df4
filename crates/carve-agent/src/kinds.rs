//! The Kubernetes objects the agent reads and the names it shares with carve.
//! VolumeSnapshot and VolumeSnapshotContent are CRDs k8s-openapi does not
//! carry: they are read as dynamic objects, by the few fields carve needs.

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::core::{ApiResource, GroupVersionKind};

/// The annotation the scheduler sets on a WaitForFirstConsumer claim to tell
/// that node's provisioner to act; the agent sets it first for restores.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// carve's topology key (carve-csi's TOPOLOGY_KEY): one segment, the node.
pub const TOPOLOGY_KEY: &str = "topology.carve.dev/node";
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

pub fn volume_snapshot() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        SNAPSHOT_GROUP,
        "v1",
        "VolumeSnapshot",
    ))
}

pub fn volume_snapshot_content() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        SNAPSHOT_GROUP,
        "v1",
        "VolumeSnapshotContent",
    ))
}

/// Whether carve provisions this class's volumes.
pub fn is_carve_class(sc: &StorageClass, driver: &str) -> bool {
    sc.provisioner == driver
}

/// The node a carve PV lives on: its node affinity on carve's topology key
/// (external-provisioner writes it from CreateVolume's topology), which holds
/// the full node name even when the volume ID carries only its hash.
pub fn pv_node(pv: &PersistentVolume, driver: &str) -> Option<String> {
    let spec = pv.spec.as_ref()?;
    if spec.csi.as_ref()?.driver != driver {
        return None;
    }
    let required = spec.node_affinity.as_ref()?.required.as_ref()?;
    required
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == TOPOLOGY_KEY && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

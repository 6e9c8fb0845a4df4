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

/// Where a permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace, or cluster-scoped objects (a ClusterRole).
    Cluster,
    /// Only the agent's own namespace (a Role): its Lease, carve's
    /// CSIStorageCapacity objects, the node pods it reads inventories from.
    OwnNamespace,
    /// Cluster-wide, granted only with `--node-removal-policy=delete-claims`
    /// (components/agent-delete-claims).
    DeleteClaims,
}

/// Every call the agent makes to the API server: (API group, resource,
/// verbs, scope, who makes it). The RBAC manifests are rendered from this
/// list ([`crate::rbac`]) and the tests' fake API server refuses (403) any
/// call not in it, so the rules are exactly what the code needs.
pub const API_CALLS: &[(&str, &str, &[&str], Scope, &str)] = &[
    ("", "persistentvolumeclaims", &["get", "list", "watch", "patch"], Scope::Cluster,
     "placement (watch claims, read a source claim, set selected-node); StorageClass check (Pending claims of a class)"),
    ("", "persistentvolumes", &["get", "list"], Scope::Cluster,
     "placement (a source claim's volume); node removal and orphans (carve's PVs)"),
    ("", "nodes", &["get", "list"], Scope::Cluster,
     "placement (the source's node); node removal (which nodes exist)"),
    ("storage.k8s.io", "storageclasses", &["get", "list", "watch"], Scope::Cluster,
     "StorageClass check; placement (a claim's class)"),
    ("snapshot.storage.k8s.io", "volumesnapshots", &["get"], Scope::Cluster,
     "placement (a restore's source snapshot)"),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", &["get", "list"], Scope::Cluster,
     "placement (the snapshot's handle); orphans (carve's snapshots that have a content)"),
    ("events.k8s.io", "events", &["create", "patch"], Scope::Cluster,
     "Events on claims, PVs, StorageClasses and Nodes (patch: repeats as a series)"),
    ("coordination.k8s.io", "leases", &["get", "create", "update"], Scope::OwnNamespace,
     "leader election"),
    ("storage.k8s.io", "csistoragecapacities", &["list", "delete"], Scope::OwnNamespace,
     "node removal (a removed node's capacity objects)"),
    ("", "pods", &["list"], Scope::OwnNamespace,
     "orphans (the carve node pods whose /volumes the agent reads)"),
    ("", "persistentvolumeclaims", &["delete"], Scope::DeleteClaims,
     "node removal with policy delete-claims"),
];

/// Whether the call is in [`API_CALLS`] for a request in `namespace` ("" for
/// cluster-scoped or all namespaces); `own` is the agent's namespace.
pub fn allowed(group: &str, resource: &str, verb: &str, namespace: &str, own: &str) -> bool {
    API_CALLS.iter().any(|(g, r, verbs, scope, _)| {
        *g == group
            && *r == resource
            && verbs.contains(&verb)
            && match scope {
                Scope::OwnNamespace => namespace == own,
                Scope::Cluster | Scope::DeleteClaims => true,
            }
    })
}

//! Objects for the reconcilers' tests, as the API server would hold them.

use serde_json::{json, Value};

use crate::fake_api::FakeApi;
use crate::leader::Leadership;
use crate::Ctx;

pub const DRIVER: &str = "carve.dev";

/// A context over the fake API, leading; the sender flips leadership.
pub fn ctx() -> (
    FakeApi,
    std::sync::Arc<Ctx>,
    tokio::sync::watch::Sender<bool>,
) {
    let (api, client) = FakeApi::start();
    let (tx, leadership) = Leadership::channel(true);
    (
        api,
        std::sync::Arc::new(Ctx::new(
            client,
            DRIVER,
            crate::fake_api::OWN_NAMESPACE,
            leadership,
            "agent-test",
        )),
        tx,
    )
}

pub fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

pub fn class(name: &str, params: Value) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
           "metadata": {"name": name}, "provisioner": DRIVER,
           "volumeBindingMode": "WaitForFirstConsumer", "parameters": params})
}

pub fn claim(ns: &str, name: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}},
           "status": {"phase": "Pending"}})
}

pub fn restore_of_snapshot(ns: &str, name: &str, class: &str, snapshot: &str) -> Value {
    let mut c = claim(ns, name, class);
    c["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    c["spec"]["dataSourceRef"] = c["spec"]["dataSource"].clone();
    c
}

pub fn clone_of_claim(ns: &str, name: &str, class: &str, source: &str) -> Value {
    let mut c = claim(ns, name, class);
    c["spec"]["dataSource"] = json!({"kind": "PersistentVolumeClaim", "name": source});
    c
}

/// A bound claim and its carve PV on `node`.
pub fn bound(ns: &str, name: &str, class: &str, pv: &str, node: &str, vg: &str) -> (Value, Value) {
    let mut c = claim(ns, name, class);
    c["spec"]["volumeName"] = pv.into();
    c["status"]["phase"] = "Bound".into();
    c["metadata"]["uid"] = format!("uid-claim-{ns}-{name}").into();
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"csi": {"driver": DRIVER, "volumeHandle": format!("v1:{node}:{vg}/cv-{pv}")},
                 "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class,
                 "claimRef": {"namespace": ns, "name": name, "uid": format!("uid-claim-{ns}-{name}")},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "topology.carve.dev/node", "operator": "In", "values": [node]}]}]}}},
        "status": {"phase": "Bound"}});
    (c, pv)
}

/// A ready VolumeSnapshot and its content, with a carve handle on `node`.
pub fn snapshot(ns: &str, name: &str, handle: &str) -> (Value, Value) {
    let content = format!("snapcontent-{name}");
    (
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"source": {"persistentVolumeClaimName": "src"}},
               "status": {"boundVolumeSnapshotContentName": content, "readyToUse": true}}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
               "metadata": {"name": content},
               "spec": {"driver": DRIVER, "deletionPolicy": "Delete",
                        "source": {"volumeHandle": "v1:x:vg/cv-x"},
                        "volumeSnapshotRef": {"namespace": ns, "name": name}},
               "status": {"snapshotHandle": handle, "readyToUse": true}}),
    )
}

pub fn capacity(ns: &str, name: &str, node: &str, class: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {"csi.storage.k8s.io/drivername": DRIVER,
                                   "csi.storage.k8s.io/managed-by": format!("external-provisioner-{node}")}},
           "nodeTopology": {"matchLabels": {"topology.carve.dev/node": node}},
           "storageClassName": class, "capacity": "10Gi"})
}

/// The claim as the agent would receive it from a watch.
pub fn typed<T: serde::de::DeserializeOwned>(
    api: &FakeApi,
    collection: &str,
    ns: &str,
    name: &str,
) -> std::sync::Arc<T> {
    let v = api
        .with(|s| s.get(collection, ns, name).cloned())
        .expect("object in the fake API");
    std::sync::Arc::new(serde_json::from_value(v).unwrap())
}

pub const CLAIMS: &str = "api/v1/persistentvolumeclaims";
pub const CLASSES: &str = "apis/storage.k8s.io/v1/storageclasses";

pub fn selected_node(api: &FakeApi, ns: &str, name: &str) -> Option<String> {
    api.with(|s| s.get(CLAIMS, ns, name).cloned())
        .and_then(|c| {
            c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"]
                .as_str()
                .map(String::from)
        })
}

/// A carve node pod on `node` at `ip`.
pub fn node_pod(node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("carve-node-{node}"), "namespace": crate::fake_api::OWN_NAMESPACE,
                        "labels": {"app.kubernetes.io/name": "carve-node"}},
           "spec": {"nodeName": node, "containers": [{"name": "carve", "image": "carve"}]},
           "status": {"phase": "Running", "podIP": ip}})
}

/// One inventory entry.
pub fn lv(
    id: &str,
    kind: carve_core::inventory::Kind,
    created: i64,
) -> carve_core::inventory::Entry {
    carve_core::inventory::Entry {
        id: id.to_string(),
        kind,
        size_bytes: 1 << 30,
        created,
        name: "pvc-x".into(),
        pv: "pvc-x".into(),
        pvc: "data".into(),
        pvc_namespace: "db".into(),
        incomplete: false,
    }
}

/// Inventories by pod IP; an IP not in the table is unreachable.
pub struct Table(pub std::collections::HashMap<String, carve_core::inventory::Inventory>);

#[async_trait::async_trait]
impl crate::orphans::Inventories for Table {
    async fn fetch(&self, ip: &str) -> Result<carve_core::inventory::Inventory, String> {
        self.0
            .get(ip)
            .cloned()
            .ok_or_else(|| format!("connect {ip}:9842: connection refused"))
    }
}

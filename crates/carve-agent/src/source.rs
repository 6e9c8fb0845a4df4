//! Where a claim's data source lives. A carve volume or snapshot is an LV on
//! one node, and a restore or clone can only be carved there: the node is in
//! the source PV's node affinity, or in the snapshot's handle
//! (`v1:<node>:<vg>/<lv>`, the node's name or, for very long names, a hash of
//! it that is matched against the cluster's Nodes).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::DynamicObject;
use kube::Api;

use carve_core::names::{NodeRef, VolumeId};

use crate::kinds::{self, SNAPSHOT_GROUP};
use crate::Error;

/// What the agent found behind a claim's data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No data source, or one carve does not hold (another driver, a
    /// populator): not the agent's business.
    NotCarve,
    /// A carve source that cannot be located yet (a snapshot not ready, a
    /// source claim not bound); external-provisioner waits for it too.
    Waiting(String),
    /// The source lives on this node; `what` names it for Events.
    On { node: NodeRef, what: String },
}

/// The data source a claim names: dataSourceRef wins over dataSource (the API
/// server keeps them equal when both are set). A cross-namespace
/// dataSourceRef is not followed: whether it may be used is a ReferenceGrant
/// decision the agent does not make, and following it would tell the claim's
/// author where another namespace's data lives.
fn data_source(pvc: &PersistentVolumeClaim) -> Option<(String, String, String, String)> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let spec = pvc.spec.as_ref()?;
    if let Some(r) = &spec.data_source_ref {
        if r.namespace.as_ref().is_some_and(|other| *other != ns) {
            return None;
        }
        return Some((
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            ns,
            r.name.clone(),
        ));
    }
    spec.data_source.as_ref().map(|r| {
        (
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            ns,
            r.name.clone(),
        )
    })
}

pub async fn locate(
    client: &kube::Client,
    driver: &str,
    pvc: &PersistentVolumeClaim,
) -> Result<Source, Error> {
    let Some((group, kind, ns, name)) = data_source(pvc) else {
        return Ok(Source::NotCarve);
    };
    match (group.as_str(), kind.as_str()) {
        (SNAPSHOT_GROUP, "VolumeSnapshot") => snapshot(client, driver, &ns, &name).await,
        ("", "PersistentVolumeClaim") => claim(client, driver, &ns, &name).await,
        _ => Ok(Source::NotCarve),
    }
}

async fn snapshot(
    client: &kube::Client,
    driver: &str,
    ns: &str,
    name: &str,
) -> Result<Source, Error> {
    let what = format!("VolumeSnapshot {ns}/{name}");
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &kinds::volume_snapshot());
    let Some(snap) = snapshots.get_opt(name).await? else {
        return Ok(Source::Waiting(format!("{what} does not exist (yet)")));
    };
    let Some(content_name) = snap.data["status"]["boundVolumeSnapshotContentName"].as_str() else {
        return Ok(Source::Waiting(format!(
            "{what} is not bound to a VolumeSnapshotContent yet"
        )));
    };
    let contents: Api<DynamicObject> =
        Api::all_with(client.clone(), &kinds::volume_snapshot_content());
    let Some(content) = contents.get_opt(content_name).await? else {
        return Ok(Source::Waiting(format!(
            "VolumeSnapshotContent {content_name} of {what} does not exist"
        )));
    };
    if content.data["spec"]["driver"].as_str() != Some(driver) {
        return Ok(Source::NotCarve);
    }
    // Dynamic snapshots carry the handle in status; pre-provisioned ones in
    // spec.source.
    let handle = content.data["status"]["snapshotHandle"]
        .as_str()
        .or_else(|| content.data["spec"]["source"]["snapshotHandle"].as_str());
    let Some(handle) = handle else {
        return Ok(Source::Waiting(format!(
            "{what} has no snapshot handle yet"
        )));
    };
    Ok(match VolumeId::parse_snapshot(handle) {
        Some(id) => Source::On {
            node: id.node,
            what,
        },
        // A carve content whose handle carve did not write: nothing to place.
        None => Source::NotCarve,
    })
}

async fn claim(client: &kube::Client, driver: &str, ns: &str, name: &str) -> Result<Source, Error> {
    let what = format!("PersistentVolumeClaim {ns}/{name}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let Some(source) = claims.get_opt(name).await? else {
        return Ok(Source::Waiting(format!("{what} does not exist (yet)")));
    };
    let Some(pv_name) = source.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        return Ok(Source::Waiting(format!(
            "{what} is not bound to a volume yet"
        )));
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let Some(pv) = pvs.get_opt(&pv_name).await? else {
        return Ok(Source::Waiting(format!(
            "PersistentVolume {pv_name} of {what} does not exist"
        )));
    };
    if let Some(node) = kinds::pv_node(&pv, driver) {
        return Ok(Source::On {
            node: NodeRef::Name(node),
            what,
        });
    }
    // No affinity (a PV written by hand): the volume handle names the node.
    let handle = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .filter(|c| c.driver == driver);
    Ok(
        match handle.and_then(|c| VolumeId::parse(&c.volume_handle)) {
            Some(id) => Source::On {
                node: id.node,
                what,
            },
            None => Source::NotCarve,
        },
    )
}

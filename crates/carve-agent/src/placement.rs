//! Placement: a restore or clone can only be carved on the node that holds
//! its source, so a WaitForFirstConsumer claim of a carve class whose data
//! source is a carve snapshot or volume gets `volume.kubernetes.io/
//! selected-node` set to that node. Set before the scheduler looks, the
//! scheduler's volume binding keeps the pod to that node, and only that
//! node's provisioner acts on the claim. When the scheduler got there first
//! (a pod created with its claim), the annotation is corrected: the other
//! node's provisioner answers ResourceExhausted until then, and is no longer
//! the one asked afterwards.
//!
//! The patch carries the resourceVersion the agent read, so it never
//! overwrites a change it did not see (409, then read again and retry).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use carve_core::names::NodeRef;

use crate::kinds::{self, SELECTED_NODE};
use crate::notify::Kind;
use crate::source::{self, Source};
use crate::storage_class;
use crate::{Ctx, Error};

/// How soon a claim whose source is not ready is looked at again.
pub const WAIT_FOR_SOURCE: Duration = Duration::from_secs(10);

/// Whether a claim still waits for a volume: not bound, not being deleted.
pub fn is_pending(pvc: &PersistentVolumeClaim) -> bool {
    pvc.metadata.deletion_timestamp.is_none()
        && pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_none()
        && pvc
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Pending")
}

/// Why a node could not run the claim's pod, in a user's words; `None` if
/// nothing visible stops it.
fn cannot_take_pods(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        return Some("is cordoned (unschedulable)".into());
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    if ready.is_some_and(|r| r != "True") {
        return Some("is not Ready".into());
    }
    let taints: Vec<String> = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    if !taints.is_empty() {
        return Some(format!(
            "has taints {} (the pod needs tolerations for them)",
            taints.join(", ")
        ));
    }
    None
}

/// The Node a reference names, if it is in the cluster.
async fn find_node(client: &kube::Client, node: &NodeRef) -> Result<Option<Node>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    Ok(match node {
        NodeRef::Name(name) => nodes.get_opt(name).await?,
        NodeRef::Hash(_) => nodes
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|n| node.is(&n.name_any())),
    })
}

pub async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !is_pending(&pvc) {
        return Ok(Action::await_change());
    }
    let Some(class_name) = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) else {
        return Ok(Action::await_change());
    };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let Some(class) = classes.get_opt(&class_name).await? else {
        // The claim may come before its class (GitOps ordering): look again.
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    if !kinds::is_carve_class(&class, &ctx.driver) {
        return Ok(Action::await_change());
    }
    // A claim of a bad class can never be provisioned: say why on the claim
    // (StorageClasses are immutable, so there is nothing to wait for).
    if let Err(bad) = storage_class::check(&class) {
        storage_class::warn_claim(&ctx, &pvc, &class_name, &bad).await;
        return Ok(Action::await_change());
    }
    if class.volume_binding_mode.as_deref() != Some("WaitForFirstConsumer") {
        return Ok(Action::await_change());
    }
    let (node, what) = match source::locate(&ctx.client, &ctx.driver, &pvc).await? {
        Source::NotCarve => return Ok(Action::await_change()),
        Source::Waiting(why) => {
            tracing::debug!(claim = %pvc.name_any(), "placement waits: {why}");
            return Ok(Action::requeue(WAIT_FOR_SOURCE));
        }
        Source::On { node, what } => (node, what),
    };
    let reference = pvc.object_ref(&());
    let Some(node) = find_node(&ctx.client, &node).await? else {
        ctx.notify
            .event(
                &reference,
                Kind::Warning,
                "SourceNodeGone",
                format!(
                    "{what} lives on node {node}, which is no longer in the cluster; carve can \
                     restore or clone it only there. Bring the node back, or restore from \
                     another snapshot."
                ),
            )
            .await;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let node_name = node.name_any();
    let current = pvc.annotations().get(SELECTED_NODE).cloned();
    if current.as_deref() != Some(node_name.as_str()) {
        ctx.leader.check()?;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
        let patch = json!({"metadata": {
            "resourceVersion": pvc.resource_version(),
            "annotations": {SELECTED_NODE: node_name},
        }});
        claims
            .patch(
                &pvc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        let note = match &current {
            None => format!("{what} lives on node {node_name}: the claim is placed there"),
            Some(other) => format!(
                "{what} lives on node {node_name}, but the claim was scheduled to {other}, \
                 where carve cannot restore it: moved to {node_name}"
            ),
        };
        let reason = if current.is_none() { "Placed" } else { "Moved" };
        ctx.notify
            .event(&reference, Kind::Normal, reason, note)
            .await;
    }
    if let Some(why) = cannot_take_pods(&node) {
        ctx.notify
            .event(
                &reference,
                Kind::Warning,
                "SourceNodeUnavailable",
                format!(
                    "{what} lives on node {node_name}, so this claim and its pod can only run \
                     there, but the node {why}. The pod stays Pending until the node can take it."
                ),
            )
            .await;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    Ok(Action::await_change())
}

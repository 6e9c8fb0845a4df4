//! Node removal: a Node object deleted for good leaves carve's PVs pinned to
//! it, the claims bound to them, and the CSIStorageCapacity objects its
//! provisioner published; StatefulSet pods stay Pending on such claims for
//! ever. The agent notices a node that carve's PVs or capacities name and
//! that is not in the cluster, waits a grace period (a node replaced under
//! the same name, or re-registered after maintenance, comes back in time),
//! logging what it will do, then applies the policy:
//!
//! - `ignore`: nothing (log only);
//! - `event`: Warning Events on each PV and claim, that node's
//!   CSIStorageCapacity objects removed;
//! - `delete-claims`: as `event`, and the claims are deleted (preconditioned
//!   on their uid, so a claim recreated under the same name is never
//!   touched), so StatefulSets recreate them on a node that exists.
//!
//! PVs are never deleted: their LV went with the node, and the PV's
//! provisioner finalizer is for the operator to remove (docs/troubleshooting).
//! The clock is in memory: an agent restart starts the grace period again,
//! which only ever delays an action.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Resource, ResourceExt};

use crate::kinds::{self, TOPOLOGY_KEY};
use crate::notify::Kind;
use crate::{is_status, Ctx, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    Ignore,
    Event,
    DeleteClaims,
}

/// The label external-provisioner puts on the CSIStorageCapacity objects it
/// manages, naming the driver.
const CAPACITY_DRIVER_LABEL: &str = "csi.storage.k8s.io/drivername";

/// What one sweep found and did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Nodes carve objects name that are not in the cluster, still in grace.
    pub waiting: Vec<String>,
    /// Nodes past grace whose objects were handled this sweep.
    pub handled: Vec<String>,
    pub claims_deleted: Vec<String>,
    pub capacities_deleted: Vec<String>,
}

pub struct NodeRemoval {
    pub policy: Policy,
    pub grace: Duration,
    missing_since: Mutex<HashMap<String, Instant>>,
    /// Nodes whose Events were written (once per node and agent lifetime).
    warned: Mutex<BTreeSet<String>>,
}

/// carve's objects that name one node.
#[derive(Default)]
struct OnNode {
    pvs: Vec<PersistentVolume>,
    capacities: Vec<CSIStorageCapacity>,
}

impl NodeRemoval {
    pub fn new(policy: Policy, grace: Duration) -> NodeRemoval {
        NodeRemoval {
            policy,
            grace,
            missing_since: Mutex::new(HashMap::new()),
            warned: Mutex::new(BTreeSet::new()),
        }
    }

    pub async fn sweep(&self, ctx: &Ctx) -> Result<Sweep, Error> {
        // A node is present under its name, or under the topology value its
        // kubelet labels it with from carve's NodeGetInfo (carve's node ID,
        // should it differ from the name).
        let nodes: BTreeSet<String> = Api::<Node>::all(ctx.client.clone())
            .list(&Default::default())
            .await?
            .items
            .iter()
            .flat_map(|n| {
                let mut ids = vec![n.name_any()];
                ids.extend(n.labels().get(TOPOLOGY_KEY).cloned());
                ids
            })
            .collect();
        let mut by_node: BTreeMap<String, OnNode> = BTreeMap::new();
        for pv in Api::<PersistentVolume>::all(ctx.client.clone())
            .list(&Default::default())
            .await?
            .items
        {
            if let Some(node) = kinds::pv_node(&pv, &ctx.driver) {
                by_node.entry(node).or_default().pvs.push(pv);
            }
        }
        // external-provisioner publishes them in its own namespace: carve's.
        for cap in Api::<CSIStorageCapacity>::namespaced(ctx.client.clone(), &ctx.namespace)
            .list(&Default::default())
            .await?
            .items
        {
            if cap.labels().get(CAPACITY_DRIVER_LABEL) != Some(&ctx.driver) {
                continue;
            }
            let node = cap
                .node_topology
                .as_ref()
                .and_then(|t| t.match_labels.as_ref())
                .and_then(|l| l.get(TOPOLOGY_KEY))
                .cloned();
            if let Some(node) = node {
                by_node.entry(node).or_default().capacities.push(cap);
            }
        }
        let mut sweep = Sweep::default();
        if nodes.is_empty() && !by_node.is_empty() {
            // A cluster with carve volumes and no Node at all is an API
            // answer not to act on.
            tracing::warn!("the API lists no Nodes; not treating any node as removed");
            return Ok(sweep);
        }
        let known = by_node.len();
        let gone: Vec<(String, OnNode)> = by_node
            .into_iter()
            .filter(|(n, _)| !nodes.contains(n))
            .collect();
        if known > 1 && gone.len() == known {
            // Every node carve has volumes on gone at once is far likelier a
            // naming mismatch (carve's --node-id not the Node's name) than a
            // cluster that lost all of them: act on none.
            tracing::warn!(
                nodes = ?gone.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                "every node carve's volumes name is missing from the cluster; not treating any as removed (is carve's --node-id the Node's name?)"
            );
            return Ok(sweep);
        }
        let past_grace = self.track(&gone, &nodes);
        for (node, on) in gone {
            if !past_grace.contains(&node) {
                sweep.waiting.push(node);
                continue;
            }
            self.handle(ctx, &node, on, &mut sweep).await?;
            sweep.handled.push(node);
        }
        Ok(sweep)
    }

    /// Starts the clock for newly missing nodes (logging what will happen),
    /// stops it for nodes that came back; returns the nodes past grace.
    fn track(&self, gone: &[(String, OnNode)], present: &BTreeSet<String>) -> BTreeSet<String> {
        let mut since = self.missing_since.lock().unwrap();
        since.retain(|node, _| {
            let back = present.contains(node);
            if back {
                tracing::info!(
                    node,
                    "node is back in the cluster; nothing will be done for it"
                );
                self.warned.lock().unwrap().remove(node);
            }
            !back
        });
        let now = Instant::now();
        for (node, on) in gone {
            since.entry(node.clone()).or_insert_with(|| {
                let claims: Vec<String> = on.pvs.iter().filter_map(claim_name).collect();
                tracing::warn!(
                    node,
                    policy = ?self.policy,
                    grace_seconds = self.grace.as_secs(),
                    pvs = on.pvs.len(),
                    capacities = on.capacities.len(),
                    claims = ?claims,
                    "node is not in the cluster; if it stays gone past the grace period: {}",
                    match self.policy {
                        Policy::Ignore => "nothing will be done (policy ignore)",
                        Policy::Event => "Events on its PVs and claims, its CSIStorageCapacity objects removed",
                        Policy::DeleteClaims =>
                            "Events, its CSIStorageCapacity objects removed, and the claims listed deleted",
                    }
                );
                now
            });
        }
        since
            .iter()
            .filter(|(_, t)| t.elapsed() >= self.grace)
            .map(|(n, _)| n.clone())
            .collect()
    }

    async fn handle(
        &self,
        ctx: &Ctx,
        node: &str,
        on: OnNode,
        sweep: &mut Sweep,
    ) -> Result<(), Error> {
        if self.policy == Policy::Ignore {
            return Ok(());
        }
        let first_time = self.warned.lock().unwrap().insert(node.to_string());
        for cap in &on.capacities {
            ctx.leader.check()?;
            let ns = cap.namespace().unwrap_or_default();
            match Api::<CSIStorageCapacity>::namespaced(ctx.client.clone(), &ns)
                .delete(&cap.name_any(), &uid_precondition(cap.uid()))
                .await
            {
                Ok(_) => {
                    tracing::info!(node, capacity = %cap.name_any(), "removed the CSIStorageCapacity of a removed node");
                    sweep
                        .capacities_deleted
                        .push(format!("{ns}/{}", cap.name_any()));
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for pv in &on.pvs {
            let claim = bound_claim(ctx, pv).await?;
            if first_time {
                let note = format!(
                    "PersistentVolume {} lives on node {node}, which was removed from the cluster \
                     (gone for at least {}s); its data went with the node.{}",
                    pv.name_any(),
                    self.grace.as_secs(),
                    match (&claim, self.policy) {
                        (Some(_), Policy::DeleteClaims) =>
                            " Its claim is deleted (node removal policy delete-claims) so that a StatefulSet can recreate it on a node that exists.",
                        (Some(_), _) =>
                            " Delete its claim to let a StatefulSet recreate it elsewhere (empty), or bring the node back.",
                        (None, _) => "",
                    }
                );
                ctx.notify
                    .event(
                        &pv.object_ref(&()),
                        Kind::Warning,
                        "NodeRemoved",
                        note.clone(),
                    )
                    .await;
                if let Some(pvc) = &claim {
                    ctx.notify
                        .event(&pvc.object_ref(&()), Kind::Warning, "NodeRemoved", note)
                        .await;
                }
            }
            if self.policy != Policy::DeleteClaims {
                continue;
            }
            let Some(pvc) = claim else { continue };
            if pvc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            ctx.leader.check()?;
            let ns = pvc.namespace().unwrap_or_default();
            match Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
                .delete(&pvc.name_any(), &uid_precondition(pvc.uid()))
                .await
            {
                Ok(_) => {
                    tracing::warn!(node, claim = %format!("{ns}/{}", pvc.name_any()), "deleted the claim of a removed node (policy delete-claims)");
                    sweep
                        .claims_deleted
                        .push(format!("{ns}/{}", pvc.name_any()));
                }
                // Gone already, or recreated under the same name (uid differs).
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn uid_precondition(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

fn claim_name(pv: &PersistentVolume) -> Option<String> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(format!(
        "{}/{}",
        r.namespace.as_deref()?,
        r.name.as_deref()?
    ))
}

/// The claim a PV is bound to, if it still exists and is the same object
/// (same uid) the PV names.
async fn bound_claim(
    ctx: &Ctx,
    pv: &PersistentVolume,
) -> Result<Option<PersistentVolumeClaim>, Error> {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Ok(None);
    };
    let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
        return Ok(None);
    };
    let pvc = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?;
    // The same claim the PV names (uid), bound to this PV: never a claim that
    // merely has the name.
    let pv_name = pv.name_any();
    Ok(pvc.filter(|p| {
        (r.uid.is_none() || p.metadata.uid == r.uid)
            && p.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv_name.as_str())
    }))
}

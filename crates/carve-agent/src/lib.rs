//! carve-agent: the cluster-side helper. It does what no carve node can do on
//! its own, through the Kubernetes API (kube-rs), as one leader-elected
//! replica; the node plugin links no Kubernetes client (this crate is the only
//! one that depends on kube).
//!
//! - [`placement`]: a new claim restored or cloned from a carve snapshot or
//!   volume gets `volume.kubernetes.io/selected-node` set to the node that
//!   holds its source, before (or, when it lost the race, after) the
//!   scheduler picks another.
//! - [`storage_class`]: every carve StorageClass is checked with the same code
//!   CreateVolume uses ([`carve_core::params`]); a bad one gets Warning Events
//!   on itself and on each Pending claim that uses it.
//! - [`node_removal`]: a Node gone for good (past a grace period) has its
//!   carve claims handled by a policy (ignore, event, delete-claims) and its
//!   CSIStorageCapacity objects removed.
//! - [`orphans`]: carve LVs no PV references and PVs whose LV is gone,
//!   from each node's LV inventory (`GET /volumes`), reported as Events and
//!   [`metrics`].
//! - [`leader`]: the Lease that makes one replica the writer.
//! - [`kinds`]: the objects and names the reconcilers read and every API call
//!   the agent makes ([`rbac`] renders its RBAC from them), [`notify`]: the
//!   Events they write, [`source`]: where a claim's data source lives.

pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod node_removal;
pub mod notify;
pub mod orphans;
pub mod placement;
pub mod rbac;
pub mod run;
pub mod source;
pub mod storage_class;

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod scenarios;

/// Why a reconcile stopped; the controller retries it after a back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("this replica no longer holds the leader lease, so it writes nothing")]
    NotLeader,
}

impl Error {
    /// A write that lost to a concurrent change (409): read again and retry
    /// at once, not after a back-off.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(e) if is_status(e, 409))
    }
}

/// Whether a kube error is the API server answering with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// What every reconciler shares.
pub struct Ctx {
    pub client: kube::Client,
    /// The CSI driver name carve runs as (`carve.dev`).
    pub driver: String,
    /// The agent's own namespace (carve's): its Lease, the CSIStorageCapacity
    /// objects carve's provisioners publish, carve's node pods.
    pub namespace: String,
    pub leader: leader::Leadership,
    pub notify: notify::Notifier,
}

impl Ctx {
    pub fn new(
        client: kube::Client,
        driver: &str,
        namespace: &str,
        leader: leader::Leadership,
        instance: &str,
    ) -> Ctx {
        Ctx {
            namespace: namespace.to_string(),
            notify: notify::Notifier::new(client.clone(), instance, leader.clone()),
            client,
            driver: driver.to_string(),
            leader,
        }
    }
}

//! The agent's main loop: campaign for the Lease, then, while leading, run
//! the claim and StorageClass controllers (kube-runtime watches, one reconcile
//! per object at a time, retried with back-off on errors, at once on a 409)
//! and the node-removal sweep. Losing the Lease ends the run; the binary exits
//! and is restarted as a candidate.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Api;

use crate::leader::{Elector, Leadership, LeaseConfig};
use crate::node_removal::NodeRemoval;
use crate::{placement, storage_class, Ctx, Error};

pub struct Settings {
    pub driver: String,
    pub lease: LeaseConfig,
    pub node_removal: NodeRemoval,
    pub sweep_every: Duration,
}

/// Back-off for a failed reconcile: a conflict is retried at once (the next
/// read sees the change that won), anything else after a pause.
fn retry_after(error: &Error) -> Action {
    if error.is_conflict() {
        Action::requeue(Duration::from_millis(200))
    } else {
        Action::requeue(Duration::from_secs(15))
    }
}

fn log_outcome<T: std::fmt::Debug, E: std::fmt::Display>(what: &str, r: Result<T, E>) {
    match r {
        Ok(o) => tracing::debug!(controller = what, "reconciled {o:?}"),
        Err(e) => tracing::warn!(controller = what, error = %e, "reconcile failed; retried"),
    }
}

pub async fn run(client: kube::Client, settings: Settings) -> anyhow_like::Result {
    let (tx, mut leadership) = Leadership::channel(false);
    let identity = settings.lease.identity.clone();
    let elector = tokio::spawn(Elector::new(client.clone(), settings.lease.clone()).run(tx));
    tracing::info!(%identity, "campaigning for the leader lease");
    leadership.until(true).await;
    tracing::info!(%identity, "leading: controllers start");
    let ctx = Arc::new(Ctx::new(
        client.clone(),
        &settings.driver,
        &settings.lease.namespace,
        leadership.clone(),
        &identity,
    ));

    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(placement::reconcile, |_, e, _| retry_after(e), ctx.clone())
    .for_each(|r| async move { log_outcome("placement", r) });
    let classes = Controller::new(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(
        storage_class::reconcile,
        |_, e, _| retry_after(e),
        ctx.clone(),
    )
    .for_each(|r| async move { log_outcome("storage-class", r) });
    let sweeper = {
        let ctx = ctx.clone();
        async move {
            loop {
                match settings.node_removal.sweep(&ctx).await {
                    Ok(s) if s != Default::default() => {
                        tracing::info!(sweep = ?s, "node removal sweep")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "node removal sweep failed; next sweep retries")
                    }
                }
                tokio::time::sleep(settings.sweep_every).await;
            }
        }
    };
    let mut lost = leadership.clone();
    tokio::select! {
        _ = claims => {}
        _ = classes => {}
        _ = sweeper => {}
        _ = lost.until(false) => tracing::warn!(%identity, "lost the leader lease: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
    }
    elector.abort();
    Ok(())
}

/// The binary's result type, without another error crate.
pub mod anyhow_like {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

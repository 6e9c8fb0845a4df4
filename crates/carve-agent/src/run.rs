//! The agent's main loop: campaign for the Lease, then, while leading, run
//! the claim and StorageClass controllers (kube-runtime watches, one reconcile
//! per object at a time, retried with back-off on errors, at once on a 409),
//! the node-removal sweep and the orphan sweep. Losing the Lease ends the
//! run; the binary exits and is restarted as a candidate.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Api;

use crate::leader::{Elector, Leadership, LeaseConfig};
use crate::metrics::AgentMetrics;
use crate::node_removal::NodeRemoval;
use crate::orphans::Orphans;
use crate::{placement, storage_class, Ctx, Error};

pub struct Settings {
    pub driver: String,
    pub lease: LeaseConfig,
    pub node_removal: NodeRemoval,
    pub node_removal_every: Duration,
    pub orphans: Orphans,
    pub orphans_every: Duration,
    /// Where /metrics is served, if anywhere.
    pub metrics_address: Option<String>,
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

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(
    metrics: &AgentMetrics,
    what: &str,
    r: Result<T, E>,
) {
    metrics.reconciled(what, r.is_ok());
    match r {
        Ok(o) => tracing::debug!(controller = what, "reconciled {o:?}"),
        Err(e) => tracing::warn!(controller = what, error = %e, "reconcile failed; retried"),
    }
}

/// Runs `sweep` every `every` for ever.
async fn every<F, Fut>(every: Duration, mut sweep: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        sweep().await;
        tokio::time::sleep(every).await;
    }
}

pub type RunResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub async fn run(client: kube::Client, settings: Settings) -> RunResult {
    let metrics = AgentMetrics::default();
    if let Some(address) = &settings.metrics_address {
        let listener = carve_core::endpoint::bind("--metrics-address", address).await?;
        let handler = Arc::new(crate::metrics::Handler(metrics.registry()));
        tokio::spawn(carve_core::endpoint::serve(listener, handler));
        tracing::info!(%address, "serving metrics at /metrics");
    }
    let (tx, mut leadership) = Leadership::channel(false);
    let identity = settings.lease.identity.clone();
    let elector = Arc::new(Elector::new(client.clone(), settings.lease.clone()));
    let campaign = {
        let elector = elector.clone();
        tokio::spawn(async move { elector.run(tx).await })
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(%identity, "campaigning for the leader lease");
    tokio::select! {
        _ = leadership.until(true) => {}
        _ = terminate.recv() => {
            tracing::info!("SIGTERM before leading: exiting");
            return Ok(());
        }
    }
    metrics.leader(true);
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
    .for_each(|r| {
        outcome(&metrics, "placement", r);
        async {}
    });
    let classes = Controller::new(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(
        storage_class::reconcile,
        |_, e, _| retry_after(e),
        ctx.clone(),
    )
    .for_each(|r| {
        outcome(&metrics, "storage-class", r);
        async {}
    });
    let removal = every(settings.node_removal_every, || async {
        let r = settings.node_removal.sweep(&ctx).await;
        if let Ok(s) = &r {
            metrics.node_removal(s.waiting.len() + s.handled.len(), s.claims_deleted.len());
            if s != &Default::default() {
                tracing::info!(sweep = ?s, "node removal sweep");
            }
        }
        outcome(&metrics, "node-removal", r.map(|_| ()));
    });
    let orphans = every(settings.orphans_every, || async {
        let r = settings.orphans.sweep(&ctx, &metrics).await;
        if let Ok(report) = &r {
            if report != &Default::default() {
                tracing::info!(?report, "orphan sweep");
            }
        }
        outcome(&metrics, "orphans", r.map(|_| ()));
    });
    let mut lost = leadership.clone();
    tokio::select! {
        _ = claims => {}
        _ = classes => {}
        _ = removal => {}
        _ = orphans => {}
        _ = lost.until(false) => tracing::warn!(%identity, "lost the leader lease: stopping"),
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
    }
    metrics.leader(false);
    campaign.abort();
    // Writes stop with the controllers above; then the Lease is handed back
    // (if still ours) so a rollout's next replica takes it at once.
    elector.release().await;
    Ok(())
}

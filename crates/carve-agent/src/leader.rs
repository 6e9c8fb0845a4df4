//! One writer at a time: a coordination.k8s.io Lease, taken when free or
//! expired and renewed while held, with optimistic concurrency (a replace
//! carries the resourceVersion it read, so two candidates cannot both win).
//! The reconcilers check [`Leadership`] immediately before every write, so a
//! replica that loses the Lease mid-reconcile writes nothing more; the binary
//! then exits and its Deployment starts it again as a candidate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;

use crate::{is_status, Error};

/// Whether this replica may write now. Cloned into every reconciler.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// A leadership flag and the sender that sets it (the elector, or a test).
    pub fn channel(initial: bool) -> (watch::Sender<bool>, Leadership) {
        let (tx, rx) = watch::channel(initial);
        (tx, Leadership { rx })
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Call right before a write.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Waits until the flag is `want` (or the elector is gone).
    pub async fn until(&mut self, want: bool) {
        let _ = self.rx.wait_for(|v| *v == want).await;
    }
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (its pod name).
    pub identity: String,
    /// How long a Lease stays held without a renewal.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The other holder's Lease as last seen (holder, renewTime,
    /// resourceVersion) and when, on this replica's clock: a Lease is
    /// expired when it has not changed for its duration here, so two
    /// machines' clocks never need to agree (as client-go does it).
    observed: std::sync::Mutex<Option<(String, Instant)>>,
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: std::sync::Mutex::new(None),
        }
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(micro_now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether another holder's Lease has gone unrenewed for its duration,
    /// timed from when this replica first saw it in its current state.
    fn expired(&self, lease: &Lease, spec: &LeaseSpec) -> bool {
        let seen = format!(
            "{:?}/{:?}/{:?}",
            spec.holder_identity, spec.renew_time, lease.metadata.resource_version
        );
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let mut observed = self.observed.lock().unwrap();
        match &*observed {
            Some((last, at)) if *last == seen => at.elapsed() > duration,
            _ => {
                *observed = Some((seen, Instant::now()));
                false
            }
        }
    }

    /// One round: take the Lease if it is free or expired, renew it if it is
    /// ours. `Ok(false)`: someone else holds it, or won a race for it (409).
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(Some(micro_now()), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let free = spec.holder_identity.as_deref().unwrap_or("").is_empty();
        if !mine && !free && !self.expired(&lease, &spec) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if mine {
            self.spec(spec.acquire_time.clone(), transitions)
        } else {
            tracing::info!(previous = ?spec.holder_identity, "taking over the leader lease (free, or unrenewed for its duration)");
            self.spec(Some(micro_now()), transitions + 1)
        };
        let replacement = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(next),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &replacement)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up on a clean exit (SIGTERM, a rollout), so the next
    /// replica need not wait out its duration; only if it is still ours, and
    /// with the resourceVersion read.
    pub async fn release(&self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        let released = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(spec),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => tracing::info!("released the leader lease"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the leader lease; it expires on its own")
            }
        }
    }

    /// Campaigns and renews for ever, publishing whether this replica leads.
    /// Leadership ends at `renewal start + 2/3 of the duration` unless a
    /// renewal succeeds before, whatever the API does (an attempt is cut off
    /// at that deadline): others may take over only a full duration after the
    /// renewal they last saw, so the old leader has stopped writing by then.
    pub async fn run(&self, tx: watch::Sender<bool>) {
        let deadline = self.config.duration * 2 / 3;
        // When the last successful renewal started.
        let mut renewed: Option<Instant> = None;
        let publish = |leading: bool| {
            if leading != *tx.borrow() {
                tracing::info!(leading, identity = %self.config.identity, "leader lease changed hands");
            }
            tx.send_replace(leading);
        };
        loop {
            let started = Instant::now();
            // An attempt may not outlast the current leadership.
            let limit = renewed.map_or(self.config.renew_every, |t| {
                (t + deadline)
                    .saturating_duration_since(started)
                    .min(self.config.renew_every)
            });
            match tokio::time::timeout(limit, self.try_once()).await {
                Ok(Ok(true)) => renewed = Some(started),
                Ok(Ok(false)) => renewed = None,
                Ok(Err(e)) => tracing::warn!(error = %e, "leader lease: cannot reach the API"),
                Err(_) => tracing::warn!("leader lease: the API did not answer in time"),
            }
            let leading = renewed.is_some_and(|t| t.elapsed() < deadline);
            publish(leading);
            // Sleep until the next renewal, dropping leadership at its
            // deadline if that comes first.
            let next = started + self.config.renew_every;
            if let Some(end) = renewed
                .map(|t| t + deadline)
                .filter(|end| *end < next && leading)
            {
                tokio::time::sleep_until(end.into()).await;
                publish(false);
            }
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::FakeApi;
    use http::{Method, StatusCode};
    use serde_json::json;

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: "carve-system".into(),
            name: "carve-agent".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn lease(holder: &str, renewed: &str) -> serde_json::Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "carve-agent", "namespace": "carve-system"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                        "renewTime": renewed, "leaseTransitions": 3}})
    }

    fn holder(api: &FakeApi) -> serde_json::Value {
        api.with(|s| {
            s.get(
                "apis/coordination.k8s.io/v1/leases",
                "carve-system",
                "carve-agent",
            )
            .unwrap()["spec"]
                .clone()
        })
    }

    #[tokio::test]
    async fn takes_a_free_lease_and_renews_its_own() {
        let (api, client) = FakeApi::start();
        let a = Elector::new(client.clone(), config("agent-a"));
        assert!(a.try_once().await.unwrap(), "no lease yet: created");
        assert_eq!(holder(&api)["holderIdentity"], "agent-a");
        assert!(a.try_once().await.unwrap(), "renewed");
        let b = Elector::new(client, config("agent-b"));
        assert!(!b.try_once().await.unwrap(), "held and fresh: not taken");
        assert_eq!(holder(&api)["holderIdentity"], "agent-a");
    }

    #[tokio::test]
    async fn takes_over_a_lease_unrenewed_for_its_duration_on_its_own_clock() {
        let (api, client) = FakeApi::start();
        // The holder's renewTime is far in the past by this clock, and far in
        // the future: neither counts, only how long it stays unchanged here.
        api.put(lease("agent-a", "2026-01-01T00:00:00.000000Z"));
        let mut cfg = config("agent-b");
        cfg.duration = Duration::from_millis(300);
        let b = Elector::new(client, cfg);
        api.with(|s| {
            let mut l = s
                .get(
                    "apis/coordination.k8s.io/v1/leases",
                    "carve-system",
                    "carve-agent",
                )
                .unwrap()
                .clone();
            l["spec"]["leaseDurationSeconds"] = 1.into();
            s.put(l);
        });
        assert!(!b.try_once().await.unwrap(), "first seen now: not expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !b.try_once().await.unwrap(),
            "unchanged for 0.5 s of its 1 s"
        );
        // The holder renews: the clock starts again.
        api.with(|s| {
            let mut l = s
                .get(
                    "apis/coordination.k8s.io/v1/leases",
                    "carve-system",
                    "carve-agent",
                )
                .unwrap()
                .clone();
            l["spec"]["renewTime"] = "2099-01-01T00:00:00.000000Z".into();
            s.put(l);
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!b.try_once().await.unwrap(), "renewed 0.6 s ago");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            b.try_once().await.unwrap(),
            "unchanged for over its duration: taken"
        );
        let spec = holder(&api);
        assert_eq!(spec["holderIdentity"], "agent-b");
        assert_eq!(spec["leaseTransitions"], 4);
    }

    #[tokio::test]
    async fn a_race_for_the_lease_has_one_winner() {
        let (api, client) = FakeApi::start();
        let mut free = lease("", "2026-01-01T00:00:00.000000Z");
        free["spec"]["leaseTransitions"] = 3.into();
        api.put(free);
        // agent-c renews between agent-b's read and its replace.
        api.on_next(Method::PUT, "leases/carve-agent", |store| {
            let mut l = store
                .get(
                    "apis/coordination.k8s.io/v1/leases",
                    "carve-system",
                    "carve-agent",
                )
                .unwrap()
                .clone();
            l["spec"]["holderIdentity"] = "agent-c".into();
            store.put(l);
        });
        let b = Elector::new(client, config("agent-b"));
        assert!(!b.try_once().await.unwrap(), "409: agent-b lost the race");
        assert_eq!(holder(&api)["holderIdentity"], "agent-c");
    }

    #[tokio::test]
    async fn a_leader_that_cannot_renew_stops_leading() {
        let (api, client) = FakeApi::start();
        let mut cfg = config("agent-a");
        cfg.duration = Duration::from_millis(300);
        cfg.renew_every = Duration::from_millis(50);
        let (tx, mut leadership) = Leadership::channel(false);
        tokio::spawn(async move { Elector::new(client, cfg).run(tx).await });
        tokio::time::timeout(Duration::from_secs(5), leadership.until(true))
            .await
            .unwrap();
        for _ in 0..100 {
            api.fail_next(
                Method::GET,
                "leases/carve-agent",
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        tokio::time::timeout(Duration::from_secs(5), leadership.until(false))
            .await
            .expect("leadership dropped within the renew deadline");
        assert!(leadership.check().is_err());
    }

    // Two workers: the fake server's task blocks one while the API "hangs".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_api_cannot_keep_a_leader_leading_past_its_deadline() {
        let (api, client) = FakeApi::start();
        let mut cfg = config("agent-a");
        cfg.duration = Duration::from_millis(600);
        cfg.renew_every = Duration::from_millis(200);
        let (tx, mut leadership) = Leadership::channel(false);
        let (hang_tx, hang_rx) = std::sync::mpsc::channel::<()>();
        tokio::spawn(async move { Elector::new(client, cfg).run(tx).await });
        tokio::time::timeout(Duration::from_secs(5), leadership.until(true))
            .await
            .unwrap();
        let became = Instant::now();
        // The next Lease read never gets an answer (the server blocks).
        api.on_next(Method::GET, "leases/carve-agent", move |_| {
            let _ = hang_rx.recv_timeout(Duration::from_secs(3));
        });
        tokio::time::timeout(Duration::from_secs(5), leadership.until(false))
            .await
            .expect("leadership dropped although the API hangs");
        assert!(
            became.elapsed() < Duration::from_millis(600),
            "dropped before the Lease's duration: {:?}",
            became.elapsed()
        );
        drop(hang_tx);
    }

    #[tokio::test]
    async fn a_released_lease_is_free_at_once() {
        let (api, client) = FakeApi::start();
        let a = Elector::new(client.clone(), config("agent-a"));
        assert!(a.try_once().await.unwrap());
        a.release().await;
        assert!(holder(&api)["holderIdentity"].is_null());
        let b = Elector::new(client, config("agent-b"));
        assert!(b.try_once().await.unwrap(), "free: taken without waiting");
    }
}

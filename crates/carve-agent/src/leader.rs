//! One writer at a time: a coordination.k8s.io Lease, taken when free or
//! expired and renewed while held, with optimistic concurrency (a replace
//! carries the resourceVersion it read, so two candidates cannot both win).
//! The reconcilers check [`Leadership`] immediately before every write, so a
//! replica that loses the Lease mid-reconcile writes nothing more; the binary
//! then exits and its Deployment starts it again as a candidate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
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
        let held_until = spec.renew_time.as_ref().map(|t| {
            t.0 + SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0) as i64)
        });
        let free = spec.holder_identity.as_deref().unwrap_or("").is_empty()
            || held_until.is_none_or(|until| until < Timestamp::now());
        if !mine && !free {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if mine {
            self.spec(spec.acquire_time.clone(), transitions)
        } else {
            tracing::info!(previous = ?spec.holder_identity, "taking over the expired leader lease");
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

    /// Campaigns and renews for ever, publishing whether this replica leads.
    /// A leader that cannot renew for two thirds of the Lease's duration
    /// stops writing before anyone else may take over.
    pub async fn run(self, tx: watch::Sender<bool>) {
        let deadline = self.config.duration * 2 / 3;
        let mut last_renewed: Option<Instant> = None;
        loop {
            let leading = match self.try_once().await {
                Ok(true) => {
                    last_renewed = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "leader lease: cannot reach the API");
                    last_renewed.is_some_and(|t| t.elapsed() < deadline)
                }
            };
            if leading != *tx.borrow() {
                tracing::info!(leading, identity = %self.config.identity, "leader lease changed hands");
            }
            tx.send_replace(leading);
            tokio::time::sleep(self.config.renew_every).await;
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
    async fn takes_over_an_expired_lease_and_counts_the_transition() {
        let (api, client) = FakeApi::start();
        api.put(lease("agent-a", "2026-01-01T00:00:00.000000Z"));
        let b = Elector::new(client, config("agent-b"));
        assert!(b.try_once().await.unwrap());
        let spec = holder(&api);
        assert_eq!(spec["holderIdentity"], "agent-b");
        assert_eq!(spec["leaseTransitions"], 4);
    }

    #[tokio::test]
    async fn a_race_for_the_lease_has_one_winner() {
        let (api, client) = FakeApi::start();
        api.put(lease("agent-a", "2026-01-01T00:00:00.000000Z"));
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
        tokio::spawn(Elector::new(client, cfg).run(tx));
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
}

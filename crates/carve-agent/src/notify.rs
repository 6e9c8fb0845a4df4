//! The Events the agent writes (events.k8s.io/v1, through kube's Recorder,
//! which folds repeats into a series instead of a new Event each time). Every
//! Event is logged as well, so the log alone tells what the agent did or would
//! do. An Event that cannot be written is logged, never fatal: the state it
//! reports is recomputed at the next reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::leader::Leadership;

pub struct Notifier {
    recorder: Recorder,
    leader: Leadership,
}

/// Normal or Warning, and the machine-readable reason (PascalCase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

impl Notifier {
    pub fn new(client: kube::Client, instance: &str, leader: Leadership) -> Notifier {
        let reporter = Reporter {
            controller: "carve-agent".into(),
            instance: Some(instance.to_string()),
        };
        Notifier {
            recorder: Recorder::new(client, reporter),
            leader,
        }
    }

    /// Logs and records one Event about `regarding`.
    pub async fn event(&self, regarding: &ObjectReference, kind: Kind, reason: &str, note: String) {
        let object = format!(
            "{}/{}{}",
            regarding.kind.as_deref().unwrap_or("?"),
            regarding
                .namespace
                .as_deref()
                .map(|ns| format!("{ns}/"))
                .unwrap_or_default(),
            regarding.name.as_deref().unwrap_or("?")
        );
        match kind {
            Kind::Normal => tracing::info!(%object, reason, "{note}"),
            Kind::Warning => tracing::warn!(%object, reason, "{note}"),
        }
        if !self.leader.is_leader() {
            return;
        }
        let action = format!("{reason}-{:08x}", digest(&note) as u32);
        let event = Event {
            type_: match kind {
                Kind::Normal => EventType::Normal,
                Kind::Warning => EventType::Warning,
            },
            reason: reason.to_string(),
            // The Events API caps a note at 1 kB.
            note: Some(truncate(note, 1000)),
            // kube's Recorder folds Events with the same regarding object,
            // type, reason and action into one series and keeps the first
            // note: two orphan LVs on one Node would show as one. The action
            // carries a digest of the note, so only true repeats fold.
            action,
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%object, reason, error = %e, "could not record the event");
        }
    }
}

fn digest(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

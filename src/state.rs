//! The in-process view of LVM that read-mostly RPCs (GetCapacity, ListVolumes,
//! Probe) are served from, so a scheduler burst never spawns a burst of lvm
//! processes. Every mutation updates it at once with what it changed, then
//! wakes a debounced background refresh that replaces it with LVM's own report;
//! a periodic refresh catches changes made outside carve.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::capacity::{self, CapacityError, ClassCapacity};
use crate::config::Config;
use crate::lvm::{Lvm, LvmError, LvmState};

/// One refresh's worth of state plus the capacities derived from it.
#[derive(Debug)]
pub struct View {
    pub lvm: LvmState,
    pub capacity: BTreeMap<String, Result<ClassCapacity, CapacityError>>,
}

impl View {
    fn new(lvm: LvmState, config: &Config) -> View {
        let capacity = config
            .device_classes
            .iter()
            .map(|c| (c.name.clone(), capacity::compute(c, &lvm)))
            .collect();
        View { lvm, capacity }
    }
}

pub struct StateCache {
    lvm: Arc<Lvm>,
    config: Arc<Config>,
    view: RwLock<Option<Arc<View>>>,
    last_error: RwLock<Option<String>>,
    poke: Notify,
}

/// Delay between a mutation and the refresh it triggers: a burst of creates
/// costs one report, not one per create.
const DEBOUNCE: Duration = Duration::from_millis(250);

impl StateCache {
    pub fn new(lvm: Arc<Lvm>, config: Arc<Config>) -> Arc<StateCache> {
        Arc::new(StateCache {
            lvm,
            config,
            view: RwLock::new(None),
            last_error: RwLock::new(None),
            poke: Notify::new(),
        })
    }

    /// The current view; `None` until the first report succeeded.
    pub fn get(&self) -> Option<Arc<View>> {
        self.view.read().expect("view lock").clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().expect("error lock").clone()
    }

    /// Reads LVM now and installs the result.
    pub async fn refresh(&self) -> Result<Arc<View>, LvmError> {
        match self.lvm.state().await {
            Ok(state) => {
                let v = Arc::new(View::new(state, &self.config));
                *self.view.write().expect("view lock") = Some(v.clone());
                *self.last_error.write().expect("error lock") = None;
                Ok(v)
            }
            Err(e) => {
                *self.last_error.write().expect("error lock") = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Re-reads one VG and merges it into the view (the rest of the view is
    /// kept as it was). Used where one volume's current state matters, so a
    /// request about a small VG never pays for reporting a large one.
    pub async fn refresh_vg(&self, vg: &str) -> Result<Arc<View>, LvmError> {
        if self.get().is_none() {
            return self.refresh().await;
        }
        let mut part = self.lvm.state_of(vg).await?;
        part.vgs.retain(|name, _| name == vg);
        part.lvs.retain(|l| l.vg == vg);
        let mut guard = self.view.write().expect("view lock");
        let mut state = guard.as_ref().map(|v| v.lvm.clone()).unwrap_or_default();
        state.vgs.remove(vg);
        state.lvs.retain(|l| l.vg != vg);
        state.vgs.extend(part.vgs);
        state.lvs.extend(part.lvs);
        let v = Arc::new(View::new(state, &self.config));
        *guard = Some(v.clone());
        Ok(v)
    }

    /// Applies a mutation's known effect to the cached state right away and
    /// schedules a refresh that will confirm it.
    pub fn apply(&self, change: impl FnOnce(&mut LvmState)) {
        {
            let mut guard = self.view.write().expect("view lock");
            if let Some(v) = guard.as_ref() {
                let mut state = v.lvm.clone();
                change(&mut state);
                *guard = Some(Arc::new(View::new(state, &self.config)));
            }
        }
        self.poke.notify_one();
    }

    /// Background task: refresh every `interval`, and shortly after each poke.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = me.poke.notified() => tokio::time::sleep(DEBOUNCE).await,
                }
                if let Err(e) = me.refresh().await {
                    tracing::warn!(error = %e, "capacity refresh failed; serving the previous view");
                }
            }
        })
    }
}

//! Filling a thick volume from its source: the work of a copy job. A restore
//! copies a snapshot LV; a clone first takes a temporary classic snapshot of
//! its source volume (`ct-…`, named after the target) so the copy sees one
//! instant while the source is written, and removes it afterwards. The target
//! stays tagged `incomplete` until the copy is flushed and the temporary
//! snapshot gone; every step is recorded in the state cache.

use std::sync::Arc;

use crate::engine::jobs::{Job, Outcome};
use crate::engine::state::{Change, StateCache};
use crate::host::copy::{self, CopyError};
use crate::lvm::{LvInfo, Lvm, VgGuard};
use crate::names;

/// Removes `lv` of the guard's VG if it carries the owner tag, and records that.
pub async fn remove_owned(
    vg: &VgGuard<'_>,
    state: &StateCache,
    lv: &str,
    owner_tag: &str,
) -> Result<(), String> {
    match vg.remove(lv, owner_tag).await {
        Ok(_) => {}
        Err(e) if e.kind == crate::lvm::LvmErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    state.apply(Change::Removed {
        vg: vg.vg().to_string(),
        lv: lv.to_string(),
    });
    Ok(())
}

/// Drops the `incomplete` tag: the volume is whole.
pub async fn mark_complete(vg: &VgGuard<'_>, state: &StateCache, lv: &str) -> Result<(), String> {
    let tag = names::tag(names::TAG_INCOMPLETE, "1");
    vg.remove_tag(lv, &tag)
        .await
        .map_err(|e| format!("marking {}/{lv} complete: {e}", vg.vg()))?;
    state.apply(Change::TagRemoved {
        vg: vg.vg().to_string(),
        lv: lv.to_string(),
        tag,
    });
    Ok(())
}

/// Everything a thick fill job needs, owned, so it outlives the RPC.
pub struct Filler {
    pub lvm: Arc<Lvm>,
    pub state: Arc<StateCache>,
    pub owner_tag: String,
    pub vg: String,
    /// The volume LV being filled.
    pub target: String,
    /// The snapshot LV to restore from, or the volume LV to clone.
    pub source: String,
    pub clone: bool,
    /// Bytes of content to copy.
    pub bytes: u64,
    /// Copy-on-write space of a clone's temporary snapshot.
    pub cow: u64,
}

impl Filler {
    pub async fn run(self, job: Arc<Job>) -> Outcome {
        match self.fill(&job).await {
            Ok(()) => Outcome::Done,
            Err(FillError::Cancelled) => {
                tracing::info!(copy = %job.what, "block copy cancelled");
                Outcome::Cancelled
            }
            Err(FillError::Failed(e)) => {
                tracing::error!(copy = %job.what, error = %e, "block copy failed");
                Outcome::Failed(e)
            }
        }
    }

    async fn fill(&self, job: &Arc<Job>) -> Result<(), FillError> {
        let vg = &self.vg;
        let temp = names::clone_temp_name(&self.target);
        let read_from = if self.clone {
            let guard = self.lvm.lock_vg(vg).await;
            // A temporary snapshot left by an interrupted attempt holds an
            // older instant: the copy starts over from a new one.
            remove_owned(&guard, &self.state, &temp, &self.owner_tag).await?;
            let tags = vec![
                self.owner_tag.clone(),
                names::tag(names::TAG_SOURCE, &format!("{vg}/{}", self.target)),
            ];
            guard
                .create_snapshot(&self.source, &temp, Some(self.cow), &tags)
                .await
                .map_err(|e| format!("snapshotting {vg}/{} for the clone: {e}", self.source))?;
            self.state
                .apply(Change::Created(Box::new(LvInfo::new_classic_snapshot(
                    vg,
                    &temp,
                    self.cow,
                    tags,
                    &self.source,
                ))));
            crate::crash::point("clone-after-temp-snapshot");
            temp.clone()
        } else {
            self.source.clone()
        };
        let result = self.copy(job, &read_from).await;
        if result.is_ok() {
            crate::crash::point("copy-after-data");
        }
        if self.clone {
            let guard = self.lvm.lock_vg(vg).await;
            if let Err(e) = remove_owned(&guard, &self.state, &temp, &self.owner_tag).await {
                tracing::warn!(lv = %format!("{vg}/{temp}"), error = %e, "could not remove the clone's temporary snapshot; the next start-up removes it");
            }
        }
        result?;
        crate::crash::point("fill-before-complete");
        let guard = self.lvm.lock_vg(vg).await;
        mark_complete(&guard, &self.state, &self.target).await?;
        Ok(())
    }

    async fn copy(&self, job: &Arc<Job>, read_from: &str) -> Result<(), FillError> {
        let vg = &self.vg;
        for lv in [read_from, self.target.as_str()] {
            if !std::path::Path::new(&format!("/dev/{vg}/{lv}")).exists() {
                self.lvm
                    .lock_vg(vg)
                    .await
                    .ensure_device(lv)
                    .await
                    .map_err(|e| format!("activating {vg}/{lv}: {e}"))?;
            }
        }
        let (src, dst) = (
            format!("/dev/{vg}/{read_from}"),
            format!("/dev/{vg}/{}", self.target),
        );
        tracing::info!(copy = %job.what, bytes = self.bytes, "block copy started");
        let (j, bytes) = (job.clone(), self.bytes);
        let copied = tokio::task::spawn_blocking(move || {
            copy::copy_blocking(&src, &dst, bytes, &j.what, &j.control)
        })
        .await
        .map_err(|e| format!("block copy task: {e}"))?;
        match copied {
            Ok(c) => {
                tracing::info!(copy = %job.what, bytes = c.bytes, seconds = c.elapsed.as_secs_f64(), mib_per_s = format!("{:.1}", c.mib_per_second()), "block copy finished");
                Ok(())
            }
            Err(CopyError::Cancelled(_)) => Err(FillError::Cancelled),
            Err(CopyError::Io(e)) => Err(FillError::Failed(format!(
                "block copy into {vg}/{}: {e}",
                self.target
            ))),
        }
    }
}

enum FillError {
    Cancelled,
    Failed(String),
}

impl From<String> for FillError {
    fn from(e: String) -> Self {
        FillError::Failed(e)
    }
}

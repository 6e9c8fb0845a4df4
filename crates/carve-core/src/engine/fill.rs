//! Filling a thick volume from its source: the work of a copy job. A restore
//! copies a snapshot LV; a clone first takes a temporary classic snapshot of
//! its source volume (`ct-…`, named after the target) so the copy sees one
//! instant while the source is written, and removes it afterwards. The target
//! stays tagged `incomplete` until the copy is flushed and the temporary
//! snapshot gone; every step is recorded in the state cache.

use std::sync::Arc;

use crate::engine::copiers::Copiers;
use crate::engine::jobs::{Job, Outcome};
use crate::engine::state::{Change, StateCache};
use crate::host::copy::CopyError;
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
    pub copiers: Arc<Copiers>,
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

    /// Whether the target still carries the `incomplete` tag in the state
    /// carve holds now. A finished copy drops the tag (and records that)
    /// before its job ends, so a job started after another one finished sees
    /// the volume whole here, whatever view its caller read earlier.
    fn still_incomplete(&self) -> bool {
        self.state.get().is_none_or(|v| {
            v.lvm
                .lv(&self.vg, &self.target)
                .is_none_or(|l| l.tag(names::TAG_INCOMPLETE).is_some())
        })
    }

    async fn fill(&self, job: &Arc<Job>) -> Result<(), FillError> {
        let vg = &self.vg;
        // The decision to copy is taken again here, against the state as it
        // is now: a retry that read the volume as incomplete while an earlier
        // copy was finishing must not copy over a volume already in use.
        if !self.still_incomplete() {
            tracing::info!(copy = %job.what, "the volume is already whole: no copy");
            return Ok(());
        }
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
        let copied = self.copiers.copy(src, dst, self.bytes, job.clone()).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::jobs::{Jobs, Started};
    use crate::lvm::fake::FakeLvm;

    /// Issue 14, finding 5: a retry read the view while the volume was
    /// incomplete, the first copy finished (tag dropped, job gone from the
    /// registry), then the retry starts a job. On a019df7 that job copied
    /// over the finished volume; now it ends at once without a copy.
    #[tokio::test]
    async fn a_job_started_after_the_volume_is_whole_copies_nothing() {
        let fake = FakeLvm::new();
        let incomplete = names::tag(names::TAG_INCOMPLETE, "1");
        fake.add_lv(
            "vgthick",
            "cv-target",
            &format!("carve.dev/owner=carve.dev,{incomplete}"),
        );
        let config = Arc::new(
            Config::parse(
                "[[device_class]]\nname='thick'\nvolume_group='vgthick'\ntype='thick'\n",
                "t",
            )
            .unwrap(),
        );
        let lvm = Arc::new(Lvm::new(fake.clone()));
        let state = StateCache::new(lvm.clone(), config.clone());
        // The retry's view: incomplete.
        let stale = state.refresh().await.unwrap();
        assert!(stale
            .lvm
            .lv("vgthick", "cv-target")
            .unwrap()
            .tag(names::TAG_INCOMPLETE)
            .is_some());
        // The first copy finishes: the tag goes, in LVM and in the state.
        mark_complete(&lvm.lock_vg("vgthick").await, &state, "cv-target")
            .await
            .unwrap();
        fake.clear();
        let filler = Filler {
            lvm,
            copiers: Arc::new(Copiers::new(1)),
            state: state.clone(),
            owner_tag: "carve.dev/owner=carve.dev".into(),
            vg: "vgthick".into(),
            target: "cv-target".into(),
            source: "cs-source".into(),
            clone: true,
            bytes: 1 << 20,
            cow: 1 << 20,
        };
        let jobs = Arc::new(Jobs::default());
        let Started::Running(job) = jobs.start("vgthick/cv-target", "test".into(), 1 << 20, |j| {
            filler.run(j)
        }) else {
            panic!("no job");
        };
        assert_eq!(
            job.wait(std::time::Duration::from_secs(10)).await,
            Some(Outcome::Done)
        );
        assert_eq!(
            fake.writes(),
            Vec::<String>::new(),
            "no snapshot, no tag change"
        );
        assert_eq!(job.progress().done, 0, "nothing copied");
    }
}

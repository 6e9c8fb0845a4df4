//! Volumes made from a content source: restores from a snapshot and clones of
//! a volume, on the node (and in the VG) that holds the source.
//!
//! Thin: a writable thin snapshot of the source, instant, then grown when a
//! larger size was asked. Thick: a new LV filled by a block copy that runs as
//! a job owned by carve (see `jobs`), not by the RPC: CreateVolume waits for
//! it a short while and answers Aborted with the progress while it runs, so
//! the provisioner's retries attach to the one copy instead of starting more.
//! A clone copies from a temporary snapshot of its source (`ct-…`), so the copy
//! sees one instant while the source is written.
//!
//! Every step leaves LVM in a state the next call recognises: the volume is
//! tagged `incomplete` until the last step, the temporary snapshot is named
//! after the volume, and a restarted carve resumes interrupted copies from the
//! tags alone.

use std::time::Duration;

use carve_core::config::{DeviceClass, Provisioning};
use carve_core::engine::fill::{self, Filler};
use carve_core::engine::jobs::{Outcome, Started};
use carve_core::engine::state::Change;
use carve_core::lvm::LvInfo;
use carve_core::names;

use carve_core::names::LvKind;
use tonic::Code;

use crate::controller::{ControllerService, Located};
use crate::csi;
use crate::error::{LvmFailure, NotReady, RpcError};

/// A content source that cannot give a new volume its data here.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("volume_content_source names neither a snapshot nor a volume")]
    NoType,
    #[error("volume_content_source has an empty ID")]
    EmptyId,
    /// ResourceExhausted: external-provisioner then asks the scheduler for
    /// another node, where a retry can succeed.
    #[error("content source {id} is on node {holder}, not on this node ({node}): a restore or clone is made on the node that holds its source, so this node cannot provide it")]
    Elsewhere {
        id: String,
        holder: String,
        node: String,
    },
    #[error("content source {id:?} does not exist on node {node}")]
    Gone { id: String, node: String },
    #[error("content source {0} is itself still being filled from its own source; try again when it is complete")]
    Unfinished(String),
    #[error("content source {id} is in device class {src_class:?} (VG {src_vg}); the new volume asks for class {class:?} (VG {vg}): they must match")]
    ClassMismatch {
        id: String,
        src_class: String,
        src_vg: String,
        class: String,
        vg: String,
    },
    #[error(transparent)]
    Read(#[from] LvmFailure),
}

/// The steps that finish a volume made from a source.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Aborted: the copy goes on; the provisioner calls again.
    #[error("{what} is in progress: {progress}; CreateVolume answers once it has finished")]
    Copying { what: String, progress: String },
    /// The copy hit an error (reported once; the next call starts a new copy;
    /// the volume's condition keeps the reason).
    #[error("{0}")]
    CopyFailed(String),
    #[error("the copy into {0} was cancelled (the volume is being deleted)")]
    Cancelled(String),
    #[error("{0}")]
    MarkComplete(String),
    #[error(transparent)]
    Lvm(#[from] LvmFailure),
    #[error(transparent)]
    NotReady(#[from] NotReady),
}

impl RpcError for SourceError {
    fn code(&self) -> Code {
        match self {
            SourceError::NoType | SourceError::EmptyId | SourceError::ClassMismatch { .. } => {
                Code::InvalidArgument
            }
            SourceError::Elsewhere { .. } => Code::ResourceExhausted,
            SourceError::Gone { .. } => Code::NotFound,
            SourceError::Unfinished(_) => Code::Aborted,
            SourceError::Read(e) => e.code(),
        }
    }
}

impl RpcError for FinishError {
    fn code(&self) -> Code {
        match self {
            FinishError::Copying { .. } | FinishError::Cancelled(_) => Code::Aborted,
            // Retryable, never final: external-provisioner keeps calling
            // (and calls DeleteVolume if the claim goes meanwhile), where a
            // final code would let an unfinished LV outlive its claim. The
            // next call copies again; ListVolumes shows why it failed.
            FinishError::CopyFailed(_) | FinishError::MarkComplete(_) => Code::Unavailable,
            FinishError::Lvm(e) => e.code(),
            FinishError::NotReady(e) => e.code(),
        }
    }
}

/// Where a new volume's content comes from, resolved and checked.
pub struct Source {
    /// The LV to copy or snapshot from.
    pub lv: LvInfo,
    /// Bytes of content (the origin's size for a snapshot).
    pub size: u64,
    /// The ID as the request named it, recorded in the new LV's tag.
    pub id: String,
    pub is_snapshot: bool,
}

/// Bytes of content an LV holds: a snapshot's origin size as recorded when it
/// was taken (a classic snapshot LV's own size is only its COW space), else
/// the LV's size.
pub(crate) fn content_size(lv: &LvInfo) -> u64 {
    lv.tag(names::TAG_SIZE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(lv.size)
}

impl ControllerService {
    /// Resolves a CreateVolume content source: it must exist on this node,
    /// belong to carve, be whole, and live in the requested class's VG. A
    /// source on another node is ResourceExhausted: external-provisioner then
    /// asks the scheduler for another node, where a retry can succeed.
    pub(crate) async fn resolve_source(
        &self,
        src: &csi::VolumeContentSource,
        class: &DeviceClass,
    ) -> Result<Source, SourceError> {
        use csi::volume_content_source::Type;
        let (id, kind) = match &src.r#type {
            Some(Type::Snapshot(s)) => (s.snapshot_id.clone(), LvKind::Snapshot),
            Some(Type::Volume(v)) => (v.volume_id.clone(), LvKind::Volume),
            None => return Err(SourceError::NoType),
        };
        if id.is_empty() {
            return Err(SourceError::EmptyId);
        }
        let lv = match self.locate(&id, kind, true).await? {
            Located::Here(lv) => *lv,
            Located::Elsewhere(node) => {
                return Err(SourceError::Elsewhere {
                    id,
                    holder: node.to_string(),
                    node: self.node_id.clone(),
                })
            }
            Located::Gone => {
                return Err(SourceError::Gone {
                    id,
                    node: self.node_id.clone(),
                })
            }
        };
        if lv.tag(names::TAG_INCOMPLETE).is_some() {
            return Err(SourceError::Unfinished(id));
        }
        let src_class = lv
            .tag(names::TAG_CLASS)
            .map(names::decode_tag_value)
            .unwrap_or_default();
        if lv.vg != class.volume_group || src_class != class.name {
            return Err(SourceError::ClassMismatch {
                id,
                src_class,
                src_vg: lv.vg.clone(),
                class: class.name.clone(),
                vg: class.volume_group.clone(),
            });
        }
        let size = content_size(&lv);
        Ok(Source {
            lv,
            size,
            id,
            is_snapshot: kind == LvKind::Snapshot,
        })
    }

    /// The steps left for an unfinished volume (tagged incomplete): thin, grow
    /// it and clear the tag; thick, run (or join) its block copy and wait for
    /// it up to `wait`, answering Aborted with the progress while it runs.
    pub(crate) async fn finish(
        &self,
        class: &DeviceClass,
        lv: LvInfo,
        size: u64,
        source: &Source,
        wait: Duration,
    ) -> Result<LvInfo, FinishError> {
        let (vg, name) = (lv.vg.clone(), lv.name.clone());
        match class.provisioning {
            Provisioning::Thin => {
                let guard = self.lvm.lock_vg(&vg).await;
                if lv.size < size {
                    guard
                        .extend(&name, size)
                        .await
                        .map_err(LvmFailure::ctx(format!(
                            "growing restored volume {vg}/{name}"
                        )))?;
                    self.state.apply(Change::Resized {
                        vg: vg.clone(),
                        lv: name.clone(),
                        size,
                    });
                }
                fill::mark_complete(&guard, &self.state, &name)
                    .await
                    .map_err(FinishError::MarkComplete)?;
            }
            Provisioning::Thick => {
                let job = match self.start_fill(class, &lv, source) {
                    Started::Running(job) => job,
                    Started::Failed(e) => return Err(FinishError::CopyFailed(e)),
                };
                match job.wait(wait).await {
                    Some(Outcome::Done) => {}
                    Some(Outcome::Failed(e)) => {
                        // Reported here: the next call starts a new copy.
                        self.jobs.take_failure(&job.key);
                        return Err(FinishError::CopyFailed(e));
                    }
                    Some(Outcome::Cancelled) => {
                        return Err(FinishError::Cancelled(format!("{vg}/{name}")))
                    }
                    None => {
                        return Err(FinishError::Copying {
                            what: job.what.clone(),
                            progress: job.progress().to_string(),
                        })
                    }
                }
            }
        }
        let view = self.view()?;
        Ok(self
            .find(&view.lvm, &vg, &name, LvKind::Volume)
            .cloned()
            .unwrap_or(lv))
    }

    /// The copy job that fills thick volume `lv` from `source`: the running
    /// one, or a new one.
    pub(crate) fn start_fill(&self, class: &DeviceClass, lv: &LvInfo, source: &Source) -> Started {
        let filler = Filler {
            lvm: self.lvm.clone(),
            copiers: self.copiers.clone(),
            state: self.state.clone(),
            owner_tag: self.owner_tag(),
            vg: lv.vg.clone(),
            target: lv.name.clone(),
            source: source.lv.name.clone(),
            clone: !source.is_snapshot,
            bytes: source.size,
            cow: class.snapshot_reserve(source.size, self.extent_of(&lv.vg)),
        };
        let what = format!(
            "the {} of {} into {}/{}",
            if source.is_snapshot {
                "restore"
            } else {
                "clone"
            },
            source.id,
            lv.vg,
            lv.name
        );
        self.jobs.start(
            &Self::job_key(&lv.vg, &lv.name),
            what,
            source.size,
            move |job| filler.run(job),
        )
    }

    fn extent_of(&self, vg: &str) -> u64 {
        self.state
            .get()
            .and_then(|v| v.lvm.vgs.get(vg).map(|g| g.extent_size))
            .unwrap_or(4 << 20)
    }

    /// At start-up: resumes the copies a previous carve left unfinished (found
    /// from LVM's tags alone), and removes temporary clone snapshots nothing
    /// needs any more.
    pub async fn resume_interrupted(&self) {
        let Some(view) = self.state.get() else { return };
        let unfinished: Vec<LvInfo> = self
            .volumes(&view.lvm)
            .filter(|l| l.tag(names::TAG_INCOMPLETE).is_some())
            .cloned()
            .collect();
        for lv in unfinished {
            let Some(class) = self.class_of(&lv).cloned() else {
                continue;
            };
            if class.provisioning != Provisioning::Thick {
                continue; // thin: only an lvextend is left, done on the retry
            }
            let Some(source_id) = lv.tag(names::TAG_SOURCE).map(names::decode_tag_value) else {
                continue;
            };
            let kind = if names::VolumeId::parse_snapshot(&source_id).is_some() {
                LvKind::Snapshot
            } else {
                LvKind::Volume
            };
            match self.locate(&source_id, kind, false).await {
                Ok(Located::Here(src)) => {
                    let src = *src;
                    let source = Source {
                        size: content_size(&src),
                        lv: src,
                        id: source_id,
                        is_snapshot: kind == LvKind::Snapshot,
                    };
                    tracing::warn!(lv = %format!("{}/{}", lv.vg, lv.name), source = %source.id, "resuming a block copy interrupted by a restart");
                    let _ = self.start_fill(&class, &lv, &source);
                }
                _ => {
                    tracing::warn!(lv = %format!("{}/{}", lv.vg, lv.name), source = %source_id, "unfinished volume whose source is gone: the next CreateVolume for it removes it");
                }
            }
        }
        for temp in self.carve_lvs(&view.lvm, LvKind::CloneTemp) {
            let target = names::clone_target_name(&temp.name).unwrap_or_default();
            if self.jobs.get(&Self::job_key(&temp.vg, &target)).is_some() {
                continue;
            }
            tracing::warn!(lv = %format!("{}/{}", temp.vg, temp.name), "removing a clone's temporary snapshot left by an interrupted copy");
            let guard = self.lvm.lock_vg(&temp.vg).await;
            if let Err(e) =
                fill::remove_owned(&guard, &self.state, &temp.name, &self.owner_tag()).await
            {
                tracing::warn!(error = %e, "could not remove it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RpcError;

    /// Issue 14, finding 7: a failed copy (or a failed completion) is
    /// retryable, so external-provisioner never stops calling while an
    /// unfinished LV exists. On a019df7 both were Internal, which it treats
    /// as final: the LV leaked when the claim was deleted.
    #[test]
    fn failed_copies_are_retryable_not_final() {
        for e in [
            FinishError::CopyFailed("read error".into()),
            FinishError::MarkComplete("lvchange failed".into()),
        ] {
            assert_eq!(e.code(), Code::Unavailable, "{e}");
        }
    }
}

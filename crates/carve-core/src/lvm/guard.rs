//! The write guard of one VG: holding it is holding carve's lock on that VG,
//! and its methods are the only way carve runs a command that changes LVM
//! (lvcreate, lvremove, lvextend, lvchange, vgmknodes). A handler that has not
//! taken the lock has no way to write: the rule is a type, not a convention.

use tokio::sync::OwnedMutexGuard;

use super::{args, Lvm, LvmError, LvmErrorKind};

pub struct VgGuard<'a> {
    lvm: &'a Lvm,
    vg: String,
    _lock: OwnedMutexGuard<()>,
}

impl<'a> VgGuard<'a> {
    pub(super) fn new(lvm: &'a Lvm, vg: &str, lock: OwnedMutexGuard<()>) -> Self {
        VgGuard {
            lvm,
            vg: vg.to_string(),
            _lock: lock,
        }
    }

    /// The VG this guard holds.
    pub fn vg(&self) -> &str {
        &self.vg
    }

    async fn run(&self, argv: Vec<String>) -> Result<String, LvmError> {
        self.lvm.call_in(&self.vg, argv).await.map(|out| out.stdout)
    }

    /// Creates a volume LV as its device class says.
    pub async fn create(&self, spec: &args::CreateLv<'_>) -> Result<(), LvmError> {
        if spec.class.volume_group != self.vg {
            return Err(LvmError {
                kind: LvmErrorKind::Other,
                command: "lvcreate".into(),
                detail: format!(
                    "class {} lives in VG {}, not in the locked VG {}",
                    spec.class.name, spec.class.volume_group, self.vg
                ),
            });
        }
        self.run(args::lvcreate(spec)).await.map(drop)
    }

    /// A snapshot of `origin` (thin with no `cow_bytes`, else classic).
    pub async fn create_snapshot(
        &self,
        origin: &str,
        name: &str,
        cow_bytes: Option<u64>,
        tags: &[String],
    ) -> Result<(), LvmError> {
        self.run(args::lvcreate_snapshot(
            &self.vg, origin, name, cow_bytes, tags,
        ))
        .await
        .map(drop)
    }

    /// A writable, active thin copy of a thin LV or thin snapshot.
    pub async fn create_thin_copy(
        &self,
        source: &str,
        name: &str,
        tags: &[String],
    ) -> Result<(), LvmError> {
        self.run(args::lvcreate_thin_copy(&self.vg, source, name, tags))
            .await
            .map(drop)
    }

    /// Removes an LV if, and only if, it carries `owner_tag` and is no snapshot
    /// origin (LVM checks both under its own VG lock). Returns whether it was
    /// removed; `false` means the selection did not match.
    pub async fn remove(&self, lv: &str, owner_tag: &str) -> Result<bool, LvmError> {
        let out = self.run(args::lvremove(&self.vg, lv, owner_tag)).await?;
        Ok(out.contains("successfully removed"))
    }

    /// Grows an LV to `size_bytes`.
    pub async fn extend(&self, lv: &str, size_bytes: u64) -> Result<(), LvmError> {
        self.run(args::lvextend(&self.vg, lv, size_bytes))
            .await
            .map(drop)
    }

    pub async fn remove_tag(&self, lv: &str, tag: &str) -> Result<(), LvmError> {
        self.run(args::lvchange_deltag(&self.vg, lv, tag))
            .await
            .map(drop)
    }

    pub async fn activate(&self, lv: &str) -> Result<(), LvmError> {
        self.run(args::lvchange_activate(&self.vg, lv))
            .await
            .map(drop)
    }

    /// Makes sure `/dev/<vg>/<lv>` exists: activates the LV, and when its node
    /// is still missing (an activation cut short), makes the nodes.
    pub async fn ensure_device(&self, lv: &str) -> Result<(), LvmError> {
        let node = format!("/dev/{}/{lv}", self.vg);
        if std::path::Path::new(&node).exists() {
            return Ok(());
        }
        self.activate(lv).await?;
        if !std::path::Path::new(&node).exists() {
            self.run(args::vgmknodes(&self.vg, lv)).await?;
        }
        Ok(())
    }
}

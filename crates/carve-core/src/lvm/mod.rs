//! The LVM command layer. Everything carve asks of LVM passes through [`Lvm`]:
//! one `lvm` binary, argv built by [`args`], output decoded by [`report`] (with
//! `lv_attr` typed by [`attr`]), failures classified by [`error`]. [`Lvm`]
//! itself only reads; every command that changes a VG is a method of the
//! [`VgGuard`] that [`Lvm::lock_vg`] returns, so writes to one VG are
//! serialized by construction (LVM would otherwise make them wait on its own
//! lock, or fail with a lock error under load), while reads run in parallel.
//! [`LvmRunner`] is the seam unit tests script.

pub mod args;
pub mod attr;
mod devices;
pub mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
mod guard;
pub mod report;
pub mod shell;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use error::{LvmError, LvmErrorKind};
pub use guard::VgGuard;
pub use report::{LvInfo, LvmState, VgInfo};
pub use shell::ShellLvm;

use crate::host::exec;

/// Runs `lvm <args>` and returns what it printed. The production runner spawns
/// the real binary; tests script answers.
#[async_trait]
pub trait LvmRunner: Send + Sync {
    async fn run(&self, args: Vec<String>) -> Result<exec::Finished, LvmError>;
}

/// Added to the environment of every lvm process (single or shell): without
/// udev (containers, the test guest) libdevmapper must create device nodes
/// itself; the variable is harmless where udev runs.
pub(crate) const LVM_ENV: [(&str, &str); 1] = [("DM_DISABLE_UDEV", "1")];

/// Runs the real `lvm` binary with a timeout that kills its process group.
pub struct SystemLvm {
    program: String,
    timeout: Duration,
}

impl SystemLvm {
    pub fn new(program: impl Into<String>, timeout: Duration) -> Self {
        SystemLvm {
            program: program.into(),
            timeout,
        }
    }
}

#[async_trait]
impl LvmRunner for SystemLvm {
    async fn run(&self, args: Vec<String>) -> Result<exec::Finished, LvmError> {
        exec::run(&self.program, &args, &LVM_ENV, self.timeout)
            .await
            .map_err(|e| LvmError::from_exec(exec::display(&self.program, &args), &e))
    }
}

/// The LVM engine: typed operations over a runner.
pub struct Lvm {
    runner: Arc<dyn LvmRunner>,
    vg_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    devices: devices::Devices,
}

impl Lvm {
    pub fn new(runner: Arc<dyn LvmRunner>) -> Self {
        Lvm {
            runner,
            vg_locks: Mutex::new(HashMap::new()),
            devices: Default::default(),
        }
    }

    /// From now on every command opens only the PVs of `vgs` (see
    /// [`devices`]): one full scan finds them.
    pub async fn limit_to(&self, vgs: Vec<String>) -> Result<(), LvmError> {
        let args = devices::pvs_args();
        let line = exec::display("lvm", &args);
        let out = self.run_checked(args).await?;
        let (by_vg, complete) =
            devices::pvs_of(&out.stdout, &vgs).map_err(|d| LvmError::parse(line, d))?;
        self.devices.set(vgs, by_vg, complete);
        tracing::info!(devices = %self.devices.paths().join(","), all_vgs_found = complete, "lvm commands open only these devices");
        Ok(())
    }

    /// Runs a command that may read every carve VG.
    pub(super) async fn call(&self, args: Vec<String>) -> Result<exec::Finished, LvmError> {
        self.run_checked(self.devices.apply(args, None)).await
    }

    /// Runs a command about `vg` alone: it opens that VG's PVs only.
    pub(super) async fn call_in(
        &self,
        vg: &str,
        args: Vec<String>,
    ) -> Result<exec::Finished, LvmError> {
        self.run_checked(self.devices.apply(args, Some(vg)))
            .await
            .map_err(|e| e.in_vg(vg))
    }

    async fn run_checked(&self, args: Vec<String>) -> Result<exec::Finished, LvmError> {
        use crate::telemetry::{commands, lvm_subcommand, Ended};
        let line = exec::display("lvm", &args);
        let subcommand = lvm_subcommand(&args);
        let started = Instant::now();
        let r = self.runner.run(args).await;
        let took = started.elapsed();
        let r = match r {
            Ok(out) if out.success() => Ok(out),
            Ok(out) => Err(LvmError::from_exit(line.clone(), out.code, &out.stderr)),
            Err(e) => Err(e),
        };
        let ended = match &r {
            Ok(_) => Ended::Ok,
            Err(e) if e.kind == LvmErrorKind::Timeout => Ended::TimedOut,
            Err(_) => Ended::Failed,
        };
        commands().lvm(subcommand, took, ended);
        match &r {
            Ok(out) => {
                tracing::debug!(command = %line, elapsed_ms = took.as_millis() as u64, code = ?out.code, "lvm")
            }
            Err(e) => {
                tracing::debug!(command = %line, elapsed_ms = took.as_millis() as u64, error = %e, "lvm failed")
            }
        }
        r
    }

    /// The write lock of one VG, and through it the only way to change the VG
    /// (see [`VgGuard`]). Held across a check-then-act sequence (look up, verify
    /// ownership, then remove) so no other carve write interleaves.
    pub async fn lock_vg(&self, vg: &str) -> VgGuard<'_> {
        let m = {
            let mut map = self.vg_locks.lock().expect("vg lock map poisoned");
            map.entry(vg.to_string()).or_default().clone()
        };
        VgGuard::new(self, vg, m.lock_owned().await)
    }

    /// All VGs and LVs in one lvm call.
    pub async fn state(&self) -> Result<LvmState, LvmError> {
        let state = self.report(args::fullreport(), None).await?;
        if !self.devices.stale(&state) {
            return Ok(state);
        }
        // A configured VG or PV is missing: look at every device again.
        let vgs = self.devices.vgs().unwrap_or_default();
        if let Err(e) = self.limit_to(vgs).await {
            tracing::warn!(error = %e, "looking for carve's PVs again failed; keeping the devices found before");
            return Ok(state);
        }
        self.report(args::fullreport(), None).await
    }

    /// The state of one VG (its PVs and LVs) in one lvm call: cheaper than
    /// [`Lvm::state`] on a host with other large VGs.
    pub async fn state_of(&self, vg: &str) -> Result<LvmState, LvmError> {
        let mut args = args::fullreport();
        args.push(vg.to_string());
        self.report(args, Some(vg)).await
    }

    async fn report(&self, args: Vec<String>, vg: Option<&str>) -> Result<LvmState, LvmError> {
        let line = exec::display("lvm", &args);
        let out = self
            .run_checked(self.devices.apply(args, vg))
            .await
            .map_err(|e| match vg {
                Some(vg) => e.in_vg(vg),
                None => e,
            })?;
        report::parse_fullreport(&out.stdout).map_err(|d| LvmError::parse(line, d))
    }

    /// `lvm version`: proves the binary runs at all (start-up check).
    pub async fn version(&self) -> Result<String, LvmError> {
        let out = self.call(vec!["version".to_string()]).await?;
        Ok(first_line(&out.stdout))
    }
}

/// The first line of `lvm version`'s output ("LVM version: 2.03.16(2) ...").
pub(crate) fn first_line(stdout: &str) -> String {
    stdout.lines().next().unwrap_or_default().trim().to_string()
}

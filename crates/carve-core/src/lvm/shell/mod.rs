//! lvm commands through long-lived `lvm shell` processes instead of one
//! process per command: no process start, configuration parse and library
//! set-up per command (the mode lvmdbusd uses). The rules of a single
//! process still hold: a command is an argv (sent word for word, see
//! [`line`]), it has a timeout that kills the shell's whole process group,
//! and what lvm said on failure is in the error. A shell that times out,
//! ends, or answers outside the protocol is killed and replaced by a new one
//! for the next command; a command the shell cannot carry exactly runs as a
//! process of its own. `lvm_runner = "process"` in the config turns the
//! shells off altogether.

mod doc;
pub mod line;
mod process;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{LvmError, LvmErrorKind, LvmRunner, SystemLvm};
use crate::host::exec;
pub use process::{Shell, ShellError};

/// A fixed number of shells, each running one command at a time; a command
/// waits for a free one. Reads and writes of different VGs overlap up to
/// that number, as separate processes would.
pub struct ShellLvm {
    program: String,
    timeout: Duration,
    idle: Mutex<Vec<Shell>>,
    slots: tokio::sync::Semaphore,
    single: SystemLvm,
}

impl ShellLvm {
    /// `shells` shells of `program`, started as commands need them.
    pub fn new(program: impl Into<String>, timeout: Duration, shells: usize) -> Self {
        let program = program.into();
        ShellLvm {
            single: SystemLvm::new(program.clone(), timeout),
            program,
            timeout,
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(shells.max(1)),
        }
    }

    /// Proves a shell answers (`lvm version` through it): carve checks this
    /// at start-up and uses single processes when it fails.
    pub async fn check(&self) -> Result<String, LvmError> {
        let out = self.run(vec!["version".to_string()]).await?;
        if !out.success() || !out.stdout.contains("LVM version") {
            return Err(LvmError {
                kind: LvmErrorKind::Spawn,
                command: "lvm shell: version".into(),
                detail: format!(
                    "unexpected answer: {}{}",
                    out.stdout.trim(),
                    out.stderr.trim()
                ),
            });
        }
        Ok(super::first_line(&out.stdout))
    }

    async fn through_shell(&self, line: &str, command: &str) -> Result<exec::Finished, LvmError> {
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let mut idle = self.idle.lock().expect("shell list").pop();
        if idle.as_mut().is_some_and(|s| s.has_ended()) {
            tracing::warn!("an idle lvm shell had ended; starting a new one");
            if let Some(s) = idle.take() {
                s.kill().await;
            }
        }
        let mut shell = match idle {
            Some(s) => s,
            None => Shell::spawn(&self.program, &super::LVM_ENV).map_err(|e| lost(command, e))?,
        };
        match tokio::time::timeout(self.timeout, shell.run(line)).await {
            Ok(Ok(out)) => {
                self.idle.lock().expect("shell list").push(shell);
                Ok(out)
            }
            Ok(Err(e)) => {
                tracing::warn!(command, error = %e, "lvm shell lost; the next command starts a new one");
                shell.kill().await;
                Err(lost(command, e))
            }
            Err(_) => {
                shell.kill().await;
                Err(lost(command, ShellError::Timeout(self.timeout)))
            }
        }
    }
}

fn lost(command: &str, e: ShellError) -> LvmError {
    let kind = match e {
        ShellError::Timeout(_) => LvmErrorKind::Timeout,
        _ => LvmErrorKind::Spawn,
    };
    LvmError {
        kind,
        command: command.to_string(),
        detail: e.to_string(),
    }
}

#[async_trait]
impl LvmRunner for ShellLvm {
    async fn run(&self, args: Vec<String>) -> Result<exec::Finished, LvmError> {
        match line::devices_as_filter(&args).and_then(|a| line::encode(&a)) {
            Some(line) => {
                self.through_shell(&line, &exec::display("lvm", &args))
                    .await
            }
            None => self.single.run(args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `lvm` that speaks the shell protocol: one JSON
    /// document per line on descriptor 3, with misbehaviour on request.
    /// With arguments it is a single command, and says so.
    const FAKE: &str = r#"#!/bin/sh
if [ $# -gt 0 ]; then echo "single: $*"; exit 0; fi
pids=$(dirname "$0")
ok='{"log":[{"log_type":"status","log_context":"shell","log_ret_code":"1"}]}'
while read -r line; do
  case "$line" in
    *hang*) echo $$ > "$pids/hung"; sleep 30 & echo $! > "$pids/child"; wait ;;
    *die*) echo "dying" >&2; exit 1 ;;
    *garbage*) echo 'lvm> ' >&3 ;;
    *lastlog*) printf '%s\n' '{"log":[{"log_type":"error","log_context":"processing","log_message":"Volume group \"x\" not found","log_ret_code":"0"},{"log_type":"print","log_message":"said","log_ret_code":"0"},{"log_type":"status","log_context":"shell","log_ret_code":"1"}]}' >&3 ;;
    *fail*) echo "warning on stderr" >&2; printf '%s\n' '{"log":[{"log_type":"status","log_context":"shell","log_ret_code":"5"}]}' >&3 ;;
    *report*) printf '{"report":[{"lv":[{"lv_name":"a}b"}]}],\n' >&3; sleep 0.1; printf '"log":[{"log_type":"status","log_context":"shell","log_ret_code":"1"}]}\n' >&3 ;;
    *) printf '%s\n' "$ok" >&3 ;;
  esac
done
"#;

    struct Fake {
        dir: tempfile::TempDir,
        lvm: ShellLvm,
    }

    fn fake(timeout: Duration) -> Fake {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lvm");
        std::fs::write(&path, FAKE).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lvm = ShellLvm::new(path.display().to_string(), timeout, 1);
        Fake { dir, lvm }
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    impl ShellLvm {
        fn idle_pids(&self) -> Vec<Option<u32>> {
            self.idle.lock().unwrap().iter().map(|s| s.pid()).collect()
        }
    }

    fn alive(pid: i32) -> bool {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() && !zombie
    }

    #[tokio::test]
    async fn a_report_is_stdout_and_one_shell_serves_many_commands() {
        let f = fake(Duration::from_secs(5));
        let out = f.lvm.run(v(&["lvs", "report"])).await.unwrap();
        assert_eq!(out.code, Some(0));
        assert!(out.stdout.contains("\"a}b\""), "{}", out.stdout);
        let pid = f.lvm.idle_pids();
        for _ in 0..5 {
            assert!(f.lvm.run(v(&["lvcreate", "x"])).await.unwrap().success());
        }
        assert_eq!(f.lvm.idle_pids(), pid, "the same shell ran every command");
    }

    #[tokio::test]
    async fn a_failure_carries_lvms_messages_and_exit_code() {
        let f = fake(Duration::from_secs(5));
        let out = f.lvm.run(v(&["lvcreate", "fail"])).await.unwrap();
        assert_eq!(out.code, Some(5));
        assert!(
            out.stderr.contains("Volume group \"x\" not found"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("warning on stderr"), "{}", out.stderr);
        assert_eq!(out.stdout, "  said\n");
        // And the error classifies as the same message from a process would.
        let e = LvmError::from_exit("lvcreate".into(), out.code, &out.stderr);
        assert_eq!(e.kind, LvmErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_shells_process_group_and_the_next_command_gets_a_new_shell() {
        let f = fake(Duration::from_millis(500));
        f.lvm.run(v(&["version"])).await.unwrap();
        let first = f.lvm.idle_pids();
        let e = f.lvm.run(v(&["lvcreate", "hang"])).await.unwrap_err();
        assert_eq!(e.kind, LvmErrorKind::Timeout, "{e}");
        assert!(e.detail.contains("killed (process group)"), "{e}");
        for file in ["hung", "child"] {
            let pid: i32 = std::fs::read_to_string(f.dir.path().join(file))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!alive(pid), "{file} process {pid} survived the timeout");
        }
        assert!(f.lvm.idle_pids().is_empty());
        assert!(f.lvm.run(v(&["version"])).await.unwrap().success());
        assert_ne!(f.lvm.idle_pids(), first, "a new shell");
    }

    #[tokio::test]
    async fn a_shell_that_ends_or_breaks_the_protocol_is_replaced() {
        let f = fake(Duration::from_secs(5));
        let e = f.lvm.run(v(&["lvs", "die"])).await.unwrap_err();
        assert_eq!(e.kind, LvmErrorKind::Spawn, "{e}");
        assert!(
            e.detail.contains("ended before answering") && e.detail.contains("dying"),
            "{e}"
        );
        assert!(f.lvm.run(v(&["version"])).await.unwrap().success());
        let e = f.lvm.run(v(&["lvs", "garbage"])).await.unwrap_err();
        assert!(e.detail.contains("broke its protocol"), "{e}");
        assert!(f.lvm.idle_pids().is_empty());
        assert!(f.lvm.run(v(&["version"])).await.unwrap().success());
    }

    #[tokio::test]
    async fn an_idle_shell_that_was_killed_is_replaced_before_a_command_is_lost() {
        let f = fake(Duration::from_secs(5));
        f.lvm.run(v(&["version"])).await.unwrap();
        let pid = f.lvm.idle_pids()[0].unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(f.lvm.run(v(&["lvcreate", "x"])).await.unwrap().success());
        assert_ne!(f.lvm.idle_pids()[0], Some(pid as u32));
    }

    #[tokio::test]
    async fn what_no_line_can_carry_runs_as_its_own_process() {
        let f = fake(Duration::from_secs(5));
        let out = f.lvm.run(v(&["lvs", "a'b\"c"])).await.unwrap();
        assert_eq!(out.stdout, "single: lvs a'b\"c\n");
        assert!(f.lvm.idle_pids().is_empty(), "no shell was started");
    }

    #[tokio::test]
    async fn check_refuses_a_shell_that_is_not_lvm() {
        let f = fake(Duration::from_secs(5));
        let e = f.lvm.check().await.unwrap_err();
        assert_eq!(e.kind, LvmErrorKind::Spawn, "{e}");
    }
}

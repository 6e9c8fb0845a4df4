//! One running `lvm shell`: commands in on stdin, one JSON document per
//! command out on a pipe lvm knows as `LVM_REPORT_FD` (lvmdbusd's protocol,
//! with lvm2's own `lvmdbusd` command profile). The process leads its own
//! process group, so a command that overruns its timeout is ended with the
//! shell and everything it started, as a process of its own would be.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};

use super::doc::{self, DocEnd};
use crate::host::exec::Finished;

/// The descriptor number lvm writes its documents to.
const REPORT_FD: i32 = 3;

/// Why a shell cannot be used any more. The shell is then killed and a new
/// one started for the next command.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("could not start the lvm shell: {0}")]
    Spawn(std::io::Error),
    #[error("the lvm shell did not answer within {0:?} and was killed (process group)")]
    Timeout(Duration),
    #[error("the lvm shell ended before answering ({how}){}", stderr_note(.stderr))]
    Ended { how: String, stderr: String },
    #[error("the lvm shell broke its protocol: {what}{}", stderr_note(.stderr))]
    Protocol { what: String, stderr: String },
    #[error("talking to the lvm shell: {0}")]
    Io(std::io::Error),
}

fn stderr_note(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {s})")
    }
}

pub struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    report: pipe::Receiver,
}

impl Shell {
    /// Starts `program` as an lvm shell. `env` is added to the environment
    /// (as for a single command: `LC_ALL=C` and what the runner adds).
    pub fn spawn(program: &str, env: &[(&str, &str)]) -> Result<Shell, ShellError> {
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ShellError::Spawn(e.into()))?;
        let w = report_w.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.env("LC_ALL", "C")
            .envs(env.iter().copied())
            // lvm2's own profile for this protocol: every report and the
            // command log as JSON, and a status row per command.
            .env("LVM_COMMAND_PROFILE", "lvmdbusd")
            .env("LVM_REPORT_FD", REPORT_FD.to_string())
            // The shell writes its history to $HOME after every command: a
            // file write carve does not want, on a host path it does not own.
            .env("HOME", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        crate::host::ffi::pass_fd_as(&mut cmd, w, REPORT_FD);
        let mut child = cmd.spawn().map_err(ShellError::Spawn)?;
        drop(report_w);
        let stdin = child.stdin.take().expect("stdin piped");
        let stdout = receiver(
            child
                .stdout
                .take()
                .expect("stdout piped")
                .into_owned_fd()
                .map_err(ShellError::Spawn)?,
        )?;
        let stderr = receiver(
            child
                .stderr
                .take()
                .expect("stderr piped")
                .into_owned_fd()
                .map_err(ShellError::Spawn)?,
        )?;
        let report = receiver(report_r)?;
        Ok(Shell {
            child,
            stdin,
            stdout,
            stderr,
            report,
        })
    }

    /// Runs one command line and returns what the same command would have
    /// left as a process: its exit code, its report (or printed lines) as
    /// stdout, and its errors and warnings as stderr.
    pub async fn run(&mut self, line: &str) -> Result<Finished, ShellError> {
        let first = self.exchange(line).await?;
        let status = doc::status(&first.doc).map_err(|e| ShellError::Protocol {
            what: e.0,
            stderr: first.stderr.clone(),
        })?;
        if status.has_report && status.code == 0 {
            return Ok(Finished {
                code: Some(0),
                stdout: first.doc,
                stderr: first.stderr,
            });
        }
        // The command's own messages are kept in the shell's log; `lastlog`
        // shows them all (the profile shows only the status row).
        let log = self.exchange("lastlog").await?;
        let (printed, errors) = doc::messages(&log.doc).map_err(|e| ShellError::Protocol {
            what: e.0,
            stderr: log.stderr.clone(),
        })?;
        let stdout = if status.has_report {
            first.doc
        } else {
            printed + &first.stdout
        };
        Ok(Finished {
            code: Some(status.code),
            stdout,
            stderr: errors + &first.stderr + &log.stderr,
        })
    }

    /// Sends one line and reads until its document is complete; stdout and
    /// stderr are read meanwhile (lvm would block on a full pipe) and drained
    /// after, since lvm wrote them before the document's end.
    async fn exchange(&mut self, line: &str) -> Result<Exchange, ShellError> {
        let mut input = line.as_bytes().to_vec();
        input.push(b'\n');
        if let Err(e) = self.stdin.write_all(&input).await {
            let stderr = self.drain_stderr();
            return Err(if e.kind() == std::io::ErrorKind::BrokenPipe {
                let how = self.how_it_ended().await;
                ShellError::Ended { how, stderr }
            } else {
                ShellError::Io(e)
            });
        }
        let (mut doc, mut out, mut err) = (Vec::new(), Vec::new(), Vec::new());
        let mut end = DocEnd::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut buf_out = vec![0u8; 4096];
        let mut buf_err = vec![0u8; 4096];
        // A closed stdout or stderr is not an answer: only the report pipe's
        // end says the shell is gone. Closed ones are no longer polled.
        let (mut out_open, mut err_open) = (true, true);
        let at = loop {
            tokio::select! {
                n = self.report.read(&mut buf) => {
                    let n = n.map_err(ShellError::Io)?;
                    if n == 0 {
                        err.extend(self.drain_stderr().into_bytes());
                        let how = self.how_it_ended().await;
                        return Err(ShellError::Ended { how, stderr: String::from_utf8_lossy(&err).into_owned() });
                    }
                    doc.extend_from_slice(&buf[..n]);
                    match end.feed(&buf[..n]) {
                        Ok(Some(at)) => break at,
                        Ok(None) => {}
                        Err(e) => return Err(ShellError::Protocol { what: e.0, stderr: String::from_utf8_lossy(&err).into_owned() }),
                    }
                }
                n = self.stdout.read(&mut buf_out), if out_open => {
                    let n = n.map_err(ShellError::Io)?;
                    out_open = n > 0;
                    out.extend_from_slice(&buf_out[..n]);
                }
                n = self.stderr.read(&mut buf_err), if err_open => {
                    let n = n.map_err(ShellError::Io)?;
                    err_open = n > 0;
                    err.extend_from_slice(&buf_err[..n]);
                }
            }
        };
        // Only white space may follow a document before the next command.
        if doc[at..].iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(ShellError::Protocol {
                what: "bytes after the end of a document".into(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
            });
        }
        doc.truncate(at);
        drain(&self.stdout, &mut out);
        drain(&self.stderr, &mut err);
        Ok(Exchange {
            doc: String::from_utf8_lossy(&doc).into_owned(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }

    /// The exit status of a shell whose report pipe closed, for the error.
    async fn how_it_ended(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => "still running, its report pipe closed".into(),
        }
    }

    fn drain_stderr(&self) -> String {
        let mut err = Vec::new();
        drain(&self.stderr, &mut err);
        String::from_utf8_lossy(&err).into_owned()
    }

    /// Kills the shell's whole process group (the shell and whatever it
    /// started) and reaps it.
    pub async fn kill(mut self) {
        if let Some(pid) = self.child.id() {
            crate::host::exec::kill_group(pid);
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Whether the shell has ended while idle (killed by someone, say): it is
    /// then replaced before a command is sent, so no command is lost to it.
    pub fn has_ended(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The shell's process id (tests look for it after a kill).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

struct Exchange {
    doc: String,
    stdout: String,
    stderr: String,
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver, ShellError> {
    pipe::Receiver::from_owned_fd(fd).map_err(ShellError::Spawn)
}

/// Reads what is in the pipe now, without waiting.
fn drain(rx: &pipe::Receiver, into: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = rx.try_read(&mut buf) {
        if n == 0 {
            break;
        }
        into.extend_from_slice(&buf[..n]);
    }
}

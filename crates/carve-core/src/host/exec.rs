//! Running external programs: a program plus an argument vector (never a shell),
//! `LC_ALL=C` so messages can be classified, a timeout that kills the whole process
//! group, and stderr kept for the error. Every external command carve runs goes
//! through [`run`].

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command produced no exit status at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?} and was killed (process group)")]
    Timeout { program: String, timeout: Duration },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Renders a command line for logs and error messages. Quoting is only for
/// humans reading it: the command itself never passes through a shell.
pub fn display(program: &str, args: &[String]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty()
            || a.chars()
                .any(|c| c.is_whitespace() || "'\"\\$`{}".contains(c))
        {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Runs `program args...` with `env` added, waits at most `timeout`, and returns
/// its exit code and output. The child leads its own process group so a timeout
/// kills it and anything it started (lvm may fork dmeventd helpers, mkfs may fork).
pub async fn run(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Finished, ExecError> {
    run_inner(program, args, env, timeout, None).await
}

/// [`run`] with `input` written to the program's stdin (then closed): how a
/// secret reaches a program without ever being in its argv or environment,
/// which other users of the node can read in /proc.
pub async fn run_with_input(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
    input: &[u8],
) -> Result<Finished, ExecError> {
    run_inner(program, args, env, timeout, Some(input)).await
}

async fn run_inner(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
    input: Option<&[u8]>,
) -> Result<Finished, ExecError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let pid = child.id();
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let stdin = child.stdin.take();
    let work = async {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let feed = async {
            if let (Some(mut pipe), Some(bytes)) = (stdin, input) {
                use tokio::io::AsyncWriteExt;
                // A program that exits without reading all of it only
                // closes the pipe early; its exit status tells what happened.
                let _ = pipe.write_all(bytes).await;
                let _ = pipe.shutdown().await;
            }
        };
        let (r1, r2, status, ()) = tokio::join!(
            out.read_to_end(&mut stdout),
            err.read_to_end(&mut stderr),
            child.wait(),
            feed
        );
        // A read error on a pipe only loses output; the exit status still decides.
        let _ = (r1, r2);
        status.map(|s| (s, stdout, stderr))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok((status, stdout, stderr))) => Ok(Finished {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
        Ok(Err(source)) => Err(ExecError::Wait {
            program: program.to_string(),
            source,
        }),
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            Err(ExecError::Timeout {
                program: program.to_string(),
                timeout,
            })
        }
    }
}

/// Kills the process group `pid` leads (children carve starts lead their
/// own, `process_group(0)`): the whole group goes, helpers lvm or mkfs
/// forked included.
pub fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Looks `program` up on PATH the way execvp would; used to check required
/// binaries at start-up rather than failing on the first request.
pub fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test]
    async fn captures_exit_code_stdout_and_stderr() {
        let f = run(
            "sh",
            &s(&["-c", "echo out; echo err >&2; exit 3"]),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(f.code, Some(3));
        assert_eq!(f.stdout, "out\n");
        assert_eq!(f.stderr, "err\n");
    }

    #[tokio::test]
    async fn sets_c_locale() {
        let f = run(
            "sh",
            &s(&["-c", "echo $LC_ALL"]),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(f.stdout.trim(), "C");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        // The grandchild records its pid, then sleeps; it must die with the group.
        let script = format!("sh -c 'echo $$ > {}; sleep 30' & wait", marker.display());
        let err = run("sh", &s(&["-c", &script]), &[], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Signal 0 only probes for existence; a zombie awaits its reaper.
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive || zombie, "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run("/nonexistent/carve-x", &[], &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }

    #[test]
    fn display_quotes_only_for_humans() {
        assert_eq!(
            display("lvs", &s(&["-o", "a b", "x'y"])),
            "lvs -o 'a b' 'x'\\''y'"
        );
    }
}

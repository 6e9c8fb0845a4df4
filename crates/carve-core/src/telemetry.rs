//! Counters and timings of the external commands carve runs (lvm, and the
//! node's filesystem tools), kept from the first command on whether or not
//! metrics are served: counting costs a few atomic adds, and a metrics
//! endpoint turned on later still sees every command since start.
//!
//! They are process-wide ([`commands`]) because commands are run from deep
//! inside the LVM and host layers, which have no handle on a registry; the
//! server registers them once ([`Commands::register`]).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label: which lvm subcommand, or which tool.
type Label = [(&'static str, String); 1];

/// Upper bounds (seconds) of command run-time buckets: lvm commands take tens
/// of milliseconds to seconds; mkfs of a large volume, minutes.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug, Clone)]
pub struct Commands {
    lvm_runs: Family<Label, Counter>,
    lvm_failures: Family<Label, Counter>,
    lvm_timeouts: Family<Label, Counter>,
    lvm_seconds: Family<Label, Histogram, fn() -> Histogram>,
    tool_runs: Family<Label, Counter>,
    tool_failures: Family<Label, Counter>,
    tool_seconds: Family<Label, Histogram, fn() -> Histogram>,
}

/// How a command ended, as far as the counters care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Ok,
    Failed,
    TimedOut,
}

/// The process's command counters.
pub fn commands() -> &'static Commands {
    static COMMANDS: OnceLock<Commands> = OnceLock::new();
    COMMANDS.get_or_init(|| Commands {
        lvm_runs: Family::default(),
        lvm_failures: Family::default(),
        lvm_timeouts: Family::default(),
        lvm_seconds: Family::new_with_constructor(histogram),
        tool_runs: Family::default(),
        tool_failures: Family::default(),
        tool_seconds: Family::new_with_constructor(histogram),
    })
}

/// The lvm subcommand of an argv (`lvcreate`, `fullreport`…): its first word.
/// carve builds every argv itself, so the set of values is small and fixed.
pub fn lvm_subcommand(args: &[String]) -> String {
    args.first().cloned().unwrap_or_default()
}

/// A tool's label: the program's file name (`/sbin/mkfs.ext4` → `mkfs.ext4`).
pub fn tool_name(program: &str) -> String {
    program.rsplit('/').next().unwrap_or(program).to_string()
}

// The failure and timeout series of a command exist, at 0, from its first
// run: `rate()` and `increase()` see the first failure as a change from 0
// rather than as a series appearing, which they cannot measure.
impl Commands {
    pub fn lvm(&self, subcommand: String, took: Duration, ended: Ended) {
        let l = [("command", subcommand)];
        self.lvm_runs.get_or_create(&l).inc();
        self.lvm_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        let failures = self.lvm_failures.get_or_create(&l);
        if ended != Ended::Ok {
            failures.inc();
        }
        let timeouts = self.lvm_timeouts.get_or_create(&l);
        if ended == Ended::TimedOut {
            timeouts.inc();
        }
    }

    pub fn tool(&self, program: &str, took: Duration, ok: bool) {
        let l = [("program", tool_name(program))];
        self.tool_runs.get_or_create(&l).inc();
        self.tool_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        let failures = self.tool_failures.get_or_create(&l);
        if !ok {
            failures.inc();
        }
    }

    /// lvm commands of `subcommand` run so far (tests compare before/after).
    pub fn lvm_runs(&self, subcommand: &str) -> u64 {
        self.lvm_runs
            .get(&[("command", subcommand.to_string())])
            .map(|c| c.get())
            .unwrap_or(0)
    }

    pub fn register(&self, r: &mut Registry) {
        // Counters: the encoder adds `_total`.
        r.register(
            "carve_lvm_commands",
            "lvm commands run, by subcommand",
            self.lvm_runs.clone(),
        );
        r.register(
            "carve_lvm_command_failures",
            "lvm commands that failed: non-zero exit, no start, or timeout",
            self.lvm_failures.clone(),
        );
        r.register(
            "carve_lvm_command_timeouts",
            "lvm commands killed (with their process group) at lvm_timeout_seconds",
            self.lvm_timeouts.clone(),
        );
        r.register(
            "carve_lvm_command_duration_seconds",
            "run time of lvm commands",
            self.lvm_seconds.clone(),
        );
        r.register(
            "carve_tool_commands",
            "node tools (mkfs, fsck, filesystem grow, blkid…) run, by program",
            self.tool_runs.clone(),
        );
        r.register(
            "carve_tool_command_failures",
            "node tools that failed or timed out",
            self.tool_failures.clone(),
        );
        r.register(
            "carve_tool_command_duration_seconds",
            "run time of node tools",
            self.tool_seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_subcommand_and_the_file_name() {
        assert_eq!(
            lvm_subcommand(&["lvcreate".into(), "-n".into()]),
            "lvcreate"
        );
        assert_eq!(tool_name("/sbin/mkfs.ext4"), "mkfs.ext4");
        assert_eq!(tool_name("blkid"), "blkid");
    }

    #[test]
    fn a_timeout_counts_as_a_failure_too() {
        let c = commands();
        let before = c.lvm_runs("test-timeout");
        c.lvm(
            "test-timeout".into(),
            Duration::from_secs(1),
            Ended::TimedOut,
        );
        assert_eq!(c.lvm_runs("test-timeout"), before + 1);
        let l = [("command", "test-timeout".to_string())];
        assert!(c.lvm_failures.get(&l).unwrap().get() >= 1);
        assert!(c.lvm_timeouts.get(&l).unwrap().get() >= 1);
    }

    #[test]
    fn failure_series_exist_at_zero_from_the_first_run() {
        let c = commands();
        c.lvm("test-ok".into(), Duration::from_millis(3), Ended::Ok);
        c.tool("/sbin/test-tool", Duration::from_millis(3), true);
        let l = [("command", "test-ok".to_string())];
        assert_eq!(c.lvm_failures.get(&l).map(|f| f.get()), Some(0));
        assert_eq!(c.lvm_timeouts.get(&l).map(|f| f.get()), Some(0));
        let t = [("program", "test-tool".to_string())];
        assert_eq!(c.tool_failures.get(&t).map(|f| f.get()), Some(0));
    }
}

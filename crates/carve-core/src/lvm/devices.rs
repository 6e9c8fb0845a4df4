//! Which block devices carve's lvm commands may open. Without a limit every
//! lvm command scans every block device on the node for labels: guest disks
//! of virtual machines, multipath legs, Ceph OSDs, a dying disk whose reads
//! hang. carve finds the PVs of its configured VGs once (one `pvs`, at
//! start-up) and then runs every command with `--devices` naming them alone.
//! It looks again, at most every [`RESCAN_EVERY`], only while a configured
//! VG is missing from the list or one of its PVs is missing (a disk attached
//! late, a VG extended by the operator), so such changes are still found
//! without a restart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::report::LvmState;

/// The least time between two full scans while something is missing.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// `pvs` arguments that list every PV with its VG (a full scan).
pub fn pvs_args() -> Vec<String> {
    ["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"]
        .map(String::from)
        .to_vec()
}

/// The PVs of `vgs` in a `pvs` JSON report, and whether every one of `vgs`
/// has at least one.
pub fn pvs_of(json: &str, vgs: &[String]) -> Result<(Vec<String>, bool), String> {
    #[derive(Deserialize)]
    struct Report {
        report: Vec<Section>,
    }
    #[derive(Deserialize)]
    struct Section {
        #[serde(default)]
        pv: Vec<Pv>,
    }
    #[derive(Deserialize)]
    struct Pv {
        pv_name: String,
        vg_name: String,
    }
    let r: Report = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let pvs: Vec<Pv> = r.report.into_iter().flat_map(|s| s.pv).collect();
    let mut paths: Vec<String> = pvs
        .iter()
        .filter(|p| vgs.contains(&p.vg_name))
        .map(|p| p.pv_name.clone())
        .collect();
    paths.sort();
    paths.dedup();
    let complete = vgs.iter().all(|vg| pvs.iter().any(|p| &p.vg_name == vg));
    Ok((paths, complete))
}

struct Limit {
    vgs: Vec<String>,
    paths: Vec<String>,
    complete: bool,
    found: Instant,
}

/// The current limit, if carve set one.
#[derive(Default)]
pub(super) struct Devices(Mutex<Option<Limit>>);

impl Devices {
    pub(super) fn set(&self, vgs: Vec<String>, paths: Vec<String>, complete: bool) {
        *self.0.lock().expect("devices lock") = Some(Limit {
            vgs,
            paths,
            complete,
            found: Instant::now(),
        });
    }

    /// The configured VGs, when a limit is set.
    pub(super) fn vgs(&self) -> Option<Vec<String>> {
        self.0
            .lock()
            .expect("devices lock")
            .as_ref()
            .map(|l| l.vgs.clone())
    }

    /// `args` with `--devices` added after the command name, when a limit
    /// with at least one device is set (`lvm version` takes no such option).
    pub(super) fn apply(&self, mut args: Vec<String>) -> Vec<String> {
        let guard = self.0.lock().expect("devices lock");
        let Some(limit) = guard.as_ref().filter(|l| !l.paths.is_empty()) else {
            return args;
        };
        if args.first().is_some_and(|c| c != "version") {
            args.splice(1..1, ["--devices".to_string(), limit.paths.join(",")]);
        }
        args
    }

    /// Whether to scan again: a limit is set, the last scan is old enough,
    /// and a configured VG or one of its PVs is missing from `state`.
    pub(super) fn stale(&self, state: &LvmState) -> bool {
        let guard = self.0.lock().expect("devices lock");
        let Some(l) = guard.as_ref() else {
            return false;
        };
        let missing = !l.complete
            || l.vgs
                .iter()
                .any(|vg| state.vgs.get(vg).is_none_or(|g| g.missing_pv_count > 0));
        missing && l.found.elapsed() >= RESCAN_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PVS: &str = r#"{"report":[{"pv":[
        {"pv_name":"/dev/loop0","vg_name":"carve-thick"},
        {"pv_name":"/dev/loop2","vg_name":"carve-raid"},
        {"pv_name":"/dev/loop3","vg_name":"carve-raid"},
        {"pv_name":"/dev/sdz","vg_name":"ceph-osd"},
        {"pv_name":"/dev/sdy","vg_name":""}
    ]}]}"#;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn only_the_pvs_of_configured_vgs() {
        let (paths, complete) = pvs_of(PVS, &v(&["carve-thick", "carve-raid"])).unwrap();
        assert_eq!(paths, v(&["/dev/loop0", "/dev/loop2", "/dev/loop3"]));
        assert!(complete);
        let (paths, complete) = pvs_of(PVS, &v(&["carve-thick", "carve-late"])).unwrap();
        assert_eq!(paths, v(&["/dev/loop0"]));
        assert!(!complete, "carve-late has no PV yet");
        assert!(pvs_of("not json", &v(&["x"])).is_err());
    }

    #[test]
    fn devices_go_after_the_command_name() {
        let d = Devices::default();
        let args = v(&["lvcreate", "-n", "x"]);
        assert_eq!(d.apply(args.clone()), args, "no limit set");
        d.set(v(&["vg"]), v(&["/dev/a", "/dev/b"]), true);
        assert_eq!(
            d.apply(args),
            v(&["lvcreate", "--devices", "/dev/a,/dev/b", "-n", "x"])
        );
        assert_eq!(d.apply(v(&["version"])), v(&["version"]));
        d.set(v(&["vg"]), vec![], false);
        assert_eq!(d.apply(v(&["lvs"])), v(&["lvs"]), "nothing found: no limit");
    }
}

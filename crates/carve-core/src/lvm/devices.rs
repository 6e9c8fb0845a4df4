//! Which block devices carve's lvm commands may open. Without a limit every
//! lvm command scans every block device on the node for labels: guest disks
//! of virtual machines, multipath legs, Ceph OSDs, a dying disk whose reads
//! hang. carve finds the PVs of its configured VGs once (one `pvs`, at
//! start-up) and then runs every command with `--devices` naming them alone:
//! a command on one VG names that VG's PVs only, so a PV of another carve VG
//! that hangs or fails stalls only the commands that must read it (reports
//! of every VG, and that VG's own).
//! It looks again, at most every [`RESCAN_EVERY`], only while a configured
//! VG is missing from the list or one of its PVs is missing (a disk attached
//! late, a VG extended by the operator), so such changes are still found
//! without a restart.

use std::collections::BTreeMap;
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

/// The PVs of each of `vgs` in a `pvs` JSON report, and whether every one of
/// `vgs` has at least one.
pub fn pvs_of(json: &str, vgs: &[String]) -> Result<(BTreeMap<String, Vec<String>>, bool), String> {
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
    let mut by_vg: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pvs.iter().filter(|p| vgs.contains(&p.vg_name)) {
        by_vg
            .entry(p.vg_name.clone())
            .or_default()
            .push(p.pv_name.clone());
    }
    for paths in by_vg.values_mut() {
        paths.sort();
        paths.dedup();
    }
    let complete = vgs.iter().all(|vg| by_vg.contains_key(vg));
    Ok((by_vg, complete))
}

struct Limit {
    vgs: Vec<String>,
    /// Every PV of the configured VGs, sorted.
    paths: Vec<String>,
    by_vg: BTreeMap<String, Vec<String>>,
    complete: bool,
    found: Instant,
}

/// The current limit, if carve set one.
#[derive(Default)]
pub(super) struct Devices(Mutex<Option<Limit>>);

impl Devices {
    pub(super) fn set(
        &self,
        vgs: Vec<String>,
        by_vg: BTreeMap<String, Vec<String>>,
        complete: bool,
    ) {
        let mut paths: Vec<String> = by_vg.values().flatten().cloned().collect();
        paths.sort();
        paths.dedup();
        *self.0.lock().expect("devices lock") = Some(Limit {
            vgs,
            paths,
            by_vg,
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

    /// Every PV of the configured VGs, for the log.
    pub(super) fn paths(&self) -> Vec<String> {
        let guard = self.0.lock().expect("devices lock");
        guard.as_ref().map(|l| l.paths.clone()).unwrap_or_default()
    }

    /// `args` with `--devices` added after the command name, when a limit
    /// with at least one device is set (`lvm version` takes no such option):
    /// the PVs of `vg` when the command is about that VG alone and its PVs
    /// are known, else all of them.
    pub(super) fn apply(&self, mut args: Vec<String>, vg: Option<&str>) -> Vec<String> {
        let guard = self.0.lock().expect("devices lock");
        let Some(limit) = guard.as_ref().filter(|l| !l.paths.is_empty()) else {
            return args;
        };
        let paths = vg
            .and_then(|vg| limit.by_vg.get(vg))
            .filter(|p| !p.is_empty())
            .unwrap_or(&limit.paths);
        if args.first().is_some_and(|c| c != "version") {
            args.splice(1..1, ["--devices".to_string(), paths.join(",")]);
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
        let (by_vg, complete) = pvs_of(PVS, &v(&["carve-thick", "carve-raid"])).unwrap();
        assert_eq!(by_vg["carve-thick"], v(&["/dev/loop0"]));
        assert_eq!(by_vg["carve-raid"], v(&["/dev/loop2", "/dev/loop3"]));
        assert_eq!(by_vg.len(), 2);
        assert!(complete);
        let (by_vg, complete) = pvs_of(PVS, &v(&["carve-thick", "carve-late"])).unwrap();
        assert_eq!(by_vg.keys().collect::<Vec<_>>(), ["carve-thick"]);
        assert!(!complete, "carve-late has no PV yet");
        assert!(pvs_of("not json", &v(&["x"])).is_err());
    }

    #[test]
    fn devices_go_after_the_command_name() {
        let d = Devices::default();
        let args = v(&["lvcreate", "-n", "x"]);
        assert_eq!(d.apply(args.clone(), None), args, "no limit set");
        let by_vg = BTreeMap::from([
            ("vg".to_string(), v(&["/dev/b", "/dev/a"])),
            ("other".to_string(), v(&["/dev/c"])),
        ]);
        d.set(v(&["vg", "other"]), by_vg, true);
        assert_eq!(
            d.apply(args.clone(), None),
            v(&["lvcreate", "--devices", "/dev/a,/dev/b,/dev/c", "-n", "x"])
        );
        assert_eq!(
            d.apply(args.clone(), Some("other")),
            v(&["lvcreate", "--devices", "/dev/c", "-n", "x"]),
            "a command on one VG opens that VG's PVs only"
        );
        assert_eq!(
            d.apply(args, Some("late")),
            v(&["lvcreate", "--devices", "/dev/a,/dev/b,/dev/c", "-n", "x"]),
            "a VG whose PVs are not known yet: all of them"
        );
        assert_eq!(d.apply(v(&["version"]), None), v(&["version"]));
        d.set(v(&["vg"]), BTreeMap::new(), false);
        assert_eq!(
            d.apply(v(&["lvs"]), None),
            v(&["lvs"]),
            "nothing found: no limit"
        );
    }
}

//! An in-memory LVM for unit tests: it answers carve's `fullreport` from a
//! model that starts as a report captured from real lvm2 (the fixture) and
//! applies carve's writes (lvcreate, lvremove, lvextend, lvchange) to it, with
//! lvm2's own messages for the failures carve classifies. Gates let a test hold
//! a command at a chosen instant to force an interleaving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{LvmError, LvmRunner};
use crate::host::exec::Finished;

pub const FIXTURE: &str = include_str!("../../fixtures/fullreport.json");

/// Holds one command: `reached` fires when it arrives, and it answers after
/// `release`. With `act_first` the command does its work (takes the report,
/// applies the write) before it is held; otherwise once released.
pub struct Gate {
    pub reached: Notify,
    pub release: Notify,
    act_first: bool,
}

#[derive(Default)]
pub struct FakeLvm {
    model: Mutex<Option<Value>>,
    calls: Mutex<Vec<Vec<String>>>,
    /// Command name -> stderr of a scripted failure (exit status 5).
    pub fail: Mutex<HashMap<String, String>>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

fn ok(stdout: impl Into<String>) -> Finished {
    Finished {
        code: Some(0),
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

fn failed(stderr: impl Into<String>) -> Finished {
    Finished {
        code: Some(5),
        stdout: String::new(),
        stderr: stderr.into(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Size, lv_attr, pool and origin of the LV an lvcreate argv describes: a
/// classic snapshot (its size is its copy-on-write space), a thin snapshot, a
/// thin volume, or a linear/RAID volume. `None` when the origin is missing.
fn lv_shape(
    args: &[String],
    origin: Option<&Value>,
    sub: Option<&str>,
) -> Option<(u64, String, String, String)> {
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    let name_of = |o: &Value, field: &str| o[field].as_str().unwrap().to_string();
    Some(match (origin, arg("--size")) {
        (Some(o), Some(cow)) => (
            bytes_arg(&cow),
            "swi-a-s---".to_string(),
            String::new(),
            name_of(o, "lv_name"),
        ),
        (Some(o), None) => {
            let attr = if args.iter().any(|a| a == "--setactivationskip") {
                "Vwi-a-tz--"
            } else {
                "Vwi---tz-k"
            };
            (
                num(&o["lv_size"]),
                attr.to_string(),
                name_of(o, "pool_lv"),
                name_of(o, "lv_name"),
            )
        }
        (None, _) if arg("--virtualsize").is_some() => (
            bytes_arg(&arg("--virtualsize").unwrap()),
            "Vwi-a-tz--".to_string(),
            sub.unwrap_or_default().to_string(),
            String::new(),
        ),
        (None, Some(size)) => {
            let attr = if arg("--type").is_some() {
                "rwi-a-r---"
            } else {
                "-wi-a-----"
            };
            (
                bytes_arg(&size),
                attr.to_string(),
                String::new(),
                String::new(),
            )
        }
        (None, None) => return None,
    })
}

fn bytes_arg(v: &str) -> u64 {
    v.trim_end_matches('b')
        .parse()
        .expect("carve passes sizes in bytes")
}

impl FakeLvm {
    pub fn new() -> Arc<FakeLvm> {
        let f = FakeLvm::default();
        *f.model.lock().unwrap() = Some(serde_json::from_str(FIXTURE).unwrap());
        Arc::new(f)
    }

    /// Every command run so far, each joined with spaces.
    pub fn commands(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.join(" "))
            .collect()
    }

    /// Commands other than reports.
    pub fn writes(&self) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| !c.starts_with("fullreport"))
            .collect()
    }

    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Holds the next `command` until the returned gate is released.
    pub fn gate(&self, command: &str, act_first: bool) -> Arc<Gate> {
        let g = Arc::new(Gate {
            reached: Notify::new(),
            release: Notify::new(),
            act_first,
        });
        self.gates
            .lock()
            .unwrap()
            .insert(command.to_string(), g.clone());
        g
    }

    /// Adds an LV to the model as someone else would (no carve tags unless
    /// given): thick, active, taking no VG space.
    pub fn add_lv(&self, vg: &str, name: &str, tags: &str) {
        self.with_vg(vg, |g| {
            g["lv"].as_array_mut().unwrap().push(json!({
                "lv_name": name, "vg_name": vg,
                "lv_size": "8388608", "lv_tags": tags, "lv_attr": "-wi-a-----",
                "pool_lv": "", "origin": "", "data_percent": "", "metadata_percent": "",
                "lv_health_status": "", "lv_time": "1795428000",
            }))
        })
        .expect("VG in the model");
    }

    /// Takes `vg` out of the model (its disk detached, or failing every
    /// read); [`FakeLvm::put_vg`] brings it back.
    pub fn take_vg(&self, vg: &str) -> Option<Value> {
        let mut m = self.model.lock().unwrap();
        let groups = m.as_mut()?["report"].as_array_mut()?;
        let i = groups.iter().position(|g| g["vg"][0]["vg_name"] == vg)?;
        Some(groups.remove(i))
    }

    pub fn put_vg(&self, group: Value) {
        let mut m = self.model.lock().unwrap();
        m.as_mut().unwrap()["report"]
            .as_array_mut()
            .unwrap()
            .push(group);
    }

    /// Whether the model holds `vg/name`.
    pub fn has_lv(&self, vg: &str, name: &str) -> bool {
        self.with_vg(vg, |g| {
            g["lv"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["lv_name"] == name)
        })
        .unwrap_or(false)
    }

    /// Runs `f` on the VG group and the LV list of `vg` in the model.
    fn with_vg<T>(&self, vg: &str, f: impl FnOnce(&mut Value) -> T) -> Option<T> {
        let mut m = self.model.lock().unwrap();
        let groups = m.as_mut()?["report"].as_array_mut()?;
        let g = groups.iter_mut().find(|g| g["vg"][0]["vg_name"] == vg)?;
        Some(f(g))
    }

    fn report(&self, vg: Option<&str>) -> Finished {
        let m = self.model.lock().unwrap().clone().unwrap();
        match vg {
            None => ok(m.to_string()),
            Some(vg) => {
                let groups: Vec<Value> = m["report"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|g| g["vg"][0]["vg_name"] == vg)
                    .cloned()
                    .collect();
                if groups.is_empty() {
                    return failed(format!(
                        "  Volume group \"{vg}\" not found\n  Cannot process volume group {vg}\n"
                    ));
                }
                ok(json!({ "report": groups }).to_string())
            }
        }
    }

    /// Moves `delta` bytes between the VG's (and its first PV's) free space.
    fn take_free(g: &mut Value, bytes: u64, give_back: bool) -> bool {
        let vg = &mut g["vg"][0];
        let extent = num(&vg["vg_extent_size"]).max(1);
        let free = num(&vg["vg_free"]);
        if !give_back && bytes > free {
            return false;
        }
        let new = if give_back {
            free + bytes
        } else {
            free - bytes
        };
        vg["vg_free"] = json!(new.to_string());
        vg["vg_free_count"] = json!((new / extent).to_string());
        let pv = &mut g["pv"][0];
        let pfree = num(&pv["pv_free"]);
        pv["pv_free"] = json!(if give_back {
            pfree + bytes
        } else {
            pfree.saturating_sub(bytes)
        }
        .to_string());
        true
    }

    /// VG bytes an LV entry occupies (0 for thin LVs, which live in their pool).
    fn footprint(lv: &Value, extent: u64) -> u64 {
        let attr = lv["lv_attr"].as_str().unwrap_or("");
        let size = num(&lv["lv_size"]);
        match attr.chars().next() {
            Some('V') => 0,
            Some('r') => {
                let copies: u64 = lv["carve_fake_copies"].as_u64().unwrap_or(2);
                (size + extent) * copies
            }
            _ => size,
        }
    }

    fn lvcreate(&self, args: &[String]) -> Finished {
        let arg = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
        };
        let tags: Vec<String> = args
            .windows(2)
            .filter(|w| w[0] == "--addtag")
            .map(|w| w[1].clone())
            .collect();
        let name = arg("--name").expect("lvcreate --name");
        let target = args.last().unwrap().clone();
        let (vg, sub) = match target.split_once('/') {
            Some((v, s)) => (v.to_string(), Some(s.to_string())),
            None => (target.clone(), None),
        };
        let snapshot = args.iter().any(|a| a == "--snapshot");
        let mirrors: u64 = arg("--mirrors").and_then(|m| m.parse().ok()).unwrap_or(0);
        let raid = arg("--type");
        let r = self.with_vg(&vg, |g| {
            let extent = num(&g["vg"][0]["vg_extent_size"]);
            let lvs = g["lv"].as_array().unwrap();
            if lvs.iter().any(|l| l["lv_name"] == name.as_str()) {
                return failed(format!(
                    "  Logical Volume \"{name}\" already exists in volume group \"{vg}\"\n"
                ));
            }
            let origin = sub.as_deref().and_then(|s| {
                lvs.iter()
                    .find(|l| l["lv_name"] == s && snapshot)
                    .cloned()
            });
            let shape = match lv_shape(args, origin.as_ref(), sub.as_deref()) {
                Some(shape) => shape,
                None => return failed(format!("  Failed to find logical volume \"{target}\"\n")),
            };
            let (size, attr, pool, origin_name) = shape;
            let mut lv = json!({
                "lv_name": name,
                "vg_name": vg,
                "lv_size": size.to_string(),
                "lv_tags": tags.join(","),
                "lv_attr": attr,
                "pool_lv": pool,
                "origin": origin_name,
                "data_percent": if pool.is_empty() { "" } else { "0.00" },
                "metadata_percent": "",
                "lv_health_status": "",
                "lv_time": "1795428000",
            });
            if raid.is_some() {
                lv["carve_fake_copies"] = json!(mirrors.max(1) + 1);
            }
            let cost = Self::footprint(&lv, extent);
            if !Self::take_free(g, cost, false) {
                return failed(format!(
                    "  Volume group \"{vg}\" has insufficient free space ({} extents): {} required.\n",
                    num(&g["vg"][0]["vg_free_count"]),
                    cost / extent.max(1)
                ));
            }
            g["lv"].as_array_mut().unwrap().push(lv);
            ok("")
        });
        r.unwrap_or_else(|| failed(format!("  Volume group \"{vg}\" not found\n")))
    }

    fn lvremove(&self, args: &[String]) -> Finished {
        let select = &args[args.iter().position(|a| a == "--select").unwrap() + 1];
        let owner = select
            .strip_prefix("lv_tags=")
            .and_then(|s| s.split(" && ").next())
            .unwrap()
            .to_string();
        let (vg, name) = args.last().unwrap().split_once('/').unwrap();
        let r = self.with_vg(vg, |g| {
            let extent = num(&g["vg"][0]["vg_extent_size"]);
            let lvs = g["lv"].as_array().unwrap();
            let Some(i) = lvs.iter().position(|l| l["lv_name"] == name) else {
                return failed(format!("  Failed to find logical volume \"{vg}/{name}\"\n"));
            };
            let lv = lvs[i].clone();
            let is_origin = lvs
                .iter()
                .any(|l| l["origin"] == name && l["lv_attr"].as_str().unwrap().starts_with('s'));
            let owned = lv["lv_tags"]
                .as_str()
                .unwrap()
                .split(',')
                .any(|t| t == owner);
            if !owned || is_origin {
                return ok("");
            }
            g["lv"].as_array_mut().unwrap().remove(i);
            Self::take_free(g, Self::footprint(&lv, extent), true);
            ok(format!(
                "  Logical volume \"{name}\" successfully removed.\n"
            ))
        });
        r.unwrap_or_else(|| failed(format!("  Volume group \"{vg}\" not found\n")))
    }

    /// lvextend and lvchange: change one LV in place.
    fn change(&self, args: &[String]) -> Finished {
        let (vg, name) = args.last().unwrap().split_once('/').unwrap();
        let r = self.with_vg(vg, |g| {
            let extent = num(&g["vg"][0]["vg_extent_size"]);
            let Some(i) = g["lv"]
                .as_array()
                .unwrap()
                .iter()
                .position(|l| l["lv_name"] == name)
            else {
                return failed(format!("  Failed to find logical volume \"{vg}/{name}\"\n"));
            };
            let mut lv = g["lv"][i].clone();
            let before = Self::footprint(&lv, extent);
            for w in args.windows(2) {
                match w[0].as_str() {
                    "--size" => lv["lv_size"] = json!(bytes_arg(&w[1]).to_string()),
                    "--deltag" => {
                        let tags: Vec<&str> = lv["lv_tags"]
                            .as_str()
                            .unwrap()
                            .split(',')
                            .filter(|t| *t != w[1] && !t.is_empty())
                            .collect();
                        lv["lv_tags"] = json!(tags.join(","));
                    }
                    "--activate" => {
                        let mut a: Vec<char> = lv["lv_attr"].as_str().unwrap().chars().collect();
                        a[4] = if w[1] == "y" { 'a' } else { '-' };
                        lv["lv_attr"] = json!(a.into_iter().collect::<String>());
                    }
                    _ => {}
                }
            }
            let after = Self::footprint(&lv, extent);
            if after > before && !Self::take_free(g, after - before, false) {
                return failed(format!(
                    "  Insufficient free space: {} extents needed\n",
                    (after - before) / extent.max(1)
                ));
            }
            if after < before {
                Self::take_free(g, before - after, true);
            }
            g["lv"][i] = lv;
            ok("")
        });
        r.unwrap_or_else(|| failed(format!("  Volume group \"{vg}\" not found\n")))
    }
}

#[async_trait::async_trait]
impl LvmRunner for FakeLvm {
    async fn run(&self, args: Vec<String>) -> Result<Finished, LvmError> {
        self.calls.lock().unwrap().push(args.clone());
        let cmd = args[0].clone();
        if let Some(stderr) = self.fail.lock().unwrap().get(&cmd) {
            return Ok(failed(stderr.clone()));
        }
        let gate = self.gates.lock().unwrap().remove(&cmd);
        // A report of one VG names it last; the full report ends in an option.
        let vg_arg = || {
            let last = args.last().unwrap();
            (!last.starts_with('-')).then(|| last.clone())
        };
        let run = |me: &FakeLvm| match cmd.as_str() {
            "fullreport" => me.report(vg_arg().as_deref()),
            "lvcreate" => me.lvcreate(&args),
            "lvremove" => me.lvremove(&args),
            "lvextend" | "lvchange" => me.change(&args),
            "version" => ok("  LVM version:     2.03.16(2) (2022-05-18)\n"),
            other => panic!("the fake LVM does not know `{other}`"),
        };
        let out = match gate {
            Some(g) if g.act_first => {
                let out = run(self);
                g.reached.notify_one();
                g.release.notified().await;
                out
            }
            Some(g) => {
                g.reached.notify_one();
                g.release.notified().await;
                run(self)
            }
            None => run(self),
        };
        Ok(out)
    }
}

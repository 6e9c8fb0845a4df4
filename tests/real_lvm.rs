//! carve's conformance tests against real LVM. They run only inside the
//! user-mode-linux test ground (`hack/test.sh` boots it, builds the VGs with
//! hack/uml/testbed.sh and runs this binary there); anywhere else they fail
//! loudly instead of skipping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carve_csi::csi::controller_client::ControllerClient;
use carve_csi::csi::identity_client::IdentityClient;
use carve_csi::csi::volume_capability::{access_mode::Mode, AccessMode};
use carve_csi::csi::{self};
use tonic::transport::Channel;
use tonic::Code;

#[path = "real_lvm/clients.rs"]
mod clients;
#[path = "real_lvm/controller.rs"]
mod controller;
#[path = "real_lvm/crash.rs"]
mod crash;
#[path = "real_lvm/crypt.rs"]
mod crypt;
#[path = "real_lvm/faults.rs"]
mod faults;
#[path = "real_lvm/hardening.rs"]
mod hardening;
#[path = "real_lvm/metrics.rs"]
mod metrics;
#[path = "real_lvm/node.rs"]
mod node;
#[path = "real_lvm/node_safety.rs"]
mod node_safety;
#[path = "real_lvm/provisioner.rs"]
mod provisioner;
#[path = "real_lvm/runner.rs"]
mod runner;
#[path = "real_lvm/snapshot.rs"]
mod snapshot;
#[path = "real_lvm/storm.rs"]
mod storm;

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;
const NODE: &str = "uml-node";

fn testbed_config() -> PathBuf {
    let p = std::env::var("CARVE_TESTBED_CONFIG").unwrap_or_else(|_| {
        panic!("CARVE_TESTBED_CONFIG is not set: these tests run only inside the UML test ground (hack/test.sh)")
    });
    PathBuf::from(p)
}

/// A VG on a loop device of its own, made by a test (a disk that arrives, a
/// foreign disk), removed with its device and image when dropped.
pub(crate) struct LoopVg {
    vg: String,
    device: String,
    image: String,
}

fn run_ok(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl LoopVg {
    pub(crate) fn new(vg: &str, size: &str) -> LoopVg {
        let image = format!("/tmp/{vg}.img");
        run_ok("truncate", &["-s", size, &image]);
        let device = run_ok("losetup", &["-f", "--show", &image]);
        lvm(&["vgcreate", "-q", vg, &device]);
        LoopVg {
            vg: vg.into(),
            device,
            image,
        }
    }
}

impl Drop for LoopVg {
    fn drop(&mut self) {
        let _ = Command::new("lvm")
            .args(["vgremove", "-q", "-f", &self.vg])
            .env("DM_DISABLE_UDEV", "1")
            .output();
        let _ = Command::new("losetup").args(["-d", &self.device]).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A carve process serving on its own socket, killed on drop.
struct Carve {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    /// Holds the socket and the log; removed once carve is gone.
    _dir: tempfile::TempDir,
}

/// How a test starts carve: node name and extra environment (crash points).
#[derive(Clone, Default)]
struct Opts {
    node: Option<String>,
    env: Vec<(String, String)>,
    /// More arguments of `carve serve`.
    args: Vec<String>,
}

impl Opts {
    /// Dies by SIGKILL at crash point `point` (see carve-core's crash.rs).
    fn crash_at(point: &str) -> Opts {
        Opts::default().and_crash_at(point)
    }
    fn and_crash_at(self, point: &str) -> Opts {
        self.and_env("CARVE_CRASH_POINT", point)
    }
    /// Every block copy chunk (4 MiB) takes at least `ms`: a copy is seen running.
    fn slow_copies(ms: u64) -> Opts {
        Opts::default().and_slow_copies(ms)
    }
    fn and_slow_copies(self, ms: u64) -> Opts {
        self.and_env("CARVE_TEST_COPY_CHUNK_DELAY_MS", ms)
    }
    /// tokio's blocking pool cut to `n` threads.
    fn blocking_threads(n: usize) -> Opts {
        Opts::default().and_blocking_threads(n)
    }
    fn and_blocking_threads(self, n: usize) -> Opts {
        self.and_env("CARVE_TEST_BLOCKING_THREADS", n)
    }
    /// One of carve-core's test-build knobs (crash.rs), set in carve's environment.
    fn and_env(mut self, key: &str, value: impl ToString) -> Opts {
        self.env.push((key.into(), value.to_string()));
        self
    }
    /// Metrics served on 127.0.0.1:`port`.
    fn metrics(port: u16) -> Opts {
        Opts::default().and_arg(&format!("--metrics-address=127.0.0.1:{port}"))
    }
    fn and_arg(mut self, arg: &str) -> Opts {
        self.args.push(arg.into());
        self
    }
    fn node(name: &str) -> Opts {
        Opts {
            node: Some(name.into()),
            ..Default::default()
        }
    }
}

impl Carve {
    async fn start(config: &Path) -> Carve {
        Self::start_with(config, Opts::default()).await
    }

    async fn start_with(config: &Path, opts: Opts) -> Carve {
        Self::try_start_with(config, opts)
            .await
            .unwrap_or_else(|log| panic!("carve did not come up:\n{log}"))
    }

    async fn try_start(config: &Path) -> Result<Carve, String> {
        Self::try_start_with(config, Opts::default()).await
    }

    /// Waits until the process has died on its own (a crash point), and
    /// returns its log.
    async fn wait_crashed(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "carve ended by {status}, not by its crash point:\n{}",
                    self.log_text()
                );
                return self.log_text();
            }
            assert!(
                Instant::now() < deadline,
                "carve never reached its crash point:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn try_start_with(config: &Path, opts: Opts) -> Result<Carve, String> {
        let dir = tempfile::Builder::new()
            .prefix("carve-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("csi.sock");
        let log = dir.path().join("carve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_carve"))
            .args(["serve", "--node-id"])
            .arg(opts.node.as_deref().unwrap_or(NODE))
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--config")
            .arg(config)
            .args(&opts.args)
            .env("CARVE_LOG", "carve=debug,info")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start carve");
        let mut c = Carve {
            child,
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.socket.exists() {
            if let Ok(Some(status)) = c.child.try_wait() {
                return Err(format!("exited with {status}: {}", c.log_text()));
            }
            if Instant::now() > deadline {
                return Err(c.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(c)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn channel(&self) -> Channel {
        carve_csi::client::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connect to carve: {e:?}\n{}", self.log_text()))
    }

    async fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel().await)
    }

    /// A carve on the test ground's config, with a Controller and a Node
    /// client.
    async fn with_clients() -> (
        Carve,
        ControllerClient<Channel>,
        carve_csi::csi::node_client::NodeClient<Channel>,
    ) {
        let carve = Carve::start(&testbed_config()).await;
        let c = carve.controller().await;
        let n = carve_csi::csi::node_client::NodeClient::new(carve.channel().await);
        (carve, c, n)
    }

    async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }
}

impl Drop for Carve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real LVM's view of one LV (independent of carve's parser on purpose).
#[derive(Debug, serde::Deserialize)]
struct Lv {
    lv_name: String,
    lv_size: String,
    lv_tags: String,
    lv_uuid: String,
    lv_layout: String,
}

fn lvs(vg: &str) -> Vec<Lv> {
    let out = Command::new("lvm")
        .args([
            "lvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,lv_size,lv_tags,lv_uuid,lv_layout",
            vg,
        ])
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .expect("run lvs");
    assert!(
        out.status.success(),
        "lvs {vg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[derive(serde::Deserialize)]
    struct R {
        report: Vec<HashMap<String, Vec<Lv>>>,
    }
    let mut r: R = serde_json::from_slice(&out.stdout).unwrap();
    r.report.remove(0).remove("lv").unwrap_or_default()
}

fn lv(vg: &str, name: &str) -> Option<Lv> {
    lvs(vg).into_iter().find(|l| l.lv_name == name)
}

/// Runs `lvm args`, which must succeed; its stdout.
fn lvm(args: &[&str]) -> String {
    let out = Command::new("lvm")
        .args(args)
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lvm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mount_cap() -> csi::VolumeCapability {
    carve_csi::client::mount_capability("ext4", &[])
}

fn block_cap() -> csi::VolumeCapability {
    carve_csi::client::block_capability()
}

fn create_req(name: &str, class: Option<&str>, required: i64) -> csi::CreateVolumeRequest {
    let mut parameters = HashMap::new();
    if let Some(c) = class {
        parameters.insert("carve.dev/device-class".to_string(), c.to_string());
    }
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap()],
        parameters,
        ..Default::default()
    }
}

/// (VG, LV) named by a volume or snapshot ID: the `<vg>/<lv>` at its end.
fn split(id: &str) -> (&str, &str) {
    id.rsplit(':').next().unwrap().split_once('/').unwrap()
}

/// `<vg>/<lv>` of a volume or snapshot ID, as lvm commands name the LV.
fn lvm_path(id: &str) -> String {
    let (vg, lv) = split(id);
    format!("{vg}/{lv}")
}

/// The ID carve lists for the volume on LV `lv` (a volume whose create never
/// answered has no ID in the caller's hands).
async fn listed_id(c: &mut ControllerClient<Channel>, lv: &str) -> Option<String> {
    list_entries(c)
        .await
        .into_iter()
        .filter_map(|e| e.volume.map(|v| v.volume_id))
        .find(|id| split(id).1 == lv)
}

/// Every entry ListVolumes returns (one page: the suite's VGs are small).
async fn list_entries(c: &mut ControllerClient<Channel>) -> Vec<csi::list_volumes_response::Entry> {
    c.list_volumes(csi::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// CreateSnapshot of `source` named `name`, asserting success.
async fn snapshot_ok(c: &mut ControllerClient<Channel>, name: &str, source: &str) -> csi::Snapshot {
    c.create_snapshot(csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("CreateSnapshot {name}: {e:?}"))
    .into_inner()
    .snapshot
    .unwrap()
}

/// DeleteSnapshot, asserting success.
async fn delete_snapshot_ok(c: &mut ControllerClient<Channel>, id: &str) {
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("DeleteSnapshot {id}: {e:?}"));
}

/// Names of every LV in `vg`, sorted.
fn lv_names(vg: &str) -> Vec<String> {
    let mut v: Vec<String> = lvs(vg).into_iter().map(|l| l.lv_name).collect();
    v.sort();
    v
}

async fn capacity(c: &mut ControllerClient<Channel>, class: &str) -> csi::GetCapacityResponse {
    c.get_capacity(csi::GetCapacityRequest {
        parameters: HashMap::from([("carve.dev/device-class".into(), class.into())]),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Creates a volume and asserts success.
async fn create_ok(
    c: &mut ControllerClient<Channel>,
    req: csi::CreateVolumeRequest,
) -> csi::Volume {
    c.create_volume(req)
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .expect("volume in response")
}

/// ControllerExpandVolume to `required` bytes, asserting success.
async fn expand_to(
    c: &mut ControllerClient<Channel>,
    id: &str,
    required: i64,
    cap: Option<csi::VolumeCapability>,
) -> csi::ControllerExpandVolumeResponse {
    c.controller_expand_volume(csi::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capability: cap,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Deletes a volume and asserts success.
async fn delete(c: &mut ControllerClient<Channel>, id: impl Into<String>) {
    c.delete_volume(csi::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    })
    .await
    .expect("DeleteVolume");
}

/// The test ground's foreign LVs are as testbed.sh made them: same content,
/// no tags, same size.
fn foreign_intact() {
    let want = std::fs::read(format!(
        "{}/foreign.bin",
        std::env::var("CARVE_TESTBED").unwrap()
    ))
    .unwrap();
    use std::io::Read;
    for name in ["foreign-data", "cv-foreign-0000000000000000"] {
        let mut got = vec![0u8; want.len()];
        std::fs::File::open(format!("/dev/carve-thick/{name}"))
            .unwrap()
            .read_exact(&mut got)
            .unwrap();
        assert!(got == want, "foreign LV {name}: content changed");
        let l = lv("carve-thick", name).unwrap_or_else(|| panic!("foreign LV {name} is gone"));
        assert!(
            l.lv_tags.is_empty(),
            "foreign LV {name} got tags {}",
            l.lv_tags
        );
    }
    assert_eq!(
        lv("carve-thick", "cv-foreign-0000000000000000")
            .unwrap()
            .lv_size,
        (8 * MI).to_string()
    );
    assert!(lv("carve-thin", "foreign-thin").is_some());
}

/// The condition ControllerGetVolume reports for volume `id`.
async fn condition(c: &mut ControllerClient<Channel>, id: &str) -> csi::VolumeCondition {
    c.controller_get_volume(csi::ControllerGetVolumeRequest {
        volume_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("ControllerGetVolume {id}: {e:?}"))
    .into_inner()
    .status
    .and_then(|s| s.volume_condition)
    .unwrap_or_else(|| panic!("ControllerGetVolume {id}: no condition"))
}

/// A node configuration file holding `toml`, removed when dropped.
fn config_file(toml: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .prefix("carve-config-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    std::io::Write::write_all(&mut f, toml.as_bytes()).unwrap();
    f
}

/// Every process whose command line starts with `lvm`: (pid, parent pid,
/// state, the whole command line).
fn lvm_processes() -> Vec<(i32, u32, char, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"lvm\0") {
            continue;
        }
        // stat: "pid (comm) state ppid ..."; comm may hold spaces.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        out.push((pid, ppid, state, cmdline));
    }
    out
}

/// The ID a carve volume or snapshot at `vg/lv` on this test's node has.
fn id_here(vg: &str, lv: &str) -> String {
    format!("v1:{NODE}:{vg}/{lv}")
}

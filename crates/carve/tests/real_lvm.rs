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
use carve_csi::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use carve_csi::csi::{self};
use tonic::transport::Channel;
use tonic::Code;

#[path = "real_lvm/clients.rs"]
mod clients;
#[path = "real_lvm/crash.rs"]
mod crash;
#[path = "real_lvm/node.rs"]
mod node;
#[path = "real_lvm/node_safety.rs"]
mod node_safety;
#[path = "real_lvm/provisioner.rs"]
mod provisioner;
#[path = "real_lvm/snapshot.rs"]
mod snapshot;

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;
const NODE: &str = "uml-node";

fn testbed_config() -> PathBuf {
    let p = std::env::var("CARVE_TESTBED_CONFIG").unwrap_or_else(|_| {
        panic!("CARVE_TESTBED_CONFIG is not set: these tests run only inside the UML test ground (hack/test.sh)")
    });
    PathBuf::from(p)
}

/// A carve process serving on its own socket, killed on drop.
struct Carve {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

/// How a test starts carve: node name and extra environment (crash points).
#[derive(Clone, Default)]
struct Opts {
    node: Option<String>,
    env: Vec<(String, String)>,
}

impl Opts {
    /// Dies by SIGKILL at crash point `point` (see src/crash.rs).
    fn crash_at(point: &str) -> Opts {
        Opts::default().and_crash_at(point)
    }
    fn and_crash_at(mut self, point: &str) -> Opts {
        self.env.push(("CARVE_CRASH_POINT".into(), point.into()));
        self
    }
    /// Every block copy chunk (4 MiB) takes at least `ms`: a copy is seen running.
    fn slow_copies(ms: u64) -> Opts {
        Opts::default().and_slow_copies(ms)
    }
    fn and_slow_copies(mut self, ms: u64) -> Opts {
        self.env
            .push(("CARVE_TEST_COPY_CHUNK_DELAY_MS".into(), ms.to_string()));
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
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/carve-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("csi.sock");
        let log = dir.join("carve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_carve"))
            .args(["serve", "--node-id"])
            .arg(opts.node.as_deref().unwrap_or(NODE))
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .arg("--config")
            .arg(config)
            .env("CARVE_LOG", "carve=debug,info")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start carve");
        let mut c = Carve { child, socket, log };
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

fn lvm(args: &[&str]) {
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
}

fn mount_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn block_cap() -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
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

/// The ID a carve volume or snapshot at `vg/lv` on this test's node has.
fn id_here(vg: &str, lv: &str) -> String {
    format!("v1:{NODE}:{vg}/{lv}")
}

#[tokio::test]
async fn identity_reports_name_capabilities_and_readiness() {
    let carve = Carve::start(&testbed_config()).await;
    let mut id = carve.identity().await;
    let info = id
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "carve.dev");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = id
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 3);
    let probe = id.probe(csi::ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
}

#[tokio::test]
async fn probe_is_not_ready_when_a_vg_is_missing() {
    let dir = std::env::temp_dir().join("carve-missing-vg");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        "[[device_class]]\nname='gone'\nvolume_group='no-such-vg'\ntype='thick'\n",
    )
    .unwrap();
    let carve = Carve::start(&cfg).await;
    let probe = carve
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(false));
    assert!(
        carve.log_text().contains("no-such-vg"),
        "the log says why: {}",
        carve.log_text()
    );
}

#[tokio::test]
async fn bad_config_refuses_to_start_naming_the_field() {
    let dir = std::env::temp_dir().join("carve-bad-config");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        "[[device_class]]\nname='x'\nvolume_group='carve-raid'\ntype='thick'\nraid='raid9'\n",
    )
    .unwrap();
    let err = match Carve::try_start(&cfg).await {
        Ok(_) => panic!("carve started with a bad config"),
        Err(e) => e,
    };
    assert!(err.contains("device_class[0].raid"), "{err}");
}

#[tokio::test]
async fn thick_volume_lifecycle_with_exact_capacity_accounting() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let before = capacity(&mut c, "thick").await;
    assert_eq!(before.minimum_volume_size, Some(4 * MI));

    let mut req = create_req("pvc-thick-1", None, 100 * MI + 1);
    req.parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
    req.parameters
        .insert("csi.storage.k8s.io/pvc/namespace".into(), "db".into());
    req.parameters
        .insert("csi.storage.k8s.io/pv/name".into(), "pvc-thick-1".into());
    let vol = create_ok(&mut c, req.clone()).await;
    assert_eq!(
        vol.capacity_bytes,
        104 * MI,
        "rounded up to whole 4 MiB extents"
    );
    assert_eq!(
        vol.accessible_topology[0].segments["topology.carve.dev/node"],
        NODE
    );
    let (vg, name) = split(&vol.volume_id);
    assert_eq!(vg, "carve-thick");
    let real = lv(vg, name).expect("LV exists in LVM");
    assert_eq!(real.lv_size, (104 * MI).to_string());
    for t in [
        "carve.dev/owner=carve.dev",
        "carve.dev/name=pvc-thick-1",
        "carve.dev/class=thick",
        "carve.dev/pvc=data",
        "carve.dev/pvc-namespace=db",
        "carve.dev/pv=pvc-thick-1",
    ] {
        assert!(
            real.lv_tags.split(',').any(|x| x == t),
            "tag {t} missing: {}",
            real.lv_tags
        );
    }
    let after = capacity(&mut c, "thick").await;
    assert_eq!(
        before.available_capacity - after.available_capacity,
        104 * MI
    );

    // Idempotent retry; conflicting retry.
    let again = create_ok(&mut c, req.clone()).await;
    assert_eq!(again.volume_id, vol.volume_id);
    assert_eq!(
        lv(vg, name).unwrap().lv_uuid,
        real.lv_uuid,
        "the retry made no new LV"
    );
    let mut bigger = req.clone();
    bigger.capacity_range = Some(csi::CapacityRange {
        required_bytes: GI,
        limit_bytes: 0,
    });
    assert_eq!(
        c.create_volume(bigger).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Validate and get.
    let ok = c
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: vol.volume_id.clone(),
            volume_capabilities: vec![mount_cap(), block_cap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let got = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: vol.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cond = got.status.unwrap().volume_condition.unwrap();
    assert!(!cond.abnormal, "{}", cond.message);

    // Expand: LVM grows, capacity shrinks by the difference.
    let exp = c
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: vol.volume_id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 200 * MI,
                limit_bytes: 0,
            }),
            volume_capability: Some(mount_cap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exp.capacity_bytes, 200 * MI);
    assert!(exp.node_expansion_required);
    assert_eq!(lv(vg, name).unwrap().lv_size, (200 * MI).to_string());
    assert_eq!(
        before.available_capacity - capacity(&mut c, "thick").await.available_capacity,
        200 * MI
    );
    // Expanding to a smaller size changes nothing.
    let same = c
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: vol.volume_id.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 8 * MI,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.capacity_bytes, 200 * MI);

    // Delete, twice.
    delete(&mut c, vol.volume_id.clone()).await;
    assert!(lv(vg, name).is_none());
    delete(&mut c, vol.volume_id.clone()).await;
    assert_eq!(
        capacity(&mut c, "thick").await.available_capacity,
        before.available_capacity
    );
    assert_eq!(
        c.controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: vol.volume_id.clone()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    foreign_intact();
}

#[tokio::test]
async fn thin_volumes_overcommit_up_to_the_ratio_only() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let before = capacity(&mut c, "thin").await;
    // 2 GiB pool x 4 minus the foreign 256 MiB thin LV.
    assert_eq!(before.available_capacity, 8 * GI - 256 * MI);
    let vol = create_ok(&mut c, create_req("thin-1", Some("thin"), 3 * GI)).await;
    let (vg, name) = split(&vol.volume_id);
    assert_eq!(vg, "carve-thin");
    assert_eq!(lv(vg, name).unwrap().lv_layout, "thin,sparse");
    let after = capacity(&mut c, "thin").await;
    assert_eq!(before.available_capacity - after.available_capacity, 3 * GI);
    let too_big = c
        .create_volume(create_req("thin-2", Some("thin"), 6 * GI))
        .await
        .unwrap_err();
    assert_eq!(
        too_big.code(),
        Code::ResourceExhausted,
        "{}",
        too_big.message()
    );
    assert!(lv(vg, &carve_core::names::lv_name("thin-2")).is_none());
    delete(&mut c, vol.volume_id).await;
    assert_eq!(
        capacity(&mut c, "thin").await.available_capacity,
        before.available_capacity
    );
    foreign_intact();
}

#[tokio::test]
async fn raid1_and_striped_classes_use_their_layout() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let before = capacity(&mut c, "mirrored").await;
    let m = create_ok(&mut c, create_req("mirror-1", Some("mirrored"), 64 * MI)).await;
    let (vg, name) = split(&m.volume_id);
    assert_eq!(lv(vg, name).unwrap().lv_layout, "raid,raid1");
    // Right away (carve's own accounting) and after the background refresh
    // (LVM's report) the difference is the same.
    let after = capacity(&mut c, "mirrored").await;
    // Two copies plus one metadata extent per image.
    assert_eq!(
        before.available_capacity - after.available_capacity,
        64 * MI + 4 * MI
    );
    let s = create_ok(&mut c, create_req("stripe-1", Some("striped"), 10 * MI)).await;
    assert_eq!(
        s.capacity_bytes,
        16 * MI,
        "rounded to extents across both stripes"
    );
    let (vg, name) = split(&s.volume_id);
    assert_eq!(lv(vg, name).unwrap().lv_layout, "striped");
    let huge = c
        .create_volume(create_req("mirror-huge", Some("mirrored"), 3 * GI))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::ResourceExhausted);
    for id in [m.volume_id, s.volume_id] {
        delete(&mut c, id).await;
    }
}

#[tokio::test]
async fn list_volumes_pages_stably_and_shows_only_carve_volumes() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            create_ok(&mut c, create_req(&format!("list-{i}"), None, 4 * MI))
                .await
                .volume_id,
        );
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_volumes(csi::ListVolumesRequest {
                max_entries: 3,
                starting_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for e in &page.entries {
            let v = e.volume.as_ref().unwrap();
            assert!(
                !v.volume_id.contains("foreign"),
                "foreign LV listed: {}",
                v.volume_id
            );
            seen.push(v.volume_id.clone());
        }
        // Deleting the last entry of a page must not break the token.
        if pages == 1 {
            let last = page
                .entries
                .last()
                .unwrap()
                .volume
                .as_ref()
                .unwrap()
                .volume_id
                .clone();
            delete(&mut c, last).await;
        }
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages in order, no duplicates");
    for id in &ids {
        assert!(seen.contains(id), "{id} missing from listing");
    }
    let bad = c
        .list_volumes(csi::ListVolumesRequest {
            max_entries: 1,
            starting_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Aborted);
    for id in ids {
        delete(&mut c, id).await;
    }
}

#[tokio::test]
async fn foreign_lvs_are_never_touched() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    // Well-formed IDs of this node: the LV is looked up in LVM, found, and
    // refused for lacking carve's owner tag. (foreign-data and foreign-thin
    // cannot even be named by a carve volume ID: no cv- prefix.)
    let look_alike = id_here("carve-thick", "cv-foreign-0000000000000000");
    let malformed = [
        "carve-thick/foreign-data",
        "carve-thick/cv-foreign-0000000000000000",
        "carve-thin/foreign-thin",
    ];
    for id in std::iter::once(look_alike.as_str()).chain(malformed) {
        delete(&mut c, id).await;
        let e = c
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: id.into(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: GI,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
        assert_eq!(
            c.controller_get_volume(csi::ControllerGetVolumeRequest {
                volume_id: id.into()
            })
            .await
            .unwrap_err()
            .code(),
            Code::NotFound
        );
    }
    assert!(
        carve.log_text().contains("lacks carve's owner tag"),
        "the look-alike was looked up and refused, not dropped by the ID parser"
    );
    foreign_intact();
}

#[tokio::test]
async fn inactive_lv_shows_an_abnormal_condition() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let vol = create_ok(&mut c, create_req("cond-1", None, 8 * MI)).await;
    lvm(&["lvchange", "-an", &lvm_path(&vol.volume_id)]);
    let got = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: vol.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cond = got.status.unwrap().volume_condition.unwrap();
    assert!(cond.abnormal);
    assert!(cond.message.contains("not active"), "{}", cond.message);
    delete(&mut c, vol.volume_id).await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_converge_on_one_lv() {
    let carve = Carve::start(&testbed_config()).await;
    let c = carve.controller().await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create_volume(create_req("race-1", None, 16 * MI)).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => assert_eq!(s.code(), Code::Aborted, "{}", s.message()),
        }
    }
    assert!(ok >= 1);
    let name = carve_core::names::lv_name("race-1");
    assert_eq!(
        lvs("carve-thick")
            .iter()
            .filter(|l| l.lv_name == name)
            .count(),
        1
    );
    let mut c = c.clone();
    let v = create_ok(&mut c, create_req("race-1", None, 16 * MI)).await;
    delete(&mut c, v.volume_id).await;
}

#[tokio::test]
async fn restart_converges_on_existing_lv_and_sigterm_is_graceful() {
    let cfg = testbed_config();
    let first = Carve::start(&cfg).await;
    let vol = first
        .controller()
        .await
        .create_volume(create_req("restart-1", None, 8 * MI))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    // SIGTERM: clean exit, socket removed.
    let mut first = first;
    // A client still connected must not hold shutdown up past the grace period.
    let held = first.controller().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = first.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "carve still running 30 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(held);
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(!first.socket.exists(), "socket removed on shutdown");
    // A new process finds the same LV for the same request name.
    let second = Carve::start(&cfg).await;
    let mut c = second.controller().await;
    let again = create_ok(&mut c, create_req("restart-1", None, 8 * MI)).await;
    assert_eq!(again.volume_id, vol.volume_id);
    delete(&mut c, vol.volume_id).await;
}

#[tokio::test]
async fn delete_of_an_open_volume_is_failed_precondition() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let vol = create_ok(&mut c, create_req("open-1", None, 8 * MI)).await;
    let dev = format!("/dev/{}", lvm_path(&vol.volume_id));
    let holder = std::fs::File::open(&dev).unwrap();
    let e = c
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    drop(holder);
    delete(&mut c, vol.volume_id).await;
}

#[tokio::test]
async fn delete_never_cascades_into_a_foreign_snapshot() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let vol = create_ok(&mut c, create_req("origin-1", None, 8 * MI)).await;
    let (vg, name) = split(&vol.volume_id);
    // An operator's own classic snapshot of a carve volume (no carve tag).
    lvm(&[
        "lvcreate",
        "-q",
        "-y",
        "-s",
        "-n",
        "operator-backup",
        "-L",
        "8m",
        &lvm_path(&vol.volume_id),
    ]);
    let e = c
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("operator-backup"), "{}", e.message());
    assert!(lv(vg, name).is_some() && lv(vg, "operator-backup").is_some());
    lvm(&["lvremove", "-q", "-y", &format!("{vg}/operator-backup")]);
    delete(&mut c, vol.volume_id.clone()).await;
    assert!(lv(vg, name).is_none());
}

/// Issue 8, finding 7: creates racing the background refresh (each create
/// schedules one 250 ms later) never make the cache list a volume twice or
/// lose one, and the capacity is exact after every create.
#[tokio::test]
async fn capacity_and_listing_stay_exact_while_refreshes_race_creates() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let before = capacity(&mut c, "thin").await.available_capacity;
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(
            create_ok(
                &mut c,
                create_req(&format!("race-cache-{i}"), Some("thin"), 100 * MI),
            )
            .await
            .volume_id,
        );
        for _ in 0..3 {
            let now = capacity(&mut c, "thin").await.available_capacity;
            assert_eq!(
                before - now,
                (i + 1) * 100 * MI,
                "after create {i}: capacity off by {} bytes",
                before - now - (i + 1) * 100 * MI
            );
            let listed: Vec<String> = list_entries(&mut c)
                .await
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id)
                .filter(|id| id.contains("race-cache"))
                .collect();
            let mut unique = listed.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                listed.len(),
                "a volume listed twice: {listed:?}"
            );
            assert_eq!(listed.len(), ids.len(), "a volume missing: {listed:?}");
            tokio::time::sleep(Duration::from_millis(90)).await;
        }
    }
    for id in ids {
        delete(&mut c, id).await;
    }
    assert_eq!(capacity(&mut c, "thin").await.available_capacity, before);
}

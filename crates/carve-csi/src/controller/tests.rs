//! Controller handlers over a scripted LVM runner: malformed requests are
//! refused with the right code and zero lvm commands; well-formed ones produce
//! the expected argv.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::Code;

use super::*;
use crate::csi::controller_server::Controller;
use crate::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use crate::server::{services, Options};
use carve_core::config::Config;
use carve_core::lvm::fake::FakeLvm;

const CONFIG: &str = r#"
[[device_class]]
name = "thick"
volume_group = "vgthick"
type = "thick"
default = true
spare = "100Mi"

[[device_class]]
name = "thin"
volume_group = "vgthick"
type = "thin"
thin_pool = "pool0"
over_provision_ratio = 4.0

[[device_class]]
name = "mirrored"
volume_group = "vgraid"
type = "thick"
raid = "raid1"
"#;

/// carve's services over the in-memory LVM, its first report taken.
async fn setup_services() -> (crate::server::Services, Arc<FakeLvm>) {
    let runner = FakeLvm::new();
    let opts = Options {
        endpoint: "unix:///unused".into(),
        node_id: "node-a".into(),
        driver_name: "carve.dev".into(),
        max_volumes: 0,
        config: Config::parse(CONFIG, "test").unwrap(),
    };
    let s = services(&opts, runner.clone());
    s.state.refresh().await.unwrap();
    runner.clear();
    (s, runner)
}

async fn setup() -> (Arc<ControllerService>, Arc<FakeLvm>) {
    let (s, runner) = setup_services().await;
    (s.controller, runner)
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

fn create_req(name: &str, required: i64, limit: i64) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    }
}

async fn create_code(c: &ControllerService, req: csi::CreateVolumeRequest) -> Code {
    c.create_volume(Request::new(req))
        .await
        .map(|_| Code::Ok)
        .unwrap_or_else(|s| s.code())
}

const MI: i64 = 1 << 20;

#[tokio::test]
async fn malformed_creates_run_no_lvm_command() {
    let (c, runner) = setup().await;
    let mut cases: Vec<(&str, csi::CreateVolumeRequest, Code)> = vec![
        ("empty name", create_req("", MI, 0), Code::InvalidArgument),
        (
            "oversized name",
            create_req(&"n".repeat(2000), MI, 0),
            Code::InvalidArgument,
        ),
        (
            "negative size",
            create_req("a", -1, 0),
            Code::InvalidArgument,
        ),
        (
            "negative limit",
            create_req("a", 0, -5),
            Code::InvalidArgument,
        ),
        (
            "required > limit",
            create_req("a", 10 * MI, 5 * MI),
            Code::InvalidArgument,
        ),
        ("huge size", create_req("a", i64::MAX, 0), Code::OutOfRange),
        (
            "limit below one extent",
            create_req("a", 1, 1024),
            Code::OutOfRange,
        ),
    ];
    let mut no_caps = create_req("a", MI, 0);
    no_caps.volume_capabilities.clear();
    cases.push(("no capabilities", no_caps, Code::InvalidArgument));
    let mut multi = create_req("a", MI, 0);
    multi.volume_capabilities[0].access_mode = Some(AccessMode {
        mode: Mode::MultiNodeMultiWriter as i32,
    });
    cases.push(("multi-node mode", multi, Code::InvalidArgument));
    let mut no_access = create_req("a", MI, 0);
    no_access.volume_capabilities[0].access_type = None;
    cases.push(("no access type", no_access, Code::InvalidArgument));
    let mut bad_fs = create_req("a", MI, 0);
    bad_fs.volume_capabilities[0] = csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ntfs".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    cases.push(("unsupported fs", bad_fs, Code::InvalidArgument));
    let mut unknown_class = create_req("a", MI, 0);
    unknown_class
        .parameters
        .insert(crate::params::DEVICE_CLASS.into(), "nvme-gold".into());
    cases.push(("unknown device class", unknown_class, Code::InvalidArgument));
    let mut unknown_param = create_req("a", MI, 0);
    unknown_param
        .parameters
        .insert("stripes".into(), "4; rm -rf /".into());
    cases.push(("unknown parameter", unknown_param, Code::InvalidArgument));
    let mut other_node = create_req("a", MI, 0);
    other_node.accessibility_requirements = Some(csi::TopologyRequirement {
        requisite: vec![csi::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.into(), "node-b".into())]),
        }],
        preferred: vec![],
    });
    cases.push(("other node", other_node, Code::ResourceExhausted));
    let mut source = create_req("a", MI, 0);
    source.volume_content_source = Some(csi::VolumeContentSource::default());
    cases.push(("content source", source, Code::InvalidArgument));
    cases.push((
        "larger than the VG",
        create_req("a", 1 << 40, 0),
        Code::ResourceExhausted,
    ));
    for (what, req, want) in cases {
        assert_eq!(create_code(&c, req).await, want, "{what}");
    }
    assert_eq!(
        runner.commands(),
        Vec::<String>::new(),
        "no lvm command may run for a refused request"
    );
}

#[tokio::test]
async fn names_with_shell_and_path_characters_are_just_names() {
    let (c, runner) = setup().await;
    for name in ["../../etc", "a b", "$(reboot)", "x;y|z&", "vg/lv"] {
        assert_eq!(
            create_code(&c, create_req(name, MI, 0)).await,
            Code::Ok,
            "{name}"
        );
    }
    assert_eq!(runner.writes().len(), 5, "one lvcreate per name");
    for cmd in runner.writes() {
        let args: Vec<&str> = cmd.split(' ').collect();
        let lv = args[args.iter().position(|a| *a == "--name").unwrap() + 1];
        assert!(
            carve_core::config::is_lvm_name(lv) && lv.starts_with("cv-"),
            "{cmd}"
        );
    }
}

#[tokio::test]
async fn create_rounds_to_extents_and_tags_the_lv() {
    let (c, runner) = setup().await;
    let mut req = create_req("pvc-1", 5 * MI, 0);
    req.parameters
        .insert(crate::params::PVC_NAME.into(), "data".into());
    req.parameters
        .insert(crate::params::PVC_NAMESPACE.into(), "db".into());
    req.parameters
        .insert(crate::params::FS_TYPE.into(), "ext4".into());
    let v = c
        .create_volume(Request::new(req))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        v.capacity_bytes,
        8 * MI,
        "5 MiB rounds up to two 4 MiB extents"
    );
    assert_eq!(v.accessible_topology[0].segments[TOPOLOGY_KEY], "node-a");
    assert_eq!(v.volume_context[VolumeContext::FS_TYPE], "ext4");
    assert_eq!(v.volume_context[VolumeContext::DEVICE_CLASS], "thick");
    assert!(
        v.volume_id.starts_with("v1:node-a:vgthick/cv-pvc-1-"),
        "{}",
        v.volume_id
    );
    let w = runner.writes();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with("lvcreate --yes --quiet --name cv-pvc-1-"),
        "{}",
        w[0]
    );
    for t in [
        "carve.dev/owner=carve.dev",
        "carve.dev/name=pvc-1",
        "carve.dev/class=thick",
        "carve.dev/pvc=data",
        "carve.dev/pvc-namespace=db",
    ] {
        assert!(
            w[0].contains(&format!("--addtag {t}")),
            "{t} missing from {}",
            w[0]
        );
    }
    // Capacity reflects the new LV immediately.
    let cap = c
        .get_capacity(Request::new(csi::GetCapacityRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let view = c.state.get().unwrap();
    assert_eq!(view.lvm.vgs["vgthick"].free, 3032481792 - 8 * MI as u64);
    assert_eq!(cap.available_capacity, 3032481792 - 8 * MI - 100 * MI);
}

#[tokio::test]
async fn create_is_idempotent_and_detects_conflicts() {
    let (c, runner) = setup().await;
    let first = c
        .create_volume(Request::new(create_req("vol", 8 * MI, 0)))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .create_volume(Request::new(create_req("vol", 8 * MI, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(runner.writes().len(), 1, "the retry ran no lvcreate");
    assert_eq!(
        create_code(&c, create_req("vol", 16 * MI, 0)).await,
        Code::AlreadyExists
    );
    let mut other_class = create_req("vol", 8 * MI, 0);
    other_class
        .parameters
        .insert(crate::params::DEVICE_CLASS.into(), "thin".into());
    assert_eq!(create_code(&c, other_class).await, Code::AlreadyExists);
}

#[tokio::test]
async fn lvm_failures_map_to_named_codes() {
    let (c, runner) = setup().await;
    runner.fail.lock().unwrap().insert(
        "lvcreate".into(),
        "  Volume group \"vgthick\" has insufficient free space (173 extents): 2560 required."
            .into(),
    );
    assert_eq!(
        create_code(&c, create_req("x", MI, 0)).await,
        Code::ResourceExhausted
    );
    runner.fail.lock().unwrap().insert(
        "lvcreate".into(),
        "  device-mapper: reload ioctl failed".into(),
    );
    assert_eq!(
        create_code(&c, create_req("y", MI, 0)).await,
        Code::Internal
    );
}

#[tokio::test]
async fn thin_capacity_is_enforced_without_lvm() {
    let (c, runner) = setup().await;
    let mut req = create_req("big-thin", 3 << 30, 0);
    req.parameters
        .insert(crate::params::DEVICE_CLASS.into(), "thin".into());
    // 1 GiB pool x 4 = 4 GiB, 2 GiB already promised: 3 GiB does not fit.
    assert_eq!(create_code(&c, req).await, Code::ResourceExhausted);
    assert!(runner.writes().is_empty());
}

#[tokio::test]
async fn bad_ids_get_not_found_without_lvm() {
    let (c, runner) = setup().await;
    for id in [
        "some-id",
        "vgthick/cv-one-1a2b3c4d00112233",
        "v1:node-a:vgthick/foreign",
        "v1:node-a:othervg/cv-x-0011",
        "v1:node-a:../cv-x",
        "v1:node-a:vgthick/cv-a b",
        "v2:node-a:vgthick/cv-one-1a2b3c4d00112233",
    ] {
        let e = c
            .controller_expand_volume(Request::new(csi::ControllerExpandVolumeRequest {
                volume_id: id.into(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: MI,
                    limit_bytes: 0,
                }),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
        // Deleting something that cannot be a carve volume succeeds: it is gone.
        c.delete_volume(Request::new(csi::DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    assert!(runner.commands().is_empty(), "{:?}", runner.commands());
    // A carve ID of another node: not here (NotFound), and not deletable here
    // (answering OK would let the CO forget a volume that holds data).
    let elsewhere = "v1:node-b:othervg/cv-x-0011223344556677";
    let e = c
        .controller_get_volume(Request::new(csi::ControllerGetVolumeRequest {
            volume_id: elsewhere.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("node-b"), "{}", e.message());
    let e = c
        .delete_volume(Request::new(csi::DeleteVolumeRequest {
            volume_id: elsewhere.into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .delete_volume(Request::new(csi::DeleteVolumeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .controller_expand_volume(Request::new(csi::ControllerExpandVolumeRequest {
            volume_id: "v1:node-a:vgthick/cv-x-00".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "missing capacity_range");
    let e = c
        .validate_volume_capabilities(Request::new(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: "v1:node-a:vgthick/cv-x-00".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no capabilities");
    let e = c
        .list_volumes(Request::new(csi::ListVolumesRequest {
            starting_token: "bogus".into(),
            max_entries: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let e = c
        .list_volumes(Request::new(csi::ListVolumesRequest {
            starting_token: String::new(),
            max_entries: -1,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(runner.commands().is_empty());
}

#[tokio::test]
async fn foreign_lvs_are_never_listed_or_removed() {
    let (c, runner) = setup().await;
    // An LV named like carve's but without its owner tag, in a managed VG.
    runner.add_lv("vgthick", "cv-foreign-0011223344556677", "");
    c.state.refresh().await.unwrap();
    runner.clear();
    let list = c
        .list_volumes(Request::new(csi::ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut lvs: Vec<String> = list
        .entries
        .iter()
        .map(|e| {
            let id = &e.volume.as_ref().unwrap().volume_id;
            id.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    lvs.sort();
    // Exactly the fixture's two carve volumes: not the pool, the foreign
    // origin, its snapshot, the untagged look-alike, nor the RAID LV that has
    // the owner tag but no carve name.
    assert_eq!(lvs, ["cv-one-1a2b3c4d00112233", "cv-thin-00aa11bb22334455"]);
    let id = list.entries[0].volume.as_ref().unwrap().volume_id.clone();
    let foreign_id = id.replace(&lvs[0], "cv-foreign-0011223344556677");
    c.delete_volume(Request::new(csi::DeleteVolumeRequest {
        volume_id: foreign_id,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(runner.writes().is_empty(), "{:?}", runner.writes());
    assert!(runner.has_lv("vgthick", "cv-foreign-0011223344556677"));
}

#[tokio::test]
async fn pagination_is_stable() {
    let (c, _runner) = setup().await;
    for i in 0..5 {
        c.create_volume(Request::new(create_req(&format!("p{i}"), MI, 0)))
            .await
            .unwrap();
    }
    let all = c
        .list_volumes(Request::new(csi::ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_volumes(Request::new(csi::ListVolumesRequest {
                max_entries: 2,
                starting_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let want: Vec<String> = all
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert_eq!(seen, want);
    assert!(want.len() >= 5);
}

#[tokio::test]
async fn capacity_honours_topology_class_and_capabilities() {
    let (c, runner) = setup().await;
    let get = |req: csi::GetCapacityRequest| {
        let c = &c;
        async move { c.get_capacity(Request::new(req)).await }
    };
    let other = get(csi::GetCapacityRequest {
        accessible_topology: Some(csi::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.into(), "node-b".into())]),
        }),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(other.available_capacity, 0);
    let thin = get(csi::GetCapacityRequest {
        parameters: HashMap::from([(crate::params::DEVICE_CLASS.into(), "thin".into())]),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(thin.available_capacity, 2 << 30);
    assert_eq!(thin.minimum_volume_size, Some(4 * MI));
    let multi = get(csi::GetCapacityRequest {
        volume_capabilities: vec![csi::VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: Mode::MultiNodeMultiWriter as i32,
            }),
        }],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(multi.available_capacity, 0);
    let e = get(csi::GetCapacityRequest {
        parameters: HashMap::from([("nope".into(), "x".into())]),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        runner.commands().is_empty(),
        "GetCapacity is served from the cache"
    );
}

#[tokio::test]
async fn concurrent_calls_on_one_volume_are_aborted() {
    let (c, _runner) = setup().await;
    let key = names::lv_name("busy");
    let _held = c.inflight.try_acquire(&key).unwrap();
    assert_eq!(
        create_code(&c, create_req("busy", MI, 0)).await,
        Code::Aborted
    );
}

#[tokio::test]
async fn expand_of_block_volume_needs_no_node_step() {
    let (c, runner) = setup().await;
    let v = c
        .create_volume(Request::new(create_req("grow", 8 * MI, 0)))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let block = csi::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    };
    let expand = |cap: csi::VolumeCapability, bytes: i64| csi::ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capability: Some(cap),
        ..Default::default()
    };
    let r = c
        .controller_expand_volume(Request::new(expand(block, 16 * MI)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 16 * MI);
    assert!(
        !r.node_expansion_required,
        "a raw block volume has no filesystem to grow"
    );
    let r = c
        .controller_expand_volume(Request::new(expand(mount_cap(), 24 * MI)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 24 * MI);
    assert!(r.node_expansion_required, "the node grows the filesystem");
    let grows: Vec<String> = runner
        .writes()
        .into_iter()
        .filter(|w| w.starts_with("lvextend"))
        .collect();
    assert_eq!(grows.len(), 2, "{grows:?}");
    assert!(
        grows[1].contains(&format!("--size {}b", 24 * MI)),
        "{grows:?}"
    );
}

/// Issue 8, finding 7: a refresh and a create interleave. Whatever the order in
/// which the refresh's report and the create's own update reach the cache, the
/// new volume is listed exactly once and the capacity is exact.
async fn create_racing_a_refresh(report_taken_after_lvcreate: bool) {
    let (c, runner) = setup().await;
    let thin = |name: &str| {
        let mut r = create_req(name, 100 * MI, 0);
        r.parameters
            .insert(crate::params::DEVICE_CLASS.into(), "thin".into());
        r
    };
    let capacity = |c: Arc<ControllerService>| async move {
        c.get_capacity(Request::new(csi::GetCapacityRequest {
            parameters: HashMap::from([(crate::params::DEVICE_CLASS.into(), "thin".into())]),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .available_capacity
    };
    let before = capacity(c.clone()).await;
    // The refresh is held inside its `lvm fullreport`.
    let report = runner.gate("fullreport", !report_taken_after_lvcreate);
    let refresh = {
        let state = c.state.clone();
        tokio::spawn(async move { state.refresh().await.map(drop) })
    };
    report.reached.notified().await;
    let create = if report_taken_after_lvcreate {
        // lvcreate lands, the report (now showing the LV) is installed, and
        // only then does the create apply its own update.
        let lvcreate = runner.gate("lvcreate", true);
        let create = {
            let c = c.clone();
            tokio::spawn(async move { c.create_volume(Request::new(thin("race-a"))).await })
        };
        lvcreate.reached.notified().await;
        report.release.notify_one();
        refresh.await.unwrap().unwrap();
        lvcreate.release.notify_one();
        create.await.unwrap()
    } else {
        // The report was taken before lvcreate and is installed after the
        // create has applied its update.
        let r = c.create_volume(Request::new(thin("race-b"))).await;
        report.release.notify_one();
        refresh.await.unwrap().unwrap();
        r
    };
    let id = create.unwrap().into_inner().volume.unwrap().volume_id;
    let listed = c
        .list_volumes(Request::new(csi::ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .entries
        .iter()
        .filter(|e| e.volume.as_ref().unwrap().volume_id == id)
        .count();
    assert_eq!(listed, 1, "the new volume is listed once");
    assert_eq!(
        before - capacity(c.clone()).await,
        100 * MI,
        "capacity drops by exactly the new volume"
    );
}

#[tokio::test]
async fn refresh_installed_before_the_creates_own_update() {
    create_racing_a_refresh(true).await;
}

#[tokio::test]
async fn refresh_taken_before_lvcreate_installed_after_it() {
    create_racing_a_refresh(false).await;
}

/// Issue 8, finding 10: livenessprobe calls Probe every few seconds on every
/// node; it must not run an LVM report each time.
#[tokio::test]
async fn probe_runs_no_lvm_command() {
    let (s, runner) = setup_services().await;
    use crate::csi::identity_server::Identity;
    for _ in 0..5 {
        let r = s
            .identity
            .probe(Request::new(csi::ProbeRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.ready, Some(true));
    }
    assert_eq!(runner.commands(), Vec::<String>::new());
}

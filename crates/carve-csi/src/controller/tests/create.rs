//! CreateVolume over the scripted runner: validation before any lvm
//! command, argv, idempotency, error codes, races with a refresh.

use super::*;

#[tokio::test]
async fn malformed_creates_run_no_lvm_command() {
    let (c, runner) = setup().await;
    for (what, req, want) in malformed_creates() {
        assert_eq!(create_code(&c, req).await, want, "{what}");
    }
    assert_eq!(
        runner.commands(),
        Vec::<String>::new(),
        "no lvm command may run for a refused request"
    );
}

/// CreateVolume requests carve must refuse before running LVM, each with
/// what is wrong and the code it gets.
fn malformed_creates() -> Vec<(&'static str, csi::CreateVolumeRequest, Code)> {
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
    cases
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

/// Issue 14, finding 8: a CreateVolume that reuses the name of a volume being
/// made from a snapshot, with another (here: nonexistent) source, is
/// AlreadyExists and leaves that volume alone. On a019df7 the source
/// resolved to "gone" and the volume in progress was removed.
#[tokio::test]
async fn same_name_another_source_is_already_exists_and_removes_nothing() {
    use carve_core::names;
    let (c, runner) = setup().await;
    let lv = names::lv_name("restoring");
    let tags = [
        names::tag(names::TAG_OWNER, "carve.dev"),
        names::tag(names::TAG_NAME, "restoring"),
        names::tag(names::TAG_INCOMPLETE, "1"),
        names::tag(
            names::TAG_SOURCE,
            "v1:node-a:vgthick/cs-real-0000000000000000",
        ),
    ]
    .join(",");
    runner.add_lv("vgthick", &lv, &tags);
    c.state.refresh().await.unwrap();
    runner.clear();
    let mut req = create_req("restoring", MI, 0);
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: "v1:node-a:vgthick/cs-garbage-0000000000000000".into(),
            },
        )),
    });
    assert_eq!(create_code(&c, req).await, Code::AlreadyExists);
    assert!(
        runner.has_lv("vgthick", &lv),
        "the volume in progress is kept"
    );
    assert!(
        !runner.writes().iter().any(|w| w.contains("lvremove")),
        "{:?}",
        runner.writes()
    );
}

/// Issue 14, finding 10: names of 1024 bytes that each encode to three
/// (`~` is `#7e` in a tag) are retried and converge, for volumes and
/// snapshots. On a019df7 the name tag was cut at 900 encoded bytes and the
/// retry compared it with the whole name: AlreadyExists for ever.
#[tokio::test]
async fn retries_of_1024_byte_names_converge() {
    let (c, runner) = setup().await;
    let name = "~".repeat(1024);
    let first = c
        .create_volume(Request::new(create_req(&name, 8 * MI, 0)))
        .await
        .unwrap()
        .into_inner();
    c.state.refresh().await.unwrap();
    let again = c
        .create_volume(Request::new(create_req(&name, 8 * MI, 0)))
        .await
        .unwrap_or_else(|s| panic!("retry: {s:?}"))
        .into_inner();
    assert_eq!(first, again);
    let source = first.volume.unwrap().volume_id;
    let snap = |name: &str| csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.clone(),
        ..Default::default()
    };
    use crate::csi::controller_server::Controller;
    let s1 = Controller::create_snapshot(&*c, Request::new(snap(&"%".repeat(1024))))
        .await
        .unwrap()
        .into_inner();
    c.state.refresh().await.unwrap();
    let s2 = Controller::create_snapshot(&*c, Request::new(snap(&"%".repeat(1024))))
        .await
        .unwrap_or_else(|s| panic!("snapshot retry: {s:?}"))
        .into_inner();
    assert_eq!(
        s1.snapshot.unwrap().snapshot_id,
        s2.snapshot.unwrap().snapshot_id
    );
    let creates = runner
        .writes()
        .iter()
        .filter(|w| w.contains("lvcreate"))
        .count();
    assert_eq!(creates, 2, "one lvcreate each: {:?}", runner.writes());
}

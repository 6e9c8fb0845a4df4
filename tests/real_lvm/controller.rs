//! Controller and Identity against real LVM in the UML guest: capacity
//! accounting, thin over-provisioning, layouts, listing, foreign LVs,
//! concurrency, restarts and deletes.

use super::*;

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
async fn bad_config_refuses_to_start_naming_the_field() {
    let cfg = config_file(
        "[[device_class]]\nname='x'\nvolume_group='carve-raid'\ntype='thick'\nraid='raid9'\n",
    );
    let err = match Carve::try_start(cfg.path()).await {
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
    assert_tagged(
        &real,
        &[
            "carve.dev/owner=carve.dev",
            "carve.dev/name=pvc-thick-1",
            "carve.dev/class=thick",
            "carve.dev/pvc=data",
            "carve.dev/pvc-namespace=db",
            "carve.dev/pv=pvc-thick-1",
        ],
    );
    let after = capacity(&mut c, "thick").await;
    assert_eq!(
        before.available_capacity - after.available_capacity,
        104 * MI
    );

    // Idempotent retry; conflicting retry.
    retry_makes_nothing_new(&mut c, &req, &vol, &real).await;

    confirmed_and_healthy(&mut c, &vol.volume_id).await;

    // Expand: LVM grows, capacity shrinks by the difference.
    let exp = expand_to(&mut c, &vol.volume_id, 200 * MI, Some(mount_cap())).await;
    assert_eq!(exp.capacity_bytes, 200 * MI);
    assert!(exp.node_expansion_required);
    assert_eq!(lv(vg, name).unwrap().lv_size, (200 * MI).to_string());
    assert_eq!(
        before.available_capacity - capacity(&mut c, "thick").await.available_capacity,
        200 * MI
    );
    // Expanding to a smaller size changes nothing.
    let same = expand_to(&mut c, &vol.volume_id, 8 * MI, None).await;
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

/// The same CreateVolume again answers the same volume on the same LV; the
/// same name with another size is AlreadyExists.
async fn retry_makes_nothing_new(
    c: &mut ControllerClient<Channel>,
    req: &csi::CreateVolumeRequest,
    vol: &csi::Volume,
    real: &Lv,
) {
    let again = create_ok(c, req.clone()).await;
    assert_eq!(again.volume_id, vol.volume_id);
    let (vg, name) = split(&vol.volume_id);
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
}

/// Every tag in `want` is on the LV.
fn assert_tagged(real: &Lv, want: &[&str]) {
    for t in want {
        assert!(
            real.lv_tags.split(',').any(|x| x == *t),
            "tag {t} missing: {}",
            real.lv_tags
        );
    }
}

/// ValidateVolumeCapabilities confirms mount and block; ControllerGetVolume
/// reports the volume healthy.
async fn confirmed_and_healthy(c: &mut ControllerClient<Channel>, id: &str) {
    let ok = c
        .validate_volume_capabilities(csi::ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: vec![mount_cap(), block_cap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let cond = condition(c, id).await;
    assert!(!cond.abnormal, "{}", cond.message);
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
    let cond = condition(&mut c, &vol.volume_id).await;
    assert!(cond.abnormal);
    assert!(cond.message.contains("not active"), "{}", cond.message);
    delete(&mut c, vol.volume_id).await;
}

#[tokio::test]
async fn concurrent_creates_of_one_name_converge_on_one_lv() {
    // 100 callers at once with one name, thick and thin: exactly one LV,
    // every success the same volume, every other answer Aborted (the name
    // is being created), and the class's capacity exact afterwards.
    let carve = Carve::start(&testbed_config()).await;
    let c = carve.controller().await;
    for (class, vg) in [("thick", "carve-thick"), ("thin", "carve-thin")] {
        let mut probe = c.clone();
        let before = capacity(&mut probe, class).await.available_capacity;
        let name = format!("race-{class}");
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let mut c = c.clone();
            let req = create_req(&name, Some(class), 16 * MI);
            tasks.push(tokio::spawn(async move { c.create_volume(req).await }));
        }
        let (mut volumes, mut aborted) = (Vec::new(), 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => volumes.push(r.into_inner().volume.unwrap()),
                Err(s) => {
                    assert_eq!(s.code(), Code::Aborted, "{}", s.message());
                    aborted += 1;
                }
            }
        }
        assert!(
            !volumes.is_empty(),
            "{class}: {aborted} aborted, none succeeded"
        );
        assert!(
            volumes.iter().all(|v| v == &volumes[0]),
            "{class}: every success is the same volume"
        );
        let lv_name = carve_core::names::lv_name(&name);
        assert_eq!(
            lvs(vg).iter().filter(|l| l.lv_name == lv_name).count(),
            1,
            "{class}"
        );
        eprintln!(
            "{class}: {} successes, {aborted} Aborted, one LV",
            volumes.len()
        );
        let mut c = c.clone();
        let v = create_ok(&mut c, create_req(&name, Some(class), 16 * MI)).await;
        assert_eq!(v, volumes[0]);
        delete(&mut c, v.volume_id).await;
        assert_eq!(
            capacity(&mut c, class).await.available_capacity,
            before,
            "{class}"
        );
    }
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

/// Issue 8, finding 7: creates racing the background refresh (a burst of
/// creates schedules one 750 ms after its last, or 10 s after its first;
/// every third create here waits past that, so refreshes land between and
/// around creates) never make the cache list a volume twice or lose one, and
/// the capacity is exact after every create.
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
        if i % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    for id in ids {
        delete(&mut c, id).await;
    }
    assert_eq!(capacity(&mut c, "thin").await.available_capacity, before);
}

/// 64 distinct CreateVolume at once, then 64 DeleteVolume at once, on thick
/// and thin: all succeed, and the class's capacity is exact at every step
/// (the P2 benchmark's workload, asserted).
#[tokio::test]
async fn sixty_four_concurrent_creates_and_deletes_keep_capacity_exact() {
    // The default refresh period, as on a real node (the test ground's is 5 s).
    let text = std::fs::read_to_string(testbed_config()).unwrap();
    let cfg = config_file(&text.replace(
        "capacity_refresh_seconds = 5",
        "capacity_refresh_seconds = 30",
    ));
    let carve = Carve::start(cfg.path()).await;
    let c = carve.controller().await;
    for class in ["thick", "thin"] {
        let mut probe = c.clone();
        // Someone else's LVs come and go first, as the benchmark's bare
        // lvcreate loop does; carve's next change of the VG reads it again.
        let (vg, target) = if class == "thin" {
            ("carve-thin", "carve-thin/pool0")
        } else {
            ("carve-thick", "carve-thick")
        };
        for i in 0..8 {
            let name = format!("other-{i}");
            if class == "thin" {
                lvm(&[
                    "lvcreate", "-q", "-y", "-n", &name, "-V", "8m", "--thin", target,
                ]);
            } else {
                lvm(&["lvcreate", "-q", "-y", "-n", &name, "-L", "8m", target]);
            }
        }
        let settle = create_ok(
            &mut probe,
            create_req(&format!("settle-{class}"), Some(class), 8 * MI),
        )
        .await;
        lvm(&["lvremove", "-q", "-y", "--select", "lv_name=~^other-", vg]);
        delete(&mut probe, settle.volume_id).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = capacity(&mut probe, class).await.available_capacity;
        // LVM's own figure, for thick: VG free minus the class's 256 MiB spare.
        let truth = || -> i64 {
            lvm(&[
                "vgs",
                "--noheadings",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                "vg_free",
                "carve-thick",
            ])
            .trim()
            .parse::<i64>()
            .unwrap()
                - 256 * MI
        };
        if class == "thick" {
            assert_eq!(before, truth(), "thick: before, against LVM");
        }
        let mut tasks = Vec::new();
        for i in 0..64 {
            let mut c = c.clone();
            let req = create_req(&format!("p2-{class}-{i}"), Some(class), 8 * MI);
            tasks.push(tokio::spawn(async move { c.create_volume(req).await }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(
                t.await
                    .unwrap()
                    .expect("CreateVolume")
                    .into_inner()
                    .volume
                    .unwrap()
                    .volume_id,
            );
        }
        assert_eq!(
            capacity(&mut probe, class).await.available_capacity,
            before - 64 * 8 * MI,
            "{class}: with the 64 volumes"
        );
        if class == "thick" {
            assert_eq!(
                before - 64 * 8 * MI,
                truth(),
                "thick: with the 64 volumes, against LVM"
            );
        }
        // And still once the refresh those creates asked for has run.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            capacity(&mut probe, class).await.available_capacity,
            before - 64 * 8 * MI,
            "{class}: with the 64 volumes, after a refresh"
        );
        let mut tasks = Vec::new();
        for id in ids {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.delete_volume(csi::DeleteVolumeRequest {
                    volume_id: id,
                    ..Default::default()
                })
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("DeleteVolume");
        }
        assert_eq!(
            capacity(&mut probe, class).await.available_capacity,
            before,
            "{class}: after"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            capacity(&mut probe, class).await.available_capacity,
            before,
            "{class}: after a refresh"
        );
    }
}

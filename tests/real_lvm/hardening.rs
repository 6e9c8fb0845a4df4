//! Issue 14's findings that need real LVM, mkfs and mounts: a dense node
//! does not stall, and data is never put at risk by a retry.

use super::node::{paths, stage, unstage};
use super::*;

/// 64 NodeStage calls at once (a node rebooting with 64 pods), with a
/// blocking pool of 2 threads. Each stage used to hold a pool thread for its
/// whole run and ask for a second one to probe the device: on a019df7 (its
/// pool cut to 2) the calls never finished. Now every stage finishes.
#[tokio::test]
async fn sixty_four_concurrent_stages_finish() {
    const N: usize = 64;
    let carve = Carve::start_with(&testbed_config(), Opts::blocking_threads(2)).await;
    let mut c = carve.controller().await;
    let mut ids = vec![];
    for i in 0..N {
        let v = create_ok(
            &mut c,
            create_req(&format!("dense-{i}"), Some("thin"), 16 * MI),
        )
        .await;
        ids.push(v.volume_id);
    }
    let cap = mount_cap();
    let mut calls = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (id, cap) = (id.clone(), cap.clone());
        let mut n = carve_csi::csi::node_client::NodeClient::new(carve.channel().await);
        calls.spawn(async move {
            let p = paths(&format!("dense-{i}"));
            stage(&mut n, &id, &p, &cap).await.map(|_| i)
        });
    }
    // A deadlock shows as this bound running out, not as a hung suite.
    let all = tokio::time::timeout(Duration::from_secs(300), async {
        let mut done = 0;
        while let Some(r) = calls.join_next().await {
            r.unwrap().unwrap_or_else(|e| panic!("NodeStage: {e}"));
            done += 1;
        }
        done
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "64 concurrent NodeStage calls did not finish:\n{}",
            carve.log_text()
        )
    });
    assert_eq!(all, N);
    let mut n = carve_csi::csi::node_client::NodeClient::new(carve.channel().await);
    for (i, id) in ids.iter().enumerate() {
        unstage(&mut n, id, &paths(&format!("dense-{i}"))).await;
        delete(&mut c, id.clone()).await;
    }
    foreign_intact();
}

/// Thick copies run on their own workers (`copy_workers`, 1 here), the rest
/// wait in line, and node RPCs answer while copies run: three slow restores
/// at once, a stage, publish, unpublish and unstage of another volume
/// meanwhile (the pool of 2 blocking threads would have been taken by the
/// copies on a019df7).
#[tokio::test]
async fn node_rpcs_answer_while_copies_run_and_copies_queue() {
    use super::node::{mount_cap_fs, publish, unpublish};
    let cfg = std::fs::read_to_string(testbed_config()).unwrap();
    let cfg = config_file(&format!("copy_workers = 1\n{cfg}"));
    let opts = Opts::slow_copies(1000).and_blocking_threads(2);
    let carve = Carve::start_with(cfg.path(), opts).await;
    let mut c = carve.controller().await;
    let src = create_ok(&mut c, create_req("queue-src", Some("thick"), 32 * MI)).await;
    let snap = snapshot_ok(&mut c, "queue-snap", &src.volume_id).await;
    let mut restores = vec![];
    for i in 0..3 {
        let mut req = create_req(&format!("queue-r{i}"), Some("thick"), 32 * MI);
        req.volume_content_source = Some(super::crash::content(Some(&snap.snapshot_id), None));
        let e = c.create_volume(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{}", e.message());
        restores.push(req);
    }
    // Meanwhile, another volume is staged, published, unpublished, unstaged.
    let other = create_ok(&mut c, create_req("queue-other", Some("thick"), 16 * MI)).await;
    let mut n = carve_csi::csi::node_client::NodeClient::new(carve.channel().await);
    let p = paths("queue-other");
    let cap = mount_cap_fs("ext4", &[]);
    tokio::time::timeout(Duration::from_secs(120), async {
        stage(&mut n, &other.volume_id, &p, &cap).await.unwrap();
        publish(&mut n, &other.volume_id, &p, &cap, false)
            .await
            .unwrap();
        unpublish(&mut n, &other.volume_id, &p).await;
        unstage(&mut n, &other.volume_id, &p).await;
    })
    .await
    .unwrap_or_else(|_| panic!("node RPCs stalled behind copies:\n{}", carve.log_text()));
    let log = carve.log_text();
    assert!(
        log.lines()
            .filter(|l| l.contains("block copy started"))
            .count()
            >= 1
            && log.contains("block copy queued"),
        "one copy runs, the others wait in line:\n{log}"
    );
    for req in &restores {
        let v = super::crash::create_until_done(&mut c, req).await;
        delete(&mut c, v.volume_id).await;
    }
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    for id in [other.volume_id, src.volume_id] {
        delete(&mut c, id).await;
    }
    foreign_intact();
}

/// A configured VG that is absent (a node without the disk, or a disk not
/// attached yet): Probe stays ready (on a019df7 it was not ready, and
/// livenessprobe restarted carve for ever), the class has zero capacity,
/// CreateVolume is ResourceExhausted naming the VG, DeleteVolume and
/// DeleteSnapshot of its volumes are Unavailable (on a019df7: OK, and the
/// LV leaked when the disk came back), and the class works once the VG
/// appears, without a restart.
#[tokio::test]
async fn an_absent_vg_is_zero_capacity_and_appears_without_restart() {
    let base = std::fs::read_to_string(testbed_config()).unwrap();
    let cfg = config_file(&format!(
        "{base}\n[[device_class]]\nname = 'late'\nvolume_group = 'carve-late'\ntype = 'thick'\n"
    ));
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let probe = carve
        .identity()
        .await
        .probe(csi::ProbeRequest {})
        .await
        .unwrap();
    assert_eq!(probe.into_inner().ready, Some(true));
    assert!(
        carve.log_text().contains("carve-late"),
        "the log names the absent VG"
    );
    assert_eq!(capacity(&mut c, "late").await.available_capacity, 0);
    let e = c
        .create_volume(create_req("late-1", Some("late"), 16 * MI))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("carve-late"), "{}", e.message());
    let e = c
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: id_here("carve-late", "cv-late-0-0000000000000000"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    let e = c
        .delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: id_here("carve-late", "cs-late-0-0000000000000000"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());

    // The disk arrives.
    let late = LoopVg::new("carve-late", "256M");
    // Found by the next full scan: carve looks again at most every 30 s
    // while a configured VG is missing (lvm/devices.rs).
    let deadline = Instant::now() + Duration::from_secs(90);
    while capacity(&mut c, "late").await.available_capacity == 0 {
        assert!(
            Instant::now() < deadline,
            "capacity never appeared:\n{}",
            carve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v = create_ok(&mut c, create_req("late-1", Some("late"), 16 * MI)).await;
    delete(&mut c, v.volume_id).await;
    drop(late);
    foreign_intact();
}

/// Finding 10 against real LVM: a 1024-byte request name of bytes that encode
/// to three is accepted by lvcreate (its tag cut to fit), and the retry
/// converges on the same volume.
#[tokio::test]
async fn a_1024_byte_name_is_retried_onto_the_same_volume() {
    let (_carve, mut c, _) = Carve::with_clients().await;
    let name = "~".repeat(1024);
    let first = create_ok(&mut c, create_req(&name, Some("thin"), 16 * MI)).await;
    let again = create_ok(&mut c, create_req(&name, Some("thin"), 16 * MI)).await;
    assert_eq!(first.volume_id, again.volume_id);
    delete(&mut c, first.volume_id).await;
    foreign_intact();
}

/// Finding 9: a restore into a larger volume is staged with its filesystem
/// grown to the device (ext4, xfs, btrfs), the snapshot's data intact. On
/// a019df7 the LV grew but the filesystem kept the snapshot's size.
async fn restore_into_larger_volume_grows_the_filesystem(fs: &str, size: i64) {
    use super::node::{create, df, mount_cap_fs};
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = mount_cap_fs(fs, &[]);
    let src = create(
        &mut c,
        &format!("grow-src-{fs}"),
        Some("thin"),
        size,
        cap.clone(),
    )
    .await;
    let p = paths(&format!("grow-src-{fs}"));
    stage(&mut n, &src, &p, &cap).await.unwrap();
    std::fs::write(p.stage.join("kept"), b"snapshot data").unwrap();
    unstage(&mut n, &src, &p).await;
    let snap = snapshot_ok(&mut c, &format!("grow-snap-{fs}"), &src).await;
    let mut req = create_req(&format!("grow-big-{fs}"), Some("thin"), 2 * size);
    req.volume_capabilities = vec![cap.clone()];
    req.volume_content_source = Some(super::crash::content(Some(&snap.snapshot_id), None));
    let big = create_ok(&mut c, req).await;
    assert_eq!(big.capacity_bytes, 2 * size);
    let q = paths(&format!("grow-big-{fs}"));
    stage(&mut n, &big.volume_id, &q, &cap).await.unwrap();
    let (total, _, _) = df(&q.stage);
    assert!(
        total > size * 3 / 2,
        "{fs}: filesystem of {total} bytes on a {} byte volume",
        2 * size
    );
    assert_eq!(
        std::fs::read(q.stage.join("kept")).unwrap(),
        b"snapshot data"
    );
    unstage(&mut n, &big.volume_id, &q).await;
    delete(&mut c, big.volume_id).await;
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, src).await;
    foreign_intact();
}

#[tokio::test]
async fn restore_into_larger_volume_grows_ext4() {
    restore_into_larger_volume_grows_the_filesystem("ext4", 64 * MI).await;
}

#[tokio::test]
async fn restore_into_larger_volume_grows_xfs() {
    restore_into_larger_volume_grows_the_filesystem("xfs", 320 * MI).await;
}

#[tokio::test]
async fn restore_into_larger_volume_grows_btrfs() {
    restore_into_larger_volume_grows_the_filesystem("btrfs", 128 * MI).await;
}

/// Finding 12: the node service acts only strictly inside `node_path_roots`
/// ("/tmp" in the test ground), on paths resolved through symlinks. On
/// a019df7 an unpublish of an unknown volume removed any empty file it was
/// pointed at (here a stand-in for /run/xtables.lock), /proc was not refused,
/// and a staging path under a symlinked root was left mounted by unstage
/// (the mount table shows the resolved path; carve compared the given one).
#[tokio::test]
async fn node_paths_stay_inside_the_roots_and_are_resolved() {
    use carve_csi::csi::node_client::NodeClient;
    let (carve, mut c, _) = Carve::with_clients().await;
    let mut n = NodeClient::new(carve.channel().await);
    let lock = Path::new("/run/carve-test-xtables.lock");
    std::fs::write(lock, b"").unwrap();
    let e = n
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: id_here("carve-thick", "cv-unknown-0000000000000000"),
            target_path: lock.display().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(lock.exists(), "a file outside the roots is never removed");
    std::fs::remove_file(lock).unwrap();

    let v = create_ok(&mut c, create_req("confined", Some("thin"), 16 * MI)).await;
    let cap = mount_cap();
    let proc_paths = super::node::Paths {
        stage: PathBuf::from("/proc/carve-stage"),
        target: PathBuf::from("/proc/carve-target"),
    };
    let e = stage(&mut n, &v.volume_id, &proc_paths, &cap)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());

    // A root reached through a symlink, as kubelet's dir can be.
    let real = Path::new("/tmp/confined-real");
    let link = Path::new("/tmp/confined-link");
    std::fs::create_dir_all(real).unwrap();
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(real, link).unwrap();
    let p = super::node::Paths {
        stage: link.join("v/stage"),
        target: link.join("v/pod/target"),
    };
    stage(&mut n, &v.volume_id, &p, &cap).await.unwrap();
    stage(&mut n, &v.volume_id, &p, &cap)
        .await
        .expect("idempotent through the link");
    unstage(&mut n, &v.volume_id, &p).await;
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !table.contains("/tmp/confined-real/v/stage"),
        "nothing left mounted at the resolved path:\n{table}"
    );
    delete(&mut c, v.volume_id).await;
    foreign_intact();
}

/// Reads completed on block device `dev` (/dev/loopN), from sysfs.
fn reads_of(dev: &str) -> u64 {
    let name = dev.trim_start_matches("/dev/");
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

/// Finding 17: carve's lvm opens only the PVs of its configured VGs. A
/// "poison" device holding a foreign VG (a KubeVirt disk, a Ceph OSD) is not
/// read once across create, snapshot, delete and capacity refreshes after
/// carve has started. On a019df7 every lvm command scanned it.
#[tokio::test]
async fn lvm_never_reads_devices_outside_carves_vgs() {
    let poison = LoopVg::new("poison-vg", "64M");
    let (carve, mut c, _) = Carve::with_clients().await;
    // Start-up may look once (to find carve's PVs); from here on, never.
    let before = reads_of(&poison.device);
    let v = create_ok(&mut c, create_req("poison-check", Some("thick"), 16 * MI)).await;
    let snap = snapshot_ok(&mut c, "poison-snap", &v.volume_id).await;
    let t = create_ok(&mut c, create_req("poison-thin", Some("thin"), 16 * MI)).await;
    capacity(&mut c, "thick").await;
    // Past one background refresh (capacity_refresh_seconds = 5).
    tokio::time::sleep(Duration::from_secs(7)).await;
    capacity(&mut c, "thin").await;
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, v.volume_id).await;
    delete(&mut c, t.volume_id).await;
    let after = reads_of(&poison.device);
    assert_eq!(
        after,
        before,
        "the poison device was read:\n{}",
        carve.log_text()
    );
    drop(carve);
    drop(poison);
    foreign_intact();
}

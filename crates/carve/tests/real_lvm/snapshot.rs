//! Snapshots, restores and clones against real LVM, mkfs and mount in the UML
//! guest: data integrity, crash recovery of a thick restore, bad input.

use std::time::{Duration, Instant};

use carve_csi::csi::node_client::NodeClient;

use super::node::*;
use super::*;

async fn snapshot(
    c: &mut ControllerClient<Channel>,
    name: &str,
    source: &str,
) -> Result<csi::Snapshot, tonic::Status> {
    c.create_snapshot(csi::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().snapshot.unwrap())
}

fn from_snapshot(
    name: &str,
    class: Option<&str>,
    size: i64,
    snap: &str,
    cap: csi::VolumeCapability,
) -> csi::CreateVolumeRequest {
    let mut req = create_req(name, class, size);
    req.volume_capabilities = vec![cap];
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Snapshot(
            csi::volume_content_source::SnapshotSource {
                snapshot_id: snap.into(),
            },
        )),
    });
    req
}

fn from_volume(
    name: &str,
    class: Option<&str>,
    size: i64,
    vol: &str,
    cap: csi::VolumeCapability,
) -> csi::CreateVolumeRequest {
    let mut req = from_snapshot(name, class, size, "", cap);
    req.volume_content_source = Some(csi::VolumeContentSource {
        r#type: Some(csi::volume_content_source::Type::Volume(
            csi::volume_content_source::VolumeSource {
                volume_id: vol.into(),
            },
        )),
    });
    req
}

/// write → snapshot (while the filesystem is mounted and being written) →
/// overwrite → restore → the restored volume holds the old data.
async fn restore_keeps_old_data(fs: &str, class: Option<&str>) {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs(fs, &[]);
    let tag = format!("{fs}-{}", class.unwrap_or("thick"));
    let id = create(
        &mut c,
        &format!("snap-src-{tag}"),
        class,
        320 * MI,
        cap.clone(),
    )
    .await;
    let p = paths(&format!("snap-src-{tag}"));
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    let old: Vec<u8> = (0..2 * MI).map(|i| (i % 241) as u8).collect();
    std::fs::write(p.target.join("data.bin"), &old).unwrap();
    // A writer keeps the filesystem busy while the snapshot is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (stop, dir) = (stop.clone(), p.target.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(dir.join("busy.log"), format!("{i}\n").repeat(1000)).unwrap();
                i += 1;
            }
        })
    };
    let snap = snapshot(&mut c, &format!("snap-{tag}"), &id).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert!(snap.ready_to_use);
    assert_eq!(snap.size_bytes, 320 * MI);
    assert_eq!(snap.source_volume_id, id);
    assert!(snap.creation_time.as_ref().unwrap().seconds > 1_700_000_000);
    // Idempotent by name and source; same name with another source conflicts.
    let again = snapshot(&mut c, &format!("snap-{tag}"), &id).await.unwrap();
    assert_eq!(again.snapshot_id, snap.snapshot_id);
    assert_eq!(again.creation_time, snap.creation_time);
    let new: Vec<u8> = vec![0xAB; 2 * MI as usize];
    std::fs::write(p.target.join("data.bin"), &new).unwrap();

    let restored = create_ok(
        &mut c,
        from_snapshot(
            &format!("restored-{tag}"),
            class,
            0,
            &snap.snapshot_id,
            cap.clone(),
        ),
    )
    .await;
    assert_eq!(restored.capacity_bytes, 320 * MI);
    assert!(restored.content_source.is_some());
    let rp = paths(&format!("snap-restored-{tag}"));
    stage(&mut n, &restored.volume_id, &rp, &cap).await.unwrap();
    publish(&mut n, &restored.volume_id, &rp, &cap, false)
        .await
        .unwrap();
    assert!(
        std::fs::read(rp.target.join("data.bin")).unwrap() == old,
        "restored volume has the data of the snapshot instant"
    );
    assert!(
        std::fs::read(p.target.join("data.bin")).unwrap() == new,
        "source keeps its new data"
    );
    // A restore larger than the source grows to the requested size.
    let bigger = create_ok(
        &mut c,
        from_snapshot(
            &format!("restored-big-{tag}"),
            class,
            512 * MI,
            &snap.snapshot_id,
            cap.clone(),
        ),
    )
    .await;
    assert_eq!(bigger.capacity_bytes, 512 * MI);
    let (vg, name) = split(&bigger.volume_id);
    assert_eq!(lv(vg, name).unwrap().lv_size, (512 * MI).to_string());
    // The snapshot can go while the restored volume lives on.
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(std::fs::read(rp.target.join("data.bin")).unwrap() == old);
    for (vid, pp) in [(&restored.volume_id, &rp), (&id, &p)] {
        unpublish(&mut n, vid, pp).await;
        unstage(&mut n, vid, pp).await;
    }
    for v in [restored.volume_id, bigger.volume_id, id] {
        delete(&mut c, v).await;
    }
    foreign_intact();
}

#[tokio::test]
async fn thick_ext4_restore_keeps_old_data() {
    restore_keeps_old_data("ext4", None).await;
}

#[tokio::test]
async fn thick_xfs_restore_keeps_old_data() {
    restore_keeps_old_data("xfs", None).await;
}

#[tokio::test]
async fn thin_ext4_restore_keeps_old_data() {
    restore_keeps_old_data("ext4", Some("thin")).await;
}

#[tokio::test]
async fn thin_xfs_restore_keeps_old_data() {
    restore_keeps_old_data("xfs", Some("thin")).await;
}

async fn clone_of_mounted_volume(class: Option<&str>) {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs("ext4", &[]);
    let tag = class.unwrap_or("thick");
    let id = create(
        &mut c,
        &format!("clone-src-{tag}"),
        class,
        128 * MI,
        cap.clone(),
    )
    .await;
    let p = paths(&format!("clone-src-{tag}"));
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    std::fs::write(p.target.join("f.txt"), b"cloned while mounted").unwrap();
    let clone = create_ok(
        &mut c,
        from_volume(&format!("clone-{tag}"), class, 0, &id, cap.clone()),
    )
    .await;
    let (vg, name) = split(&clone.volume_id);
    assert!(lv(vg, name)
        .unwrap()
        .lv_tags
        .split(',')
        .all(|t| !t.starts_with("carve.dev/incomplete")));
    let mut want = vec![split(&id).1.to_string(), name.to_string()];
    want.sort();
    assert_eq!(
        lv_names(vg)
            .into_iter()
            .filter(|n| want.contains(n) || n.starts_with("ct-"))
            .collect::<Vec<_>>(),
        want,
        "source and clone only: the temporary snapshot ({}) is gone",
        carve_core::names::clone_temp_name(name)
    );
    let cp = paths(&format!("clone-dst-{tag}"));
    stage(&mut n, &clone.volume_id, &cp, &cap).await.unwrap();
    publish(&mut n, &clone.volume_id, &cp, &cap, false)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(cp.target.join("f.txt")).unwrap(),
        b"cloned while mounted"
    );
    for (vid, pp) in [(&clone.volume_id, &cp), (&id, &p)] {
        unpublish(&mut n, vid, pp).await;
        unstage(&mut n, vid, pp).await;
    }
    delete(&mut c, clone.volume_id).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn thick_clone_of_a_mounted_volume() {
    clone_of_mounted_volume(None).await;
}

#[tokio::test]
async fn thin_clone_of_a_mounted_volume() {
    clone_of_mounted_volume(Some("thin")).await;
}

#[tokio::test]
async fn snapshot_bad_input_and_listing() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let cap = mount_cap_fs("ext4", &[]);
    let a = create(&mut c, "snapl-a", Some("thin"), 64 * MI, cap.clone()).await;
    let b = create(&mut c, "snapl-b", Some("thin"), 64 * MI, cap.clone()).await;
    assert_eq!(
        snapshot(&mut c, "", &a).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        snapshot(&mut c, "s", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let thick_before = lv_names("carve-thick");
    for source in [
        id_here("carve-thin", "cv-nope-0000000000000000"),
        id_here("carve-thick", "cv-foreign-0000000000000000"),
        "carve-thin/foreign-thin".to_string(),
    ] {
        assert_eq!(
            snapshot(&mut c, "s", &source).await.unwrap_err().code(),
            Code::NotFound,
            "{source}"
        );
    }
    assert_eq!(
        lv_names("carve-thick"),
        thick_before,
        "no snapshot of the foreign LV"
    );
    let sa = snapshot(&mut c, "snapl-1", &a).await.unwrap();
    assert_eq!(
        snapshot(&mut c, "snapl-1", &b).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let sb = snapshot(&mut c, "snapl-2", &b).await.unwrap();
    let sa2 = snapshot(&mut c, "snapl-3", &a).await.unwrap();
    let by_source = c
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: a.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = by_source
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect();
    ids.sort();
    let mut want = vec![sa.snapshot_id.clone(), sa2.snapshot_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    let by_id = c
        .list_snapshots(csi::ListSnapshotsRequest {
            snapshot_id: sb.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.entries.len(), 1);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_snapshots(csi::ListSnapshotsRequest {
                max_entries: 1,
                starting_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        c.list_snapshots(csi::ListSnapshotsRequest {
            starting_token: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .code(),
        Code::Aborted
    );
    // Restores: wrong class, too small, unknown snapshot.
    assert_eq!(
        c.create_volume(from_snapshot(
            "r-wrong-class",
            None,
            0,
            &sa.snapshot_id,
            cap.clone()
        ))
        .await
        .unwrap_err()
        .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.create_volume(from_snapshot(
            "r-small",
            Some("thin"),
            8 * MI,
            &sa.snapshot_id,
            cap.clone()
        ))
        .await
        .unwrap_err()
        .code(),
        Code::OutOfRange
    );
    assert_eq!(
        c.create_volume(from_snapshot(
            "r-none",
            Some("thin"),
            0,
            &id_here("carve-thin", "cs-nope-0000000000000000"),
            cap.clone()
        ))
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    // Volumes are not listed as snapshots and snapshots not as volumes.
    let vols = c
        .list_volumes(csi::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(vols
        .entries
        .iter()
        .all(|e| !e.volume.as_ref().unwrap().volume_id.contains("/cs-")));
    for s in [sa, sb, sa2] {
        c.delete_snapshot(csi::DeleteSnapshotRequest {
            snapshot_id: s.snapshot_id,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    delete(&mut c, a).await;
    delete(&mut c, b).await;
}

#[tokio::test]
async fn killed_thick_restore_never_looks_ready_and_converges_on_retry() {
    let cfg = testbed_config();
    let mut first = Carve::start(&cfg).await;
    let mut c = first.controller().await;
    let mut n = NodeClient::new(first.channel().await);
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "kill-src", None, 512 * MI, cap.clone()).await;
    let p = paths("kill-src");
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    let payload: Vec<u8> = (0..8 * MI).map(|i| (i % 239) as u8).collect();
    std::fs::write(p.target.join("payload.bin"), &payload).unwrap();
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    let snap = snapshot(&mut c, "kill-snap", &id).await.unwrap();
    let req = from_snapshot("kill-restore", None, 0, &snap.snapshot_id, cap.clone());

    // Start the restore and kill carve as soon as its block copy has begun.
    let mut c2 = c.clone();
    let r = req.clone();
    let call = tokio::spawn(async move { c2.create_volume(r).await });
    let deadline = Instant::now() + Duration::from_secs(120);
    // This restore's copy (a copy resumed for a volume another test left
    // unfinished would log the same words).
    let name = carve_core::names::lv_name("kill-restore");
    let started = |log: String| {
        log.lines()
            .any(|l| l.contains("block copy started") && l.contains(&name))
    };
    while !started(first.log_text()) {
        assert!(
            Instant::now() < deadline,
            "copy never started: {}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(
        call.await.unwrap().is_err(),
        "the interrupted call cannot have succeeded"
    );
    assert!(
        !first.log_text().contains("block copy finished"),
        "the kill came after the copy"
    );
    drop(first);

    let half = lv("carve-thick", &name).expect("the half-restored LV exists");
    assert!(
        half.lv_tags
            .split(',')
            .any(|t| t == "carve.dev/incomplete=1"),
        "{}",
        half.lv_tags
    );

    // The restarted carve resumes the copy by itself (slowed down here so the
    // test sees it running).
    let second = Carve::start_with(&cfg, Opts::slow_copies(40)).await;
    let mut c = second.controller().await;
    let mut n = NodeClient::new(second.channel().await);
    let vid = listed_id(&mut c, &name)
        .await
        .expect("the half-restored volume is listed");
    let rp = paths("kill-restored");
    let e = stage(&mut n, &vid, &rp, &cap).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::Aborted,
        "staged while unfinished: {}",
        e.message()
    );
    let got = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: vid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cond = got.status.unwrap().volume_condition.unwrap();
    assert!(
        cond.abnormal && cond.message.contains("being filled from its source"),
        "{}",
        cond.message
    );

    // The retry joins the resumed copy and answers only when the volume is whole.
    let v = super::crash::create_until_done(&mut c, &req).await;
    assert_eq!(
        second
            .log_text()
            .lines()
            .filter(|l| l.contains("block copy started") && l.contains(&name))
            .count(),
        1,
        "the retries joined the one resumed copy"
    );
    assert_eq!(v.volume_id, vid);
    let whole = lv("carve-thick", &name).unwrap();
    assert_eq!(
        whole.lv_uuid, half.lv_uuid,
        "the same LV, resumed, not a second one"
    );
    assert!(!whole.lv_tags.contains("incomplete"), "{}", whole.lv_tags);
    stage(&mut n, &vid, &rp, &cap).await.unwrap();
    publish(&mut n, &vid, &rp, &cap, false).await.unwrap();
    assert!(std::fs::read(rp.target.join("payload.bin")).unwrap() == payload);
    unpublish(&mut n, &vid, &rp).await;
    unstage(&mut n, &vid, &rp).await;

    // No leaked LVs: exactly the source, its snapshot, the restore and the
    // test ground's foreign LVs.
    let mut names: Vec<String> = lvs("carve-thick").into_iter().map(|l| l.lv_name).collect();
    names.sort();
    let mut want = vec![
        "cv-foreign-0000000000000000".to_string(),
        "foreign-data".to_string(),
        split(&id).1.to_string(),
        split(&snap.snapshot_id).1.to_string(),
        name.clone(),
    ];
    want.sort();
    assert_eq!(names, want);
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    delete(&mut c, vid).await;
    delete(&mut c, id).await;
    foreign_intact();
}

/// Issue 8, finding 10: a snapshot whose name starts with `clone-` is an
/// ordinary snapshot, listed and found like any other.
#[tokio::test]
async fn a_snapshot_named_like_a_clone_is_listed() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let cap = mount_cap_fs("ext4", &[]);
    let v = create(&mut c, "clone-named-src", None, 8 * MI, cap).await;
    let snap = snapshot(&mut c, "clone-of-the-database", &v).await.unwrap();
    let listed = c
        .list_snapshots(csi::ListSnapshotsRequest {
            source_volume_id: v.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = listed
        .entries
        .into_iter()
        .map(|e| e.snapshot.unwrap().snapshot_id)
        .collect();
    assert_eq!(ids, vec![snap.snapshot_id.clone()]);
    c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    delete(&mut c, v).await;
}

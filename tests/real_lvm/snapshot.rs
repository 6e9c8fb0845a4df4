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

/// Rewrites a file in `dir` in a loop until stopped: a filesystem in use.
struct BusyWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl BusyWriter {
    fn start(dir: &std::path::Path) -> BusyWriter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (stop, dir) = (stop.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::write(dir.join("busy.log"), format!("{i}\n").repeat(1000)).unwrap();
                    i += 1;
                }
            })
        };
        BusyWriter { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// SIGKILLs carve as soon as it logs the start of the block copy into LV
/// `name` (a copy resumed for a volume another test left unfinished logs the
/// same words with another name).
async fn kill_once_copy_starts(carve: &mut Carve, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let started = |log: String| {
        log.lines()
            .any(|l| l.contains("block copy started") && l.contains(name))
    };
    while !started(carve.log_text()) {
        assert!(
            Instant::now() < deadline,
            "copy never started: {}",
            carve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    carve.child.kill().unwrap();
    carve.child.wait().unwrap();
}

/// ControllerGetVolume reports the volume abnormal, saying `why`.
async fn assert_abnormal(c: &mut ControllerClient<Channel>, id: &str, why: &str) {
    let cond = condition(c, id).await;
    assert!(
        cond.abnormal && cond.message.contains(why),
        "{}",
        cond.message
    );
}

/// write → snapshot (while the filesystem is mounted and being written) →
/// overwrite → restore → the restored volume holds the old data.
async fn restore_keeps_old_data(fs: &str, class: Option<&str>) {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
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
    attach(&mut n, &id, &p, &cap).await;
    let old: Vec<u8> = (0..2 * MI).map(|i| (i % 241) as u8).collect();
    std::fs::write(p.target.join("data.bin"), &old).unwrap();
    // A writer keeps the filesystem busy while the snapshot is taken.
    let busy = BusyWriter::start(&p.target);
    let snap = snapshot(&mut c, &format!("snap-{tag}"), &id).await.unwrap();
    busy.stop();
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
    attach(&mut n, &restored.volume_id, &rp, &cap).await;
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
    // The snapshot can go (twice: idempotent) while the restored volume lives on.
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    assert!(std::fs::read(rp.target.join("data.bin")).unwrap() == old);
    for (vid, pp) in [(&restored.volume_id, &rp), (&id, &p)] {
        detach(&mut n, vid, pp).await;
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
    let (_carve, mut c, mut n) = Carve::with_clients().await;
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
    attach(&mut n, &id, &p, &cap).await;
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
    attach(&mut n, &clone.volume_id, &cp, &cap).await;
    assert_eq!(
        std::fs::read(cp.target.join("f.txt")).unwrap(),
        b"cloned while mounted"
    );
    for (vid, pp) in [(&clone.volume_id, &cp), (&id, &p)] {
        detach(&mut n, vid, pp).await;
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
    bad_snapshot_requests_are_refused(&mut c, &a).await;
    let sa = snapshot(&mut c, "snapl-1", &a).await.unwrap();
    assert_eq!(
        snapshot(&mut c, "snapl-1", &b).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let sb = snapshot(&mut c, "snapl-2", &b).await.unwrap();
    let sa2 = snapshot(&mut c, "snapl-3", &a).await.unwrap();
    let by_source = csi::ListSnapshotsRequest {
        source_volume_id: a.clone(),
        ..Default::default()
    };
    let mut want = vec![sa.snapshot_id.clone(), sa2.snapshot_id.clone()];
    want.sort();
    assert_eq!(listed_snapshot_ids(&mut c, by_source).await, want);
    let by_id = csi::ListSnapshotsRequest {
        snapshot_id: sb.snapshot_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        listed_snapshot_ids(&mut c, by_id).await,
        vec![sb.snapshot_id.clone()]
    );
    // Paged one at a time, every snapshot of this test exactly once (another
    // test's snapshot left in the shared VGs is that test's failure).
    let seen: Vec<String> = paged_snapshot_ids(&mut c)
        .await
        .into_iter()
        .filter(|id| id.contains("cs-snapl-"))
        .collect();
    let mut all = vec![
        sa.snapshot_id.clone(),
        sb.snapshot_id.clone(),
        sa2.snapshot_id.clone(),
    ];
    all.sort();
    assert_eq!(seen, all, "{seen:?}");
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
    let unknown = id_here("carve-thin", "cs-nope-0000000000000000");
    for (name, class, size, snap, code) in [
        (
            "r-wrong-class",
            None,
            0,
            &sa.snapshot_id,
            Code::InvalidArgument,
        ),
        (
            "r-small",
            Some("thin"),
            8 * MI,
            &sa.snapshot_id,
            Code::OutOfRange,
        ),
        ("r-none", Some("thin"), 0, &unknown, Code::NotFound),
    ] {
        let req = from_snapshot(name, class, size, snap, cap.clone());
        let e = c.create_volume(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{name}: {e:?}");
    }
    // Volumes are not listed as snapshots and snapshots not as volumes.
    assert!(list_entries(&mut c).await.iter().all(|e| !e
        .volume
        .as_ref()
        .unwrap()
        .volume_id
        .contains("/cs-")));
    for s in [sa, sb, sa2] {
        delete_snapshot_ok(&mut c, &s.snapshot_id).await;
    }
    delete(&mut c, a).await;
    delete(&mut c, b).await;
}

/// Empty name or source is InvalidArgument; an unknown, foreign or
/// unqualified source is NotFound, and no snapshot of it is made.
async fn bad_snapshot_requests_are_refused(c: &mut ControllerClient<Channel>, volume: &str) {
    assert_eq!(
        snapshot(c, "", volume).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        snapshot(c, "s", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let thick_before = lv_names("carve-thick");
    for source in [
        id_here("carve-thin", "cv-nope-0000000000000000"),
        id_here("carve-thick", "cv-foreign-0000000000000000"),
        "carve-thin/foreign-thin".to_string(),
    ] {
        assert_eq!(
            snapshot(c, "s", &source).await.unwrap_err().code(),
            Code::NotFound,
            "{source}"
        );
    }
    assert_eq!(
        lv_names("carve-thick"),
        thick_before,
        "no snapshot of the foreign LV"
    );
}

/// Snapshot IDs one ListSnapshots call returns, sorted.
async fn listed_snapshot_ids(
    c: &mut ControllerClient<Channel>,
    req: csi::ListSnapshotsRequest,
) -> Vec<String> {
    let page = c.list_snapshots(req).await.unwrap().into_inner();
    let mut ids: Vec<String> = page
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect();
    ids.sort();
    ids
}

/// Every snapshot ID, read one entry per page.
async fn paged_snapshot_ids(c: &mut ControllerClient<Channel>) -> Vec<String> {
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
            return seen;
        }
        token = page.next_token;
    }
}

// One story of ~95 lines, kept whole on purpose: each step (kill mid-copy,
// restart, refuse while unfinished, retry joins the resumed copy, data whole)
// depends on the state the previous step left.
#[tokio::test]
async fn killed_thick_restore_never_looks_ready_and_converges_on_retry() {
    let cfg = testbed_config();
    let mut first = Carve::start(&cfg).await;
    let mut c = first.controller().await;
    let mut n = NodeClient::new(first.channel().await);
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "kill-src", None, 512 * MI, cap.clone()).await;
    let p = paths("kill-src");
    attach(&mut n, &id, &p, &cap).await;
    let payload: Vec<u8> = (0..8 * MI).map(|i| (i % 239) as u8).collect();
    std::fs::write(p.target.join("payload.bin"), &payload).unwrap();
    detach(&mut n, &id, &p).await;
    let snap = snapshot(&mut c, "kill-snap", &id).await.unwrap();
    let req = from_snapshot("kill-restore", None, 0, &snap.snapshot_id, cap.clone());

    // Start the restore and kill carve as soon as its block copy has begun.
    let mut c2 = c.clone();
    let r = req.clone();
    let call = tokio::spawn(async move { c2.create_volume(r).await });
    let name = carve_core::names::lv_name("kill-restore");
    kill_once_copy_starts(&mut first, &name).await;
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
    assert_abnormal(&mut c, &vid, "being filled from its source").await;

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
    attach(&mut n, &vid, &rp, &cap).await;
    assert!(std::fs::read(rp.target.join("payload.bin")).unwrap() == payload);
    detach(&mut n, &vid, &rp).await;

    // No leaked LVs: of this test's LVs exactly the source, its snapshot and
    // the restore; and the test ground's foreign LVs. Other tests' LVs in the
    // shared VG (a failed test's leftovers) are theirs to report.
    let mut want = vec![
        "cv-foreign-0000000000000000".to_string(),
        "foreign-data".to_string(),
        split(&id).1.to_string(),
        split(&snap.snapshot_id).1.to_string(),
        name.clone(),
    ];
    want.sort();
    let mine: Vec<String> = lv_names("carve-thick")
        .into_iter()
        .filter(|n| n.contains("kill-") || n.contains("foreign"))
        .collect();
    assert_eq!(mine, want);
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
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
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, v).await;
}

//! Node service against real mkfs, mount and LVM in the UML guest.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use carve::csi::node_client::NodeClient;

use super::*;

fn mount_cap_fs(fs: &str, flags: &[&str]) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

struct Paths {
    stage: PathBuf,
    target: PathBuf,
}

fn paths(tag: &str) -> Paths {
    let base = PathBuf::from(format!("/tmp/node-{tag}"));
    std::fs::create_dir_all(&base).unwrap();
    Paths {
        stage: base.join("stage"),
        target: base.join("pod/target"),
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

async fn stage(
    n: &mut NodeClient<Channel>,
    id: &str,
    p: &Paths,
    cap: &csi::VolumeCapability,
) -> Result<(), tonic::Status> {
    n.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn publish(
    n: &mut NodeClient<Channel>,
    id: &str,
    p: &Paths,
    cap: &csi::VolumeCapability,
    ro: bool,
) -> Result<(), tonic::Status> {
    n.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
        target_path: s(&p.target),
        volume_capability: Some(cap.clone()),
        readonly: ro,
        ..Default::default()
    })
    .await
    .map(drop)
}

async fn unpublish(n: &mut NodeClient<Channel>, id: &str, p: &Paths) {
    n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: s(&p.target),
    })
    .await
    .unwrap();
}

async fn unstage(n: &mut NodeClient<Channel>, id: &str, p: &Paths) {
    n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
    })
    .await
    .unwrap();
}

fn mounted(p: &Path) -> Option<carve::mountinfo::Mount> {
    carve::mountinfo::at(&carve::mountinfo::read().unwrap(), p)
}

fn df(p: &Path) -> (i64, i64, i64) {
    let out = Command::new("df")
        .args(["-B1", "--output=size,used,avail"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<i64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

async fn create(
    c: &mut ControllerClient<Channel>,
    name: &str,
    class: Option<&str>,
    size: i64,
    cap: csi::VolumeCapability,
) -> String {
    let mut req = create_req(name, class, size);
    req.volume_capabilities = vec![cap];
    c.create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

async fn data_survives_unstage_and_restage(fs: &str, class: Option<&str>) {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs(fs, &["noatime"]);
    let id = create(
        &mut c,
        &format!("node-data-{fs}-{}", class.unwrap_or("thick")),
        class,
        320 * MI,
        cap.clone(),
    )
    .await;
    let p = paths(&format!("data-{fs}-{}", class.unwrap_or("thick")));
    stage(&mut n, &id, &p, &cap).await.unwrap();
    let m = mounted(&p.stage).expect("staging path mounted");
    assert_eq!(m.fs_type, fs);
    assert!(m.options.iter().any(|o| o == "noatime"), "{:?}", m.options);
    stage(&mut n, &id, &p, &cap)
        .await
        .expect("stage is idempotent");
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    publish(&mut n, &id, &p, &cap, false)
        .await
        .expect("publish is idempotent");
    assert_eq!(
        publish(&mut n, &id, &p, &cap, true)
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists,
        "same target, other read-only flag"
    );
    std::fs::write(p.target.join("hello.txt"), b"carve keeps this").unwrap();
    unpublish(&mut n, &id, &p).await;
    unpublish(&mut n, &id, &p).await;
    assert!(!p.target.exists(), "target path removed");
    unstage(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    assert!(mounted(&p.stage).is_none());
    // Restage: no reformat, the data is there.
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(
        std::fs::read(p.target.join("hello.txt")).unwrap(),
        b"carve keeps this"
    );
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    // Asking for another filesystem never reformats.
    let other = if fs == "xfs" { "ext4" } else { "xfs" };
    let e = stage(&mut n, &id, &p, &mount_cap_fs(other, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    delete(&mut c, id).await;
}

#[tokio::test]
async fn ext4_data_survives_unstage_and_restage() {
    data_survives_unstage_and_restage("ext4", None).await;
}

#[tokio::test]
async fn xfs_on_thin_data_survives_unstage_and_restage() {
    data_survives_unstage_and_restage("xfs", Some("thin")).await;
}

#[tokio::test]
async fn btrfs_data_survives_unstage_and_restage() {
    data_survives_unstage_and_restage("btrfs", None).await;
}

#[tokio::test]
async fn read_only_publish_refuses_writes() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "node-ro", None, 64 * MI, cap.clone()).await;
    let p = paths("ro");
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, true).await.unwrap();
    assert!(mounted(&p.target).unwrap().read_only());
    let err = std::fs::write(p.target.join("x"), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // The staging mount stays writable: only the pod's view is read-only.
    assert!(!mounted(&p.stage).unwrap().read_only());
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

async fn online_expand(fs: &str) {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs(fs, &[]);
    let id = create(
        &mut c,
        &format!("node-grow-{fs}"),
        None,
        320 * MI,
        cap.clone(),
    )
    .await;
    let p = paths(&format!("grow-{fs}"));
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    let payload: Vec<u8> = (0..4 * MI).map(|i| (i % 251) as u8).collect();
    std::fs::write(p.target.join("data.bin"), &payload).unwrap();
    let (before, _, _) = df(&p.target);
    let range = csi::CapacityRange {
        required_bytes: GI,
        limit_bytes: 0,
    };
    let ctl = c
        .controller_expand_volume(csi::ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(range),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ctl.node_expansion_required);
    let r = n
        .node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: s(&p.target),
            capacity_range: Some(range),
            staging_target_path: s(&p.stage),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, GI);
    let (after, _, _) = df(&p.target);
    assert!(
        after > before * 2 && after > GI * 8 / 10,
        "{fs}: {before} -> {after}"
    );
    assert_eq!(std::fs::read(p.target.join("data.bin")).unwrap(), payload);
    // Again: idempotent.
    n.node_expand_volume(csi::NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: s(&p.target),
        capacity_range: Some(range),
        ..Default::default()
    })
    .await
    .unwrap();
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn online_expand_of_mounted_ext4_keeps_data() {
    online_expand("ext4").await;
}

#[tokio::test]
async fn online_expand_of_mounted_xfs_keeps_data() {
    online_expand("xfs").await;
}

#[tokio::test]
async fn block_publish_is_a_working_block_device_and_faults_show() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = block_cap();
    let id = create(&mut c, "node-block", None, 16 * MI, cap.clone()).await;
    let p = paths("block");
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    publish(&mut n, &id, &p, &cap, false)
        .await
        .expect("idempotent");
    let pattern: Vec<u8> = (0..MI).map(|i| (i * 7 % 256) as u8).collect();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p.target)
            .unwrap();
        f.seek(SeekFrom::Start(4 * MI as u64)).unwrap();
        f.write_all(&pattern).unwrap();
        f.sync_all().unwrap();
    }
    let mut back = vec![0u8; MI as usize];
    let mut dev = std::fs::File::open(format!("/dev/{id}")).unwrap();
    dev.seek(SeekFrom::Start(4 * MI as u64)).unwrap();
    dev.read_exact(&mut back).unwrap();
    drop(dev);
    assert!(
        back == pattern,
        "bytes written through the published path are on the LV"
    );
    let stats = n
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: s(&p.target),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage[0].total, 16 * MI);
    assert!(!stats.volume_condition.unwrap().abnormal);
    // Fault: the LV is deactivated under the published volume.
    lvm(&["lvchange", "-an", &id]);
    let stats = n
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: s(&p.target),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cond = stats.volume_condition.unwrap();
    assert!(
        cond.abnormal && cond.message.contains("not active"),
        "{}",
        cond.message
    );
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn stats_match_df() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "node-stats", None, 128 * MI, cap.clone()).await;
    let p = paths("stats");
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    std::fs::write(p.target.join("f"), vec![1u8; 3 * MI as usize]).unwrap();
    let st = n
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: s(&p.target),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (size, used, avail) = df(&p.target);
    let bytes = &st.usage[0];
    assert_eq!(
        (bytes.total, bytes.used, bytes.available),
        (size, used, avail)
    );
    let inodes = &st.usage[1];
    assert!(inodes.total > 0 && inodes.used > 0 && inodes.available > 0);
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn node_refuses_bad_input_before_touching_anything() {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "node-bad", None, 16 * MI, cap.clone()).await;
    let rel = Paths {
        stage: PathBuf::from("relative/stage"),
        target: PathBuf::from("/tmp/node-bad/t"),
    };
    assert_eq!(
        stage(&mut n, &id, &rel, &cap).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let dotdot = Paths {
        stage: PathBuf::from("/tmp/node-bad/../etc"),
        target: PathBuf::from("/tmp/node-bad/t"),
    };
    assert_eq!(
        stage(&mut n, &id, &dotdot, &cap).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let p = paths("bad");
    assert_eq!(
        stage(&mut n, &id, &p, &mount_cap_fs("ext4", &["ro,exec"]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        stage(&mut n, &id, &p, &mount_cap_fs("vfat", &[]))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        stage(&mut n, "carve-thick/cv-nope-0000", &p, &cap)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        stage(&mut n, "carve-thick/foreign-data", &p, &cap)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(mounted(&p.stage).is_none(), "nothing was mounted");
    // Publish before stage: FailedPrecondition.
    assert_eq!(
        publish(&mut n, &id, &p, &cap, false)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let info = n
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, NODE);
    assert_eq!(
        info.accessible_topology.unwrap().segments["topology.carve.dev/node"],
        NODE
    );
    delete(&mut c, id).await;
    foreign_intact();
}

// ---- snapshots, restores and clones (issue: snapshots and clones) ----

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

    let restored = c
        .create_volume(from_snapshot(
            &format!("restored-{tag}"),
            class,
            0,
            &snap.snapshot_id,
            cap.clone(),
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
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
    let bigger = c
        .create_volume(from_snapshot(
            &format!("restored-big-{tag}"),
            class,
            512 * MI,
            &snap.snapshot_id,
            cap.clone(),
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
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
    let clone = c
        .create_volume(from_volume(
            &format!("clone-{tag}"),
            class,
            0,
            &id,
            cap.clone(),
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let (vg, name) = split(&clone.volume_id);
    assert!(lv(vg, name)
        .unwrap()
        .lv_tags
        .split(',')
        .all(|t| !t.starts_with("carve.dev/incomplete")));
    assert!(
        lvs(vg).iter().all(|l| !l.lv_name.starts_with("cs-clone-")),
        "temporary snapshot removed"
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
    assert_eq!(
        snapshot(&mut c, "s", "carve-thin/cv-nope-00")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        snapshot(&mut c, "s", "carve-thin/foreign-thin")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
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
            "carve-thin/cs-nope-00",
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
    while !first.log_text().contains("block copy started") {
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

    let name = carve::names::lv_name("kill-restore");
    let half = lv("carve-thick", &name).expect("the half-restored LV exists");
    assert!(
        half.lv_tags
            .split(',')
            .any(|t| t == "carve.dev/incomplete=1"),
        "{}",
        half.lv_tags
    );

    let second = Carve::start(&cfg).await;
    let mut c = second.controller().await;
    let mut n = NodeClient::new(second.channel().await);
    let vid = format!("carve-thick/{name}");
    let got = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: vid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cond = got.status.unwrap().volume_condition.unwrap();
    assert!(
        cond.abnormal && cond.message.contains("block copy"),
        "{}",
        cond.message
    );

    // The retry copies again and answers only when the volume is whole.
    let v = c
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.volume_id, vid);
    let whole = lv("carve-thick", &name).unwrap();
    assert_eq!(
        whole.lv_uuid, half.lv_uuid,
        "the same LV, resumed, not a second one"
    );
    assert!(!whole.lv_tags.contains("incomplete"), "{}", whole.lv_tags);
    let rp = paths("kill-restored");
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

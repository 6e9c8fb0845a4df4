//! Node service against real mkfs, mount and LVM in the UML guest.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use carve_csi::csi::node_client::NodeClient;

use super::*;

pub(super) fn mount_cap_fs(fs: &str, flags: &[&str]) -> csi::VolumeCapability {
    carve_csi::client::mount_capability(fs, flags)
}

pub(super) struct Paths {
    pub(super) stage: PathBuf,
    pub(super) target: PathBuf,
}

pub(super) fn paths(tag: &str) -> Paths {
    let base = PathBuf::from(format!("/tmp/node-{tag}"));
    std::fs::create_dir_all(&base).unwrap();
    Paths {
        stage: base.join("stage"),
        target: base.join("pod/target"),
    }
}

pub(super) fn s(p: &Path) -> String {
    p.display().to_string()
}

pub(super) async fn stage(
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

pub(super) async fn publish(
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

pub(super) async fn unpublish(n: &mut NodeClient<Channel>, id: &str, p: &Paths) {
    n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: s(&p.target),
    })
    .await
    .unwrap();
}

pub(super) async fn unstage(n: &mut NodeClient<Channel>, id: &str, p: &Paths) {
    n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
    })
    .await
    .unwrap();
}

/// Stage, then publish read-write, asserting both succeed.
pub(super) async fn attach(
    n: &mut NodeClient<Channel>,
    id: &str,
    p: &Paths,
    cap: &csi::VolumeCapability,
) {
    stage(n, id, p, cap)
        .await
        .unwrap_or_else(|e| panic!("stage {id}: {e:?}"));
    publish(n, id, p, cap, false)
        .await
        .unwrap_or_else(|e| panic!("publish {id}: {e:?}"));
}

/// Unpublish, then unstage, asserting both succeed.
pub(super) async fn detach(n: &mut NodeClient<Channel>, id: &str, p: &Paths) {
    unpublish(n, id, p).await;
    unstage(n, id, p).await;
}

fn mounted(p: &Path) -> Option<carve_core::host::mountinfo::Mount> {
    carve_core::host::mountinfo::at(&carve_core::host::mountinfo::read().unwrap(), p)
}

/// NodeGetVolumeStats of `id` at its published target; it must succeed.
pub(super) async fn volume_stats(
    n: &mut NodeClient<Channel>,
    id: &str,
    p: &Paths,
) -> csi::NodeGetVolumeStatsResponse {
    n.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: s(&p.target),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("stats of {id}: {e:?}"))
    .into_inner()
}

/// NodeExpandVolume of the volume published at `p` to `bytes`, as kubelet
/// sends it; must succeed; returns the capacity it reports.
pub(super) async fn node_expand(
    n: &mut NodeClient<Channel>,
    id: &str,
    p: &Paths,
    cap: &csi::VolumeCapability,
    bytes: i64,
) -> i64 {
    n.node_expand_volume(csi::NodeExpandVolumeRequest {
        volume_id: id.into(),
        volume_path: s(&p.target),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        staging_target_path: s(&p.stage),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("NodeExpandVolume {id}: {e:?}"))
    .into_inner()
    .capacity_bytes
}

pub(super) fn df(p: &Path) -> (i64, i64, i64) {
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

pub(super) async fn create(
    c: &mut ControllerClient<Channel>,
    name: &str,
    class: Option<&str>,
    size: i64,
    cap: csi::VolumeCapability,
) -> String {
    let mut req = create_req(name, class, size);
    req.volume_capabilities = vec![cap];
    create_ok(c, req).await.volume_id
}

async fn data_survives_unstage_and_restage(fs: &str, class: Option<&str>) {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
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
    attach(&mut n, &id, &p, &cap).await;
    assert_eq!(
        std::fs::read(p.target.join("hello.txt")).unwrap(),
        b"carve keeps this"
    );
    detach(&mut n, &id, &p).await;
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
    let (_carve, mut c, mut n) = Carve::with_clients().await;
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
    detach(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

/// Issue 14, finding 11: a read-only publish keeps the mount's nosuid,
/// nodev and noexec (a StorageClass's mountOptions). On a019df7 the
/// read-only remount replaced the flags and the pod's view lost all three.
#[tokio::test]
async fn read_only_publish_keeps_nosuid_nodev_noexec() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = mount_cap_fs("ext4", &["nosuid", "nodev", "noexec"]);
    let id = create(&mut c, "node-ro-flags", None, 64 * MI, cap.clone()).await;
    let p = paths("ro-flags");
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, true).await.unwrap();
    let m = mounted(&p.target).unwrap();
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            m.options.iter().any(|o| o == flag),
            "{flag} missing: {:?}",
            m.options
        );
    }
    detach(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

async fn online_expand(fs: &str) {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
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
    attach(&mut n, &id, &p, &cap).await;
    let payload: Vec<u8> = (0..4 * MI).map(|i| (i % 251) as u8).collect();
    std::fs::write(p.target.join("data.bin"), &payload).unwrap();
    let (before, _, _) = df(&p.target);
    let range = csi::CapacityRange {
        required_bytes: GI,
        limit_bytes: 0,
    };
    let ctl = expand_to(&mut c, &id, GI, Some(cap.clone())).await;
    assert!(ctl.node_expansion_required);
    assert_eq!(node_expand(&mut n, &id, &p, &cap, GI).await, GI);
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
    detach(&mut n, &id, &p).await;
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
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = block_cap();
    let id = create(&mut c, "node-block", None, 16 * MI, cap.clone()).await;
    let p = paths("block");
    attach(&mut n, &id, &p, &cap).await;
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
    let mut dev = std::fs::File::open(format!("/dev/{}", lvm_path(&id))).unwrap();
    dev.seek(SeekFrom::Start(4 * MI as u64)).unwrap();
    dev.read_exact(&mut back).unwrap();
    drop(dev);
    assert!(
        back == pattern,
        "bytes written through the published path are on the LV"
    );
    let stats = volume_stats(&mut n, &id, &p).await;
    assert_eq!(stats.usage[0].total, 16 * MI);
    assert!(!stats.volume_condition.unwrap().abnormal);
    // Fault: the LV is deactivated under the published volume.
    lvm(&["lvchange", "-an", &lvm_path(&id)]);
    let stats = volume_stats(&mut n, &id, &p).await;
    let cond = stats.volume_condition.unwrap();
    assert!(
        cond.abnormal && cond.message.contains("not active"),
        "{}",
        cond.message
    );
    detach(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn stats_match_df() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "node-stats", None, 128 * MI, cap.clone()).await;
    let p = paths("stats");
    attach(&mut n, &id, &p, &cap).await;
    std::fs::write(p.target.join("f"), vec![1u8; 3 * MI as usize]).unwrap();
    let st = volume_stats(&mut n, &id, &p).await;
    let (size, used, avail) = df(&p.target);
    let bytes = &st.usage[0];
    assert_eq!(
        (bytes.total, bytes.used, bytes.available),
        (size, used, avail)
    );
    let inodes = &st.usage[1];
    assert!(inodes.total > 0 && inodes.used > 0 && inodes.available > 0);
    detach(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn node_refuses_bad_input_before_touching_anything() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
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
    // Well-formed IDs: looked up in LVM (absent; present but foreign).
    for id in [
        id_here("carve-thick", "cv-nope-0000000000000000"),
        id_here("carve-thick", "cv-foreign-0000000000000000"),
        "carve-thick/foreign-data".to_string(),
    ] {
        assert_eq!(
            stage(&mut n, &id, &p, &cap).await.unwrap_err().code(),
            Code::NotFound,
            "{id}"
        );
    }
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

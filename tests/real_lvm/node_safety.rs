//! The node service acts only on what is carve's (issue 8, finding 8) and
//! enforces the access modes it advertises (finding 2): every path, mount and
//! file that is not this volume's is left exactly as it was.

use carve_csi::csi::node_client::NodeClient;

use super::node::*;
use super::*;

fn cap_mode(fs: &str, mode: Mode) -> csi::VolumeCapability {
    let mut c = mount_cap_fs(fs, &[]);
    c.access_mode = Some(AccessMode { mode: mode as i32 });
    c
}

async fn publish_at(
    n: &mut NodeClient<Channel>,
    id: &str,
    stage: &Path,
    target: &Path,
    cap: &csi::VolumeCapability,
) -> Result<(), tonic::Status> {
    n.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(stage),
        target_path: s(target),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    })
    .await
    .map(drop)
}

fn mounted_at(p: &Path) -> bool {
    carve_core::host::mountinfo::at(&carve_core::host::mountinfo::read().unwrap(), p).is_some()
}

#[tokio::test]
async fn a_second_target_path_follows_the_access_mode() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    for (mode, second_ok) in [
        (Mode::SingleNodeSingleWriter, false),
        (Mode::SingleNodeWriter, false),
        (Mode::SingleNodeReaderOnly, false),
        (Mode::SingleNodeMultiWriter, true),
    ] {
        let tag = mode.as_str_name().to_lowercase().replace('_', "-");
        let cap = cap_mode("ext4", mode);
        let id = create(&mut c, &format!("mode-{tag}"), None, 32 * MI, cap.clone()).await;
        let p = paths(&format!("mode-{tag}"));
        stage(&mut n, &id, &p, &cap).await.unwrap();
        publish_at(&mut n, &id, &p.stage, &p.target, &cap)
            .await
            .unwrap();
        publish_at(&mut n, &id, &p.stage, &p.target, &cap)
            .await
            .expect("the same target again is idempotent");
        let other = p.target.with_file_name("other_target");
        let r = publish_at(&mut n, &id, &p.stage, &other, &cap).await;
        if second_ok {
            r.unwrap_or_else(|e| panic!("{tag}: {e:?}"));
            assert!(mounted_at(&other));
            n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: s(&other),
            })
            .await
            .unwrap();
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{tag}: {}", e.message());
            assert!(
                !mounted_at(&other),
                "{tag}: nothing mounted at the refused target"
            );
            assert!(!other.exists(), "{tag}: the refused target was not created");
        }
        detach(&mut n, &id, &p).await;
        delete(&mut c, id).await;
    }
}

#[tokio::test]
async fn stage_and_publish_mount_only_onto_empty_or_new_paths() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "node-occupied", None, 32 * MI, cap.clone()).await;
    // A staging path holding someone's files (as /etc would).
    let busy = PathBuf::from("/tmp/node-occupied/etc-like");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("passwd"), b"root:x:0:0").unwrap();
    let p = Paths {
        stage: busy.clone(),
        target: PathBuf::from("/tmp/node-occupied/pod/target"),
    };
    let e = stage(&mut n, &id, &p, &cap).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(!mounted_at(&busy), "nothing mounted over the directory");
    assert_eq!(std::fs::read(busy.join("passwd")).unwrap(), b"root:x:0:0");
    // Publish onto a non-empty directory is refused the same way.
    let good = paths("node-occupied-ok");
    stage(&mut n, &id, &good, &cap).await.unwrap();
    let e = publish_at(&mut n, &id, &good.stage, &busy, &cap)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(!mounted_at(&busy));
    unstage(&mut n, &id, &good).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn unpublish_unstage_stats_and_expand_touch_only_this_volume() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = mount_cap_fs("ext4", &[]);
    let a = create(&mut c, "node-owner-a", None, 32 * MI, cap.clone()).await;
    let b = create(&mut c, "node-owner-b", None, 32 * MI, cap.clone()).await;
    let pa = paths("owner-a");
    attach(&mut n, &a, &pa, &cap).await;
    std::fs::write(pa.target.join("mine"), b"a's data").unwrap();

    // B's ID against A's paths: NotFound, A stays mounted.
    let e = n
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: b.clone(),
            target_path: s(&pa.target),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    assert!(mounted_at(&pa.target));
    let e = n
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: b.clone(),
            staging_target_path: s(&pa.stage),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    assert!(mounted_at(&pa.stage));
    // A file that is not a volume is not removed by an unpublish.
    let stray = PathBuf::from("/tmp/node-owner-stray/target");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"not carve's").unwrap();
    let e = n
        .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: b.clone(),
            target_path: s(&stray),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    assert_eq!(std::fs::read(&stray).unwrap(), b"not carve's");
    // Stats and expand on paths that are not the volume's.
    for path in ["/", "/tmp", pa.target.to_str().unwrap()] {
        let e = n
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: b.clone(),
                volume_path: path.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "stats {path}: {}", e.message());
        let e = n
            .node_expand_volume(csi::NodeExpandVolumeRequest {
                volume_id: b.clone(),
                volume_path: path.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "expand {path}: {}", e.message());
    }
    assert_eq!(
        std::fs::read(pa.target.join("mine")).unwrap(),
        b"a's data",
        "A untouched"
    );
    detach(&mut n, &a, &pa).await;
    delete(&mut c, a).await;
    delete(&mut c, b).await;
}

#[tokio::test]
async fn mount_flags_that_change_mount_semantics_are_invalid() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let cap = mount_cap_fs("ext4", &[]);
    let id = create(&mut c, "node-flags", None, 32 * MI, cap.clone()).await;
    let p = paths("flags");
    for flag in [
        "bind",
        "rbind",
        "move",
        "remount",
        "shared",
        "rshared",
        "private",
        "slave",
        "unbindable",
        "make-private",
    ] {
        let e = stage(&mut n, &id, &p, &mount_cap_fs("ext4", &[flag]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{flag}: {}", e.message());
    }
    assert!(!mounted_at(&p.stage));
    delete(&mut c, id).await;
}

//! carve driven the way external-provisioner drives it (issue 8, findings 3, 4
//! and 5): CreateVolume calls with a deadline, retried on Aborted or
//! DeadlineExceeded; restores asked of a node that does not hold the source;
//! the StorageClass fsType arriving as the capability's fs_type.

use std::time::{Duration, Instant};

use super::crash::{block_req, content, digest, fill_device};
use super::node::*;
use super::*;

/// What a provisioner-style create saw.
struct Provisioned {
    volume: csi::Volume,
    calls: usize,
    elapsed: Duration,
}

/// CreateVolume with `deadline` per call, retried on Aborted and
/// DeadlineExceeded (external-provisioner treats both as "in progress") after
/// `backoff`, until it succeeds; anything else fails the test.
async fn provision(
    c: &mut ControllerClient<Channel>,
    req: &csi::CreateVolumeRequest,
    deadline: Duration,
    backoff: Duration,
) -> Provisioned {
    let started = Instant::now();
    let mut calls = 0;
    loop {
        calls += 1;
        let mut r = tonic::Request::new(req.clone());
        r.set_timeout(deadline);
        match c.create_volume(r).await {
            Ok(v) => {
                return Provisioned {
                    volume: v.into_inner().volume.unwrap(),
                    calls,
                    elapsed: started.elapsed(),
                }
            }
            Err(s)
                if matches!(
                    s.code(),
                    Code::Aborted | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "not done after 5 minutes: {s:?}"
                );
                tokio::time::sleep(backoff).await;
            }
            Err(s) => panic!("CreateVolume {}: final error {s:?}", req.name),
        }
    }
}

/// Copies carve started into LV `lv`.
fn copies_started(log: &str, lv: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("block copy started") && l.contains(lv))
        .count()
}

/// Restores `size` bytes of a thick snapshot through provisioner-style calls
/// and checks: one copy ran, the data is the snapshot's.
async fn provisioner_restore(tag: &str, size: i64, deadline: Duration) -> Provisioned {
    let carve = Carve::start(&testbed_config()).await;
    let mut c = carve.controller().await;
    let src = create_ok(&mut c, block_req(&format!("prov-src-{tag}"), None, size)).await;
    let (vg, lv_name) = split(&src.volume_id);
    let dev = format!("/dev/{vg}/{lv_name}");
    fill_device(&dev, size as u64, 11);
    let want = digest(&dev, size as u64);
    let snap = snapshot_ok(&mut c, &format!("prov-snap-{tag}"), &src.volume_id).await;
    let mut req = block_req(&format!("prov-restore-{tag}"), None, size);
    req.volume_content_source = Some(content(Some(&snap.snapshot_id), None));
    let got = provision(&mut c, &req, deadline, Duration::from_millis(100)).await;
    let log = carve.log_text();
    assert_eq!(
        copies_started(&log, &carve_core::names::lv_name(&req.name)),
        1,
        "exactly one block copy may run for one volume ({} calls):\n{log}",
        got.calls
    );
    let (rvg, rlv) = split(&got.volume.volume_id);
    assert_eq!(
        digest(&format!("/dev/{rvg}/{rlv}"), size as u64),
        want,
        "restored data differs"
    );
    eprintln!(
        "provisioner-style restore of {} MiB: {} call(s), {:.2} s",
        size / MI,
        got.calls,
        got.elapsed.as_secs_f64()
    );
    delete(&mut c, got.volume.volume_id.clone()).await;
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, src.volume_id).await;
    foreign_intact();
    got
}

#[tokio::test]
async fn provisioner_style_1gib_thick_restore_runs_one_copy() {
    provisioner_restore("1g", GI, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn restore_retried_past_short_deadlines_runs_one_copy() {
    let got = provisioner_restore("short", 256 * MI, Duration::from_millis(300)).await;
    assert!(
        got.calls > 1,
        "the deadline was meant to cut the first call"
    );
}

/// A second carve that knows only the raid VG (as a node whose disks are not
/// those of `uml-node`), under a node name of its own.
fn other_node_config() -> tempfile::NamedTempFile {
    config_file("[[device_class]]\nname='thick'\nvolume_group='carve-raid'\ntype='thick'\n")
}

#[tokio::test]
async fn restore_or_clone_asked_of_another_node_is_resource_exhausted() {
    let here = Carve::start(&testbed_config()).await;
    let mut c = here.controller().await;
    let src = create_ok(&mut c, block_req("wrong-node-src", None, 8 * MI)).await;
    let snap = snapshot_ok(&mut c, "wrong-node-snap", &src.volume_id).await;
    let there_config = other_node_config();
    let there = Carve::start_with(there_config.path(), Opts::node("node-b")).await;
    let mut b = there.controller().await;
    for (what, source) in [
        ("restore", content(Some(&snap.snapshot_id), None)),
        ("clone", content(None, Some(&src.volume_id))),
    ] {
        let mut req = block_req(&format!("wrong-node-{what}"), None, 8 * MI);
        req.volume_content_source = Some(source);
        let e = b.create_volume(req).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::ResourceExhausted,
            "{what}: external-provisioner reschedules only on ResourceExhausted: {}",
            e.message()
        );
        assert!(
            e.message().contains(&format!("is on node {NODE}")),
            "{what}: the message names the node that holds the source: {}",
            e.message()
        );
    }
    assert!(lvs("carve-raid").is_empty(), "nothing was made on node-b");
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, src.volume_id).await;
}

#[tokio::test]
async fn fs_type_from_the_capability_is_recorded_and_used() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    // external-provisioner passes csi.storage.k8s.io/fstype as the capability's
    // fs_type and strips it from the parameters.
    // xfs needs 300 MB at least.
    let mut req = create_req("fs-from-cap", None, 320 * MI);
    req.volume_capabilities = vec![mount_cap_fs("xfs", &[])];
    let v = create_ok(&mut c, req.clone()).await;
    assert_eq!(
        v.volume_context
            .get("carve.dev/fs-type")
            .map(String::as_str),
        Some("xfs"),
        "{:?}",
        v.volume_context
    );
    let (vg, name) = split(&v.volume_id);
    assert!(
        lv(vg, name)
            .unwrap()
            .lv_tags
            .split(',')
            .any(|t| t == "carve.dev/fs-type=xfs"),
        "recorded in LVM"
    );
    // A stage that names no fs type (an older CO) formats what was asked.
    let p = paths("fs-from-cap");
    n.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: s(&p.stage),
        volume_capability: Some(mount_cap_fs("", &[])),
        volume_context: v.volume_context.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let m =
        carve_core::host::mountinfo::at(&carve_core::host::mountinfo::read().unwrap(), &p.stage)
            .unwrap();
    assert_eq!(m.fs_type, "xfs");
    unstage(&mut n, &v.volume_id, &p).await;
    // Two capabilities that disagree, or a parameter that contradicts them.
    let mut two = create_req("fs-two", None, 64 * MI);
    two.volume_capabilities = vec![mount_cap_fs("xfs", &[]), mount_cap_fs("ext4", &[])];
    assert_eq!(
        c.create_volume(two).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut clash = create_req("fs-clash", None, 64 * MI);
    clash.volume_capabilities = vec![mount_cap_fs("xfs", &[])];
    clash
        .parameters
        .insert("csi.storage.k8s.io/fstype".into(), "ext4".into());
    assert_eq!(
        c.create_volume(clash).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    delete(&mut c, v.volume_id).await;
}

//! Crash trials (issue 8, finding 6): carve is killed with SIGKILL at each named
//! crash point inside a multi-step operation (restore, clone, grow-on-restore),
//! restarted, and then the operation is either retried or the volume deleted.
//! Every trial asserts: no leaked or duplicated LV, no volume reported healthy
//! or publishable before its data is whole, the data right once it is, and the
//! source still deletable.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use carve_csi::csi::node_client::NodeClient;
use sha2::{Digest, Sha256};

use super::*;

/// Writes `bytes` of deterministic pseudo-random data (xorshift64 from `seed`)
/// to a block device and flushes it.
pub(super) fn fill_device(dev: &str, bytes: u64, seed: u64) {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 4 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// SHA-256 of the first `bytes` of a block device.
pub(super) fn digest(dev: &str, bytes: u64) -> Vec<u8> {
    let mut f = std::fs::File::open(dev).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n as u64;
    }
    h.finalize().to_vec()
}

pub(super) fn block_req(name: &str, class: Option<&str>, size: i64) -> csi::CreateVolumeRequest {
    let mut r = create_req(name, class, size);
    r.volume_capabilities = vec![block_cap()];
    r
}

pub(super) fn content(snapshot: Option<&str>, volume: Option<&str>) -> csi::VolumeContentSource {
    use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
    csi::VolumeContentSource {
        r#type: Some(match (snapshot, volume) {
            (Some(s), _) => Type::Snapshot(SnapshotSource {
                snapshot_id: s.into(),
            }),
            (None, Some(v)) => Type::Volume(VolumeSource {
                volume_id: v.into(),
            }),
            _ => unreachable!(),
        }),
    }
}

/// CreateVolume, retried while carve answers Aborted (a copy still running),
/// as external-provisioner would. Panics on any other error or after 2 min.
pub(super) async fn create_until_done(
    c: &mut ControllerClient<Channel>,
    req: &csi::CreateVolumeRequest,
) -> csi::Volume {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match c.create_volume(req.clone()).await {
            Ok(r) => return r.into_inner().volume.unwrap(),
            Err(s) if s.code() == Code::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("CreateVolume {}: {s:?}", req.name),
        }
    }
}

fn tags_of(vg: &str, name: &str) -> String {
    lv(vg, name).map(|l| l.lv_tags).unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// Thick restore from a classic snapshot: lvcreate, block copy, done.
    ThickRestore,
    /// Thick clone: lvcreate, temporary snapshot of the source, copy, drop it.
    ThickClone,
    /// Thin restore asking for more than the snapshot holds: lvcreate, lvextend.
    ThinRestoreGrow,
}

#[derive(Clone, Copy, Debug)]
enum Then {
    /// The CO retries CreateVolume until it answers.
    Retry,
    /// The CO gives up and deletes the volume.
    Delete,
}

const SRC: i64 = 64 * MI;

/// One crash trial's fixture: a source with data (and, for restores, its
/// snapshot) and the CreateVolume request the trial kills midway.
struct Trial {
    /// The trial, named in every assertion.
    what: String,
    tag: String,
    vg: &'static str,
    /// LVs in the VG before the trial made anything.
    untouched: Vec<String>,
    /// LVs once the source (and snapshot) exist.
    before: Vec<String>,
    src: csi::Volume,
    snap: Option<csi::Snapshot>,
    /// Digest of the source's data.
    want: Vec<u8>,
    req: csi::CreateVolumeRequest,
    dst_lv: String,
    size: i64,
}

impl Trial {
    async fn prepare(op: Op, point: &str, then: Then) -> Trial {
        let what = format!("{op:?} killed at {point}, then {then:?}");
        eprintln!("== crash trial: {what}");
        let (class, vg) = match op {
            Op::ThinRestoreGrow => (Some("thin"), "carve-thin"),
            _ => (None, "carve-thick"),
        };
        let untouched = lv_names(vg);
        let tag = format!("{op:?}-{point}-{then:?}").to_lowercase();
        let carve = Carve::start(&testbed_config()).await;
        let mut c = carve.controller().await;
        let src = create_ok(&mut c, block_req(&format!("src-{tag}"), class, SRC)).await;
        let src_dev = format!("/dev/{}", lvm_path(&src.volume_id));
        fill_device(&src_dev, SRC as u64, 7);
        let want = digest(&src_dev, SRC as u64);
        let snap = match op {
            Op::ThickClone => None,
            _ => Some(snapshot_ok(&mut c, &format!("snap-{tag}"), &src.volume_id).await),
        };
        let size = if op == Op::ThinRestoreGrow {
            SRC * 2
        } else {
            SRC
        };
        let mut req = block_req(&format!("dst-{tag}"), class, size);
        req.volume_content_source = Some(content(
            snap.as_ref().map(|s| s.snapshot_id.as_str()),
            Some(&src.volume_id),
        ));
        let dst_lv = carve_core::names::lv_name(&req.name);
        Trial {
            what,
            tag,
            vg,
            untouched,
            before: lv_names(vg),
            src,
            snap,
            want,
            req,
            dst_lv,
            size,
        }
    }

    /// CreateVolume on a carve that dies by SIGKILL at `point`; the call
    /// never answers.
    async fn kill_during_create(&self, point: &str) {
        let what = &self.what;
        let mut doomed = Carve::start_with(&testbed_config(), Opts::crash_at(point)).await;
        let mut c = doomed.controller().await;
        let call = {
            let req = self.req.clone();
            tokio::spawn(async move { c.create_volume(req).await })
        };
        let log = doomed.wait_crashed().await;
        assert!(
            log.contains(&format!("crash point {point} reached")),
            "{what}: {log}"
        );
        assert!(
            call.await.unwrap().is_err(),
            "{what}: the killed call answered"
        );
    }

    /// Every crash point comes after the lvcreate: the volume exists, is
    /// marked unfinished, and nothing presents it as usable. Returns the ID
    /// ListVolumes gives it.
    async fn assert_unfinished(
        &self,
        c: &mut ControllerClient<Channel>,
        n: &mut NodeClient<Channel>,
    ) -> String {
        let (what, vg, dst_lv) = (&self.what, self.vg, &self.dst_lv);
        assert!(
            tags_of(vg, dst_lv).contains("carve.dev/incomplete=1"),
            "{what}: {:?}",
            lv(vg, dst_lv).map(|l| l.lv_tags)
        );
        let id = listed_id(c, dst_lv)
            .await
            .unwrap_or_else(|| panic!("{what}: the unfinished volume is not listed"));
        let cond = condition(c, &id).await;
        assert!(cond.abnormal, "{what}: reported healthy while unfinished");
        let staging = node::paths(&format!("crash-early-{}", self.tag));
        let e = node::stage(n, &id, &staging, &block_cap())
            .await
            .expect_err("an unfinished volume was staged");
        assert!(
            matches!(e.code(), Code::Aborted | Code::FailedPrecondition),
            "{what}: {e:?}"
        );
        id
    }

    /// The CO retries until CreateVolume answers: one LV, the asked size, the
    /// source's data, healthy wherever reported, usable on the node.
    async fn retry_converges(
        &self,
        c: &mut ControllerClient<Channel>,
        n: &mut NodeClient<Channel>,
    ) {
        let (what, vg, dst_lv) = (&self.what, self.vg, &self.dst_lv);
        let v = create_until_done(c, &self.req).await;
        assert_eq!(split(&v.volume_id).1, dst_lv, "{what}");
        assert_eq!(v.capacity_bytes, self.size, "{what}");
        let real = lv(vg, dst_lv).unwrap();
        assert_eq!(real.lv_size, self.size.to_string(), "{what}");
        assert!(
            !real.lv_tags.contains("incomplete"),
            "{what}: still incomplete after success: {}",
            real.lv_tags
        );
        let mut want_lvs = self.before.clone();
        want_lvs.push(dst_lv.clone());
        want_lvs.sort();
        assert_eq!(lv_names(vg), want_lvs, "{what}: leaked or missing LVs");
        assert_eq!(
            digest(&format!("/dev/{vg}/{dst_lv}"), SRC as u64),
            self.want,
            "{what}: data differs from the source"
        );
        // Healthy everywhere it is reported, without a restart.
        let listed = list_entries(c)
            .await
            .into_iter()
            .find(|e| e.volume.as_ref().unwrap().volume_id == v.volume_id)
            .unwrap_or_else(|| panic!("{what}: not listed"));
        let cond = listed.status.unwrap().volume_condition.unwrap();
        assert!(!cond.abnormal, "{what}: listed abnormal: {}", cond.message);
        let p = node::paths(&format!("crash-{}", self.tag));
        node::stage(n, &v.volume_id, &p, &block_cap())
            .await
            .unwrap();
        node::publish(n, &v.volume_id, &p, &block_cap(), false)
            .await
            .unwrap();
        node::unpublish(n, &v.volume_id, &p).await;
        node::unstage(n, &v.volume_id, &p).await;
        delete(c, v.volume_id).await;
    }

    /// Deletes the snapshot and source; the VG is as the trial found it.
    async fn clean_up(self, c: &mut ControllerClient<Channel>) {
        let what = &self.what;
        if let Some(s) = self.snap {
            c.delete_snapshot(csi::DeleteSnapshotRequest {
                snapshot_id: s.snapshot_id,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: snapshot not deletable: {e:?}"));
        }
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: self.src.volume_id,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: source not deletable: {e:?}"));
        assert_eq!(lv_names(self.vg), self.untouched, "{what}: LVs left behind");
        foreign_intact();
    }
}

/// One crash trial; panics with the trial named on any broken invariant.
async fn trial(op: Op, point: &str, then: Then) {
    let t = Trial::prepare(op, point, then).await;
    t.kill_during_create(point).await;
    // A fresh carve on the same LVM. It resumes an unfinished thick copy by
    // itself; slowed down here, so the checks below see it unfinished.
    let carve = Carve::start_with(&testbed_config(), Opts::slow_copies(100)).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let id = t.assert_unfinished(&mut c, &mut n).await;
    match then {
        Then::Retry => t.retry_converges(&mut c, &mut n).await,
        Then::Delete => {
            // The CO learnt the ID from a listing (its create never answered).
            delete(&mut c, id).await;
            assert_eq!(
                lv_names(t.vg),
                t.before,
                "{}: leaked LVs after delete",
                t.what
            );
        }
    }
    t.clean_up(&mut c).await;
}

const COPY_POINTS: &[&str] = &["copy-midway", "copy-after-data", "fill-before-complete"];

#[tokio::test]
async fn crash_trials_thick_restore() {
    for point in std::iter::once(&"create-after-lvcreate").chain(COPY_POINTS) {
        for then in [Then::Retry, Then::Delete] {
            trial(Op::ThickRestore, point, then).await;
        }
    }
}

#[tokio::test]
async fn crash_trials_thick_clone() {
    for point in ["create-after-lvcreate", "clone-after-temp-snapshot"]
        .iter()
        .chain(COPY_POINTS)
    {
        for then in [Then::Retry, Then::Delete] {
            trial(Op::ThickClone, point, then).await;
        }
    }
}

#[tokio::test]
async fn crash_trials_thin_restore_larger_than_its_snapshot() {
    for then in [Then::Retry, Then::Delete] {
        trial(Op::ThinRestoreGrow, "create-after-lvcreate", then).await;
    }
}

/// DeleteVolume of a clone whose copy is running stops the copy and removes
/// the clone and its temporary snapshot. Killed between the two removals, a
/// restarted carve (which resumes the unfinished copy) and a second delete
/// still leave nothing behind, and the source stays deletable.
#[tokio::test]
async fn crash_trial_delete_of_a_clone_being_copied() {
    let cfg = testbed_config();
    let vg = "carve-thick";
    let untouched = lv_names(vg);
    // 16 chunks of 300 ms: the copy runs for about 5 s.
    let opts = Opts::slow_copies(300).and_crash_at("delete-after-temp-removed");
    let mut first = Carve::start_with(&cfg, opts).await;
    let mut c = first.controller().await;
    let src = create_ok(&mut c, block_req("del-src", None, SRC)).await;
    fill_device(&format!("/dev/{}", lvm_path(&src.volume_id)), SRC as u64, 3);
    let mut req = block_req("del-clone", None, SRC);
    req.volume_content_source = Some(content(None, Some(&src.volume_id)));
    let mut r = tonic::Request::new(req.clone());
    r.set_timeout(Duration::from_secs(1));
    let e = c.create_volume(r).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::Aborted | Code::DeadlineExceeded | Code::Cancelled
        ),
        "{e:?}"
    );
    let dst = carve_core::names::lv_name("del-clone");
    let temp = carve_core::names::clone_temp_name(&dst);
    // The job makes its temporary snapshot right after the call answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lv(vg, &temp).is_none() {
        assert!(
            Instant::now() < deadline,
            "the copy never made its temporary snapshot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = listed_id(&mut c, &dst)
        .await
        .expect("the unfinished clone is listed");
    let call = {
        let (mut c, id) = (c.clone(), id.clone());
        tokio::spawn(async move {
            c.delete_volume(csi::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
        })
    };
    first.wait_crashed().await;
    assert!(call.await.unwrap().is_err());
    drop(first);
    assert!(lv(vg, &temp).is_none(), "the temporary snapshot went first");
    assert!(
        lv(vg, &dst).is_some(),
        "the kill came before the clone's removal"
    );

    let second = Carve::start_with(&cfg, Opts::slow_copies(300)).await;
    let mut c = second.controller().await;
    assert!(
        second.log_text().contains("resuming a block copy"),
        "the restarted carve resumed the unfinished clone:\n{}",
        second.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while lv(vg, &temp).is_none() {
        assert!(
            Instant::now() < deadline,
            "the resumed copy made no temporary snapshot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delete(&mut c, id.clone()).await;
    delete(&mut c, id).await;
    let mut want = untouched.clone();
    want.push(split(&src.volume_id).1.to_string());
    want.sort();
    assert_eq!(lv_names(vg), want, "nothing of the clone is left");
    delete(&mut c, src.volume_id).await;
    assert_eq!(lv_names(vg), untouched);
    foreign_intact();
}

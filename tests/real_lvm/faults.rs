//! Failing hardware, made with device-mapper's own test targets under a VG:
//! a PV that becomes very slow (dm-delay), one that fails every IO
//! (dm-error) during create, mkfs or expand, one with unreadable blocks
//! under a clone's source (dm-dust), a disk swapped for a blank one
//! (dm-zero), and a thin pool that runs out of data space mid-write. What
//! must hold: the RPC on the sick VG fails with a clear code (retryable
//! where a retry can succeed) within lvm_timeout_seconds and its stuck
//! command's processes are gone once the kernel lets them go; other VGs keep
//! working meanwhile; no data outside the failing blocks changes; after
//! recovery a retry converges and nothing is left half-made.

use super::*;

/// A VG on a device-mapper device over a loop device, whose table a test
/// swaps (a healthy linear map, a delay, errors). Removed when dropped.
struct DmVg {
    vg: String,
    dm: String,
    device: String,
    image: String,
    sectors: u64,
}

fn dmsetup(args: &[&str]) {
    run_ok("dmsetup", args);
}

impl DmVg {
    fn new(vg: &str, size_mib: u64) -> DmVg {
        let image = format!("/tmp/{vg}.img");
        run_ok("truncate", &["-s", &format!("{size_mib}M"), &image]);
        let device = run_ok("losetup", &["-f", "--show", &image]);
        let dm = format!("{vg}-pv");
        let sectors = size_mib * 2048;
        let d = DmVg {
            vg: vg.into(),
            dm: dm.clone(),
            device,
            image,
            sectors,
        };
        dmsetup(&["create", &dm, "--noudevsync", "--table", &d.linear()]);
        run_ok("dmsetup", &["mknodes", &dm]);
        lvm(&["vgcreate", "-q", vg, &d.path()]);
        d
    }

    fn path(&self) -> String {
        format!("/dev/mapper/{}", self.dm)
    }

    fn linear(&self) -> String {
        format!("0 {} linear {} 0", self.sectors, self.device)
    }

    /// Swaps the table: the device behaves as `table` says from now on.
    fn set(&self, table: &str) {
        dmsetup(&["suspend", "--noudevsync", &self.dm]);
        dmsetup(&["load", &self.dm, "--table", table]);
        dmsetup(&["resume", "--noudevsync", &self.dm]);
    }

    fn heal(&self) {
        self.set(&self.linear());
    }

    /// Every read and write waits `ms` before it is done.
    fn slow(&self, ms: u64) {
        self.set(&format!("0 {} delay {} 0 {ms}", self.sectors, self.device));
    }

    /// Every IO fails.
    fn fail(&self) {
        self.set(&format!("0 {} error", self.sectors));
    }

    /// The device reads as zeros and drops writes: to LVM, its PV and VG
    /// are gone (no label), as when a disk is swapped for a blank one.
    fn blank(&self) {
        self.set(&format!("0 {} zero", self.sectors));
    }

    /// dm-dust over the device (512-byte blocks): reads of the blocks
    /// added with [`DmVg::bad_blocks`] fail once enabled; the rest works.
    fn dust(&self) {
        self.set(&format!("0 {} dust {} 0 512", self.sectors, self.device));
    }

    /// Marks `count` sectors from `first` bad and turns dm-dust's failing on.
    fn bad_blocks(&self, first: u64, count: u64) {
        for b in first..first + count {
            dmsetup(&["message", &self.dm, "0", "addbadblock", &b.to_string()]);
        }
        dmsetup(&["message", &self.dm, "0", "enable"]);
    }

    /// The PV sector where LV `lv`'s data starts (its first segment).
    fn first_sector_of(&self, lv: &str) -> u64 {
        let field = |args: &[&str]| -> u64 {
            let out = lvm(args);
            let t = out.trim();
            t.parse()
                .unwrap_or_else(|_| panic!("lvm {args:?} printed {t:?}"))
        };
        let pe_start = field(&[
            "pvs",
            "--noheadings",
            "--units",
            "s",
            "--nosuffix",
            "-o",
            "pe_start",
            &self.path(),
        ]);
        let extent = field(&[
            "vgs",
            "--noheadings",
            "--units",
            "s",
            "--nosuffix",
            "-o",
            "vg_extent_size",
            &self.vg,
        ]);
        let ranges = lvm(&[
            "lvs",
            "--noheadings",
            "-o",
            "seg_pe_ranges",
            &format!("{}/{lv}", self.vg),
        ]);
        // "/dev/mapper/<dm>:<first>-<last>"
        let first_pe: u64 = ranges
            .trim()
            .rsplit(':')
            .next()
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("seg_pe_ranges of {lv}: {ranges:?}"));
        pe_start + first_pe * extent
    }
}

/// Writes the page cache of block device `dev` out and drops it, so the next
/// read comes from the device (what a fresh process after a reboot would see).
fn drop_cache(dev: &str) {
    let _ = Command::new("blockdev").args(["--flushbufs", dev]).output();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

impl Drop for DmVg {
    fn drop(&mut self) {
        self.heal();
        let _ = Command::new("lvm")
            .args(["vgremove", "-q", "-f", &self.vg])
            .env("DM_DISABLE_UDEV", "1")
            .output();
        let _ = Command::new("dmsetup")
            .args(["remove", "--noudevsync", &self.dm])
            .output();
        let _ = Command::new("losetup").args(["-d", &self.device]).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// The test ground's config plus a class on `vg`, with a short lvm timeout.
fn config_with(vg: &str, class: &str, timeout_s: u64) -> tempfile::NamedTempFile {
    config_plus(
        &format!("name = '{class}'\nvolume_group = '{vg}'\ntype = 'thick'\n"),
        timeout_s,
    )
}

/// The test ground's config plus one `[[device_class]]` with these keys and
/// `lvm_timeout_seconds = timeout_s`.
fn config_plus(class_keys: &str, timeout_s: u64) -> tempfile::NamedTempFile {
    let base = std::fs::read_to_string(testbed_config()).unwrap();
    let base = base.replace(
        "lvm_timeout_seconds = 60",
        &format!("lvm_timeout_seconds = {timeout_s}"),
    );
    assert!(base.contains(&format!("lvm_timeout_seconds = {timeout_s}")));
    config_file(&format!("{base}\n[[device_class]]\n{class_keys}"))
}

/// Waits until the only lvm processes left are carve's idle shells: a
/// command killed at its timeout is gone once the kernel ends its IO.
async fn only_carves_shells_remain(carve: &Carve, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let procs = lvm_processes();
        let strays: Vec<_> = procs
            .iter()
            .filter(|(_, ppid, state, _)| {
                *ppid != carve.child.id() || *state == 'Z' || *state == 'D'
            })
            .collect();
        if strays.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lvm processes left behind: {strays:?} of {procs:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_very_slow_pv_times_out_cleanly_and_other_vgs_keep_working() {
    let vg = DmVg::new("carve-slow", 256);
    let cfg = config_with("carve-slow", "slow", 4);
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let first = create_ok(&mut c, create_req("slow-1", Some("slow"), 16 * MI)).await;

    vg.slow(12_000);
    let t = Instant::now();
    let e = c
        .create_volume(create_req("slow-2", Some("slow"), 16 * MI))
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    assert!(e.message().contains("lvcreate"), "{}", e.message());
    assert!(
        took < Duration::from_secs(20),
        "answered after {took:?} (timeout 4 s)"
    );
    // Another VG meanwhile: its commands open only its own PVs.
    let t = Instant::now();
    let other = create_ok(&mut c, create_req("slow-other", Some("thick"), 16 * MI)).await;
    delete(&mut c, other.volume_id).await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "thick create+delete took {:?}",
        t.elapsed()
    );

    vg.heal();
    only_carves_shells_remain(&carve, Duration::from_secs(60)).await;
    // The retry converges: one LV, whether or not the killed lvcreate got
    // as far as writing it.
    let second = create_ok(&mut c, create_req("slow-2", Some("slow"), 16 * MI)).await;
    let names: Vec<String> = lvs("carve-slow").into_iter().map(|l| l.lv_name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for v in [first, second] {
        delete(&mut c, v.volume_id).await;
    }
    assert!(lvs("carve-slow").is_empty());
    foreign_intact();
}

#[tokio::test]
async fn a_pv_that_fails_every_io_fails_its_rpcs_clearly_and_recovers() {
    let vg = DmVg::new("carve-bad", 256);
    let cfg = config_with("carve-bad", "bad", 10);
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let first = create_ok(&mut c, create_req("bad-1", Some("bad"), 16 * MI)).await;

    vg.fail();
    let e = c
        .create_volume(create_req("bad-2", Some("bad"), 16 * MI))
        .await
        .unwrap_err();
    eprintln!(
        "CreateVolume on a failing PV: {:?}: {}",
        e.code(),
        e.message()
    );
    assert!(
        e.code() == Code::ResourceExhausted,
        "{:?}: {}",
        e.code(),
        e.message()
    );
    assert!(e.message().contains("carve-bad"), "{}", e.message());
    // The volume already there: once carve has looked, ListVolumes shows it
    // abnormal, naming the VG, and ControllerGetVolume answers Unavailable
    // (retry later) with the same reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = list_entries(&mut c).await.into_iter().find(|e| {
            e.volume
                .as_ref()
                .is_some_and(|v| v.volume_id == first.volume_id)
        });
        let cond = entry
            .as_ref()
            .and_then(|e| e.status.as_ref())
            .and_then(|s| s.volume_condition.clone());
        eprintln!("listed: {}, condition {cond:?}", entry.is_some());
        if cond.as_ref().is_some_and(|c| c.abnormal) {
            assert!(cond.unwrap().message.contains("carve-bad"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bad-1 never listed abnormal: {}",
            carve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let e = c
        .controller_get_volume(csi::ControllerGetVolumeRequest {
            volume_id: first.volume_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("carve-bad"), "{}", e.message());
    // Other VGs keep working, capacity included.
    let other = create_ok(&mut c, create_req("bad-other", Some("thick"), 16 * MI)).await;
    assert!(capacity(&mut c, "thick").await.available_capacity > 0);
    delete(&mut c, other.volume_id).await;

    vg.heal();
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        match c
            .create_volume(create_req("bad-2", Some("bad"), 16 * MI))
            .await
        {
            Ok(r) => break r.into_inner().volume.unwrap(),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "never recovered: {:?} {}",
                    e.code(),
                    e.message()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert!(
        !condition(&mut c, &first.volume_id).await.abnormal || {
            tokio::time::sleep(Duration::from_secs(6)).await;
            !condition(&mut c, &first.volume_id).await.abnormal
        }
    );
    let names: Vec<String> = lvs("carve-bad").into_iter().map(|l| l.lv_name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for v in [first, second] {
        delete(&mut c, v.volume_id).await;
    }
    only_carves_shells_remain(&carve, Duration::from_secs(30)).await;
    foreign_intact();
}

/// CreateVolume, retried while carve answers Aborted (the copy still runs),
/// until it answers anything else.
async fn create_until_answered(
    c: &mut ControllerClient<Channel>,
    req: &csi::CreateVolumeRequest,
) -> Result<csi::Volume, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match c.create_volume(req.clone()).await {
            Err(s) if s.code() == Code::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            r => return r.map(|r| r.into_inner().volume.unwrap()),
        }
    }
}

/// A clone whose source cannot be read midway (dm-dust bad blocks in the
/// source's data): CreateVolume fails Unavailable (retryable: the external
/// provisioner keeps the claim and calls again) naming the read error, the
/// unfinished clone is listed abnormal with the reason, the temporary
/// snapshot is gone; once the blocks read again, the retry copies everything
/// and the clone equals its source.
#[tokio::test]
async fn a_read_error_during_a_clone_fails_it_retryably_and_the_retry_completes() {
    use super::crash::{block_req, content, digest, fill_device};
    let vg = DmVg::new("carve-dust", 256);
    vg.dust();
    let cfg = config_with("carve-dust", "dust", 30);
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    const SIZE: i64 = 32 * MI;
    let src = create_ok(&mut c, block_req("dust-src", Some("dust"), SIZE)).await;
    let src_dev = format!("/dev/{}", lvm_path(&src.volume_id));
    fill_device(&src_dev, SIZE as u64, 11);
    let want = digest(&src_dev, SIZE as u64);
    // 4 KiB that cannot be read, 20 MiB into the source: the copy fails
    // after it has written part of the clone.
    let (_, src_lv) = split(&src.volume_id);
    let bad = vg.first_sector_of(src_lv) + 20 * 2048;
    drop_cache(&src_dev);
    vg.bad_blocks(bad, 8);

    let mut req = block_req("dust-clone", Some("dust"), SIZE);
    req.volume_content_source = Some(content(None, Some(&src.volume_id)));
    let e = create_until_answered(&mut c, &req).await.unwrap_err();
    eprintln!("clone over bad blocks: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(
        e.message().contains("Input/output error") || e.message().contains("os error 5"),
        "{}",
        e.message()
    );
    let dst = carve_core::names::lv_name("dust-clone");
    let temp = carve_core::names::clone_temp_name(&dst);
    assert!(lv("carve-dust", &temp).is_none(), "temporary snapshot left");
    let id = listed_id(&mut c, &dst)
        .await
        .expect("the unfinished clone is listed");
    let cond = condition(&mut c, &id).await;
    assert!(cond.abnormal, "{cond:?}");
    assert!(cond.message.contains("copy"), "{cond:?}");

    // The disk is repaired (the blocks read again): the retry converges.
    dmsetup(&["message", &vg.dm, "0", "disable"]);
    let clone = create_until_answered(&mut c, &req)
        .await
        .unwrap_or_else(|e| panic!("retry after repair: {e:?}"));
    let clone_dev = format!("/dev/{}", lvm_path(&clone.volume_id));
    drop_cache(&clone_dev);
    assert!(
        digest(&clone_dev, SIZE as u64) == want,
        "clone differs from its source"
    );
    assert!(!condition(&mut c, &clone.volume_id).await.abnormal);
    for id in [clone.volume_id, src.volume_id] {
        delete(&mut c, id).await;
    }
    assert!(lvs("carve-dust").is_empty(), "{:?}", lv_names("carve-dust"));
}

/// NodeStageVolume while every write to the PV fails: mkfs fails, the RPC
/// fails Internal naming mkfs and the device, nothing is mounted; once the
/// disk works again a restage formats and mounts a clean filesystem (no
/// half-written one taken for the volume's own).
#[tokio::test]
async fn mkfs_on_a_failing_pv_fails_clearly_and_a_restage_after_repair_works() {
    use super::node::{paths, publish, stage, unpublish, unstage};
    let vg = DmVg::new("carve-mkfs", 256);
    let cfg = config_with("carve-mkfs", "mkfs", 30);
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let mut n = carve_csi::csi::node_client::NodeClient::new(carve.channel().await);
    let cap = mount_cap();
    let id = create_ok(&mut c, create_req("mkfs-1", Some("mkfs"), 64 * MI))
        .await
        .volume_id;
    let p = paths("mkfs-fault");

    vg.fail();
    let e = stage(&mut n, &id, &p, &cap).await.unwrap_err();
    eprintln!("stage on a failing PV: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Internal, "{}", e.message());
    assert!(
        e.message().contains("mkfs") || e.message().contains("blkid"),
        "{}",
        e.message()
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&super::node::s(&p.stage)),
        "stage path mounted"
    );

    vg.heal();
    stage(&mut n, &id, &p, &cap)
        .await
        .unwrap_or_else(|e| panic!("restage after repair: {e:?}\n{}", carve.log_text()));
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    std::fs::write(p.target.join("f"), b"after repair").unwrap();
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    // What is on the disk is a whole filesystem.
    let dev = format!("/dev/{}", lvm_path(&id));
    drop_cache(&dev);
    let fsck = Command::new("e2fsck").args(["-fn", &dev]).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    stage(&mut n, &id, &p, &cap).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(std::fs::read(p.target.join("f")).unwrap(), b"after repair");
    unpublish(&mut n, &id, &p).await;
    unstage(&mut n, &id, &p).await;
    delete(&mut c, id).await;
    assert!(lvs("carve-mkfs").is_empty());
}

/// ControllerExpandVolume while the PV fails every IO: a clear, retryable
/// error naming the VG, the LV's size unchanged; after repair the retry
/// grows it, and the data before the old end is intact.
#[tokio::test]
async fn expand_on_a_failing_pv_fails_clearly_and_the_retry_after_repair_grows_it() {
    use super::crash::{block_req, digest, fill_device};
    let vg = DmVg::new("carve-grow", 256);
    let cfg = config_with("carve-grow", "grow", 10);
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let v = create_ok(&mut c, block_req("grow-1", Some("grow"), 32 * MI)).await;
    let dev = format!("/dev/{}", lvm_path(&v.volume_id));
    fill_device(&dev, 32 * MI as u64, 5);
    let want = digest(&dev, 32 * MI as u64);

    let grow = csi::ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: 64 * MI,
            limit_bytes: 0,
        }),
        volume_capability: Some(block_cap()),
        ..Default::default()
    };
    vg.fail();
    let e = c.controller_expand_volume(grow.clone()).await.unwrap_err();
    eprintln!("expand on a failing PV: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("carve-grow"), "{}", e.message());

    vg.heal();
    let deadline = Instant::now() + Duration::from_secs(60);
    let grown = loop {
        match c.controller_expand_volume(grow.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert!(Instant::now() < deadline, "never grew: {e:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(grown.capacity_bytes, 64 * MI);
    assert_eq!(
        lv("carve-grow", split(&v.volume_id).1).unwrap().lv_size,
        (64 * MI).to_string()
    );
    drop_cache(&dev);
    assert!(
        digest(&dev, 32 * MI as u64) == want,
        "data before the old end changed"
    );
    delete(&mut c, v.volume_id).await;
    assert!(lvs("carve-grow").is_empty());
}

/// A VG whose disk is swapped for a blank one (dm-zero: no PV label): Probe
/// still answers ready (other classes serve), the class offers no capacity,
/// CreateVolume on it fails ResourceExhausted naming the VG, its volume is
/// listed abnormal; when the disk returns, all of it recovers by itself.
#[tokio::test]
async fn a_vg_that_disappears_fails_cleanly_and_recovers_when_it_returns() {
    let vg = DmVg::new("carve-gone", 256);
    let cfg = config_with("carve-gone", "gone", 10);
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let mut ident = carve.identity().await;
    let v = create_ok(&mut c, create_req("gone-1", Some("gone"), 16 * MI)).await;
    assert!(capacity(&mut c, "gone").await.available_capacity > 0);

    vg.blank();
    // Seen at the next periodic report (5 s on the test ground).
    until_capacity(&mut c, "gone", false, &carve, 30).await;
    let probe = ident
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true), "other classes still serve");
    assert!(capacity(&mut c, "thick").await.available_capacity > 0);
    let e = c
        .create_volume(create_req("gone-2", Some("gone"), 16 * MI))
        .await
        .unwrap_err();
    eprintln!("create on a gone VG: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("carve-gone"), "{}", e.message());
    let cond = condition_when_listed(&mut c, &v.volume_id).await;
    assert!(
        cond.abnormal && cond.message.contains("carve-gone"),
        "{cond:?}"
    );
    // Nothing in it is judged gone: a delete or a snapshot is retried later.
    let e = c
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    eprintln!("delete on a gone VG: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    let e = c
        .create_snapshot(csi::CreateSnapshotRequest {
            name: "gone-snap".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    eprintln!("snapshot on a gone VG: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());

    vg.heal();
    until_capacity(&mut c, "gone", true, &carve, 60).await;
    let second = create_ok(&mut c, create_req("gone-2", Some("gone"), 16 * MI)).await;
    until_normal(&mut c, &v.volume_id, 30).await;
    for id in [v.volume_id, second.volume_id] {
        delete(&mut c, id).await;
    }
    assert!(lvs("carve-gone").is_empty());
    only_carves_shells_remain(&carve, Duration::from_secs(30)).await;
}

/// The condition ListVolumes gives volume `id` (ControllerGetVolume answers
/// Unavailable while its VG cannot be read).
async fn condition_when_listed(
    c: &mut ControllerClient<Channel>,
    id: &str,
) -> csi::VolumeCondition {
    list_entries(c)
        .await
        .into_iter()
        .find(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == id))
        .and_then(|e| e.status)
        .and_then(|s| s.volume_condition)
        .unwrap_or_else(|| panic!("{id} not listed with a condition"))
}

/// The test ground's config plus a thin class over `vg`/pool0.
fn thin_config_with(vg: &str, class: &str) -> tempfile::NamedTempFile {
    config_plus(
        &format!("name = '{class}'\nvolume_group = '{vg}'\ntype = 'thin'\nthin_pool = 'pool0'\nover_provision_ratio = 4.0\n"),
        60,
    )
}

/// A thin pool that runs out of data space while a volume is being written
/// (the pool made with --errorwhenfull y, so the writer gets an error now
/// rather than after the kernel's 60 s queue): the writer fails, the other
/// volume's data is intact, the class offers no capacity and CreateVolume
/// is ResourceExhausted naming the pool, the volumes are listed abnormal
/// with the reason; once the pool is extended, creates work again and the
/// conditions clear.
#[tokio::test]
async fn a_thin_pool_that_fills_during_a_write_refuses_new_volumes_and_recovers_when_extended() {
    use super::crash::{block_req, digest, fill_device};
    let vg = DmVg::new("carve-tfill", 256);
    // The loop device under the dm device shows the same PV: name the one
    // the VG lives on, as carve does.
    let pv = vg.path();
    let on_pv = |args: &[&str]| lvm(&[args, &["--devices", &pv]].concat());
    on_pv(&[
        "lvcreate",
        "-q",
        "--type",
        "thin-pool",
        "-L",
        "64M",
        "-n",
        "pool0",
        "carve-tfill",
    ]);
    on_pv(&[
        "lvchange",
        "-q",
        "--errorwhenfull",
        "y",
        "carve-tfill/pool0",
    ]);
    let cfg = thin_config_with("carve-tfill", "tfill");
    let carve = Carve::start(cfg.path()).await;
    let mut c = carve.controller().await;
    let a = create_ok(&mut c, block_req("tfill-a", Some("tfill"), 32 * MI)).await;
    let dev_a = format!("/dev/{}", lvm_path(&a.volume_id));
    fill_device(&dev_a, 16 * MI as u64, 9);
    let want = digest(&dev_a, 16 * MI as u64);
    let b = create_ok(&mut c, block_req("tfill-b", Some("tfill"), 128 * MI)).await;
    let dev_b = format!("/dev/{}", lvm_path(&b.volume_id));

    // 128 MiB into what is left of 64 MiB: the write fails part-way.
    let dd = Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={dev_b}"),
            "bs=1M",
            "count=128",
            "oflag=direct",
        ])
        .output()
        .unwrap();
    assert!(
        !dd.status.success(),
        "the write past the pool's end succeeded"
    );
    let attr = on_pv(&["lvs", "--noheadings", "-o", "lv_attr", "carve-tfill/pool0"]);
    eprintln!(
        "pool after the write: {} dd: {}",
        attr.trim(),
        String::from_utf8_lossy(&dd.stderr).trim()
    );

    // carve sees it at its next report (5 s on the test ground).
    until_capacity(&mut c, "tfill", false, &carve, 30).await;
    let e = c
        .create_volume(create_req("tfill-c", Some("tfill"), 16 * MI))
        .await
        .unwrap_err();
    eprintln!("create on a full pool: {:?}: {}", e.code(), e.message());
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("carve-tfill/pool0"), "{}", e.message());
    for id in [&a.volume_id, &b.volume_id] {
        let cond = condition_when_listed(&mut c, id).await;
        eprintln!("{id}: {cond:?}");
        assert!(
            cond.abnormal
                && cond
                    .message
                    .contains("thin pool carve-tfill/pool0 is out of data space"),
            "{cond:?}"
        );
    }
    // The other volume's data never moved.
    drop_cache(&dev_a);
    assert!(digest(&dev_a, 16 * MI as u64) == want, "volume a changed");
    // Nothing half-made: only the two volumes (and the pool).
    let volumes = || -> Vec<String> {
        lvs("carve-tfill")
            .into_iter()
            .map(|l| l.lv_name)
            .filter(|n| n != "pool0")
            .collect()
    };
    assert_eq!(volumes().len(), 2, "{:?}", volumes());

    // The operator extends the pool: carve notices by itself.
    on_pv(&["lvextend", "-q", "-L", "+128M", "carve-tfill/pool0"]);
    until_capacity(&mut c, "tfill", true, &carve, 30).await;
    let cv = create_ok(&mut c, create_req("tfill-c", Some("tfill"), 16 * MI)).await;
    until_normal(&mut c, &a.volume_id, 30).await;
    // And the volume that hit the wall takes writes again.
    let dd = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={dev_b}"),
            "bs=1M",
            "count=16",
            "oflag=direct",
        ])
        .output()
        .unwrap();
    assert!(
        dd.status.success(),
        "{}",
        String::from_utf8_lossy(&dd.stderr)
    );
    assert!(digest(&dev_a, 16 * MI as u64) == want, "volume a changed");
    for id in [a.volume_id, b.volume_id, cv.volume_id] {
        delete(&mut c, id).await;
    }
    assert!(volumes().is_empty(), "{:?}", volumes());
}

/// Waits up to `within_s` seconds until class `class` offers capacity
/// (`offered`) or offers none, as carve's periodic report catches up.
async fn until_capacity(
    c: &mut ControllerClient<Channel>,
    class: &str,
    offered: bool,
    carve: &Carve,
    within_s: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(within_s);
    while (capacity(c, class).await.available_capacity > 0) != offered {
        assert!(
            Instant::now() < deadline,
            "class {class}: capacity offered is still {}:\n{}",
            !offered,
            carve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits up to `within_s` seconds until volume `id` is no longer abnormal.
async fn until_normal(c: &mut ControllerClient<Channel>, id: &str, within_s: u64) {
    let deadline = Instant::now() + Duration::from_secs(within_s);
    while condition(c, id).await.abnormal {
        assert!(
            Instant::now() < deadline,
            "{id} still abnormal after repair"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

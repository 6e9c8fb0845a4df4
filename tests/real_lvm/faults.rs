//! Failing hardware, made with device-mapper's own test targets under a VG:
//! a PV that becomes very slow (dm-delay) and one that fails every IO
//! (dm-error). What must hold: the RPC on the sick VG fails with a clear code
//! within lvm_timeout_seconds and its stuck command's processes are gone once
//! the kernel lets them go; other VGs keep working meanwhile; after recovery
//! a retry converges and nothing is left half-made.

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
    let base = std::fs::read_to_string(testbed_config()).unwrap();
    let base = base.replace(
        "lvm_timeout_seconds = 60",
        &format!("lvm_timeout_seconds = {timeout_s}"),
    );
    assert!(base.contains(&format!("lvm_timeout_seconds = {timeout_s}")));
    config_file(&format!(
        "{base}\n[[device_class]]\nname = '{class}'\nvolume_group = '{vg}'\ntype = 'thick'\n"
    ))
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

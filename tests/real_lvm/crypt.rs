//! LUKS2-encrypted volumes (issue 18) against real cryptsetup, dm-crypt, mkfs
//! and mounts in the UML guest: format on first stage (only a blank LV), open
//! on restage, close on unstage; a wrong or missing key refused with nothing
//! changed; raw block; online expansion; snapshots, restores and clones read
//! back with the same key; kill -9 between format and mkfs and between open
//! and mount; and the passphrase never in carve's log or any process's argv
//! or environment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use carve_csi::csi::node_client::NodeClient;

use super::crash::content;
use super::node::{detach, df, node_expand, paths, publish, s, unpublish, unstage, Paths};
use super::*;

pub(super) const KEY: &str = "correct horse battery staple 42";

/// An encrypted class's parameters; pbkdf2 with forced iterations keeps a
/// format and an open well under a second in the guest (the defaults are
/// argon2id at 256 MiB and 2 s, proven by `default_luks_settings_work`).
pub(super) fn enc_params(class: &str) -> HashMap<String, String> {
    HashMap::from([
        ("carve.dev/device-class".to_string(), class.to_string()),
        ("carve.dev/encryption".to_string(), "luks2".to_string()),
        ("carve.dev/luks-pbkdf".to_string(), "pbkdf2".to_string()),
        (
            "carve.dev/luks-pbkdf-force-iterations".to_string(),
            "1000".to_string(),
        ),
    ])
}

pub(super) fn enc_req(name: &str, class: &str, size: i64) -> csi::CreateVolumeRequest {
    let mut r = create_req(name, Some(class), size);
    r.parameters = enc_params(class);
    r
}

pub(super) fn secrets(key: &str) -> HashMap<String, String> {
    HashMap::from([("passphrase".to_string(), key.to_string())])
}

pub(super) async fn stage_with(
    n: &mut NodeClient<Channel>,
    id: &str,
    p: &Paths,
    cap: &csi::VolumeCapability,
    key: Option<&str>,
) -> Result<(), tonic::Status> {
    n.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
        volume_capability: Some(cap.clone()),
        secrets: key.map(secrets).unwrap_or_default(),
        ..Default::default()
    })
    .await
    .map(drop)
}

pub(super) fn mapper(id: &str) -> String {
    let (vg, lv) = split(id);
    format!(
        "/dev/mapper/carve-luks-{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

fn is_open(id: &str) -> bool {
    Path::new(&mapper(id)).exists()
}

/// What libblkid says the LV itself holds (TYPE), "" for nothing.
pub(super) fn lv_signature(id: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-s", "TYPE", "-o", "value"])
        .arg(format!("/dev/{}", lvm_path(id)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The LUKS2 header's UUID: the same one after a retry means no second format.
pub(super) fn luks_uuid(id: &str) -> String {
    let out = Command::new("cryptsetup")
        .arg("luksUUID")
        .arg(format!("/dev/{}", lvm_path(id)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether `needle` occurs anywhere in the first `bytes` of a device.
fn device_contains(dev: &str, bytes: usize, needle: &[u8]) -> bool {
    let mut f = std::fs::File::open(dev).unwrap();
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    let n = f.read(&mut buf).unwrap_or(0);
    buf[..n].windows(needle.len()).any(|w| w == needle)
}

/// Watches every process's argv and environment for `needle` until stopped;
/// returns what it found.
fn watch_processes(
    needle: &'static str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !s2.load(Ordering::Relaxed) {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                for what in ["cmdline", "environ"] {
                    if let Ok(b) = std::fs::read(e.path().join(what)) {
                        if b.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                            seen.push(format!("{}/{what}", e.path().display()));
                        }
                    }
                }
            }
        }
        seen
    });
    (stop, h)
}

async fn write_file(p: &Path, name: &str, data: &[u8]) {
    std::fs::write(p.join(name), data).unwrap();
    Command::new("sync").status().unwrap();
}

#[tokio::test]
async fn encrypted_volume_formats_once_reopens_and_keeps_the_key_out_of_sight() {
    const PORT: u16 = 19710;
    let carve = Carve::start_with(&testbed_config(), Opts::metrics(PORT)).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    let (stop, watcher) = watch_processes(KEY);
    let vol = create_ok(&mut c, enc_req("enc-basic", "thick", 64 * MI)).await;
    let id = vol.volume_id;
    assert_eq!(
        vol.volume_context
            .get("carve.dev/encryption")
            .map(String::as_str),
        Some("luks2")
    );
    let cap = mount_cap();
    let p = paths("enc-basic");
    // No secret, then a blank secret: InvalidArgument, nothing written.
    for key in [None, Some("")] {
        let e = stage_with(&mut n, &id, &p, &cap, key).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("passphrase"), "{}", e.message());
        assert_eq!(lv_signature(&id), "", "nothing written without a key");
    }
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    assert_eq!(lv_signature(&id), "crypto_LUKS");
    let uuid = luks_uuid(&id);
    assert!(is_open(&id));
    let m =
        carve_core::host::mountinfo::at(&carve_core::host::mountinfo::read().unwrap(), &p.stage)
            .expect("staged");
    assert_eq!(m.fs_type, "ext4");
    assert!(
        m.source.contains("carve-luks-"),
        "the filesystem is on the mapping: {}",
        m.source
    );
    // Idempotent: the same stage again.
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    let marker = b"carve-plaintext-marker-0123456789".repeat(64);
    write_file(&p.target, "data.bin", &marker).await;
    let cond = condition(&mut c, &id).await;
    assert!(!cond.abnormal);
    assert!(
        cond.message.contains("LUKS2-encrypted, open"),
        "{}",
        cond.message
    );
    let open_metric = |keep_as: &str| {
        let text = super::metrics::scrape(PORT, keep_as);
        super::metrics::value(
            &text,
            "carve_volume_encrypted_open",
            &[("volume", &id), ("class", "thick")],
        )
    };
    assert_eq!(open_metric("encrypted-open"), Some(1.0));
    detach(&mut n, &id, &p).await;
    assert!(!is_open(&id), "unstage closes the mapping");
    let cond = condition(&mut c, &id).await;
    assert!(cond.message.contains("not open"), "{}", cond.message);
    assert_eq!(open_metric("encrypted-closed"), Some(0.0));
    // At rest the LV holds ciphertext only.
    let raw = format!("/dev/{}", lvm_path(&id));
    assert!(!device_contains(&raw, 64 << 20, b"carve-plaintext-marker"));
    // A wrong key: PermissionDenied, nothing opened or changed.
    let before = super::crash::digest(&raw, 16 << 20);
    let e = stage_with(&mut n, &id, &p, &cap, Some("not the key"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("nothing on the volume was changed"),
        "{}",
        e.message()
    );
    assert!(!is_open(&id));
    assert_eq!(
        super::crash::digest(&raw, 16 << 20),
        before,
        "header untouched"
    );
    // The right key: the same header (no second format), the data back.
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    assert_eq!(luks_uuid(&id), uuid);
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(std::fs::read(p.target.join("data.bin")).unwrap(), marker);
    detach(&mut n, &id, &p).await;
    delete(&mut c, id.clone()).await;
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    assert!(seen.is_empty(), "the passphrase was visible in {seen:?}");
    let log = carve.log_text();
    assert!(
        log.contains("opening LUKS2 volume"),
        "debug log as expected"
    );
    assert!(!log.contains(KEY), "the passphrase is in carve's log");
}

#[tokio::test]
async fn default_luks_settings_work() {
    // argon2id, 256 MiB, 2 s: what a StorageClass gets by saying luks2 only.
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let mut req = create_req("enc-defaults", Some("thin"), 64 * MI);
    req.parameters
        .insert("carve.dev/encryption".into(), "luks2".into());
    let id = create_ok(&mut c, req).await.volume_id;
    let p = paths("enc-defaults");
    stage_with(&mut n, &id, &p, &mount_cap(), Some(KEY))
        .await
        .unwrap();
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(format!("/dev/{}", lvm_path(&id)))
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("argon2id"), "{dump}");
    // The cap: cryptsetup's benchmark may lower the memory cost to meet the
    // iteration time on a slow machine (it does in the guest), never raise it.
    let memory: u64 = dump
        .lines()
        .find_map(|l| l.trim().strip_prefix("Memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memory cost: {dump}"));
    assert!((32..=262_144).contains(&memory), "{dump}");
    assert!(dump.contains("aes-xts-plain64"), "{dump}");
    unstage(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn never_formats_over_an_existing_filesystem() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let id = create_ok(&mut c, enc_req("enc-over-fs", "thick", 64 * MI))
        .await
        .volume_id;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(format!("/dev/{}", lvm_path(&id)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let p = paths("enc-over-fs");
    let e = stage_with(&mut n, &id, &p, &mount_cap(), Some(KEY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("holds ext4"), "{}", e.message());
    assert_eq!(lv_signature(&id), "ext4", "the filesystem is untouched");
    assert!(!is_open(&id));
    delete(&mut c, id).await;
}

#[tokio::test]
async fn encrypted_raw_block_volume() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let mut req = enc_req("enc-block", "thin", 64 * MI);
    req.volume_capabilities = vec![block_cap()];
    let id = create_ok(&mut c, req).await.volume_id;
    let cap = block_cap();
    let p = paths("enc-block");
    // Publish before stage: the mapping is not open.
    let e = publish(&mut n, &id, &p, &cap, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    let target = s(&p.target);
    super::crash::fill_device(&target, 8 << 20, 18);
    let sum = super::crash::digest(&target, 8 << 20);
    let stats = super::node::volume_stats(&mut n, &id, &p).await;
    let total = stats.usage[0].total;
    assert!(
        (47 * MI..64 * MI).contains(&total),
        "the mapping is the LV less the LUKS2 header: {total}"
    );
    // Unstage while still published: the mapping is busy and stays open.
    let e = n
        .node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: s(&p.stage),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(is_open(&id));
    // Online growth of a raw block volume: the mapping follows the LV.
    let ctl = expand_to(&mut c, &id, 128 * MI, Some(cap.clone())).await;
    assert!(
        ctl.node_expansion_required,
        "an encrypted block volume grows on the node too"
    );
    node_expand(&mut n, &id, &p, &cap, 128 * MI).await;
    let grown = super::node::volume_stats(&mut n, &id, &p).await.usage[0].total;
    assert_eq!(grown, total + 64 * MI, "the mapping grew with its LV");
    detach(&mut n, &id, &p).await;
    assert!(!is_open(&id));
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(super::crash::digest(&target, 8 << 20), sum);
    detach(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

async fn online_expand_encrypted(fs: &str, class: &str) {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let name = format!("enc-grow-{fs}-{class}");
    let id = create_ok(&mut c, enc_req(&name, class, 512 * MI))
        .await
        .volume_id;
    let cap = super::node::mount_cap_fs(fs, &[]);
    let p = paths(&name);
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    let payload: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    write_file(&p.target, "data.bin", &payload).await;
    let (before, _, _) = df(&p.target);
    let ctl = expand_to(&mut c, &id, GI, Some(cap.clone())).await;
    assert!(ctl.node_expansion_required);
    assert_eq!(node_expand(&mut n, &id, &p, &cap, GI).await, GI);
    let (after, _, _) = df(&p.target);
    assert!(
        after > before * 19 / 10 && after > GI * 8 / 10,
        "{fs}: {before} -> {after}"
    );
    assert_eq!(std::fs::read(p.target.join("data.bin")).unwrap(), payload);
    detach(&mut n, &id, &p).await;
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(std::fs::read(p.target.join("data.bin")).unwrap(), payload);
    detach(&mut n, &id, &p).await;
    delete(&mut c, id).await;
}

#[tokio::test]
async fn online_expand_of_encrypted_ext4_keeps_data() {
    online_expand_encrypted("ext4", "thick").await;
}

#[tokio::test]
async fn online_expand_of_encrypted_xfs_keeps_data() {
    online_expand_encrypted("xfs", "thin").await;
}

/// Snapshot → restore (larger) and clone of an encrypted volume: both open
/// with the source's key and hold its files; a plain class cannot take them.
async fn copies_of_an_encrypted_volume(class: &str) {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let tag = format!("enc-src-{class}");
    let src = create_ok(&mut c, enc_req(&tag, class, 64 * MI))
        .await
        .volume_id;
    let cap = mount_cap();
    let p = paths(&tag);
    stage_with(&mut n, &src, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &src, &p, &cap, false).await.unwrap();
    let payload = format!("written to the {class} source").repeat(1000);
    write_file(&p.target, "data.txt", payload.as_bytes()).await;
    detach(&mut n, &src, &p).await;
    let snap = snapshot_ok(&mut c, &format!("{tag}-snap"), &src).await;
    // A plain class cannot restore it: its data is LUKS2.
    let mut plain = create_req(&format!("{tag}-plain"), Some(class), 128 * MI);
    plain.volume_content_source = Some(content(Some(&snap.snapshot_id), None));
    let e = c.create_volume(plain).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("LUKS2-encrypted"), "{}", e.message());
    let mut restore = enc_req(&format!("{tag}-restore"), class, 128 * MI);
    restore.volume_content_source = Some(content(Some(&snap.snapshot_id), None));
    let mut clone = enc_req(&format!("{tag}-clone"), class, 64 * MI);
    clone.volume_content_source = Some(content(None, Some(&src)));
    let mut made = Vec::new();
    for req in [restore, clone] {
        let id = super::crash::create_until_done(&mut c, &req)
            .await
            .volume_id;
        assert_eq!(
            luks_uuid(&id),
            luks_uuid(&src),
            "the source's header came along"
        );
        let q = paths(split(&id).1);
        // Another key does not open it; the source's does.
        let e = stage_with(&mut n, &id, &q, &cap, Some("another key"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        stage_with(&mut n, &id, &q, &cap, Some(KEY)).await.unwrap();
        publish(&mut n, &id, &q, &cap, false).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(q.target.join("data.txt")).unwrap(),
            payload
        );
        let (size, _, _) = df(&q.target);
        made.push((id.clone(), size));
        detach(&mut n, &id, &q).await;
        delete(&mut c, id).await;
    }
    assert!(
        made[0].1 > made[1].1 + 48 * MI,
        "the larger restore's filesystem was grown to its mapping: {made:?}"
    );
    delete_snapshot_ok(&mut c, &snap.snapshot_id).await;
    delete(&mut c, src).await;
}

#[tokio::test]
async fn thick_snapshot_restore_and_clone_of_an_encrypted_volume() {
    copies_of_an_encrypted_volume("thick").await;
}

#[tokio::test]
async fn thin_snapshot_restore_and_clone_of_an_encrypted_volume() {
    copies_of_an_encrypted_volume("thin").await;
}

/// Crash trials: carve killed between luksFormat and mkfs, and between open
/// and mount; restarted, the retried stage converges: one header (same
/// UUID), one filesystem, data written after it intact across a restage.
async fn crash_trial(point: &str, class: &str) {
    let config = testbed_config();
    let name = format!(
        "enc-crash-{class}-{}",
        point.trim_start_matches("stage-after-")
    );
    let id = {
        let carve = Carve::start(&config).await;
        let mut c = carve.controller().await;
        create_ok(&mut c, enc_req(&name, class, 64 * MI))
            .await
            .volume_id
    };
    let cap = mount_cap();
    let p = paths(&name);
    let mut crashing = Carve::start_with(&config, Opts::crash_at(point)).await;
    let mut n = NodeClient::new(crashing.channel().await);
    let r = stage_with(&mut n, &id, &p, &cap, Some(KEY)).await;
    assert!(r.is_err(), "the stage never answered OK");
    let log = crashing.wait_crashed().await;
    assert!(
        log.contains(&format!("crash point {point} reached")),
        "{log}"
    );
    drop(crashing);
    assert_eq!(lv_signature(&id), "crypto_LUKS", "the header was written");
    let uuid = luks_uuid(&id);
    assert!(
        carve_core::host::mountinfo::at(&carve_core::host::mountinfo::read().unwrap(), &p.stage)
            .is_none(),
        "nothing mounted before the crash"
    );
    let carve = Carve::start(&config).await;
    let mut n = NodeClient::new(carve.channel().await);
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    assert_eq!(luks_uuid(&id), uuid, "no second format");
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    write_file(&p.target, "after.txt", b"after the crash").await;
    detach(&mut n, &id, &p).await;
    assert!(!is_open(&id));
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(
        std::fs::read(p.target.join("after.txt")).unwrap(),
        b"after the crash"
    );
    unpublish(&mut n, &id, &p).await;
    // A crash on a restage (a filesystem with data there already): the
    // retry mounts it as it is, never a new mkfs.
    unstage(&mut n, &id, &p).await;
    drop(carve);
    if point == "stage-after-luks-open" {
        let mut crashing = Carve::start_with(&config, Opts::crash_at(point)).await;
        let mut n = NodeClient::new(crashing.channel().await);
        assert!(stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.is_err());
        crashing.wait_crashed().await;
    }
    let carve = Carve::start(&config).await;
    let mut c = carve.controller().await;
    let mut n = NodeClient::new(carve.channel().await);
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    assert_eq!(
        std::fs::read(p.target.join("after.txt")).unwrap(),
        b"after the crash"
    );
    detach(&mut n, &id, &p).await;
    assert!(!is_open(&id), "nothing left open");
    delete(&mut c, id).await;
}

#[tokio::test]
async fn crash_trials_encrypted_stage() {
    for point in ["stage-after-luks-format", "stage-after-luks-open"] {
        for class in ["thick", "thin"] {
            crash_trial(point, class).await;
        }
    }
}

/// A stage that fails after it opened the mapping closes it again: kubelet
/// takes most failures as final and never unstages, and an open mapping
/// would keep the LV from being deleted.
#[tokio::test]
async fn a_failed_stage_closes_the_mapping_it_opened() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let id = create_ok(&mut c, enc_req("enc-failed-stage", "thick", 64 * MI))
        .await
        .volume_id;
    let p = paths("enc-failed-stage");
    stage_with(&mut n, &id, &p, &mount_cap(), Some(KEY))
        .await
        .unwrap();
    unstage(&mut n, &id, &p).await;
    // Another filesystem asked of an ext4 volume: refused after the open.
    let xfs = super::node::mount_cap_fs("xfs", &[]);
    let e = stage_with(&mut n, &id, &p, &xfs, Some(KEY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("holds a ext4 filesystem"),
        "{}",
        e.message()
    );
    assert!(
        !is_open(&id),
        "the mapping the failed stage opened is closed"
    );
    delete(&mut c, id).await;
}

/// Settings cryptsetup refuses (here a cipher the kernel does not have; a
/// key size XTS lacks is refused at CreateVolume already) are
/// FailedPrecondition naming them, with nothing written or opened.
#[tokio::test]
async fn refused_luks_settings_are_named() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let mut req = enc_req("enc-bad-cipher", "thin", 64 * MI);
    req.parameters
        .insert("carve.dev/luks-cipher".into(), "nosuch-xts-plain64".into());
    let id = create_ok(&mut c, req).await.volume_id;
    let p = paths("enc-bad-cipher");
    let e = stage_with(&mut n, &id, &p, &mount_cap(), Some(KEY))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("cipher nosuch-xts-plain64"),
        "{}",
        e.message()
    );
    assert_eq!(lv_signature(&id), "");
    assert!(!is_open(&id));
    delete(&mut c, id).await;
}

/// An open mapping whose /dev/mapper node went missing (a /dev without
/// udev's work) is found by name and its node remade; unstage closes it.
#[tokio::test]
async fn a_missing_mapper_node_is_remade() {
    let (_carve, mut c, mut n) = Carve::with_clients().await;
    let mut req = enc_req("enc-no-node", "thick", 64 * MI);
    req.volume_capabilities = vec![block_cap()];
    let id = create_ok(&mut c, req).await.volume_id;
    let (cap, p) = (block_cap(), paths("enc-no-node"));
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    std::fs::remove_file(mapper(&id)).unwrap();
    stage_with(&mut n, &id, &p, &cap, Some(KEY)).await.unwrap();
    assert!(is_open(&id), "the node is back");
    publish(&mut n, &id, &p, &cap, false).await.unwrap();
    detach(&mut n, &id, &p).await;
    assert!(!is_open(&id));
    delete(&mut c, id).await;
}

//! Goal P2: 64 distinct CreateVolume at once on one VG against a loop of 64
//! bare `lvcreate` with the argv carve builds, in the same boot; then the 64
//! deleted at once, and the class's capacity checked back to the byte.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use carve_csi::csi;

use super::{lvm, Bench};

pub const P2_VOLUMES: usize = 64;
const SIZE: u64 = 8 << 20;

/// The argv of a bare lvcreate for `class` ("thick" or "thin"), as carve
/// builds it (same flags, the same number of tags).
fn bare_lvcreate(class: &str, name: &str) -> Vec<String> {
    let mut a: Vec<String> = ["lvcreate", "--yes", "--quiet", "--name", name]
        .map(String::from)
        .to_vec();
    let size = format!("{SIZE}b");
    if class == "thin" {
        a.extend(["--virtualsize", &size, "--thin"].map(String::from));
    } else {
        a.extend(["--size", &size, "--zero", "y", "--wipesignatures", "y"].map(String::from));
    }
    for t in ["benchp2", "bench/name=x", "bench/class=y", "bench/fs=z"] {
        a.push("--addtag".into());
        a.push(t.into());
    }
    a.push(
        if class == "thin" {
            "carve-thin/pool0"
        } else {
            "carve-thick"
        }
        .into(),
    );
    a
}

fn capacity_request(class: &str) -> csi::GetCapacityRequest {
    csi::GetCapacityRequest {
        parameters: HashMap::from([("carve.dev/device-class".to_string(), class.to_string())]),
        ..Default::default()
    }
}

async fn capacity(b: &mut Bench, class: &str) -> i64 {
    b.c.get_capacity(capacity_request(class))
        .await
        .unwrap()
        .into_inner()
        .available_capacity
}

/// What a carve that read LVM just now would offer for `class`: the truth
/// carve's running view is checked against.
async fn truth(b: &Bench, class: &str) -> i64 {
    use carve_csi::csi::controller_server::Controller;
    super::fresh_services(&b.config)
        .await
        .controller
        .get_capacity(tonic::Request::new(capacity_request(class)))
        .await
        .unwrap()
        .into_inner()
        .available_capacity
}

/// Waits (at most 2 minutes) until carve offers `want` for `class`. carve
/// learns of LVs it did not make (the bare ones) only from its periodic
/// report; one that ran while they existed leaves them in its view until the
/// next. Waiting keeps the check after the burst about carve's own changes.
async fn settle(b: &mut Bench, class: &str, want: i64, after: &str) {
    let t = Instant::now();
    while capacity(b, class).await != want {
        if t.elapsed() > Duration::from_secs(120) {
            println!("P2 {class:<5} carve's view never came to {want} after {after}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if t.elapsed() > Duration::from_millis(250) {
        println!(
            "P2 {class:<5} carve's view caught up with {after} after {:.1} s (its periodic report)",
            t.elapsed().as_secs_f64()
        );
    }
}

/// LVM's own free bytes of `vg` (thick) or of the pool's virtual room is not
/// comparable; for thick, what GetCapacity should say: VG free minus spare.
fn vg_free(vg: &str) -> i64 {
    let out = std::process::Command::new("lvm")
        .args([
            "vgs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_free",
            vg,
        ])
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(-1)
}

pub async fn p2(b: &mut Bench, class: &str) {
    let vg = if class == "thin" {
        "carve-thin"
    } else {
        "carve-thick"
    };
    let want = truth(b, class).await;
    settle(b, class, want, "the bare commands before P2").await;
    let before = capacity(b, class).await;
    let free_before = vg_free(vg);
    let t = Instant::now();
    for i in 0..P2_VOLUMES {
        let args = bare_lvcreate(class, &format!("p2-bare-{i}"));
        lvm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let bare = t.elapsed();
    lvm(&[
        "lvremove",
        "--yes",
        "--quiet",
        "--select",
        "lv_tags=benchp2",
        vg,
    ]);
    let want = truth(b, class).await;
    settle(b, class, want, "the bare lvcreate loop and lvremove").await;

    let channel = b.channel().await;
    let params = HashMap::from([("carve.dev/device-class".to_string(), class.to_string())]);
    let t = Instant::now();
    let tasks: Vec<_> = (0..P2_VOLUMES)
        .map(|i| {
            let mut c = csi::controller_client::ControllerClient::new(channel.clone());
            let req = csi::CreateVolumeRequest {
                name: format!("p2-{class}-{i}"),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: SIZE as i64,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![b.cap.clone()],
                parameters: params.clone(),
                ..Default::default()
            };
            tokio::spawn(async move {
                let t = Instant::now();
                let r = c.create_volume(req).await;
                (
                    r.map(|r| r.into_inner().volume.unwrap().volume_id),
                    t.elapsed(),
                )
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut failed = Vec::new();
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        let (r, took) = t.await.unwrap();
        lat.push(took);
        match r {
            Ok(id) => ids.push(id),
            Err(e) => failed.push(e.code()),
        }
    }
    let carve = t.elapsed();
    let during = capacity(b, class).await;
    let during_truth = truth(b, class).await;
    let free_during = vg_free(vg);
    let t = Instant::now();
    let deletes: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let mut c = csi::controller_client::ControllerClient::new(channel.clone());
            tokio::spawn(async move {
                c.delete_volume(csi::DeleteVolumeRequest {
                    volume_id: id,
                    ..Default::default()
                })
                .await
                .is_ok()
            })
        })
        .collect();
    let mut delete_failed = 0;
    for d in deletes {
        delete_failed += usize::from(!d.await.unwrap());
    }
    let delete_took = t.elapsed();
    let after = capacity(b, class).await;
    let after_truth = truth(b, class).await;
    let free_after = vg_free(vg);
    println!("P2 {class:<5} LVM's vg_free: before {free_before}, with the volumes {free_during}, after {free_after}");
    let used = SIZE as i64 * ids.len() as i64;
    lat.sort();
    println!(
        "P2 {class:<5} {P2_VOLUMES} concurrent CreateVolume {:7.2} s ({} failed {:?}; slowest {:.2} s)   {P2_VOLUMES} bare lvcreate in a loop {:7.2} s   bare/carve = {:.2} (goal >= 1.5)",
        carve.as_secs_f64(),
        failed.len(),
        failed,
        lat.last().unwrap().as_secs_f64(),
        bare.as_secs_f64(),
        bare.as_secs_f64() / carve.as_secs_f64()
    );
    println!(
        "P2 {class:<5} capacity: before {before}, with the volumes {during} (expected {}; a fresh report says {during_truth}), after deleting them at once ({:.2} s, {delete_failed} failed) {after} (fresh: {after_truth}): {}",
        before - used,
        delete_took.as_secs_f64(),
        if during == before - used && during == during_truth && after == before && after == after_truth { "exact" } else { "NOT EXACT" }
    );
}

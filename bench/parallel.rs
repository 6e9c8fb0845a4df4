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

async fn capacity(b: &mut Bench, class: &str) -> i64 {
    b.c.get_capacity(csi::GetCapacityRequest {
        parameters: HashMap::from([("carve.dev/device-class".to_string(), class.to_string())]),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .available_capacity
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
        "P2 {class:<5} capacity: before {before}, with the volumes {during} (expected {}), after deleting them at once ({:.2} s, {delete_failed} failed) {after}: {}",
        before - used,
        delete_took.as_secs_f64(),
        if during == before - used && after == before { "exact" } else { "NOT EXACT" }
    );
}

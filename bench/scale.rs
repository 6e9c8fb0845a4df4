//! One row of the scale table: a carve started on a VG that already holds N
//! carve LVs (`bench scale N CONFIG ROUNDS CALLS`). Start-up to ready,
//! CreateVolume and DeleteVolume, GetCapacity over the socket and in the
//! process, ListVolumes paged to the end, and RSS, all with N LVs listed.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carve_csi::csi;

use super::{ms, pct, rss_kib, shells_rss_kib};

const SIZE: i64 = 8 << 20;

pub fn header() {
    println!(
        "scale  {:>6} | {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>10} | {:>8} {:>8} {:>7}",
        "LVs", "start ms", "create50", "create99", "bare50", "delete50", "delete99", "bare50", "cap50 ms", "cap99 ms", "inproc50", "inproc99", "list ms", "RSS MiB", "RSS end", "shells"
    );
}

pub async fn row(lvs: usize, config: &str, rounds: usize, calls: usize) {
    let dir = std::env::temp_dir().join(format!("carve-scale-{lvs}"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("csi.sock");
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::File::create(dir.join("carve.log")).unwrap();
    let started = Instant::now();
    let mut child = Command::new("target/release/carve")
        .args(["serve", "--node-id", "scale", "--endpoint"])
        .arg(format!("unix://{}", socket.display()))
        .args(["--config", config, "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start carve");
    let pid = child.id().to_string();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "carve did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let channel = carve_csi::client::connect(socket.to_str().unwrap())
        .await
        .unwrap();
    let mut id = csi::identity_client::IdentityClient::new(channel.clone());
    loop {
        let ready = id
            .probe(csi::ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready;
        if ready == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = started.elapsed();
    let rss_start = rss_kib(&pid);
    let mut c = csi::controller_client::ControllerClient::new(channel);
    let params = HashMap::from([("carve.dev/device-class".to_string(), "scale".to_string())]);
    let cap = carve_csi::client::mount_capability("ext4", &[]);
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let t = Instant::now();
        let v = c
            .create_volume(csi::CreateVolumeRequest {
                name: format!("scale-{lvs}-{i}"),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: SIZE,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap.clone()],
                parameters: params.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        create.push(t.elapsed());
        let t = Instant::now();
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: v.volume_id,
            ..Default::default()
        })
        .await
        .unwrap();
        delete.push(t.elapsed());
    }
    // The floor: the same lvcreate/lvremove run bare on the same VG now.
    let (mut bare_c, mut bare_d) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let name = format!("bare-{lvs}-{i}");
        bare_c.push(super::lvm(&[
            "lvcreate",
            "--yes",
            "--quiet",
            "--name",
            &name,
            "--size",
            "8388608b",
            "--zero",
            "y",
            "--wipesignatures",
            "y",
            "--addtag",
            "b/owner=x",
            "--addtag",
            "b/name=y",
            "--addtag",
            "b/class=z",
            "--addtag",
            "b/fs=w",
            "carve-scale",
        ]));
        bare_d.push(super::lvm(&[
            "lvremove",
            "--yes",
            "--quiet",
            &format!("carve-scale/{name}"),
        ]));
    }
    // Let the refresh the mutations asked for pass before timing reads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let req = csi::GetCapacityRequest {
        parameters: params,
        ..Default::default()
    };
    let mut capl = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        c.get_capacity(req.clone()).await.unwrap();
        capl.push(t.elapsed());
    }
    let mut inproc = super::in_process_capacity(std::path::Path::new(config), &req, calls).await;
    let t = Instant::now();
    let (mut listed, mut token) = (0, String::new());
    loop {
        let page = c
            .list_volumes(csi::ListVolumesRequest {
                max_entries: 500,
                starting_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        listed += page.entries.len();
        token = page.next_token;
        if token.is_empty() {
            break;
        }
    }
    let list = t.elapsed();
    assert_eq!(listed, lvs, "ListVolumes paged through every carve LV");
    let rss_end = rss_kib(&pid);
    let shells = shells_rss_kib(&pid);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    println!(
        "scale  {lvs:>6} | {:>9.0} | {:>9.1} {:>9.1} {:>9.1} | {:>9.1} {:>9.1} {:>9.1} | {:>9.3} {:>9.3} | {:>9.4} {:>9.4} | {:>10.1} | {:>8.1} {:>8.1} {:>7.1}",
        ms(start),
        ms(pct(&mut create, 0.5)),
        ms(pct(&mut create, 0.99)),
        ms(pct(&mut bare_c, 0.5)),
        ms(pct(&mut delete, 0.5)),
        ms(pct(&mut delete, 0.99)),
        ms(pct(&mut bare_d, 0.5)),
        ms(pct(&mut capl, 0.5)),
        ms(pct(&mut capl, 0.99)),
        ms(pct(&mut inproc, 0.5)),
        ms(pct(&mut inproc, 0.99)),
        ms(list),
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        shells as f64 / 1024.0,
    );
}

//! The container image's smoke test client (hack/image/smoke.sh runs it inside
//! a user-mode-linux guest whose root filesystem is the image): against the
//! image's carve, lvm2, mkfs, cryptsetup and lvm.conf, for a thick and a thin
//! class and a LUKS2-encrypted thick one, create → stage → write → snapshot →
//! restore → read back → delete, and nothing of carve's left in LVM
//! afterwards. Panics on the first failure.
//!   image-smoke SOCKET

use std::time::{Duration, Instant};

use carve_csi::client::mount_capability;
use carve_csi::csi::controller_client::ControllerClient;
use carve_csi::csi::identity_client::IdentityClient;
use carve_csi::csi::node_client::NodeClient;
use carve_csi::csi::{self};
use tonic::transport::Channel;

const MI: i64 = 1 << 20;

struct Clients {
    c: ControllerClient<Channel>,
    n: NodeClient<Channel>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let socket = std::env::args().nth(1).expect("usage: image-smoke SOCKET");
    let channel = carve_csi::client::connect(&socket).await.expect("connect");
    let info = IdentityClient::new(channel.clone())
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .expect("GetPluginInfo")
        .into_inner();
    println!("smoke: {} {}", info.name, info.vendor_version);
    let mut k = Clients {
        c: ControllerClient::new(channel.clone()),
        n: NodeClient::new(channel),
    };
    for (class, luks) in [("thick", false), ("thin", false), ("thick", true)] {
        round_trip(&mut k, class, luks).await;
    }
    let left =
        k.c.list_volumes(csi::ListVolumesRequest::default())
            .await
            .expect("ListVolumes")
            .into_inner()
            .entries;
    assert!(left.is_empty(), "volumes left behind: {left:?}");
    println!("smoke: ok");
}

/// One class: a volume with a file, its snapshot, a restore that holds the
/// file, then everything deleted. `luks`: encrypted volumes, staged with a
/// passphrase.
async fn round_trip(k: &mut Clients, class: &str, luks: bool) {
    let class_name = class;
    let class = &if luks {
        format!("{class}-luks")
    } else {
        class.to_string()
    };
    let src = create(k, &format!("smoke-{class}"), class_name, luks, None).await;
    let p = Paths::new(&format!("{class}-src"));
    attach(k, &src, &p, luks).await;
    let data: Vec<u8> = (0..3 * MI).map(|i| (i % 253) as u8).collect();
    std::fs::write(p.target.join("data.bin"), &data).expect("write");
    detach(k, &src, &p).await;
    let snap =
        k.c.create_snapshot(csi::CreateSnapshotRequest {
            name: format!("smoke-snap-{class}"),
            source_volume_id: src.clone(),
            ..Default::default()
        })
        .await
        .expect("CreateSnapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    println!(
        "smoke: {class}: volume {src}, snapshot {}",
        snap.snapshot_id
    );
    let restored = create(
        k,
        &format!("smoke-restore-{class}"),
        class_name,
        luks,
        Some(snap.snapshot_id.clone()),
    )
    .await;
    let rp = Paths::new(&format!("{class}-restore"));
    attach(k, &restored, &rp, luks).await;
    let back = std::fs::read(rp.target.join("data.bin")).expect("read restored file");
    assert!(back == data, "{class}: the restored volume's file differs");
    println!("smoke: {class}: restore {restored} holds the snapshot's data");
    detach(k, &restored, &rp).await;
    k.c.delete_snapshot(csi::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .expect("DeleteSnapshot");
    for id in [restored, src] {
        k.c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
    }
}

/// CreateVolume of 64 MiB, ext4 (LUKS2-encrypted when `luks`), retried
/// while a thick restore's copy runs (Aborted), as external-provisioner does.
async fn create(
    k: &mut Clients,
    name: &str,
    class: &str,
    luks: bool,
    snapshot: Option<String>,
) -> String {
    let mut parameters: std::collections::HashMap<String, String> =
        [("carve.dev/device-class".to_string(), class.to_string())].into();
    if luks {
        // pbkdf2 with forced iterations: a format and an open in well
        // under a second in the guest.
        for (k, v) in [
            ("carve.dev/encryption", "luks2"),
            ("carve.dev/luks-pbkdf", "pbkdf2"),
            ("carve.dev/luks-pbkdf-force-iterations", "1000"),
        ] {
            parameters.insert(k.into(), v.into());
        }
    }
    let req = csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: 64 * MI,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_capability("ext4", &[])],
        parameters,
        volume_content_source: snapshot.map(|id| csi::VolumeContentSource {
            r#type: Some(csi::volume_content_source::Type::Snapshot(
                csi::volume_content_source::SnapshotSource { snapshot_id: id },
            )),
        }),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match k.c.create_volume(req.clone()).await {
            Ok(r) => return r.into_inner().volume.expect("volume").volume_id,
            Err(s) if s.code() == tonic::Code::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("CreateVolume {name}: {s:?}"),
        }
    }
}

struct Paths {
    stage: std::path::PathBuf,
    target: std::path::PathBuf,
}

impl Paths {
    fn new(tag: &str) -> Paths {
        let base = std::path::PathBuf::from(format!("/tmp/smoke/{tag}"));
        Paths {
            stage: base.join("stage"),
            target: base.join("target"),
        }
    }
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

async fn attach(k: &mut Clients, id: &str, p: &Paths, luks: bool) {
    let cap = mount_capability("ext4", &[]);
    let secrets = if luks {
        [(
            "passphrase".to_string(),
            "smoke test passphrase".to_string(),
        )]
        .into()
    } else {
        Default::default()
    };
    k.n.node_stage_volume(csi::NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
        volume_capability: Some(cap.clone()),
        secrets,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("NodeStageVolume {id}: {e:?}"));
    k.n.node_publish_volume(csi::NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
        target_path: s(&p.target),
        volume_capability: Some(cap),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("NodePublishVolume {id}: {e:?}"));
}

async fn detach(k: &mut Clients, id: &str, p: &Paths) {
    k.n.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: s(&p.target),
    })
    .await
    .unwrap_or_else(|e| panic!("NodeUnpublishVolume {id}: {e:?}"));
    k.n.node_unstage_volume(csi::NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: s(&p.stage),
    })
    .await
    .unwrap_or_else(|e| panic!("NodeUnstageVolume {id}: {e:?}"));
}

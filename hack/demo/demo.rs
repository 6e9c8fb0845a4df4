//! The README's demo client: walks one volume per device class through carve —
//! capacity, create, stage (mkfs + mount), publish, write a file, expand online
//! (controller then node), stats, list, unpublish, unstage, delete — printing
//! each step. hack/demo.sh runs it inside the user-mode-linux guest.
//!   demo SOCKET [DEVICE_CLASS...]

use std::collections::HashMap;

use carve_csi::csi::controller_client::ControllerClient;
use carve_csi::csi::identity_client::IdentityClient;
use carve_csi::csi::node_client::NodeClient;
use carve_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use carve_csi::csi::{self};

const MI: i64 = 1 << 20;

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / MI as f64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().ok_or("usage: demo SOCKET [DEVICE_CLASS...]")?;
    let mut classes: Vec<String> = args.collect();
    if classes.is_empty() {
        classes = vec!["thick".into(), "thin".into()];
    }
    let channel = carve_csi::client::connect(&socket).await?;
    let mut id = IdentityClient::new(channel.clone());
    let mut c = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);

    let info = id
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await?
        .into_inner();
    let ready = id.probe(csi::ProbeRequest {}).await?.into_inner().ready;
    println!(
        "[identity] {} {} ready={:?}",
        info.name, info.vendor_version, ready
    );

    for class in classes {
        let params = HashMap::from([("carve.dev/device-class".to_string(), class.clone())]);
        let cap = |c: &mut ControllerClient<_>| {
            let params = params.clone();
            let mut c = c.clone();
            async move {
                c.get_capacity(csi::GetCapacityRequest {
                    parameters: params,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
            }
        };
        println!("\n=== device class {class:?}");
        let before = cap(&mut c).await?;
        println!(
            "[capacity] available {}, largest volume {}, smallest {}",
            mib(before.available_capacity),
            mib(before.maximum_volume_size.unwrap_or(0)),
            mib(before.minimum_volume_size.unwrap_or(0))
        );
        let name = format!("demo-{class}");
        let vol = c
            .create_volume(csi::CreateVolumeRequest {
                name: name.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: 100 * MI,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![csi::VolumeCapability {
                    access_type: Some(AccessType::Mount(MountVolume {
                        fs_type: "ext4".into(),
                        ..Default::default()
                    })),
                    access_mode: Some(AccessMode {
                        mode: Mode::SingleNodeWriter as i32,
                    }),
                }],
                parameters: params.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .volume
            .ok_or("no volume in response")?;
        println!(
            "[create]   {name:?} -> volume {} ({}) on {:?}",
            vol.volume_id,
            mib(vol.capacity_bytes),
            vol.accessible_topology.first().map(|t| &t.segments)
        );
        let mid = cap(&mut c).await?;
        println!(
            "[capacity] available {} (-{})",
            mib(mid.available_capacity),
            mib(before.available_capacity - mid.available_capacity)
        );
        let vcap = csi::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        };
        let base = format!("/tmp/carve-demo/{class}");
        let (staging, target) = (format!("{base}/staging"), format!("{base}/pod/volume"));
        node.node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: vol.volume_id.clone(),
            staging_target_path: staging.clone(),
            volume_capability: Some(vcap.clone()),
            ..Default::default()
        })
        .await?;
        println!("[stage]    formatted ext4 (no signature found) and mounted on {staging}");
        node.node_publish_volume(csi::NodePublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            staging_target_path: staging.clone(),
            target_path: target.clone(),
            volume_capability: Some(vcap.clone()),
            ..Default::default()
        })
        .await?;
        let file = format!("{target}/hello.txt");
        std::fs::write(
            &file,
            format!("written through carve volume {}\n", vol.volume_id),
        )?;
        println!("[publish]  bind-mounted on {target}; wrote {file}");
        let stats = |node: &mut NodeClient<_>| {
            let mut node = node.clone();
            let (id, path) = (vol.volume_id.clone(), target.clone());
            async move {
                node.node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                    volume_id: id,
                    volume_path: path,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
            }
        };
        let st = stats(&mut node).await?;
        println!(
            "[stats]    {} total, {} used, {} inodes; {}",
            mib(st.usage[0].total),
            mib(st.usage[0].used),
            st.usage[1].total,
            st.volume_condition.map(|c| c.message).unwrap_or_default()
        );
        let range = csi::CapacityRange {
            required_bytes: 256 * MI,
            limit_bytes: 0,
        };
        let exp = c
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: vol.volume_id.clone(),
                capacity_range: Some(range),
                volume_capability: Some(vcap.clone()),
                ..Default::default()
            })
            .await?
            .into_inner();
        println!(
            "[expand]   controller: LV {} -> {} (node expansion required: {})",
            vol.volume_id,
            mib(exp.capacity_bytes),
            exp.node_expansion_required
        );
        node.node_expand_volume(csi::NodeExpandVolumeRequest {
            volume_id: vol.volume_id.clone(),
            volume_path: target.clone(),
            capacity_range: Some(range),
            volume_capability: Some(vcap.clone()),
            ..Default::default()
        })
        .await?;
        let st = stats(&mut node).await?;
        println!("[expand]   node: filesystem grown online while mounted: now {} total; file still reads {:?}", mib(st.usage[0].total), std::fs::read_to_string(&file)?.trim());
        let list = c
            .list_volumes(csi::ListVolumesRequest::default())
            .await?
            .into_inner();
        println!(
            "[list]     {} carve volume(s) on this node:",
            list.entries.len()
        );
        for e in &list.entries {
            let v = e.volume.as_ref().ok_or("entry without volume")?;
            let cond = e.status.as_ref().and_then(|s| s.volume_condition.as_ref());
            println!(
                "           {} {} {}",
                v.volume_id,
                mib(v.capacity_bytes),
                cond.map(|c| c.message.as_str()).unwrap_or("")
            );
        }
        node.node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            target_path: target.clone(),
        })
        .await?;
        node.node_unstage_volume(csi::NodeUnstageVolumeRequest {
            volume_id: vol.volume_id.clone(),
            staging_target_path: staging.clone(),
        })
        .await?;
        println!("[cleanup]  unpublished {target} and unstaged {staging}");
        c.delete_volume(csi::DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
        .await?;
        let after = cap(&mut c).await?;
        println!(
            "[delete]   {} removed; capacity back to {}",
            vol.volume_id,
            mib(after.available_capacity)
        );
    }
    Ok(())
}

//! The README's demo client: walks one volume per device class through carve —
//! capacity, create, stage (mkfs + mount), publish, write a file, expand online
//! (controller then node), stats, list, unpublish, unstage, delete — printing
//! each step. hack/demo.sh runs it inside the user-mode-linux guest.
//!   demo SOCKET [DEVICE_CLASS...]

use std::collections::HashMap;

use carve_csi::csi::controller_client::ControllerClient;
use carve_csi::csi::identity_client::IdentityClient;
use carve_csi::csi::node_client::NodeClient;
use carve_csi::csi::{self};
use tonic::transport::Channel;

const MI: i64 = 1 << 20;

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / MI as f64)
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().ok_or("usage: demo SOCKET [DEVICE_CLASS...]")?;
    let mut classes: Vec<String> = args.collect();
    if classes.is_empty() {
        classes = vec!["thick".into(), "thin".into()];
    }
    let channel = carve_csi::client::connect(&socket).await?;
    let mut id = IdentityClient::new(channel.clone());
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
        println!("\n=== device class {class:?}");
        let mut walk = Walk::create(channel.clone(), &class).await?;
        walk.mount_and_write().await?;
        walk.expand_online().await?;
        walk.list().await?;
        walk.clean_up().await?;
    }
    Ok(())
}

/// One volume of one device class on its way through carve.
struct Walk {
    c: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    params: HashMap<String, String>,
    vol: csi::Volume,
    staging: String,
    target: String,
    file: String,
}

fn ext4() -> csi::VolumeCapability {
    carve_csi::client::mount_capability("ext4", &[])
}

async fn capacity(
    c: &mut ControllerClient<Channel>,
    params: &HashMap<String, String>,
) -> Result<csi::GetCapacityResponse> {
    Ok(c.get_capacity(csi::GetCapacityRequest {
        parameters: params.clone(),
        ..Default::default()
    })
    .await?
    .into_inner())
}

impl Walk {
    /// Capacity, then a 100 MiB ext4 volume, then capacity again.
    async fn create(channel: Channel, class: &str) -> Result<Walk> {
        let mut c = ControllerClient::new(channel.clone());
        let params = HashMap::from([("carve.dev/device-class".to_string(), class.to_string())]);
        let before = capacity(&mut c, &params).await?;
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
                volume_capabilities: vec![ext4()],
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
        let mid = capacity(&mut c, &params).await?;
        println!(
            "[capacity] available {} (-{})",
            mib(mid.available_capacity),
            mib(before.available_capacity - mid.available_capacity)
        );
        let base = format!("/tmp/carve-demo/{class}");
        let target = format!("{base}/pod/volume");
        Ok(Walk {
            c,
            node: NodeClient::new(channel),
            params,
            vol,
            staging: format!("{base}/staging"),
            file: format!("{target}/hello.txt"),
            target,
        })
    }

    /// Stage (mkfs + mount), publish (bind mount), write a file, show stats.
    async fn mount_and_write(&mut self) -> Result<()> {
        let id = self.vol.volume_id.clone();
        self.node
            .node_stage_volume(csi::NodeStageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: self.staging.clone(),
                volume_capability: Some(ext4()),
                ..Default::default()
            })
            .await?;
        println!(
            "[stage]    formatted ext4 (no signature found) and mounted on {}",
            self.staging
        );
        self.node
            .node_publish_volume(csi::NodePublishVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: self.staging.clone(),
                target_path: self.target.clone(),
                volume_capability: Some(ext4()),
                ..Default::default()
            })
            .await?;
        std::fs::write(&self.file, format!("written through carve volume {id}\n"))?;
        println!(
            "[publish]  bind-mounted on {}; wrote {}",
            self.target, self.file
        );
        let st = self.stats().await?;
        println!(
            "[stats]    {} total, {} used, {} inodes; {}",
            mib(st.usage[0].total),
            mib(st.usage[0].used),
            st.usage[1].total,
            st.volume_condition.map(|c| c.message).unwrap_or_default()
        );
        Ok(())
    }

    async fn stats(&mut self) -> Result<csi::NodeGetVolumeStatsResponse> {
        Ok(self
            .node
            .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
                volume_id: self.vol.volume_id.clone(),
                volume_path: self.target.clone(),
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    /// ControllerExpandVolume grows the LV, NodeExpandVolume the mounted
    /// filesystem; the file is still there.
    async fn expand_online(&mut self) -> Result<()> {
        let range = csi::CapacityRange {
            required_bytes: 256 * MI,
            limit_bytes: 0,
        };
        let exp = self
            .c
            .controller_expand_volume(csi::ControllerExpandVolumeRequest {
                volume_id: self.vol.volume_id.clone(),
                capacity_range: Some(range),
                volume_capability: Some(ext4()),
                ..Default::default()
            })
            .await?
            .into_inner();
        println!(
            "[expand]   controller: LV {} -> {} (node expansion required: {})",
            self.vol.volume_id,
            mib(exp.capacity_bytes),
            exp.node_expansion_required
        );
        self.node
            .node_expand_volume(csi::NodeExpandVolumeRequest {
                volume_id: self.vol.volume_id.clone(),
                volume_path: self.target.clone(),
                capacity_range: Some(range),
                volume_capability: Some(ext4()),
                ..Default::default()
            })
            .await?;
        let st = self.stats().await?;
        println!("[expand]   node: filesystem grown online while mounted: now {} total; file still reads {:?}", mib(st.usage[0].total), std::fs::read_to_string(&self.file)?.trim());
        Ok(())
    }

    /// Every carve volume on this node, with its health.
    async fn list(&mut self) -> Result<()> {
        let list = self
            .c
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
        Ok(())
    }

    /// Unpublish, unstage, delete; the capacity comes back.
    async fn clean_up(mut self) -> Result<()> {
        let id = self.vol.volume_id.clone();
        self.node
            .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: self.target.clone(),
            })
            .await?;
        self.node
            .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: self.staging.clone(),
            })
            .await?;
        println!(
            "[cleanup]  unpublished {} and unstaged {}",
            self.target, self.staging
        );
        self.c
            .delete_volume(csi::DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await?;
        let after = capacity(&mut self.c, &self.params).await?;
        println!(
            "[delete]   {id} removed; capacity back to {}",
            mib(after.available_capacity)
        );
        Ok(())
    }
}

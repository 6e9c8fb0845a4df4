//! Controller handlers over a scripted LVM runner: malformed requests are
//! refused with the right code and zero lvm commands; well-formed ones produce
//! the expected argv.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::Code;

use super::*;
use crate::csi::controller_server::Controller;
use crate::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use crate::server::{services, Options};
use carve_core::config::Config;
use carve_core::lvm::fake::FakeLvm;

const CONFIG: &str = r#"
[[device_class]]
name = "thick"
volume_group = "vgthick"
type = "thick"
default = true
spare = "100Mi"

[[device_class]]
name = "thin"
volume_group = "vgthick"
type = "thin"
thin_pool = "pool0"
over_provision_ratio = 4.0

[[device_class]]
name = "mirrored"
volume_group = "vgraid"
type = "thick"
raid = "raid1"
"#;

/// carve's services over the in-memory LVM, its first report taken.
async fn setup_services() -> (crate::server::Services, Arc<FakeLvm>) {
    let runner = FakeLvm::new();
    let opts = Options {
        endpoint: "unix:///unused".into(),
        node_id: "node-a".into(),
        driver_name: "carve.dev".into(),
        max_volumes: 0,
        metrics_address: None,
        config: Config::parse(CONFIG, "test").unwrap(),
    };
    let s = services(&opts, runner.clone());
    s.state.refresh().await.unwrap();
    runner.clear();
    (s, runner)
}

async fn setup() -> (Arc<ControllerService>, Arc<FakeLvm>) {
    let (s, runner) = setup_services().await;
    (s.controller, runner)
}

fn mount_cap() -> csi::VolumeCapability {
    crate::client::mount_capability("ext4", &[])
}

fn create_req(name: &str, required: i64, limit: i64) -> csi::CreateVolumeRequest {
    csi::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(csi::CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        volume_capabilities: vec![mount_cap()],
        ..Default::default()
    }
}

async fn create_code(c: &ControllerService, req: csi::CreateVolumeRequest) -> Code {
    c.create_volume(Request::new(req))
        .await
        .map(|_| Code::Ok)
        .unwrap_or_else(|s| s.code())
}

const MI: i64 = 1 << 20;

mod create;
mod encryption;
mod read;

//! CSI Identity: who carve is, what it offers, and whether it is ready.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::csi::{self, identity_server::Identity};
use carve_core::config::Config;
use carve_core::engine::state::StateCache;

pub struct IdentityService {
    pub driver_name: String,
    pub config: Arc<Config>,
    pub state: Arc<StateCache>,
    /// What [`IdentityService::ready`] last found absent, to log changes once.
    pub absent: std::sync::Mutex<Vec<String>>,
}

impl IdentityService {
    /// Ready when the background LVM report has succeeded recently. Probe is
    /// called every few seconds by livenessprobe on every node, so it runs no
    /// lvm command: it reads what the refresher (every
    /// `capacity_refresh_seconds`, and after each change) last saw. A
    /// refresher that stopped answering makes the view stale, and a stale
    /// view is "not ready" too. The reason for "not ready" is logged, since
    /// Probe's answer has no room for it.
    ///
    /// A configured VG or thin pool that is absent does not make carve
    /// unready: a node without the disk (a control-plane or GPU node the
    /// DaemonSet also runs on, or a disk not attached yet at boot) would
    /// otherwise be restarted by livenessprobe for ever. Its class has zero
    /// capacity instead, and the absence is logged when it changes.
    fn ready(&self) -> Result<(), String> {
        let view = readiness(&self.state, &self.config)?;
        let absent = absent(&view);
        let mut last = self.absent.lock().expect("absent lock");
        if *last != absent {
            if absent.is_empty() {
                tracing::info!("every configured volume group and thin pool is present");
            } else {
                tracing::warn!(absent = %absent.join("; "), "configured storage absent: those classes report zero capacity until it appears");
            }
            *last = absent;
        }
        Ok(())
    }
}

/// Probe's answer (see [`IdentityService::ready`]), shared with the metrics'
/// `carve_ready`: the current view when ready, else why not.
pub(crate) fn readiness(
    state: &StateCache,
    config: &Config,
) -> Result<Arc<carve_core::engine::state::View>, String> {
    let (last_ok, last_error) = state.last_refresh();
    if let Some(e) = last_error {
        return Err(format!("the last LVM report failed: {e}"));
    }
    let Some(last_ok) = last_ok else {
        return Err("LVM has not answered yet".into());
    };
    let stale = config.refresh_interval() * 3 + config.lvm_timeout();
    if last_ok.elapsed() > stale {
        return Err(format!(
            "no LVM report has succeeded for {:?} (refresh stalled?)",
            last_ok.elapsed()
        ));
    }
    state.get().ok_or_else(|| "no LVM view yet".to_string())
}

/// The configured VGs and thin pools LVM does not show, one line per class:
/// the classes whose capacity the view could not compute (capacity::compute
/// fails only for an absent VG or pool).
fn absent(view: &carve_core::engine::state::View) -> Vec<String> {
    view.capacity
        .iter()
        .filter_map(|(class, c)| {
            c.as_ref()
                .err()
                .map(|e| format!("device class {class}: {e}"))
        })
        .collect()
}

/// GetPluginInfo's answer: the driver name and carve's version.
pub(crate) fn plugin_info(driver_name: &str) -> csi::GetPluginInfoResponse {
    csi::GetPluginInfoResponse {
        name: driver_name.to_string(),
        vendor_version: env!("CARGO_PKG_VERSION").to_string(),
        manifest: Default::default(),
    }
}

/// GetPluginCapabilities' answer, the same from every carve process: a
/// Controller service, topology (every volume lives on one node), online
/// expansion.
pub(crate) fn plugin_capabilities() -> csi::GetPluginCapabilitiesResponse {
    use csi::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
    let service = |t: service::Type| csi::PluginCapability {
        r#type: Some(Type::Service(Service { r#type: t as i32 })),
    };
    csi::GetPluginCapabilitiesResponse {
        capabilities: vec![
            service(service::Type::ControllerService),
            service(service::Type::VolumeAccessibilityConstraints),
            csi::PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            },
        ],
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(plugin_info(&self.driver_name)))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(plugin_capabilities()))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        let ready = match self.ready() {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(reason = %why, "probe: not ready");
                false
            }
        };
        Ok(Response::new(csi::ProbeResponse { ready: Some(ready) }))
    }
}

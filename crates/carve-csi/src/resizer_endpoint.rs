//! The resizer endpoint: the CSI socket csi-resizer talks to in carve's
//! cluster Deployment (deploy/kubernetes/base/resizer).
//!
//! external-resizer has no per-node mode, and carve has no central LVM
//! controller: a ControllerExpandVolume sent to one node cannot grow an LV on
//! another. So csi-resizer runs once per cluster against this endpoint, which
//! answers only what decides its mode (external-resizer
//! pkg/resizer/csi_resizer.go, NewResizerFromClient):
//!
//! - GetPluginCapabilities lists CONTROLLER_SERVICE (without it csi-resizer
//!   exits),
//! - ControllerGetCapabilities lists no EXPAND_VOLUME,
//! - NodeGetCapabilities lists EXPAND_VOLUME,
//!
//! and csi-resizer picks its "trivial" resizer: it records the new size on the
//! PV, marks the claim as waiting for the node, and kubelet calls
//! NodeExpandVolume on the volume's node, where carve grows the LV and then
//! the filesystem. Every other RPC answers Unimplemented. The endpoint touches
//! no LVM, no mounts and no devices, so it runs without privileges.

use tonic::{Request, Response, Status};

use crate::csi::{
    self, controller_server::Controller, controller_server::ControllerServer,
    identity_server::Identity, identity_server::IdentityServer, node_server::Node,
    node_server::NodeServer,
};
use crate::identity::{plugin_capabilities, plugin_info};
use crate::server::{bind, serve_until_signal, socket_path, ServeError};

/// Identity, Controller and Node as csi-resizer needs them, and nothing more.
#[derive(Clone)]
pub struct ResizerEndpoint {
    pub driver_name: String,
}

#[tonic::async_trait]
impl Identity for ResizerEndpoint {
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

    /// Always ready: there is nothing to wait for.
    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl Controller for ResizerEndpoint {
    /// None: in particular no EXPAND_VOLUME, which is what selects
    /// csi-resizer's trivial resizer (and no MODIFY_VOLUME either).
    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: vec![],
        }))
    }
}

#[tonic::async_trait]
impl Node for ResizerEndpoint {
    /// EXPAND_VOLUME: the node grows the volume (NodeExpandVolume).
    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{rpc::Type, Rpc, Type as Cap};
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![csi::NodeServiceCapability {
                r#type: Some(Cap::Rpc(Rpc {
                    r#type: Type::ExpandVolume as i32,
                })),
            }],
        }))
    }
}

/// Serves the resizer endpoint on `endpoint` until SIGTERM or SIGINT.
pub async fn serve(endpoint: &str, driver_name: String) -> Result<(), ServeError> {
    let path = socket_path(endpoint)?;
    let listener = bind(&path)?;
    tracing::info!(%endpoint, driver = %driver_name, "serving the resizer endpoint (capabilities only)");
    let e = ResizerEndpoint { driver_name };
    let router = crate::grpc_compat::server_builder()
        .add_service(IdentityServer::new(e.clone()))
        .add_service(ControllerServer::new(e.clone()))
        .add_service(NodeServer::new(e));
    let result = serve_until_signal(router, listener).await;
    let _ = std::fs::remove_file(&path);
    result.map_err(ServeError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::controller_client::ControllerClient;
    use csi::identity_client::IdentityClient;
    use csi::node_client::NodeClient;
    use csi::plugin_capability::{service, Type};

    /// What csi-resizer's NewResizerFromClient asks, over a real socket:
    /// CONTROLLER_SERVICE, no controller EXPAND_VOLUME, node EXPAND_VOLUME.
    /// Everything else is Unimplemented.
    #[tokio::test]
    async fn answers_what_selects_the_trivial_resizer() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("csi.sock");
        let endpoint = format!("unix://{}", sock.display());
        let server = tokio::spawn(async move { serve(&endpoint, "carve.dev".into()).await });
        while !sock.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let channel = crate::client::connect(&sock).await.unwrap();
        let mut id = IdentityClient::new(channel.clone());
        let info = id
            .get_plugin_info(csi::GetPluginInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.name, "carve.dev");
        let caps = id
            .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capabilities;
        assert!(caps.iter().any(|c| matches!(&c.r#type,
            Some(Type::Service(s)) if s.r#type == service::Type::ControllerService as i32)));
        let probe = id.probe(csi::ProbeRequest {}).await.unwrap().into_inner();
        assert_eq!(probe.ready, Some(true));

        let mut c = ControllerClient::new(channel.clone());
        let ccaps = c
            .controller_get_capabilities(csi::ControllerGetCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capabilities;
        assert!(ccaps.is_empty(), "{ccaps:?}");
        let e = c
            .create_volume(csi::CreateVolumeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);

        let mut n = NodeClient::new(channel);
        let ncaps = n
            .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner()
            .capabilities;
        use csi::node_service_capability::{rpc::Type as Rpc, Type as Cap};
        assert!(ncaps.iter().any(|c| matches!(&c.r#type,
            Some(Cap::Rpc(r)) if r.r#type == Rpc::ExpandVolume as i32)));
        let e = n
            .node_stage_volume(csi::NodeStageVolumeRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        server.abort();
    }
}

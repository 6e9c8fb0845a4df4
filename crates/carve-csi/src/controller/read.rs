//! The controller RPCs that only read: ControllerGetVolume,
//! ValidateVolumeCapabilities, ListVolumes, GetCapacity. ListVolumes and
//! GetCapacity are served from the cached view (a scheduler burst never
//! spawns a burst of lvm processes); the other two read the volume's VG afresh.

use carve_core::lvm::LvInfo;
use tonic::Code;

use super::{ControllerService, UnknownClass, TOPOLOGY_KEY};
use crate::capability::{self, CapabilityError};
use crate::csi;
use crate::error::{into_status, LookupError, LvmFailure, NotReady, RpcError};
use crate::pagination::{self, PageError};
use crate::params::{BadParams, Params};

#[derive(Debug, thiserror::Error)]
pub enum GetVolumeError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    NotReady(#[from] NotReady),
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    NoCapabilities(CapabilityError),
    #[error(transparent)]
    Params(#[from] BadParams),
    #[error(transparent)]
    Class(#[from] UnknownClass),
}

#[derive(Debug, thiserror::Error)]
pub enum ListVolumesError {
    #[error(transparent)]
    Page(#[from] PageError),
    #[error(transparent)]
    Read(#[from] LvmFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum GetCapacityError {
    #[error(transparent)]
    Params(#[from] BadParams),
    #[error(transparent)]
    Class(#[from] UnknownClass),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("the capacity of device class {0} is not computed yet")]
    NotComputed(String),
}

impl RpcError for GetVolumeError {
    fn code(&self) -> Code {
        match self {
            GetVolumeError::Lookup(e) => e.code(),
            GetVolumeError::NotReady(e) => e.code(),
        }
    }
}

impl RpcError for ValidateError {
    fn code(&self) -> Code {
        match self {
            ValidateError::Lookup(e) => e.code(),
            ValidateError::NoCapabilities(_) => Code::InvalidArgument,
            ValidateError::Params(e) => e.code(),
            ValidateError::Class(e) => e.code(),
        }
    }
}

impl RpcError for ListVolumesError {
    fn code(&self) -> Code {
        match self {
            ListVolumesError::Page(e) => e.code(),
            ListVolumesError::Read(e) => e.code(),
        }
    }
}

impl RpcError for GetCapacityError {
    fn code(&self) -> Code {
        match self {
            GetCapacityError::Params(e) => e.code(),
            GetCapacityError::Class(e) => e.code(),
            GetCapacityError::NotReady(e) => e.code(),
            GetCapacityError::NotComputed(_) => Code::Unavailable,
        }
    }
}

into_status!(
    GetVolumeError,
    ValidateError,
    ListVolumesError,
    GetCapacityError
);

impl ControllerService {
    pub(super) async fn get_volume(
        &self,
        req: csi::ControllerGetVolumeRequest,
    ) -> Result<csi::ControllerGetVolumeResponse, GetVolumeError> {
        let lv = self.volume_lv(&req.volume_id, true).await?;
        let view = self.view()?;
        Ok(csi::ControllerGetVolumeResponse {
            volume: Some(self.volume(&lv)),
            status: Some(csi::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![],
                volume_condition: Some(self.condition(&lv, &view.lvm)),
            }),
        })
    }

    pub(super) async fn validate(
        &self,
        req: csi::ValidateVolumeCapabilitiesRequest,
    ) -> Result<csi::ValidateVolumeCapabilitiesResponse, ValidateError> {
        if req.volume_id.is_empty() {
            return Err(LookupError::from(crate::error::Missing::Required("volume_id")).into());
        }
        if req.volume_capabilities.is_empty() {
            return Err(ValidateError::NoCapabilities(CapabilityError::None));
        }
        let params = Params::parse(&req.parameters)?;
        self.volume_lv(&req.volume_id, true).await?;
        if params.device_class.is_some() {
            self.pick_class(&params)?;
        }
        // A capability carve cannot honour is an answer, not an error.
        Ok(match capability::check_all(&req.volume_capabilities) {
            Ok(()) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
            Err(why) => csi::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: why.to_string(),
            },
        })
    }

    pub(super) async fn list(
        &self,
        req: csi::ListVolumesRequest,
    ) -> Result<csi::ListVolumesResponse, ListVolumesError> {
        // Validate the token before anything else runs.
        pagination::check(req.max_entries, &req.starting_token)?;
        let view = self.view_or_refresh().await?;
        let vols: Vec<(String, &LvInfo)> = self
            .volumes(&view.lvm)
            .map(|l| (self.id_of(l), l))
            .collect();
        let (page, next_token) = pagination::page(
            vols,
            |(id, _)| id.as_str(),
            req.max_entries,
            &req.starting_token,
        )?;
        Ok(csi::ListVolumesResponse {
            entries: page
                .iter()
                .map(|(_, lv)| csi::list_volumes_response::Entry {
                    volume: Some(self.volume(lv)),
                    status: Some(csi::list_volumes_response::VolumeStatus {
                        published_node_ids: vec![],
                        volume_condition: Some(self.condition(lv, &view.lvm)),
                    }),
                })
                .collect(),
            next_token,
        })
    }

    pub(super) async fn capacity(
        &self,
        req: csi::GetCapacityRequest,
    ) -> Result<csi::GetCapacityResponse, GetCapacityError> {
        let params = Params::parse(&req.parameters)?;
        let class = self.pick_class(&params)?;
        let zero = csi::GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: Some(0),
            minimum_volume_size: None,
        };
        if let Some(t) = &req.accessible_topology {
            if t.segments.get(TOPOLOGY_KEY) != Some(&self.node_id) {
                return Ok(zero);
            }
        }
        if !req.volume_capabilities.is_empty()
            && capability::check_all(&req.volume_capabilities).is_err()
        {
            return Ok(zero);
        }
        let view = self.view()?;
        match view.capacity.get(&class.name) {
            Some(Ok(c)) => Ok(csi::GetCapacityResponse {
                available_capacity: c.available as i64,
                maximum_volume_size: Some(c.maximum_volume_size as i64),
                minimum_volume_size: Some(c.minimum_volume_size as i64),
            }),
            Some(Err(e)) => {
                tracing::warn!(class = %class.name, error = %e, "GetCapacity: class unusable, reporting 0");
                Ok(zero)
            }
            None => Err(GetCapacityError::NotComputed(class.name.clone())),
        }
    }
}

//! Encrypted volumes on the node: the dm-crypt mapping a LUKS2 volume's data
//! goes through. Stage formats the header (only on an LV with no signature at
//! all) and opens it with the node-stage secret's passphrase; unstage closes
//! it. Every other node RPC reads and writes through [`NodeService::data_device`].
//!
//! What is open is judged from the kernel (a mapping of carve's name whose
//! sysfs `slaves` is the volume's LV), never from memory, so a restarted carve
//! finds the mappings it opened before.

use std::collections::HashMap;

use carve_core::encryption::{self, Luks};
use carve_core::host::fs::{self, Signature};
use carve_core::host::luks::{self, LuksError, Passphrase};
use carve_core::host::offload;
use carve_core::host::paths::{self, Device};
use carve_core::lvm::LvInfo;
use tonic::Code;

use super::NodeService;
use crate::error::{into_status, RpcError, ToolFailure};

/// libblkid's type for a LUKS header.
const LUKS_SIGNATURE: &str = "crypto_LUKS";

/// Why an encrypted volume's mapping could not be opened, used or closed.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("volume {id} is LUKS2-encrypted: NodeStageVolume needs its passphrase under the key {key:?} of the secrets (the StorageClass's csi.storage.k8s.io/node-stage-secret-name and -namespace name the Secret)")]
    NoSecret { id: String, key: &'static str },
    #[error("volume {id}: {detail}")]
    Tag { id: String, detail: String },
    #[error("volume {id} is to be LUKS2-encrypted but holds {what}; carve formats only a device with no signature at all")]
    NotEncrypted { id: String, what: String },
    #[error("a device-mapper device {name} is open but does not sit on volume {id}'s LV; carve leaves it alone")]
    Foreign { name: String, id: String },
    #[error("volume {id}: {source}{}", if matches!(.source, LuksError::WrongKey { .. }) { "; nothing on the volume was changed" } else { "" })]
    Luks {
        id: String,
        #[source]
        source: LuksError,
    },
    #[error("volume {id} is still published at {at} (its device bind-mounted there): unpublish it first; the mapping stays open")]
    StillPublished { id: String, at: String },
    #[error(transparent)]
    Table(#[from] super::errors::MountTable),
    #[error(transparent)]
    Probe(#[from] ToolFailure),
}

impl RpcError for CryptError {
    fn code(&self) -> Code {
        match self {
            CryptError::NoSecret { .. } => Code::InvalidArgument,
            CryptError::Luks { source, .. } => match source {
                LuksError::WrongKey { .. } => Code::PermissionDenied,
                LuksError::NotLuks { .. } | LuksError::Busy { .. } | LuksError::Settings { .. } => {
                    Code::FailedPrecondition
                }
                LuksError::Failed(_) => Code::Internal,
            },
            CryptError::Tag { .. }
            | CryptError::NotEncrypted { .. }
            | CryptError::Foreign { .. }
            | CryptError::StillPublished { .. } => Code::FailedPrecondition,
            CryptError::Table(e) => e.code(),
            CryptError::Probe(e) => e.code(),
        }
    }
}

into_status!(CryptError);

/// The volume's LUKS2 settings, `None` for a plain volume.
pub(super) fn encryption_of(lv: &LvInfo, id: &str) -> Result<Option<Luks>, CryptError> {
    encryption::of(lv).map_err(|detail| CryptError::Tag {
        id: id.to_string(),
        detail,
    })
}

/// The open mapping's name for the volume's LV.
pub(super) fn mapper_name(lv: &LvInfo) -> String {
    encryption::mapper_name(&lv.vg, &lv.name)
}

/// Maps a cryptsetup failure to the volume it happened on.
fn luks_failure(id: &str) -> impl Fn(LuksError) -> CryptError + '_ {
    move |source| CryptError::Luks {
        id: id.to_string(),
        source,
    }
}

fn passphrase(id: &str, secrets: &HashMap<String, String>) -> Result<Passphrase, CryptError> {
    match secrets.get(encryption::SECRET_KEY) {
        Some(v) if !v.is_empty() => Ok(Passphrase::new(v.as_bytes().to_vec())),
        _ => Err(CryptError::NoSecret {
            id: id.to_string(),
            key: encryption::SECRET_KEY,
        }),
    }
}

impl NodeService {
    /// The device a volume's data goes through: its LV, or for an encrypted
    /// volume the dm-crypt mapping (whose number is `None` while closed).
    pub(super) fn data_device(lv: &LvInfo, id: &str) -> Result<Device, CryptError> {
        Ok(match encryption_of(lv, id)? {
            Some(_) => Device::mapper(&mapper_name(lv)),
            None => Device::of(lv),
        })
    }

    /// Opens an encrypted volume's mapping, first writing its LUKS2 header
    /// when the LV holds no signature at all; returns the mapping and
    /// whether this call opened it. A mapping already open on this LV is
    /// used as it is.
    pub(super) async fn open_encrypted(
        &self,
        id: &str,
        lv: &LvInfo,
        luks: &Luks,
        secrets: &HashMap<String, String>,
    ) -> Result<(Device, bool), CryptError> {
        let name = mapper_name(lv);
        let lv_dev = Device::of(lv);
        let n = name.clone();
        if let Some(under) = offload(move || luks::backing(&n)).await {
            if lv_dev.number.is_some_and(|d| under.contains(&d)) {
                let n = name.clone();
                if !offload(move || luks::is_open(&n)).await {
                    tracing::info!(volume_id = id, mapping = %name, "remaking the missing /dev/mapper node of an open LUKS2 mapping");
                    luks::make_node(&name, self.timeout)
                        .await
                        .map_err(luks_failure(id))?;
                }
                return Ok((Device::mapper(&name), false));
            }
            return Err(CryptError::Foreign {
                name,
                id: id.to_string(),
            });
        }
        let key = passphrase(id, secrets)?;
        let device = &lv_dev.path;
        match fs::probe(device)
            .await
            .map_err(ToolFailure::ctx("probing for a LUKS2 header"))?
        {
            Signature::None => {
                tracing::info!(volume_id = id, device = %device, cipher = %luks.cipher, "writing a LUKS2 header on a new volume");
                luks::format(luks, device, &key, self.timeout)
                    .await
                    .map_err(luks_failure(id))?;
                carve_core::crash::point("stage-after-luks-format");
            }
            Signature::Filesystem(t) if t == LUKS_SIGNATURE => {}
            Signature::Filesystem(what) | Signature::Other(what) => {
                return Err(CryptError::NotEncrypted {
                    id: id.to_string(),
                    what,
                })
            }
        }
        tracing::info!(volume_id = id, mapping = %name, "opening LUKS2 volume");
        luks::open(device, &name, &key, self.timeout)
            .await
            .map_err(luks_failure(id))?;
        carve_core::crash::point("stage-after-luks-open");
        Ok((Device::mapper(&name), true))
    }

    /// Closes an encrypted volume's mapping when it is open on this LV.
    pub(super) async fn close_encrypted(&self, id: &str, lv: &LvInfo) -> Result<(), CryptError> {
        let name = mapper_name(lv);
        let lv_dev = Device::of(lv);
        let n = name.clone();
        match offload(move || luks::backing(&n)).await {
            None => return Ok(()),
            // Deactivated LV under an open mapping is still ours by name;
            // another device under it is not.
            Some(under) if lv_dev.number.is_some_and(|d| !under.contains(&d)) => {
                return Err(CryptError::Foreign {
                    name,
                    id: id.to_string(),
                })
            }
            Some(_) => {}
        }
        // A raw block publication is a bind mount of the mapping's node,
        // which holds nothing open: closing would leave the pod a dead node.
        let mapping = Device::mapper(&name);
        let all = super::mounts().await?;
        if let Some(at) = paths::other_publications(&all, &mapping, None, &[]).first() {
            return Err(CryptError::StillPublished {
                id: id.to_string(),
                at: at.display().to_string(),
            });
        }
        tracing::info!(volume_id = id, mapping = %name, "closing LUKS2 volume");
        luks::close(&name, self.timeout)
            .await
            .map_err(luks_failure(id))
    }

    /// Grows an open mapping to its (grown) LV; no passphrase is needed
    /// (see `host::luks`).
    pub(super) async fn resize_encrypted(&self, id: &str, lv: &LvInfo) -> Result<(), CryptError> {
        let name = mapper_name(lv);
        tracing::info!(volume_id = id, mapping = %name, "growing LUKS2 mapping");
        luks::resize(&name, self.timeout)
            .await
            .map_err(luks_failure(id))
    }
}

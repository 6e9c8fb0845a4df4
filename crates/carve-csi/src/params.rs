//! What StorageClass parameters and volume contexts may say, decoded once
//! into typed structs. Unknown parameter keys are refused: a misspelt
//! parameter must not silently give a volume on the wrong device class.

use std::collections::HashMap;

use carve_core::host::fs::FsType;
use serde::{Deserialize, Deserializer};

/// Picks a device class by name (see the node config). Optional.
pub const DEVICE_CLASS: &str = "carve.dev/device-class";
/// Filesystem for mount volumes (also accepted as `fsType`).
pub const FS_TYPE: &str = "csi.storage.k8s.io/fstype";
pub const FS_TYPE_SHORT: &str = "fsType";
/// Set by external-provisioner with `--extra-create-metadata`.
pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

/// CreateVolume / GetCapacity / ValidateVolumeCapabilities parameters.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(rename = "carve.dev/device-class")]
    pub device_class: Option<String>,
    #[serde(
        rename = "csi.storage.k8s.io/fstype",
        alias = "fsType",
        default,
        deserialize_with = "optional_fs_type"
    )]
    pub fs_type: Option<FsType>,
    #[serde(rename = "csi.storage.k8s.io/pvc/name")]
    pub pvc_name: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pvc/namespace")]
    pub pvc_namespace: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pv/name")]
    pub pv_name: Option<String>,
}

/// An empty fs type means "not set".
fn optional_fs_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FsType>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Decodes a string map into `T`, naming the key that does not fit.
fn decode<T: serde::de::DeserializeOwned>(map: &HashMap<String, String>) -> Result<T, String> {
    let value = serde_json::Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    );
    T::deserialize(value).map_err(|e| e.to_string())
}

/// Parameters carve does not accept (InvalidArgument).
#[derive(Debug, thiserror::Error)]
#[error("parameters: {0}")]
pub struct BadParams(pub String);

impl crate::error::RpcError for BadParams {
    fn code(&self) -> tonic::Code {
        tonic::Code::InvalidArgument
    }
}

impl Params {
    pub fn parse(map: &HashMap<String, String>) -> Result<Params, BadParams> {
        decode(map).map_err(BadParams)
    }
}

/// What carve puts into a volume's context for the node side (the CO hands it
/// back at stage and publish, next to keys of its own, which are ignored).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VolumeContext {
    pub device_class: Option<String>,
    pub fs_type: Option<FsType>,
}

impl VolumeContext {
    pub const DEVICE_CLASS: &'static str = "carve.dev/device-class";
    pub const FS_TYPE: &'static str = "carve.dev/fs-type";

    pub fn into_map(self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(c) = self.device_class {
            m.insert(Self::DEVICE_CLASS.to_string(), c);
        }
        if let Some(f) = self.fs_type {
            m.insert(Self::FS_TYPE.to_string(), f.to_string());
        }
        m
    }

    /// carve's keys from a context; a filesystem carve does not know is an error.
    pub fn from_map(map: &HashMap<String, String>) -> Result<VolumeContext, String> {
        let fs_type = match map.get(Self::FS_TYPE).map(String::as_str) {
            None | Some("") => None,
            Some(f) => Some(
                f.parse::<FsType>()
                    .map_err(|e| format!("volume context: {e}"))?,
            ),
        };
        Ok(VolumeContext {
            device_class: map.get(Self::DEVICE_CLASS).cloned(),
            fs_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_known_keys() {
        let p = Params::parse(&m(&[
            (DEVICE_CLASS, "thin"),
            (FS_TYPE, "xfs"),
            (PVC_NAME, "data"),
            (PVC_NAMESPACE, "db"),
            (PV_NAME, "pvc-1"),
        ]))
        .unwrap();
        assert_eq!(p.device_class.as_deref(), Some("thin"));
        assert_eq!(p.fs_type, Some(FsType::Xfs));
        assert_eq!(p.pvc_namespace.as_deref(), Some("db"));
        assert_eq!(p.pv_name.as_deref(), Some("pvc-1"));
        assert_eq!(
            Params::parse(&m(&[(FS_TYPE_SHORT, "ext4")]))
                .unwrap()
                .fs_type,
            Some(FsType::Ext4)
        );
        assert_eq!(Params::parse(&m(&[(FS_TYPE, "")])).unwrap().fs_type, None);
        assert_eq!(Params::parse(&m(&[])).unwrap(), Params::default());
    }

    #[test]
    fn refuses_unknown_keys_and_filesystems() {
        assert!(Params::parse(&m(&[("carve.dev/devcie-class", "x")]))
            .unwrap_err()
            .to_string()
            .contains("devcie-class"));
        assert!(Params::parse(&m(&[(FS_TYPE, "ntfs")]))
            .unwrap_err()
            .to_string()
            .contains("ntfs"));
        assert!(
            Params::parse(&m(&[(FS_TYPE, "xfs"), (FS_TYPE_SHORT, "ext4")])).is_err(),
            "both spellings at once"
        );
    }

    #[test]
    fn volume_context_round_trips_and_ignores_foreign_keys() {
        let ctx = VolumeContext {
            device_class: Some("thin".into()),
            fs_type: Some(FsType::Btrfs),
        };
        let mut map = ctx.clone().into_map();
        map.insert("csi.storage.k8s.io/pod.name".into(), "web-0".into());
        assert_eq!(VolumeContext::from_map(&map).unwrap(), ctx);
        map.insert(VolumeContext::FS_TYPE.into(), "vfat".into());
        assert!(VolumeContext::from_map(&map).is_err());
    }
}

//! What StorageClass parameters and volume contexts may say, decoded once
//! into typed structs. Unknown parameter keys are refused: a misspelt
//! parameter must not silently give a volume on the wrong device class.
//!
//! One owner for both readers: CreateVolume and GetCapacity (carve-csi) parse
//! the parameters external-provisioner passes, and the cluster agent
//! (carve-agent) checks every carve StorageClass with the same rules before
//! a claim ever reaches a node ([`check_storage_class`]).

use std::collections::HashMap;

use crate::encryption::{self, Luks};
use crate::host::fs::FsType;

/// Picks a device class by name (see the node config). Optional.
pub const DEVICE_CLASS: &str = "carve.dev/device-class";
/// Filesystem for mount volumes (also accepted as `fsType`).
pub const FS_TYPE: &str = "csi.storage.k8s.io/fstype";
pub const FS_TYPE_SHORT: &str = "fsType";
/// Set by external-provisioner with `--extra-create-metadata`.
pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

/// Every key CreateVolume accepts but the encryption ones
/// ([`encryption::KEYS`]), in the order error messages list them.
pub const KNOWN: [&str; 6] = [
    DEVICE_CLASS,
    FS_TYPE,
    FS_TYPE_SHORT,
    PVC_NAME,
    PVC_NAMESPACE,
    PV_NAME,
];

/// The keys a StorageClass author writes (the rest are set by the
/// provisioner), for messages meant for that author.
pub const AUTHORED: [&str; 4] = [DEVICE_CLASS, FS_TYPE, FS_TYPE_SHORT, encryption::ENCRYPTION];

fn known(key: &str) -> bool {
    KNOWN.contains(&key) || encryption::KEYS.contains(&key)
}

/// CreateVolume / GetCapacity / ValidateVolumeCapabilities parameters.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    pub device_class: Option<String>,
    pub fs_type: Option<FsType>,
    pub pvc_name: Option<String>,
    pub pvc_namespace: Option<String>,
    pub pv_name: Option<String>,
    /// LUKS2 encryption, when the class asks for it.
    pub encryption: Option<Luks>,
}

/// A parameter carve does not accept: which key, and why (the message names
/// what would be accepted). CreateVolume answers it InvalidArgument; the
/// agent puts it in a Warning Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {key:?}: {reason}")]
pub struct BadParams {
    pub key: String,
    pub reason: String,
}

impl Params {
    /// Decodes the parameters of a CreateVolume or GetCapacity request.
    pub fn parse(map: &HashMap<String, String>) -> Result<Params, BadParams> {
        // Sorted, so that the key named in an error is the same every time.
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        if let Some(key) = keys.iter().find(|k| !known(k)) {
            return Err(BadParams {
                key: key.to_string(),
                reason: format!(
                    "not a parameter carve knows (a StorageClass may set {} and the carve.dev/luks-* options)",
                    AUTHORED.join(", ")
                ),
            });
        }
        if map.contains_key(FS_TYPE) && map.contains_key(FS_TYPE_SHORT) {
            return Err(BadParams {
                key: FS_TYPE_SHORT.into(),
                reason: format!("set together with {FS_TYPE}; use one of them"),
            });
        }
        let fs_type = match map.get(FS_TYPE).or_else(|| map.get(FS_TYPE_SHORT)) {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s.parse::<FsType>().map_err(|reason| {
                BadParams {
                    key: if map.contains_key(FS_TYPE) {
                        FS_TYPE
                    } else {
                        FS_TYPE_SHORT
                    }
                    .into(),
                    reason,
                }
            })?),
        };
        Ok(Params {
            device_class: map.get(DEVICE_CLASS).cloned(),
            fs_type,
            pvc_name: map.get(PVC_NAME).cloned(),
            pvc_namespace: map.get(PVC_NAMESPACE).cloned(),
            pv_name: map.get(PV_NAME).cloned(),
            encryption: Luks::from_params(map)?,
        })
    }
}

/// The prefix external-provisioner reserves for itself: it strips these keys
/// from a StorageClass before CreateVolume (secret references, the fs type,
/// which it moves into the volume capability) and refuses unknown ones.
pub const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";

/// The keys under [`PROVISIONER_PREFIX`] external-provisioner (v5) knows and
/// removes; any other key under that prefix makes it fail the claim.
const PROVISIONER_KEYS: [&str; 13] = [
    "fstype",
    "provisioner-secret-name",
    "provisioner-secret-namespace",
    "controller-publish-secret-name",
    "controller-publish-secret-namespace",
    "node-stage-secret-name",
    "node-stage-secret-namespace",
    "node-publish-secret-name",
    "node-publish-secret-namespace",
    "controller-expand-secret-name",
    "controller-expand-secret-namespace",
    "node-expand-secret-name",
    "node-expand-secret-namespace",
];

/// Checks a StorageClass's `parameters` the way they will reach carve:
/// external-provisioner's own keys taken out (an unknown one under its prefix
/// is an error there too), then [`Params::parse`]. Also refuses the keys the
/// provisioner sets itself (a StorageClass must not forge a PVC's name).
pub fn check_storage_class(map: &HashMap<String, String>) -> Result<Params, BadParams> {
    let mut passed = HashMap::new();
    for (key, value) in map {
        if [PVC_NAME, PVC_NAMESPACE, PV_NAME].contains(&key.as_str()) {
            return Err(BadParams {
                key: key.clone(),
                reason:
                    "set by external-provisioner (--extra-create-metadata), not by a StorageClass"
                        .into(),
            });
        }
        match key.strip_prefix(PROVISIONER_PREFIX) {
            Some("fstype") => {
                passed.insert(key.clone(), value.clone());
            }
            Some(rest) if PROVISIONER_KEYS.contains(&rest) => {}
            Some(_) => {
                return Err(BadParams {
                    key: key.clone(),
                    reason: format!(
                        "external-provisioner refuses unknown keys under {PROVISIONER_PREFIX}"
                    ),
                })
            }
            None => {
                passed.insert(key.clone(), value.clone());
            }
        }
    }
    Params::parse(&passed)
}

/// What carve puts into a volume's context for the node side (the CO hands it
/// back at stage and publish, next to keys of its own, which are ignored).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VolumeContext {
    pub device_class: Option<String>,
    pub fs_type: Option<FsType>,
    /// `luks2` for an encrypted volume: for people reading the PV (the node
    /// reads the LV's tag).
    pub encryption: Option<String>,
}

impl VolumeContext {
    pub const DEVICE_CLASS: &'static str = "carve.dev/device-class";
    pub const FS_TYPE: &'static str = "carve.dev/fs-type";
    pub const ENCRYPTION: &'static str = encryption::ENCRYPTION;

    pub fn into_map(self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(c) = self.device_class {
            m.insert(Self::DEVICE_CLASS.to_string(), c);
        }
        if let Some(f) = self.fs_type {
            m.insert(Self::FS_TYPE.to_string(), f.to_string());
        }
        if let Some(e) = self.encryption {
            m.insert(Self::ENCRYPTION.to_string(), e);
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
            encryption: map.get(Self::ENCRYPTION).cloned(),
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
    fn errors_name_the_key_and_what_is_allowed() {
        let e = Params::parse(&m(&[("carve.dev/devcie-class", "x"), ("a", "b")])).unwrap_err();
        assert_eq!(e.key, "a", "the first key in sorted order, every time");
        assert!(e.reason.contains(DEVICE_CLASS), "{e}");
        let e = Params::parse(&m(&[(FS_TYPE_SHORT, "ntfs")])).unwrap_err();
        assert_eq!(e.key, FS_TYPE_SHORT);
        assert!(e.reason.contains("ext4, xfs, btrfs"), "{e}");
    }

    #[test]
    fn storage_class_check_follows_external_provisioner() {
        let sc = m(&[
            (DEVICE_CLASS, "thin"),
            (FS_TYPE, "xfs"),
            ("csi.storage.k8s.io/node-stage-secret-name", "k"),
            ("csi.storage.k8s.io/node-stage-secret-namespace", "ns"),
        ]);
        let p = check_storage_class(&sc).unwrap();
        assert_eq!(p.device_class.as_deref(), Some("thin"));
        assert_eq!(p.fs_type, Some(FsType::Xfs));
        let e = check_storage_class(&m(&[("csi.storage.k8s.io/fs-type", "xfs")])).unwrap_err();
        assert_eq!(e.key, "csi.storage.k8s.io/fs-type");
        let e = check_storage_class(&m(&[(PVC_NAME, "x")])).unwrap_err();
        assert!(e.reason.contains("external-provisioner"), "{e}");
        let e = check_storage_class(&m(&[(FS_TYPE, "ext3")])).unwrap_err();
        assert_eq!(e.key, FS_TYPE);
        assert!(check_storage_class(&m(&[])).is_ok());
    }

    #[test]
    fn an_encrypted_storage_class_checks_like_carve_reads_it() {
        let sc = m(&[
            (DEVICE_CLASS, "thin"),
            (encryption::ENCRYPTION, "luks2"),
            (encryption::PBKDF, "argon2i"),
            (
                "csi.storage.k8s.io/node-stage-secret-name",
                "${pvc.name}-luks",
            ),
            (
                "csi.storage.k8s.io/node-stage-secret-namespace",
                "${pvc.namespace}",
            ),
        ]);
        let p = check_storage_class(&sc).unwrap();
        assert_eq!(p.encryption.unwrap().pbkdf, encryption::Pbkdf::Argon2i);
        let e = check_storage_class(&m(&[(encryption::KEY_SIZE, "256")])).unwrap_err();
        assert_eq!(e.key, encryption::KEY_SIZE, "an option without luks2");
    }

    #[test]
    fn volume_context_round_trips_and_ignores_foreign_keys() {
        let ctx = VolumeContext {
            device_class: Some("thin".into()),
            fs_type: Some(FsType::Btrfs),
            encryption: Some("luks2".into()),
        };
        let mut map = ctx.clone().into_map();
        map.insert("csi.storage.k8s.io/pod.name".into(), "web-0".into());
        assert_eq!(VolumeContext::from_map(&map).unwrap(), ctx);
        map.insert(VolumeContext::FS_TYPE.into(), "vfat".into());
        assert!(VolumeContext::from_map(&map).is_err());
    }
}

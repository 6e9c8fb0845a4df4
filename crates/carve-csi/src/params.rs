//! StorageClass parameters carve accepts, decoded once into a typed struct.
//! Unknown keys are refused: a misspelt parameter must not silently give a
//! volume on the wrong device class.

use std::collections::HashMap;

/// Picks a device class by name (see the node config). Optional.
pub const DEVICE_CLASS: &str = "carve.dev/device-class";
/// Filesystem for mount volumes (also accepted as `fsType`).
pub const FS_TYPE: &str = "csi.storage.k8s.io/fstype";
pub const FS_TYPE_SHORT: &str = "fsType";
/// Set by external-provisioner with `--extra-create-metadata`.
pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

/// Filesystems carve formats.
pub const FS_TYPES: &[&str] = &["ext4", "xfs", "btrfs"];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    pub device_class: Option<String>,
    pub fs_type: Option<String>,
    pub pvc_name: Option<String>,
    pub pvc_namespace: Option<String>,
    pub pv_name: Option<String>,
}

pub fn check_fs_type(fs: &str) -> Result<(), String> {
    if FS_TYPES.contains(&fs) {
        Ok(())
    } else {
        Err(format!(
            "filesystem {fs:?} is not supported (use one of {})",
            FS_TYPES.join(", ")
        ))
    }
}

impl Params {
    pub fn parse(map: &HashMap<String, String>) -> Result<Params, String> {
        let mut p = Params::default();
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for k in keys {
            let v = map[k].clone();
            match k.as_str() {
                DEVICE_CLASS => p.device_class = Some(v),
                FS_TYPE | FS_TYPE_SHORT => {
                    if !v.is_empty() {
                        check_fs_type(&v)?;
                        p.fs_type = Some(v);
                    }
                }
                PVC_NAME => p.pvc_name = Some(v),
                PVC_NAMESPACE => p.pvc_namespace = Some(v),
                PV_NAME => p.pv_name = Some(v),
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (carve accepts {DEVICE_CLASS}, {FS_TYPE}, {FS_TYPE_SHORT} and the csi.storage.k8s.io/pv and pvc metadata)"
                    ))
                }
            }
        }
        Ok(p)
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
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
        assert_eq!(p.pvc_namespace.as_deref(), Some("db"));
        assert_eq!(
            Params::parse(&m(&[("fsType", "ext4")]))
                .unwrap()
                .fs_type
                .as_deref(),
            Some("ext4")
        );
    }

    #[test]
    fn refuses_unknown_keys_and_filesystems() {
        assert!(Params::parse(&m(&[("carve.dev/devcie-class", "x")]))
            .unwrap_err()
            .contains("devcie-class"));
        assert!(Params::parse(&m(&[(FS_TYPE, "ntfs")]))
            .unwrap_err()
            .contains("ntfs"));
    }
}

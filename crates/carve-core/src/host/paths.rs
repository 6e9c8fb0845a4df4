//! What sits at a node path, and whether it is a given volume's: the one place
//! the Node service decides that a mount, a device node or a directory is
//! carve's to touch. Everything is judged from the kernel (the mount table and
//! stat), never from memory, so a restarted carve decides the same way.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::host::mountinfo::{self, Mount};
use crate::lvm::LvInfo;

/// (major, minor) of a device number (nix's, which splits as glibc does).
pub fn split_dev(dev: u64) -> (u32, u32) {
    use nix::sys::stat::{major, minor};
    (major(dev) as u32, minor(dev) as u32)
}

/// The LV's device node path.
pub fn device_path(lv: &LvInfo) -> String {
    format!("/dev/{}/{}", lv.vg, lv.name)
}

/// device-mapper's name of an LV (`-` in VG and LV names doubled).
fn dm_name(lv: &LvInfo) -> String {
    format!(
        "{}-{}",
        lv.vg.replace('-', "--"),
        lv.name.replace('-', "--")
    )
}

/// The volume's block device: its device number when the LV is active.
#[derive(Clone, Debug)]
pub struct Device {
    pub path: String,
    pub number: Option<(u32, u32)>,
    dm_path: String,
}

impl Device {
    pub fn of(lv: &LvInfo) -> Device {
        let path = device_path(lv);
        let number = node_number(Path::new(&path));
        Device {
            path,
            number,
            dm_path: format!("/dev/mapper/{}", dm_name(lv)),
        }
    }

    /// The open dm-crypt mapping /dev/mapper/`name` of an encrypted volume
    /// (its number `None` while it is closed).
    pub fn mapper(name: &str) -> Device {
        let path = format!("/dev/mapper/{name}");
        Device {
            number: node_number(Path::new(&path)),
            dm_path: path.clone(),
            path,
        }
    }

    /// Whether a filesystem mount is of this device. btrfs reports an
    /// anonymous device number in mountinfo, so the mount's source is checked
    /// too (by name, and by the device number it resolves to).
    pub fn is_mounted_by(&self, m: &Mount) -> bool {
        if self.number.is_some_and(|n| (m.major, m.minor) == n) {
            return true;
        }
        if m.source == self.path || m.source == self.dm_path {
            return true;
        }
        self.number
            .is_some_and(|n| node_number(Path::new(&m.source)) == Some(n))
    }

    /// Whether `path` is a device node of this device (a published raw block
    /// volume is the LV's node bind-mounted onto a file).
    pub fn is_node_at(&self, path: &Path) -> bool {
        self.number.is_some_and(|n| node_number(path) == Some(n))
    }

    /// With the LV deactivated under a published raw block volume, the node
    /// bind-mounted at `path` still names the device number the LV had. Such a
    /// node is taken for this volume's when no device with that number exists
    /// any more: it can reach nobody's data, so unmounting it harms nothing.
    pub fn is_dead_node_at(&self, path: &Path) -> bool {
        self.number.is_none()
            && node_number(path).is_some_and(|(major, minor)| {
                !Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists()
            })
    }
}

/// The device number of the block device node at `path`.
fn node_number(path: &Path) -> Option<(u32, u32)> {
    std::fs::metadata(path)
        .ok()
        .filter(|md| md.file_type().is_block_device())
        .map(|md| split_dev(md.rdev()))
}

/// The size in bytes of block device `major:minor` (sysfs counts 512-byte
/// sectors whatever the device's own sector size).
pub fn block_size((major, minor): (u32, u32)) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/size"))
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|sectors| sectors * 512)
}

/// The kernel's mount table now.
pub fn mounts() -> std::io::Result<Vec<Mount>> {
    mountinfo::read()
}

/// Whether the mount at `path` (if any) is this volume's: its filesystem, or
/// its device node bind-mounted there.
pub fn holds_volume(mounts: &[Mount], path: &Path, dev: &Device) -> Option<bool> {
    let m = mountinfo::at(mounts, path)?;
    Some(dev.is_mounted_by(&m) || dev.is_node_at(path) || dev.is_dead_node_at(path))
}

/// Every path other than `except` where this volume is mounted: filesystem
/// mounts of the staged filesystem (`staged` is its mount), or bind mounts
/// of the device node.
pub fn other_publications(
    mounts: &[Mount],
    dev: &Device,
    staged: Option<&Mount>,
    except: &[&Path],
) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| !except.contains(&m.mount_point.as_path()))
        .filter(|m| match staged {
            Some(s) => (m.major, m.minor) == (s.major, s.minor),
            // A device node bind mount: a sub-path of a devtmpfs/tmpfs.
            None => m.root != "/" && dev.is_node_at(&m.mount_point),
        })
        .map(|m| m.mount_point.clone())
        .collect()
}

/// What a path holds before carve mounts onto it.
#[derive(Debug, PartialEq)]
pub enum Spot {
    /// Nothing: carve creates it.
    Missing,
    /// An empty directory or an empty regular file (made by the CO or by an
    /// earlier call of carve's).
    Empty,
    /// Anything else: a directory with entries, a file with data, a symlink,
    /// a device. Never mounted over.
    Occupied(String),
}

pub fn inspect(path: &Path) -> std::io::Result<Spot> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Spot::Missing),
        Err(e) => return Err(e),
    };
    let ft = md.file_type();
    Ok(if ft.is_symlink() {
        Spot::Occupied("a symbolic link".into())
    } else if ft.is_dir() {
        match std::fs::read_dir(path)?.next() {
            None => Spot::Empty,
            Some(_) => Spot::Occupied("a directory that is not empty".into()),
        }
    } else if ft.is_file() {
        if md.len() == 0 {
            Spot::Empty
        } else {
            Spot::Occupied("a file with data".into())
        }
    } else {
        Spot::Occupied("a special file".into())
    })
}

/// Removes what carve made at a publish target once nothing is mounted there:
/// an empty directory or an empty file. Anything else is left.
pub fn remove_if_empty(path: &Path) -> std::io::Result<bool> {
    match inspect(path)? {
        Spot::Missing => Ok(true),
        Spot::Empty => {
            if std::fs::symlink_metadata(path)?.is_dir() {
                std::fs::remove_dir(path)?;
            } else {
                std::fs::remove_file(path)?;
            }
            Ok(true)
        }
        Spot::Occupied(_) => Ok(false),
    }
}

/// Where `path` really is, if that is strictly inside one of `roots`: its
/// parent resolved through every symlink (the longest part that exists, with
/// the rest appended), its last component kept as it is (a symlink there is
/// never followed: carve treats it as occupied). The kernel's mount table
/// shows resolved paths, so comparing with it needs this form too, and a
/// symlinked ancestor cannot lead carve out of the directories it owns.
pub fn confine(roots: &[PathBuf], path: &Path) -> Result<PathBuf, String> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err("is not a path below a root".into());
    };
    let mut existing = parent;
    let mut missing = Vec::new();
    let base = loop {
        match std::fs::canonicalize(existing) {
            Ok(p) => break p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(up), Some(n)) = (existing.parent(), existing.file_name()) else {
                    return Err(format!("{}: {e}", existing.display()));
                };
                missing.push(n);
                existing = up;
            }
            Err(e) => return Err(format!("resolving {}: {e}", existing.display())),
        }
    };
    let resolved = missing.iter().rev().fold(base, |p, n| p.join(n)).join(name);
    let inside = roots.iter().any(|root| {
        std::fs::canonicalize(root).is_ok_and(|r| resolved.starts_with(&r) && resolved != r)
    });
    if inside {
        Ok(resolved)
    } else {
        Err(format!(
            "resolves to {}, outside the directories carve may use ({}: node_path_roots)",
            resolved.display(),
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// How full a mounted filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub used_inodes: u64,
    pub free_inodes: u64,
}

/// statvfs(2) of the filesystem at `path`, in bytes and inodes (as df counts
/// them: used = total - free, available = what an unprivileged user may use).
pub fn fs_usage(path: &Path) -> std::io::Result<FsUsage> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = st.fragment_size() as u64;
    Ok(FsUsage {
        total_bytes: st.blocks() as u64 * frag,
        used_bytes: (st.blocks() - st.blocks_free()) as u64 * frag,
        available_bytes: st.blocks_available() as u64 * frag,
        total_inodes: st.files() as u64,
        used_inodes: (st.files() - st.files_free()) as u64,
        free_inodes: st.files_free() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_like_glibc() {
        // 254:3 (device-mapper) and 259:65536 (large minor).
        assert_eq!(split_dev((254 << 8) | 3), (254, 3));
        let (major, minor) = (259u64, 65536u64);
        let dev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
        assert_eq!(split_dev(dev), (259, 65536));
    }

    #[test]
    fn spots_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        assert_eq!(inspect(&p("none")).unwrap(), Spot::Missing);
        std::fs::create_dir(p("empty")).unwrap();
        assert_eq!(inspect(&p("empty")).unwrap(), Spot::Empty);
        std::fs::create_dir(p("full")).unwrap();
        std::fs::write(p("full/x"), b"x").unwrap();
        assert!(matches!(inspect(&p("full")).unwrap(), Spot::Occupied(_)));
        std::fs::write(p("blank"), b"").unwrap();
        assert_eq!(inspect(&p("blank")).unwrap(), Spot::Empty);
        std::fs::write(p("data"), b"data").unwrap();
        assert!(matches!(inspect(&p("data")).unwrap(), Spot::Occupied(_)));
        std::os::unix::fs::symlink("/etc", p("link")).unwrap();
        assert!(matches!(inspect(&p("link")).unwrap(), Spot::Occupied(_)));
        assert!(remove_if_empty(&p("empty")).unwrap() && !p("empty").exists());
        assert!(!remove_if_empty(&p("full")).unwrap() && p("full/x").exists());
        assert!(!remove_if_empty(&p("link")).unwrap() && Path::new("/etc").exists());
    }

    #[test]
    fn dm_names_double_dashes() {
        let lv = LvInfo::new_volume(
            "carve-thick",
            "cv-a-1",
            1,
            vec![],
            false,
            String::new(),
            String::new(),
        );
        assert_eq!(dm_name(&lv), "carve--thick-cv--a--1");
    }

    /// Issue 14, finding 12: carve acts only strictly inside its roots, on
    /// paths resolved through symlinked ancestors.
    #[test]
    fn paths_are_confined_to_the_roots_after_resolving() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        let root = t.path().join("root");
        std::fs::create_dir_all(real.join("pods")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        // A root behind a symlink, as kubelet's dir can be.
        let linked_root = t.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked_root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let roots = vec![root.clone(), linked_root.clone()];
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap();
        assert_eq!(
            confine(&roots, &root.join("a/b/stage")).unwrap(),
            canon(&root).join("a/b/stage"),
            "missing directories are fine"
        );
        assert_eq!(
            confine(&roots, &linked_root.join("pods/x")).unwrap(),
            canon(&real).join("pods/x"),
            "resolved as the mount table shows it"
        );
        assert!(
            confine(&roots, &root.join("escape/x")).is_err(),
            "a symlink out"
        );
        assert!(confine(&roots, &outside.join("x")).is_err());
        assert!(confine(&roots, &root).is_err(), "the root itself");
        assert!(confine(&roots, Path::new("/proc/self/x")).is_err());
        assert!(confine(&roots, Path::new("/run/xtables.lock")).is_err());
        // The last component is kept, not followed.
        assert_eq!(
            confine(&roots, &root.join("escape")).unwrap(),
            canon(&root).join("escape")
        );
    }
}

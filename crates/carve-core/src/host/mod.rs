//! The host layer: how carve runs programs and touches the node's mounts,
//! devices and paths. Nothing here knows about LVM tags or CSI.

pub mod blkid;
pub mod copy;
pub mod exec;
#[allow(unsafe_code)]
pub mod ffi;
pub mod fs;
pub mod mount;
pub mod mountinfo;
pub mod paths;

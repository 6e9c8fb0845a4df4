//! carve-core: everything a carve node does below the CSI API.
//!
//! - [`config`]: the node configuration (device classes and tuning), and
//!   [`layout`]: how a thick class lays volumes out, and what that costs.
//! - [`names`]: LV names derived from request names, volume and snapshot IDs,
//!   and the LVM tags carve writes.
//! - [`lvm`]: the LVM command layer: argv builders, the command runner, typed
//!   report decoding, failure classification, and the VG write guard through
//!   which every mutating command runs.
//! - [`host`]: the node's host layer: processes, mounts and the mount table,
//!   signature probing, mkfs and resize commands, block copies, and what a
//!   path holds.
//! - [`inventory`]: the node's LV inventory, as served to carve-agent.
//! - [`engine`]: the volume engine: the LVM state cache, capacity, health,
//!   the per-volume in-flight guard, copy jobs and the fill of restored and
//!   cloned volumes.
//! - [`encryption`]: what a StorageClass may choose for LUKS2 volumes, and
//!   the LV tag that records it.
//! - [`params`]: StorageClass parameters and volume contexts, shared with
//!   the cluster agent's StorageClass check.
//! - [`telemetry`]: counters and timings of the commands carve runs.
//! - [`endpoint`]: the small read-only HTTP endpoint metrics are served on.
//! - [`crash`]: named crash points, compiled in only for crash-safety tests.

#![deny(unsafe_code)]

pub mod config;
pub mod crash;
pub mod encryption;
pub mod endpoint;
pub mod engine;
#[cfg(any(test, feature = "test-support"))]
pub mod fuzz;
pub mod host;
pub mod inventory;
pub mod layout;
pub mod lvm;
pub mod names;
pub mod params;
pub mod telemetry;

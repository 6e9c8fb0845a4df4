//! carve-csi: the CSI services carve serves, over carve-core.
//!
//! - [`csi`]: the code generated from proto/csi.proto.
//! - [`error`]: how failures become gRPC statuses, logged once at the boundary.
//! - [`params`], [`capability`], [`pagination`]: what requests may say.
//! - [`identity`], [`controller`], [`node`]: the three CSI services.
//! - [`metrics`]: Prometheus metrics, the RPC span and counters layer.
//! - [`resizer_endpoint`]: the capabilities-only endpoint csi-resizer uses.
//! - [`server`]: the Unix socket and the gRPC server; [`grpc_compat`] lets
//!   grpc-core clients in; [`client`] is a channel to a carve socket.

#![forbid(unsafe_code)]

pub mod capability;
pub mod client;
pub mod controller;
pub mod csi;
pub mod error;
pub mod grpc_compat;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod pagination;
pub mod params;
pub mod resizer_endpoint;
pub mod server;

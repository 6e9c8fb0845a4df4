//! StorageClass parameters and volume contexts live in carve-core (the
//! cluster agent checks StorageClasses with the same code); this module adds
//! only their gRPC code.

pub use carve_core::params::*;

impl crate::error::RpcError for BadParams {
    fn code(&self) -> tonic::Code {
        tonic::Code::InvalidArgument
    }
}

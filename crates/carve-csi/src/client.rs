//! What a client of carve needs outside Kubernetes: a gRPC channel to its
//! socket and the usual volume capabilities. Used by the conformance tests,
//! the demo and the benchmark (and anyone scripting carve by hand).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use crate::csi::VolumeCapability;

/// A single-node-writer filesystem volume of `fs_type`, with `mount_flags`.
pub fn mount_capability(fs_type: &str, mount_flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            mount_flags: mount_flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A single-node-writer raw block volume.
pub fn block_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A channel to the carve socket at `socket`.
pub async fn connect(socket: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let path = socket.into();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://carve.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

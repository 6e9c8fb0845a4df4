//! A gRPC channel to a carve socket, for the conformance tests, the demo and
//! the benchmark (and anyone scripting carve without Kubernetes).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

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

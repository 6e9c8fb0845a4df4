//! The node's one gRPC endpoint: a Unix socket, mode 0600 before it listens,
//! serving Identity, Controller and Node until SIGTERM or SIGINT.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;

use crate::controller::ControllerService;
use crate::csi::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};
use crate::grpc_compat::{server_builder, AuthorityFix, ConnectionLimit, MAX_CONNECTIONS};
use crate::identity::IdentityService;
use crate::node::NodeService;
use carve_core::config::Config;
use carve_core::engine::copiers::Copiers;
use carve_core::engine::inflight::InFlight;
use carve_core::engine::state::StateCache;
use carve_core::lvm::{Lvm, LvmRunner};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("endpoint {0:?} must be unix:///absolute/path")]
    BadEndpoint(String),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics endpoint {address}: {source}")]
    Metrics {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

/// `unix:///run/carve/csi.sock` → `/run/carve/csi.sock`.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServeError> {
    let p = endpoint
        .strip_prefix("unix://")
        .filter(|p| p.starts_with('/') && p.len() > 1)
        .ok_or_else(|| ServeError::BadEndpoint(endpoint.to_string()))?;
    Ok(PathBuf::from(p))
}

/// Binds `path` with mode 0600 set before listen(), so there is no instant in
/// which another user could connect, and makes it appear at `path` only once
/// it listens (bound under a temporary name, then renamed), so a client that
/// sees the socket never gets "connection refused". A stale socket from a
/// previous run is removed; any other file at the path is refused.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let sock =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).map_err(err)?;
    sock.bind(&socket2::SockAddr::unix(&tmp).map_err(err)?)
        .map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    sock.listen(1024).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    let std_listener: std::os::unix::net::UnixListener = sock.into();
    tokio::net::UnixListener::from_std(std_listener).map_err(err)
}

/// Accepted connections, at most [`MAX_CONNECTIONS`] at once, each read
/// through [`AuthorityFix`] so clients on grpc-core (whose `:authority` on a
/// Unix socket h2 would refuse) are served and no client's bytes can take
/// more than a bounded amount of memory.
pub(crate) fn incoming(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<AuthorityFix<tokio::net::UnixStream>>> {
    use tokio_stream::StreamExt;
    let limit = ConnectionLimit::new(MAX_CONNECTIONS);
    UnixListenerStream::new(listener).filter_map(move |conn| match conn {
        Ok(c) => limit.admit(c).map(Ok),
        Err(e) => Some(Err(e)),
    })
}

pub struct Options {
    pub endpoint: String,
    pub node_id: String,
    pub driver_name: String,
    /// NodeGetInfo's max_volumes_per_node; 0 = no limit.
    pub max_volumes: i64,
    /// Where to serve Prometheus metrics (HOST:PORT); none when `None`.
    pub metrics_address: Option<String>,
    pub config: Config,
}

/// Everything the services share, built once.
pub struct Services {
    pub identity: IdentityService,
    pub controller: Arc<ControllerService>,
    pub node: NodeService,
    pub state: Arc<StateCache>,
}

pub fn services(opts: &Options, runner: Arc<dyn LvmRunner>) -> Services {
    let config = Arc::new(opts.config.clone());
    let lvm = Arc::new(Lvm::new(runner));
    let state = StateCache::new(lvm.clone(), config.clone());
    let controller = Arc::new_cyclic(|me| ControllerService {
        me: me.clone(),
        driver_name: opts.driver_name.clone(),
        node_id: opts.node_id.clone(),
        config: config.clone(),
        lvm,
        state: state.clone(),
        inflight: InFlight::default(),
        jobs: Default::default(),
        copiers: Arc::new(Copiers::new(config.copy_workers)),
    });
    Services {
        identity: IdentityService {
            driver_name: opts.driver_name.clone(),
            config: config.clone(),
            state: state.clone(),
            absent: Default::default(),
        },
        node: NodeService {
            node_id: opts.node_id.clone(),
            max_volumes: opts.max_volumes,
            controller: controller.clone(),
            timeout: config.lvm_timeout(),
        },
        controller,
        state,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight, then exiting"),
        _ = int.recv() => tracing::info!("SIGINT: finishing requests in flight, then exiting"),
    }
}

/// How long requests in flight may run on after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn serve(opts: Options, runner: Arc<dyn LvmRunner>) -> Result<(), ServeError> {
    let path = socket_path(&opts.endpoint)?;
    let s = services(&opts, runner);
    // Bound first: a bad address stops carve before it touches LVM.
    let metrics = match &opts.metrics_address {
        Some(address) => {
            let listener = carve_core::endpoint::bind("--metrics-address", address)
                .await
                .map_err(|source| ServeError::Metrics {
                    address: address.clone(),
                    source,
                })?;
            let endpoints = Arc::new(crate::metrics::Endpoints::new(s.controller.clone()));
            tracing::info!(%address, "serving metrics at /metrics, the LV inventory at /volumes");
            Some(tokio::spawn(carve_core::endpoint::serve(
                listener, endpoints,
            )))
        }
        None => None,
    };
    // Every later lvm command opens only the PVs of the configured VGs.
    let mut vgs: Vec<String> = opts
        .config
        .device_classes
        .iter()
        .map(|c| c.volume_group.clone())
        .collect();
    vgs.sort();
    vgs.dedup();
    if let Err(e) = s.controller.lvm.limit_to(vgs).await {
        tracing::warn!(error = %e, "could not find carve's PVs; lvm commands scan every device");
    }
    match s.state.refresh().await {
        // Copies a previous carve left unfinished run again from LVM's tags.
        Ok(_) => s.controller.resume_interrupted().await,
        Err(e) => {
            tracing::warn!(error = %e, "first LVM report failed; Probe reports not ready until LVM answers")
        }
    }
    let refresher = s.state.spawn_refresher(opts.config.refresh_interval());
    let listener = bind(&path)?;
    tracing::info!(endpoint = %opts.endpoint, node_id = %opts.node_id, driver = %opts.driver_name, "serving CSI");
    let router = server_builder()
        .add_service(IdentityServer::new(s.identity))
        .add_service(ControllerServer::from_arc(s.controller))
        .add_service(NodeServer::new(s.node));
    let result = serve_until_signal(router, listener).await;
    refresher.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    let _ = std::fs::remove_file(&path);
    result.map_err(ServeError::from)
}

/// Serves `router` on `listener` until SIGTERM or SIGINT, then lets requests
/// in flight finish for up to [`SHUTDOWN_GRACE`].
pub(crate) async fn serve_until_signal(
    router: crate::grpc_compat::Router,
    listener: tokio::net::UnixListener,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(incoming(listener), async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = shutdown_signal() => {
            let _ = stop_tx.send(());
            // Requests in flight get a grace period; idle connections held open
            // by a client (kubelet keeps one) must not keep carve alive forever.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown grace period over; exiting with connections still open");
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn endpoint_parsing() {
        assert_eq!(
            socket_path("unix:///run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        for bad in [
            "/run/c.sock",
            "unix://relative",
            "tcp://1.2.3.4:5",
            "unix:///",
        ] {
            assert!(socket_path(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn binds_0600_replaces_stale_socket_refuses_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let sock = dir.join("csi.sock");
        let l = bind(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(l);
        // The socket file is left behind, as after a crash: binding again works.
        bind(&sock).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"data").unwrap();
        assert!(matches!(bind(&file), Err(ServeError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temporary socket left behind: {left:?}");
    }
}

//! The one way carve turns a failure into a gRPC status. Every variant names the
//! CSI code it maps to; LVM failures map by their classified kind, so no case
//! that can be named ever reaches the client as UNKNOWN.

use tonic::{Code, Status};

use carve_core::lvm::{LvmError, LvmErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A failure of carve's own work that no other code describes (a block
    /// copy that hit an I/O error, say).
    #[error("{0}")]
    Internal(String),
    #[error("{context}: {source}")]
    Command {
        context: String,
        #[source]
        source: carve_core::host::fs::CommandError,
    },
    #[error("{context}: {source}")]
    Lvm {
        context: String,
        #[source]
        source: LvmError,
    },
}

pub type CsiResult<T> = Result<T, CsiError>;

impl CsiError {
    pub fn lvm(context: impl Into<String>) -> impl FnOnce(LvmError) -> CsiError {
        let context = context.into();
        move |source| CsiError::Lvm { context, source }
    }

    pub fn command(
        context: impl Into<String>,
    ) -> impl FnOnce(carve_core::host::fs::CommandError) -> CsiError {
        let context = context.into();
        move |source| CsiError::Command { context, source }
    }

    pub fn code(&self) -> Code {
        match self {
            CsiError::InvalidArgument(_) => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::ResourceExhausted(_) => Code::ResourceExhausted,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::Unavailable(_) => Code::Unavailable,
            CsiError::Internal(_) => Code::Internal,
            // mkfs, mount, resize: a failure of the node's own tools.
            CsiError::Command { .. } => Code::Internal,
            CsiError::Lvm { source, .. } => match source.kind {
                LvmErrorKind::NotFound => Code::NotFound,
                LvmErrorKind::NoSpace => Code::ResourceExhausted,
                LvmErrorKind::Exists => Code::AlreadyExists,
                LvmErrorKind::InUse => Code::FailedPrecondition,
                // Another LVM user holds the lock: retrying later will work.
                LvmErrorKind::Locked => Code::Aborted,
                LvmErrorKind::Timeout => Code::DeadlineExceeded,
                LvmErrorKind::Spawn => Code::Unavailable,
                LvmErrorKind::Parse | LvmErrorKind::Other => Code::Internal,
            },
        }
    }
}

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Logs a failed RPC once, at the boundary, with the full message; the
/// client gets the same message in the status.
fn log_failure(rpc: &'static str, e: &CsiError) {
    let code = e.code();
    match code {
        Code::Internal | Code::Unavailable | Code::DeadlineExceeded => {
            tracing::error!(rpc, ?code, error = %e, "request failed")
        }
        _ => tracing::info!(rpc, ?code, error = %e, "request refused"),
    }
}

fn respond<T>(r: CsiResult<T>) -> Result<tonic::Response<T>, Status> {
    r.map(tonic::Response::new).map_err(Status::from)
}

/// Runs a read-only RPC body and logs its failure once.
pub async fn logged<T>(
    rpc: &'static str,
    f: impl std::future::Future<Output = CsiResult<T>>,
) -> Result<tonic::Response<T>, Status> {
    let r = f.await;
    if let Err(e) = &r {
        log_failure(rpc, e);
    }
    respond(r)
}

/// Runs an RPC body that changes something on a task of its own, so a client
/// that gives up (its deadline passed, its call was cancelled) never stops it
/// half-way: every step it started (an lvcreate, an mkfs, a mount) completes
/// and is recorded, and the client's retry finds a settled state. Its failure
/// is logged once, also when nobody waits for the answer any more.
pub async fn detached<T: Send + 'static>(
    rpc: &'static str,
    f: impl std::future::Future<Output = CsiResult<T>> + Send + 'static,
) -> Result<tonic::Response<T>, Status> {
    let task = tokio::spawn(async move {
        let r = f.await;
        if let Err(e) = &r {
            log_failure(rpc, e);
        }
        r
    });
    respond(
        task.await
            .unwrap_or_else(|e| Err(CsiError::Internal(format!("{rpc} handler failed: {e}")))),
    )
}

/// [`detached`] for RPC bodies that make blocking system calls (mount,
/// umount2, statvfs, stat, reading the mount table): the body runs on tokio's
/// blocking pool, so one slow mount never stalls the async workers that serve
/// every other RPC. Its lvm commands still run as async child processes,
/// driven from that thread.
pub async fn detached_blocking<T: Send + 'static>(
    rpc: &'static str,
    f: impl std::future::Future<Output = CsiResult<T>> + Send + 'static,
) -> Result<tonic::Response<T>, Status> {
    let runtime = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let r = runtime.block_on(f);
        if let Err(e) = &r {
            log_failure(rpc, e);
        }
        r
    });
    respond(
        task.await
            .unwrap_or_else(|e| Err(CsiError::Internal(format!("{rpc} handler failed: {e}")))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_kinds_map_to_named_codes() {
        let mk = |kind| CsiError::Lvm {
            context: "x".into(),
            source: LvmError {
                kind,
                command: "lvm".into(),
                detail: "d".into(),
            },
        };
        assert_eq!(mk(LvmErrorKind::NoSpace).code(), Code::ResourceExhausted);
        assert_eq!(mk(LvmErrorKind::InUse).code(), Code::FailedPrecondition);
        assert_eq!(mk(LvmErrorKind::Locked).code(), Code::Aborted);
        assert_eq!(mk(LvmErrorKind::NotFound).code(), Code::NotFound);
        assert_eq!(mk(LvmErrorKind::Timeout).code(), Code::DeadlineExceeded);
        let s: Status = mk(LvmErrorKind::Other).into();
        assert_eq!(s.message(), "x: lvm: d");
    }
}

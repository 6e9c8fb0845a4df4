//! How failures become gRPC statuses. Every RPC has its own error enum, in
//! the module that serves it, whose variants are the ways that RPC can fail;
//! an exhaustive match ([`RpcError::code`]) gives each the code the CSI spec
//! names, so no case that can be named reaches a client as UNKNOWN. Causes
//! several RPCs share (a busy volume, an ID that names nothing here, a failed
//! lvm command or node tool) are types of their own, embedded by the RPCs
//! that can meet them. The status message is the error with its whole cause
//! chain, and it is logged once, at the RPC boundary ([`logged`], [`detached`]).

use std::error::Error;

use carve_core::host::fs::CommandError;
use carve_core::lvm::{LvmError, LvmErrorKind};
use tonic::{Code, Status};

/// An RPC's failure: which gRPC code it is.
pub trait RpcError: Error + Send + 'static {
    fn code(&self) -> Code;
}

/// The error and every cause below it: `what failed: why: the lvm stderr`.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cause = c.source();
    }
    s
}

/// `impl From<E> for Status` for each RPC error enum: its code, its chain.
macro_rules! into_status {
    ($($t:ty),+ $(,)?) => {$(
        impl From<$t> for tonic::Status {
            fn from(e: $t) -> tonic::Status {
                tonic::Status::new(
                    $crate::error::RpcError::code(&e),
                    $crate::error::chain(&e),
                )
            }
        }
    )+};
}
pub(crate) use into_status;

/// `RpcError` for errors that always answer with one code:
/// `fixed_code!(Busy => Aborted, NotReady => Unavailable)`.
macro_rules! fixed_code {
    ($($t:ty => $code:ident),+ $(,)?) => {$(
        impl $crate::error::RpcError for $t {
            fn code(&self) -> tonic::Code {
                tonic::Code::$code
            }
        }
    )+};
}
pub(crate) use fixed_code;

fixed_code!(Busy => Aborted, NotReady => Unavailable);

/// Another operation on the same volume or snapshot is running: the CSI
/// spec's "operation pending for volume".
#[derive(Debug, thiserror::Error)]
#[error("an operation on {0} is already in progress")]
pub struct Busy(pub String);

/// LVM has not answered since carve started.
#[derive(Debug, thiserror::Error)]
#[error("LVM state is not known yet: {0}")]
pub struct NotReady(pub String);

/// An lvm command failed; the code follows what lvm said.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct LvmFailure {
    pub context: String,
    #[source]
    pub source: LvmError,
}

impl LvmFailure {
    pub fn ctx(context: impl Into<String>) -> impl FnOnce(LvmError) -> LvmFailure {
        let context = context.into();
        move |source| LvmFailure { context, source }
    }
}

/// A node tool (mkfs, mount, a filesystem resize) failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct ToolFailure {
    pub context: String,
    #[source]
    pub source: CommandError,
}

impl ToolFailure {
    pub fn ctx(context: impl Into<String>) -> impl FnOnce(CommandError) -> ToolFailure {
        let context = context.into();
        move |source| ToolFailure { context, source }
    }
}

/// What an ID names is not on this node (or the ID is missing).
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{what} {id:?} does not exist on node {node}")]
    Gone {
        what: &'static str,
        id: String,
        node: String,
    },
    #[error("{what} {id:?} is on node {holder}, not on this node ({node})")]
    Elsewhere {
        what: &'static str,
        id: String,
        holder: String,
        node: String,
    },
}

/// Looking up the LV an ID names.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Missing(#[from] Missing),
    #[error(transparent)]
    Read(#[from] LvmFailure),
}

impl RpcError for LvmFailure {
    fn code(&self) -> Code {
        match self.source.kind {
            LvmErrorKind::NotFound => Code::NotFound,
            LvmErrorKind::NoSpace => Code::ResourceExhausted,
            LvmErrorKind::Exists => Code::AlreadyExists,
            LvmErrorKind::InUse => Code::FailedPrecondition,
            // Another LVM user holds the lock: retrying later will work.
            LvmErrorKind::Locked => Code::Aborted,
            LvmErrorKind::Timeout => Code::DeadlineExceeded,
            LvmErrorKind::Spawn => Code::Unavailable,
            // Retryable: the disk may come back, and with it the volume.
            LvmErrorKind::VgAbsent => Code::Unavailable,
            LvmErrorKind::Parse | LvmErrorKind::Other => Code::Internal,
        }
    }
}

impl RpcError for ToolFailure {
    /// mkfs, mount, resize: a failure of the node's own tools.
    fn code(&self) -> Code {
        Code::Internal
    }
}

impl RpcError for Missing {
    fn code(&self) -> Code {
        match self {
            Missing::Required(_) => Code::InvalidArgument,
            Missing::Gone { .. } | Missing::Elsewhere { .. } => Code::NotFound,
        }
    }
}

impl RpcError for LookupError {
    fn code(&self) -> Code {
        match self {
            LookupError::Missing(e) => e.code(),
            LookupError::Read(e) => e.code(),
        }
    }
}

/// Logs a failed RPC once, at the boundary, with its cause chain; the client
/// gets the same message in the status.
fn log_failure<E: RpcError>(rpc: &'static str, e: &E) {
    let code = e.code();
    let error = chain(e);
    match code {
        Code::Internal | Code::Unavailable | Code::DeadlineExceeded => {
            tracing::error!(rpc, ?code, %error, "request failed")
        }
        _ => tracing::info!(rpc, ?code, %error, "request refused"),
    }
}

/// Runs a read-only RPC body and logs its failure once.
pub async fn logged<T, E>(
    rpc: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<tonic::Response<T>, Status>
where
    E: RpcError,
    Status: From<E>,
{
    let r = f.await;
    if let Err(e) = &r {
        log_failure(rpc, e);
    }
    r.map(tonic::Response::new).map_err(Status::from)
}

fn joined<T, E>(
    rpc: &'static str,
    r: Result<Result<T, E>, tokio::task::JoinError>,
) -> Result<tonic::Response<T>, Status>
where
    Status: From<E>,
{
    match r {
        Ok(r) => r.map(tonic::Response::new).map_err(Status::from),
        Err(e) => Err(Status::internal(format!("{rpc} handler failed: {e}"))),
    }
}

/// Runs an RPC body that changes something on a task of its own, so a client
/// that gives up (its deadline passed, its call was cancelled) never stops it
/// half-way: every step it started (an lvcreate, an mkfs, a mount) completes
/// and is recorded, and the client's retry finds a settled state. Its failure
/// is logged once, also when nobody waits for the answer any more.
pub async fn detached<T, E>(
    rpc: &'static str,
    f: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<tonic::Response<T>, Status>
where
    T: Send + 'static,
    E: RpcError,
    Status: From<E>,
{
    // The task carries the RPC's span: what it logs names the RPC and volume.
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let r = f.await;
        if let Err(e) = &r {
            log_failure(rpc, e);
        }
        r
    }));
    joined(rpc, task.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lvm(kind: LvmErrorKind) -> LvmFailure {
        LvmFailure {
            context: "creating volume \"x\"".into(),
            source: LvmError {
                kind,
                command: "lvm lvcreate".into(),
                detail: "exit status 5: no space".into(),
            },
        }
    }

    #[test]
    fn lvm_kinds_map_to_named_codes() {
        assert_eq!(lvm(LvmErrorKind::NoSpace).code(), Code::ResourceExhausted);
        assert_eq!(lvm(LvmErrorKind::InUse).code(), Code::FailedPrecondition);
        assert_eq!(lvm(LvmErrorKind::Locked).code(), Code::Aborted);
        assert_eq!(lvm(LvmErrorKind::NotFound).code(), Code::NotFound);
        assert_eq!(lvm(LvmErrorKind::Timeout).code(), Code::DeadlineExceeded);
        assert_eq!(lvm(LvmErrorKind::Other).code(), Code::Internal);
    }

    #[test]
    fn the_message_is_the_whole_chain() {
        let e = LookupError::from(lvm(LvmErrorKind::Other));
        assert_eq!(
            chain(&e),
            "creating volume \"x\": lvm lvcreate: exit status 5: no space"
        );
    }
}

//! How each Node RPC can fail. The causes several node RPCs share come first;
//! each RPC's enum embeds the ones it can meet and maps every variant to the
//! code the CSI spec names.

use std::path::PathBuf;

use tonic::Code;

use super::crypt::CryptError;
use crate::capability::CapabilityError;
use crate::controller::ExpandVolumeError;
use crate::error::{
    fixed_code, into_status, Busy, LookupError, LvmFailure, NotReady, RpcError, ToolFailure,
};

/// A request field that is missing or malformed (InvalidArgument).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    #[error("{0} is required")]
    Required(&'static str),
    #[error("{0}")]
    Path(String),
    #[error("volume_capability is required")]
    NoCapability,
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error("{0}")]
    MountFlag(String),
    #[error("{0}")]
    Context(String),
}

/// /proc/self/mountinfo could not be read (Unavailable).
#[derive(Debug, thiserror::Error)]
#[error("cannot read /proc/self/mountinfo")]
pub struct MountTable(#[source] pub std::io::Error);

/// A path operation on the node failed (FailedPrecondition).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct PathFailure {
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

/// A path that is not carve's to mount onto (FailedPrecondition).
#[derive(Debug, thiserror::Error)]
#[error("{path} is {what}; {why}")]
pub struct Occupied {
    pub path: PathBuf,
    pub what: String,
    pub why: &'static str,
}

/// What sits at a path is not this volume: nothing was touched (NotFound).
#[derive(Debug, thiserror::Error)]
#[error("volume {id} is not at {path} ({what}); nothing there was touched")]
pub struct NotAt {
    pub id: String,
    pub path: PathBuf,
    pub what: &'static str,
}

/// A volume still being made from its source: never staged or published.
#[derive(Debug, thiserror::Error)]
pub enum Unfinished {
    /// Aborted: the copy runs; the CO retries.
    #[error("volume {id} is still being filled from its source ({progress}); it can be used once CreateVolume has succeeded")]
    Copying { id: String, progress: String },
    #[error(
        "volume {0} is not whole yet: CreateVolume has not finished making it from its source"
    )]
    NotWhole(String),
}

/// Unmounting what is the volume's at a path.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error(transparent)]
    Table(#[from] MountTable),
    #[error(transparent)]
    Umount(#[from] ToolFailure),
    #[error("{0} is still mounted after 8 unmounts")]
    StillMounted(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Request(#[from] BadRequest),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Unfinished(#[from] Unfinished),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Activate(#[from] LvmFailure),
    #[error("device {device} of volume {id} is not available")]
    NoDevice { device: String, id: String },
    #[error(transparent)]
    Table(#[from] MountTable),
    /// AlreadyExists: the staging path holds another mount.
    #[error("{path} is already mounted ({what}), not volume {id} as {fs}")]
    StagedElse {
        path: PathBuf,
        what: String,
        id: String,
        fs: String,
    },
    #[error(transparent)]
    Occupied(#[from] Occupied),
    #[error(transparent)]
    Path(#[from] PathFailure),
    #[error(transparent)]
    Tool(#[from] ToolFailure),
    #[error(
        "volume {id} holds a {found} filesystem, not {want}; carve never reformats existing data"
    )]
    OtherFilesystem {
        id: String,
        found: String,
        want: String,
    },
    #[error("volume {id} carries a {what} signature; carve will not format over it")]
    Signature { id: String, what: String },
    #[error("mount of {device} on {path} reported success but the mount table does not show it")]
    NotMounted { device: String, path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum UnstageError {
    #[error(transparent)]
    Request(#[from] BadRequest),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Table(#[from] MountTable),
    #[error(transparent)]
    Unmount(#[from] UnmountError),
    #[error(transparent)]
    NotAt(#[from] NotAt),
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Request(#[from] BadRequest),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Unfinished(#[from] Unfinished),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Activate(#[from] LvmFailure),
    #[error(transparent)]
    Table(#[from] MountTable),
    #[error("volume {id} is not staged at {path}: call NodeStageVolume first")]
    NotStaged { id: String, path: PathBuf },
    /// AlreadyExists: the same target with other arguments.
    #[error("{path} is already published {whose} (read-only: {ro}); volume {id} was asked with read-only: {want_ro}")]
    TargetTaken {
        path: PathBuf,
        whose: &'static str,
        ro: bool,
        id: String,
        want_ro: bool,
    },
    /// FailedPrecondition: CSI's answer to a second target path under a
    /// single-target access mode.
    #[error("volume {id} is already published at {other}; access mode {mode} allows one target path on a node")]
    OneTargetOnly {
        id: String,
        other: PathBuf,
        mode: &'static str,
    },
    #[error(transparent)]
    Occupied(#[from] Occupied),
    #[error(transparent)]
    Path(#[from] PathFailure),
    #[error(transparent)]
    Tool(#[from] ToolFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum UnpublishError {
    #[error(transparent)]
    Request(#[from] BadRequest),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Table(#[from] MountTable),
    #[error(transparent)]
    Unmount(#[from] UnmountError),
    #[error(transparent)]
    NotAt(#[from] NotAt),
    #[error(transparent)]
    Path(#[from] PathFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    Request(#[from] BadRequest),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error(transparent)]
    Table(#[from] MountTable),
    #[error(transparent)]
    NotAt(#[from] NotAt),
    #[error(transparent)]
    Path(#[from] PathFailure),
}

#[derive(Debug, thiserror::Error)]
pub enum NodeExpandError {
    #[error(transparent)]
    Request(#[from] BadRequest),
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Table(#[from] MountTable),
    #[error(transparent)]
    NotAt(#[from] NotAt),
    #[error(transparent)]
    Grow(#[from] ExpandVolumeError),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Tool(#[from] ToolFailure),
    #[error("carve cannot grow a {0} filesystem")]
    CannotGrow(String),
}

fixed_code!(
    BadRequest => InvalidArgument,
    MountTable => Unavailable,
    PathFailure => FailedPrecondition,
    Occupied => FailedPrecondition,
    NotAt => NotFound,
);

impl RpcError for Unfinished {
    fn code(&self) -> Code {
        match self {
            Unfinished::Copying { .. } => Code::Aborted,
            Unfinished::NotWhole(_) => Code::FailedPrecondition,
        }
    }
}

impl RpcError for UnmountError {
    fn code(&self) -> Code {
        match self {
            UnmountError::Table(e) => e.code(),
            UnmountError::Umount(e) => e.code(),
            UnmountError::StillMounted(_) => Code::FailedPrecondition,
        }
    }
}

impl RpcError for StageError {
    fn code(&self) -> Code {
        use StageError as E;
        match self {
            E::Request(e) => e.code(),
            E::Crypt(e) => e.code(),
            E::Lookup(e) => e.code(),
            E::Unfinished(e) => e.code(),
            E::Busy(e) => e.code(),
            E::Activate(e) => e.code(),
            E::NoDevice { .. } => Code::FailedPrecondition,
            E::Table(e) => e.code(),
            E::StagedElse { .. } => Code::AlreadyExists,
            E::Occupied(e) => e.code(),
            E::Path(e) => e.code(),
            E::Tool(e) => e.code(),
            E::OtherFilesystem { .. } | E::Signature { .. } | E::NotMounted { .. } => {
                Code::FailedPrecondition
            }
        }
    }
}

impl RpcError for UnstageError {
    fn code(&self) -> Code {
        use UnstageError as E;
        match self {
            E::Request(e) => e.code(),
            E::Crypt(e) => e.code(),
            E::Lookup(e) => e.code(),
            E::Busy(e) => e.code(),
            E::Table(e) => e.code(),
            E::Unmount(e) => e.code(),
            E::NotAt(e) => e.code(),
        }
    }
}

impl RpcError for PublishError {
    fn code(&self) -> Code {
        use PublishError as E;
        match self {
            E::Request(e) => e.code(),
            E::Crypt(e) => e.code(),
            E::Lookup(e) => e.code(),
            E::Unfinished(e) => e.code(),
            E::Busy(e) => e.code(),
            E::Activate(e) => e.code(),
            E::Table(e) => e.code(),
            E::NotStaged { .. } | E::OneTargetOnly { .. } => Code::FailedPrecondition,
            E::TargetTaken { .. } => Code::AlreadyExists,
            E::Occupied(e) => e.code(),
            E::Path(e) => e.code(),
            E::Tool(e) => e.code(),
        }
    }
}

impl RpcError for UnpublishError {
    fn code(&self) -> Code {
        use UnpublishError as E;
        match self {
            E::Request(e) => e.code(),
            E::Crypt(e) => e.code(),
            E::Lookup(e) => e.code(),
            E::Busy(e) => e.code(),
            E::Table(e) => e.code(),
            E::Unmount(e) => e.code(),
            E::NotAt(e) => e.code(),
            E::Path(e) => e.code(),
        }
    }
}

impl RpcError for StatsError {
    fn code(&self) -> Code {
        use StatsError as E;
        match self {
            E::Request(e) => e.code(),
            E::Crypt(e) => e.code(),
            E::Lookup(e) => e.code(),
            E::NotReady(e) => e.code(),
            E::Table(e) => e.code(),
            E::NotAt(e) => e.code(),
            E::Path(e) => e.code(),
        }
    }
}

impl RpcError for NodeExpandError {
    fn code(&self) -> Code {
        use NodeExpandError as E;
        match self {
            E::Request(e) => e.code(),
            E::Crypt(e) => e.code(),
            E::Lookup(e) => e.code(),
            E::Table(e) => e.code(),
            E::NotAt(e) => e.code(),
            E::Grow(e) => e.code(),
            E::Busy(e) => e.code(),
            E::Tool(e) => e.code(),
            E::CannotGrow(_) => Code::FailedPrecondition,
        }
    }
}

into_status!(
    StageError,
    UnstageError,
    PublishError,
    UnpublishError,
    StatsError,
    NodeExpandError
);

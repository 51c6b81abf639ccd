//! The manager's errors and their gRPC codes.

use tonic::{Code, Status};

use crate::raft::node::ProposeError;
use crate::state::store::{ApplyError, LookupError};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

impl From<ManagerError> for Status {
    fn from(e: ManagerError) -> Status {
        let code = match &e {
            ManagerError::InvalidArgument(_) => Code::InvalidArgument,
            ManagerError::FailedPrecondition(_) => Code::FailedPrecondition,
            ManagerError::NotFound(_) => Code::NotFound,
            ManagerError::Unavailable(_) => Code::Unavailable,
            ManagerError::Internal(_) => Code::Internal,
            ManagerError::AlreadyExists(_) => Code::AlreadyExists,
            ManagerError::Lookup(LookupError::NotFound { .. }) => Code::NotFound,
            ManagerError::Lookup(LookupError::Ambiguous { .. }) => Code::InvalidArgument,
            ManagerError::Propose(p) => match p {
                ProposeError::NoLeader
                | ProposeError::LostLeadership
                | ProposeError::Timeout(_)
                | ProposeError::Stopped => Code::Unavailable,
                ProposeError::NotLeader { .. } => Code::FailedPrecondition,
                ProposeError::Raft(_) => Code::Internal,
                ProposeError::Rejected(ApplyError::NotFound { .. }) => Code::NotFound,
                ProposeError::Rejected(
                    ApplyError::Exists { .. } | ApplyError::NameConflict { .. },
                ) => Code::AlreadyExists,
                ProposeError::Rejected(
                    ApplyError::VersionConflict { .. } | ApplyError::AddressInUse { .. },
                ) => Code::Aborted,
                ProposeError::Rejected(
                    ApplyError::Malformed(_) | ApplyError::Refused(_) | ApplyError::PortInUse(_),
                ) => Code::InvalidArgument,
            },
        };
        Status::new(code, e.to_string())
    }
}

pub type Result<T, E = ManagerError> = std::result::Result<T, E>;

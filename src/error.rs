//! The filesystem's one error type: each variant carries its errno and the log
//! level it deserves. Messages name secrets, never values.

use tracing::Level;

use crate::store::{StoreError, StoreErrorKind};

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("no such secret, version or file")]
    NotFound,
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Refused by the daemon's own rules (a read-only file), not the backend.
    #[error("permission denied: {0}")]
    Refused(&'static str),
    /// Refused by an `[[access]]` rule: logged by `access`, a storm of
    /// refusals at a time, not once per request.
    #[error("permission denied: not allowed by an [[access]] rule")]
    RuleRefused,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("read-only mount")]
    ReadOnly,
    #[error("value larger than 65536 bytes")]
    TooLarge,
    #[error("version quota exceeded: {0}")]
    Quota(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("already exists")]
    Exists,
    #[error("file name too long")]
    NameTooLong,
    #[error("no space for temporary files")]
    NoSpace,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("bad file handle")]
    BadHandle,
    /// A writer sharing the handle was killed mid-write: nothing is stored.
    #[error("a process writing this file was killed by a signal; nothing stored")]
    Abandoned,
    /// Answering open with ENOSYS puts the kernel in no-open mode.
    #[error("not implemented")]
    NotImplemented,
    /// A rendered file whose template failed (logged once, when it rendered).
    #[error("template failed: {0}")]
    Template(String),
}

impl Error {
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::AccessDenied(_) | Error::Refused(_) | Error::RuleRefused => libc::EACCES,
            Error::NotPermitted(_) => libc::EPERM,
            Error::ReadOnly => libc::EROFS,
            Error::TooLarge => libc::EFBIG,
            Error::Quota(_) => libc::EDQUOT,
            Error::Invalid(_) => libc::EINVAL,
            Error::Unavailable(_) | Error::Abandoned => libc::EIO,
            Error::Exists => libc::EEXIST,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NoSpace => libc::ENOSPC,
            Error::IsDir => libc::EISDIR,
            Error::NotDir => libc::ENOTDIR,
            Error::BadHandle => libc::EBADF,
            Error::NotImplemented => libc::ENOSYS,
            Error::Template(_) => libc::EIO,
        }
    }

    /// Missing names are routine (programs probe paths); refusals are the
    /// caller's business; backend trouble is the operator's.
    pub fn level(&self) -> Level {
        match self {
            // A template's failure was logged at WARN when it rendered.
            // A rule's refusal was logged by `access` (storms aggregated).
            Error::NotFound
            | Error::NotImplemented
            | Error::Exists
            | Error::Template(_)
            | Error::RuleRefused => Level::DEBUG,
            Error::NotPermitted(_)
            | Error::Refused(_)
            | Error::ReadOnly
            | Error::IsDir
            | Error::NotDir
            | Error::BadHandle
            | Error::TooLarge
            | Error::Invalid(_)
            | Error::NameTooLong
            | Error::NoSpace
            | Error::Abandoned => Level::INFO,
            Error::AccessDenied(_) | Error::Quota(_) | Error::Unavailable(_) => Level::WARN,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e.kind {
            StoreErrorKind::NotFound => Error::NotFound,
            StoreErrorKind::AccessDenied | StoreErrorKind::DecryptionFailure => {
                Error::AccessDenied(e.message)
            }
            StoreErrorKind::LimitExceeded => Error::Quota(e.message),
            StoreErrorKind::TooLarge => Error::TooLarge,
            StoreErrorKind::Unsupported => Error::NotPermitted("not supported by this source"),
            StoreErrorKind::InvalidParameter
            | StoreErrorKind::InvalidRequest
            | StoreErrorKind::ResourceExists => Error::Invalid(e.message),
            StoreErrorKind::Throttled | StoreErrorKind::Transient | StoreErrorKind::Other => {
                Error::Unavailable(e.message)
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

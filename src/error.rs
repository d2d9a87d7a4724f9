//! The one error type the HTTP and Flight adapters map to the wire.
//!
//! [`ErrorKind`] decides the HTTP status (in `http::error`) and the gRPC code (in
//! `flight::error`), so the two front ends never disagree. `message` is what the client
//! sees: for 4xx it says what was wrong and how to fix it; for 5xx it never contains
//! paths or internals (those go to the log).

use serde::{Deserialize, Serialize};

use crate::record::NameError;
use crate::storage::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidArgument,
    Unauthorized,
    /// A known token outside its scopes or symbols (403, gRPC PermissionDenied).
    Forbidden,
    NotFound,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    Unprocessable,
    /// A past version no longer kept (410; gRPC NotFound, the message saying `gone`).
    Gone,
    Corrupted,
    Unavailable,
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order the contract lists their codes.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidArgument,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Unprocessable,
        ErrorKind::Gone,
        ErrorKind::Corrupted,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// The contract's `error.code` string.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::Gone => "gone",
            ErrorKind::Corrupted => "corrupted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// The contract's HTTP status.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::Gone => 410,
            ErrorKind::Corrupted | ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// A client-safe error: a kind and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unprocessable, message)
    }
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }
    /// A 500 whose detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Error {
        tracing::error!(detail = %detail, "internal error");
        Error::new(
            ErrorKind::Internal,
            "internal error; the server log has the details",
        )
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Error {
        Error::invalid(e.to_string())
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        match e {
            StorageError::InvalidArgument(m) => Error::invalid(m),
            StorageError::NotFound(m) => Error::not_found(m),
            StorageError::Conflict(m) => Error::conflict(m),
            StorageError::PreconditionFailed(m) => Error::new(ErrorKind::PreconditionFailed, m),
            StorageError::Unprocessable(m) => Error::unprocessable(m),
            StorageError::Gone(m) => Error::new(ErrorKind::Gone, m),
            StorageError::PayloadTooLarge(m) => Error::new(ErrorKind::PayloadTooLarge, m),
            StorageError::Corrupted { file, detail } => {
                tracing::error!(file = %file, detail = %detail, "corrupted data");
                Error::new(
                    ErrorKind::Corrupted,
                    "stored data of this series failed its checksum; nothing was returned. \
                     Run `fastk admin validate` and see docs/operations.md",
                )
            }
            StorageError::Unavailable(m) => Error::new(ErrorKind::Unavailable, m),
            StorageError::Locked => Error::new(
                ErrorKind::Unavailable,
                "the store is locked by another process",
            ),
            e if e.is_no_space() => {
                tracing::error!(error = %e, "disk full");
                Error::new(
                    ErrorKind::Unavailable,
                    "the disk is full; nothing was written. Retry when space is freed",
                )
            }
            e => Error::internal(e),
        }
    }
}

//! The one place a [`crate::error::Error`] becomes a gRPC status.
//!
//! The codes follow the contract's table (HTTP status → gRPC code), so REST and Flight
//! never disagree. The contract's `error.code` string travels along in the
//! `fastk-error-code` metadata entry, which lets a client tell a 422 (`unprocessable`)
//! from a 400 (`invalid_argument`) although both are `InvalidArgument` on the wire.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{Error, ErrorKind};

/// Metadata key carrying the contract's error code string.
pub const ERROR_CODE_KEY: &str = "fastk-error-code";

/// The gRPC code of an error kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::Unprocessable => Code::InvalidArgument,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        // The message of a gone version says `gone` (the contract's word for it).
        ErrorKind::NotFound | ErrorKind::Gone => Code::NotFound,
        ErrorKind::Conflict => Code::AlreadyExists,
        ErrorKind::PreconditionFailed => Code::FailedPrecondition,
        ErrorKind::PayloadTooLarge => Code::ResourceExhausted,
        ErrorKind::Corrupted => Code::DataLoss,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// Converts an engine error to a status. The message is already client-safe (5xx
/// messages never carry paths), so it is sent as is.
pub fn status(e: Error) -> Status {
    let mut s = Status::new(code_of(e.kind), e.message);
    s.metadata_mut()
        .insert(ERROR_CODE_KEY, MetadataValue::from_static(e.kind.code()));
    s
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(e)
    }
}

/// Shorthand for an `InvalidArgument` status built through the one mapping.
pub fn invalid(message: impl Into<String>) -> Status {
    status(Error::invalid(message))
}

/// A status for a failure the client cannot act on; the detail is logged, not sent.
pub fn internal(detail: impl std::fmt::Display) -> Status {
    status(Error::internal(detail))
}

/// The code's name as used in metrics labels (`Ok`, `NotFound`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_as_the_contract_says() {
        let table = [
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::Unauthorized, Code::Unauthenticated),
            (ErrorKind::Forbidden, Code::PermissionDenied),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::Conflict, Code::AlreadyExists),
            (ErrorKind::PreconditionFailed, Code::FailedPrecondition),
            (ErrorKind::PayloadTooLarge, Code::ResourceExhausted),
            (ErrorKind::Unprocessable, Code::InvalidArgument),
            (ErrorKind::Gone, Code::NotFound),
            (ErrorKind::Corrupted, Code::DataLoss),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in table {
            let s = status(Error::new(kind, "m"));
            assert_eq!(s.code(), code, "{kind:?}");
            assert_eq!(s.message(), "m");
            let sent = s.metadata().get(ERROR_CODE_KEY).map(|v| v.to_str().ok());
            assert_eq!(sent, Some(Some(kind.code())));
        }
    }
}

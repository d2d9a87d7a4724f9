//! The storage layer's error type.
//!
//! Messages of the client-facing variants say what was wrong and how to fix it.
//! `Corrupted` and `Io` carry a path relative to the store root for operators; the
//! wire layer decides what of it a client may see.

use std::io;

/// Everything the storage layer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The request itself is malformed (bad name, out-of-range timestamp, wrong column count).
    #[error("{0}")]
    InvalidArgument(String),
    /// The series does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A series with the same key but different metadata exists.
    #[error("{0}")]
    Conflict(String),
    /// An expected version did not match.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request is over a size limit (`storage.max_write_rows`).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A past version no longer kept (`storage.keep_versions_s`).
    #[error("{0}")]
    Gone(String),
    /// Well-formed but semantically refused records (duplicate ts, OHLC violation).
    #[error("{0}")]
    Unprocessable(String),
    /// Data failed its checksum or structural checks. `file` is relative to the root.
    #[error("corrupted data in {file}: {detail}")]
    Corrupted { file: String, detail: String },
    /// Another process holds the store's lock.
    #[error("the store at this root is locked by another process (is a server running?)")]
    Locked,
    /// A resource the read needs is exhausted for now (every slot of the mapping
    /// budget in use, or the kernel refused a mapping); retrying later can succeed.
    /// The message is client-safe: it names the limit, never a path.
    #[error("{0}")]
    Unavailable(String),
    /// The file system said no. `file` is relative to the root.
    #[error("i/o error on {file}: {source}")]
    Io { file: String, source: io::Error },
}

impl StorageError {
    pub fn io(file: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io {
            file: file.into(),
            source,
        }
    }
    pub fn corrupted(file: impl Into<String>, detail: impl Into<String>) -> Self {
        StorageError::Corrupted {
            file: file.into(),
            detail: detail.into(),
        }
    }
    /// An error from opening or mapping a published file on the read path. Running out
    /// of mappings, memory or descriptors (ENOMEM, EAGAIN, EMFILE, ENFILE) is
    /// `Unavailable`: the file is fine and a retry can succeed; anything else is `Io`.
    pub fn map_failed(file: impl Into<String>, source: io::Error) -> Self {
        let file = file.into();
        match source.raw_os_error() {
            Some(12 | 11 | 24 | 23) => {
                tracing::warn!(%file, error = %source, "the kernel refused a mapping");
                StorageError::Unavailable(format!(
                    "the server cannot map another data file right now ({source}); retry \
                     later. Operators: see storage.max_mapped_files and vm.max_map_count \
                     in docs/operations.md"
                ))
            }
            _ => StorageError::io(file, source),
        }
    }
    /// The error with `what: ` in front of a client-facing message (which series of a
    /// many-series write it is about).
    pub fn about(self, what: &str) -> StorageError {
        let pre = |m: String| format!("{what}: {m}");
        match self {
            StorageError::InvalidArgument(m) => StorageError::InvalidArgument(pre(m)),
            StorageError::NotFound(m) => StorageError::NotFound(pre(m)),
            StorageError::PayloadTooLarge(m) => StorageError::PayloadTooLarge(pre(m)),
            StorageError::Unprocessable(m) => StorageError::Unprocessable(pre(m)),
            StorageError::PreconditionFailed(m) => StorageError::PreconditionFailed(pre(m)),
            other => other,
        }
    }
    /// The same error again, for answering several waiters with one failure (an I/O
    /// error keeps its kind, OS code and message).
    pub fn clone_kind(&self) -> StorageError {
        match self {
            StorageError::InvalidArgument(m) => StorageError::InvalidArgument(m.clone()),
            StorageError::NotFound(m) => StorageError::NotFound(m.clone()),
            StorageError::Conflict(m) => StorageError::Conflict(m.clone()),
            StorageError::PreconditionFailed(m) => StorageError::PreconditionFailed(m.clone()),
            StorageError::PayloadTooLarge(m) => StorageError::PayloadTooLarge(m.clone()),
            StorageError::Unprocessable(m) => StorageError::Unprocessable(m.clone()),
            StorageError::Gone(m) => StorageError::Gone(m.clone()),
            StorageError::Corrupted { file, detail } => StorageError::corrupted(file, detail),
            StorageError::Locked => StorageError::Locked,
            StorageError::Unavailable(m) => StorageError::Unavailable(m.clone()),
            StorageError::Io { file, source } => {
                let source = match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                };
                StorageError::io(file.clone(), source)
            }
        }
    }
    /// True when the underlying cause is a full disk (ENOSPC) or quota (EDQUOT).
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::QuotaExceeded
                    || matches!(source.raw_os_error(), Some(28) | Some(122))
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

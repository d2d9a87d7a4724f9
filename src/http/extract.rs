//! Wrapper extractors: every malformed body, path or query becomes a 400 (or 413) with
//! the contract's body, never axum's plain-text rejection.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::AppError;
use crate::error::{Error, ErrorKind};
use crate::query::Engine;

/// A JSON request body. The content type is not checked: a body that parses is
/// accepted, one that does not is a 400 naming the line, column and field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A JSON request body that may be empty (admin actions): an empty body or `null`
/// means `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

/// A buffered request body, parsed later with [`parse_json`] (on a blocking thread,
/// for writes whose bodies can be megabytes, and borrowing from the bytes).
#[derive(Debug)]
pub struct BodyBytes(pub Bytes);

impl<T: DeserializeOwned> FromRequest<Arc<Engine>> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<Engine>) -> Result<Self, AppError> {
        let bytes = read_body(req, state).await?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

impl FromRequest<Arc<Engine>> for BodyBytes {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<Engine>) -> Result<Self, AppError> {
        read_body(req, state).await.map(BodyBytes)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<Arc<Engine>> for OptionalJsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<Engine>) -> Result<Self, AppError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        let v: Option<T> = parse_json(&bytes)?;
        Ok(OptionalJsonBody(v.unwrap_or_default()))
    }
}

/// Buffers the body; the router's `DefaultBodyLimit` turns an oversize one into a 413.
async fn read_body(req: Request, state: &Arc<Engine>) -> Result<Bytes, AppError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(state.config.http.max_body_bytes)
        } else {
            AppError::invalid(format!("could not read the request body: {rejection}"))
        }
    })
}

/// The 413 for a body over `http.max_body_bytes`, declared or counted.
pub fn too_large(limit: usize) -> AppError {
    AppError::new(
        ErrorKind::PayloadTooLarge,
        format!(
            "request body exceeds the limit of {limit} bytes (http.max_body_bytes); \
             split the write into smaller requests"
        ),
    )
}

/// Parses JSON with serde's message (it names the field, line and column).
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("invalid JSON request body: {e}")))
}

/// Path parameters with the contract's 400 on failure.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<Engine>> for PathParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Engine>) -> Result<Self, AppError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathParams(v))
            .map_err(|e| AppError::invalid(format!("invalid path: {}", e.body_text())))
    }
}

/// Query parameters with the contract's 400 on failure (unknown ones included, so a
/// typo such as `?start=` is reported instead of silently reading everything).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<Engine>> for QueryParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Engine>) -> Result<Self, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| AppError::invalid(format!("invalid query string: {}", e.body_text())))
    }
}

/// The expected version from `If-Match: "<version>"` (the quotes may be omitted).
#[derive(Debug, Clone, Copy, Default)]
pub struct IfMatch(pub Option<u64>);

impl FromRequestParts<Arc<Engine>> for IfMatch {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<Engine>) -> Result<Self, AppError> {
        let Some(raw) = parts.headers.get(axum::http::header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        parse_if_match(raw.as_bytes()).map(|v| IfMatch(Some(v)))
    }
}

/// `"7"` or `7`; anything else (weak tags, `*`, lists) is refused.
pub fn parse_if_match(raw: &[u8]) -> Result<u64, AppError> {
    let text = std::str::from_utf8(raw).unwrap_or("").trim();
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let digits_only = !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit());
    match inner.parse::<u64>() {
        Ok(v) if digits_only => Ok(v),
        _ => Err(AppError::invalid(format!(
            "If-Match must be a series version such as \"7\" (from GET of the series), got {:?}",
            text.chars().take(40).collect::<String>()
        ))),
    }
}

/// Runs a blocking engine call off the async workers. A panic in the call becomes a
/// 500 whose detail is logged, never a dropped connection.
pub async fn blocking<T, F>(f: F) -> Result<T, AppError>
where
    F: FnOnce() -> crate::error::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(AppError::from),
        Err(e) => Err(AppError(Error::internal(format!(
            "blocking engine task failed: {e}"
        )))),
    }
}

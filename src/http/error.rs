//! The HTTP error type: [`crate::error::Error`] mapped to the contract's status and
//! body exactly once, plus the safety net that gives every other 4xx/5xx (axum's own
//! 405, a layer's 413, a docs asset 404) the same `{"error": {"code", "message"}}` shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, ErrorKind};

/// The contract's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"error": {"code": "not_found", "message": "series kline/BTCUSDT/1m does not exist; register it with POST /v1/kline/series"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a human-readable `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "invalid_argument", "message": "invalid symbol \"..\": must not be \".\" or \"..\""}))]
pub struct ErrorDetail {
    // The contract's code of the kind (schema `ErrorCode`, in `http/schema.rs`).
    #[schema(value_type = super::schema::ErrorCode)]
    pub code: ErrorKind,
    /// For 4xx: what was wrong and how to fix it. For 5xx: never paths or internals.
    pub message: String,
}

/// Every handler's error. The one place an [`ErrorKind`] becomes an HTTP status.
#[derive(Debug)]
pub struct AppError(pub Error);

impl AppError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AppError {
        AppError(Error::new(kind, message))
    }
    pub fn invalid(message: impl Into<String>) -> AppError {
        AppError(Error::invalid(message))
    }
}

impl From<Error> for AppError {
    fn from(e: Error) -> AppError {
        AppError(e)
    }
}

impl From<crate::record::NameError> for AppError {
    fn from(e: crate::record::NameError) -> AppError {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let kind = self.0.kind;
        let status =
            StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = error_response(status, kind, clip_message(&self.0.message));
        if kind == ErrorKind::Unauthorized {
            // RFC 6750: a 401 names the scheme the client should use.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fastk\""),
            );
        }
        resp
    }
}

/// Longest error message sent, in bytes; longer ones are cut (their length is said).
pub const MESSAGE_MAX_BYTES: usize = 1024;

/// `message` with client-supplied text kept short: every `` `quoted` `` span longer
/// than [`crate::record::ECHO_MAX_CHARS`] characters (serde names unknown fields and
/// variants that way) is cut to a prefix and its length, and the whole message to
/// [`MESSAGE_MAX_BYTES`]. Handlers already echo names through
/// [`crate::record::echo`]; this is the net for messages built by libraries.
pub fn clip_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MESSAGE_MAX_BYTES + 32));
    let mut parts = message.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('`');
        let quoted = i % 2 == 0;
        match part.char_indices().nth(crate::record::ECHO_MAX_CHARS) {
            Some((cut, _)) if quoted => {
                out.push_str(&part[..cut]);
                out.push_str(&format!("... ({} bytes)", part.len()));
            }
            _ => out.push_str(part),
        }
    }
    if out.len() <= MESSAGE_MAX_BYTES {
        return out;
    }
    let mut cut = MESSAGE_MAX_BYTES;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... (message of {} bytes cut)", &out[..cut], out.len())
}

/// A response with the contract's error body.
fn error_response(status: StatusCode, kind: ErrorKind, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: kind,
            message,
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
    });
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The contract's kind for an HTTP status produced outside the handlers. A 405 (the
/// route exists, the method does not) is the client's mistake: `invalid_argument`.
fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        410 => ErrorKind::Gone,
        412 => ErrorKind::PreconditionFailed,
        413 => ErrorKind::PayloadTooLarge,
        422 => ErrorKind::Unprocessable,
        503 => ErrorKind::Unavailable,
        s if s >= 500 => ErrorKind::Internal,
        _ => ErrorKind::InvalidArgument,
    }
}

/// Messages for statuses that reach the safety net without a JSON body.
fn message_for_status(status: StatusCode) -> String {
    match status.as_u16() {
        404 => "no such route; see /docs for the API".into(),
        405 => "method not allowed on this route; the Allow header lists the methods".into(),
        413 => "request body too large; split the write into smaller requests".into(),
        s if s >= 500 => "internal error; the server log has the details".into(),
        _ => status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_ascii_lowercase(),
    }
}

/// Middleware: a 4xx/5xx whose body is not JSON (axum's 405, a layer's 413, a docs
/// asset 404) is rewritten to the contract's body, keeping the status and headers
/// such as `Allow`. Handler errors are already JSON and pass through untouched.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let fresh = error_response(status, kind_for_status(status), message_for_status(status));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::new(fresh.into_body()))
}

/// The fallback for unknown routes.
pub async fn not_found() -> AppError {
    AppError::new(
        ErrorKind::NotFound,
        message_for_status(StatusCode::NOT_FOUND),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_client_text_is_clipped_in_messages() {
        let field = "f".repeat(100_000);
        let msg = format!("invalid JSON request body: unknown field `{field}`, expected `records`");
        let clipped = clip_message(&msg);
        assert!(clipped.len() < 300, "{clipped}");
        assert!(
            clipped.contains("... (100000 bytes)`, expected `records`"),
            "{clipped}"
        );
        assert_eq!(clip_message("short `name` stays"), "short `name` stays");
        let plain = "é".repeat(5_000);
        let clipped = clip_message(&plain);
        assert!(clipped.len() < MESSAGE_MAX_BYTES + 64, "{}", clipped.len());
        assert!(
            clipped.ends_with("(message of 10000 bytes cut)"),
            "{clipped}"
        );
    }
}

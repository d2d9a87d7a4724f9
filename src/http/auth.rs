//! Bearer-token auth as extractors: a handler that changes state takes
//! [`WriteAccess`], one that reads takes [`ReadAccess`]. `/health`, `/metrics`,
//! `/openapi.json` and `/docs` take neither, so they never need a token.
//!
//! The extractors run before the body is read, so an unauthenticated client cannot
//! make the server buffer a large body.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::error::AppError;
use crate::error::ErrorKind;
use crate::query::Engine;

/// Proof that the request may write, delete or run admin actions.
#[derive(Debug, Clone, Copy)]
pub struct WriteAccess;

/// Proof that the request may read (always, unless `auth.protect_reads` is set).
#[derive(Debug, Clone, Copy)]
pub struct ReadAccess;

impl FromRequestParts<Arc<Engine>> for WriteAccess {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Engine>) -> Result<Self, AppError> {
        check_bearer(&parts.headers, &state.config.auth.token).map(|()| WriteAccess)
    }
}

impl FromRequestParts<Arc<Engine>> for ReadAccess {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Engine>) -> Result<Self, AppError> {
        if !state.config.auth.protect_reads {
            return Ok(ReadAccess);
        }
        check_bearer(&parts.headers, &state.config.auth.token).map(|()| ReadAccess)
    }
}

/// Accepts the request when no token is configured or when it carries
/// `Authorization: Bearer <token>`. The comparison is constant-time so the response
/// time does not reveal how much of a guessed token was right.
pub fn check_bearer(headers: &HeaderMap, token: &str) -> Result<(), AppError> {
    if token.is_empty() {
        return Ok(());
    }
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(AppError::new(
            ErrorKind::Unauthorized,
            "this server requires a token: send `Authorization: Bearer <token>`",
        ));
    };
    let given = value
        .as_bytes()
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, rest)| rest.trim_ascii());
    match given {
        Some(given) if bool::from(given.ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err(AppError::new(
            ErrorKind::Unauthorized,
            "the bearer token is not valid for this server",
        )),
        None => Err(AppError::new(
            ErrorKind::Unauthorized,
            "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_rules() {
        assert!(check_bearer(&HeaderMap::new(), "").is_ok());
        assert!(check_bearer(&HeaderMap::new(), "s3cret").is_err());
        assert!(check_bearer(&headers("Bearer s3cret"), "s3cret").is_ok());
        assert!(check_bearer(&headers("bearer s3cret"), "s3cret").is_ok());
        assert!(check_bearer(&headers("Bearer s3cre"), "s3cret").is_err());
        assert!(check_bearer(&headers("Bearer s3cretX"), "s3cret").is_err());
        assert!(check_bearer(&headers("Basic s3cret"), "s3cret").is_err());
        assert!(check_bearer(&headers("Bearer"), "s3cret").is_err());
    }
}

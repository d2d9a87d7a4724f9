//! Bearer-token checks on gRPC metadata, with the same rules as HTTP.
//!
//! When `auth.token` is empty every call is allowed. Otherwise writes (DoPut) and the
//! admin actions always need `authorization: Bearer <token>`, reads need it when
//! `auth.protect_reads` is set, and the `health` action and ListActions never do.

use subtle::ConstantTimeEq;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::error::status;
use crate::config::AuthConfig;
use crate::error::{Error, ErrorKind};

/// What a call does, which decides whether it needs the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never needs a token (health, ListActions).
    Open,
    /// Needs the token when `auth.protect_reads` is set.
    Read,
    /// Always needs the token when one is configured (DoPut, admin actions).
    Write,
}

/// Checks the `authorization` metadata of a call needing `access`.
pub fn check(auth: &AuthConfig, metadata: &MetadataMap, access: Access) -> Result<(), Status> {
    let needed = match access {
        Access::Open => false,
        Access::Read => auth.protect_reads,
        Access::Write => true,
    };
    if auth.token.is_empty() || !needed {
        return Ok(());
    }
    let presented = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let Some(presented) = presented else {
        return Err(unauthenticated(
            "this call needs the metadata `authorization: Bearer <token>`",
        ));
    };
    // Constant-time comparison, so the response time says nothing about how many
    // leading bytes of a guess were right.
    if bool::from(presented.as_bytes().ct_eq(auth.token.as_bytes())) {
        Ok(())
    } else {
        Err(unauthenticated("the bearer token is not valid"))
    }
}

/// The token of a `Bearer <token>` header value (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthenticated(message: &str) -> Status {
    status(Error::new(ErrorKind::Unauthorized, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().expect("ascii"));
        }
        m
    }

    #[test]
    fn rules_follow_the_config() {
        let off = AuthConfig::default();
        assert!(check(&off, &md(None), Access::Write).is_ok());
        let on = AuthConfig {
            token: "s3cret".into(),
            protect_reads: false,
        };
        assert!(check(&on, &md(None), Access::Read).is_ok());
        assert!(check(&on, &md(None), Access::Open).is_ok());
        let missing = check(&on, &md(None), Access::Write).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let wrong = check(&on, &md(Some("Bearer nope")), Access::Write).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert!(check(&on, &md(Some("Bearer s3cret")), Access::Write).is_ok());
        assert!(check(&on, &md(Some("bearer  s3cret ")), Access::Write).is_ok());
        assert!(check(&on, &md(Some("Basic s3cret")), Access::Write).is_err());
        let reads = AuthConfig {
            protect_reads: true,
            ..on
        };
        assert!(check(&reads, &md(None), Access::Read).is_err());
        assert!(check(&reads, &md(None), Access::Open).is_ok());
    }
}

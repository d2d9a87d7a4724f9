//! Tokens and scopes as extractors ([`crate::auth`] decides; this file reads the
//! request). A handler takes the extractor of the scope it needs:
//!
//! - [`ReadAccess`], [`WriteAccess`]: the `read` or `write` scope; a token limited to
//!   some symbols must name an allowed one in the route's `{symbol}` (a route without
//!   one refuses such a token).
//! - [`ReadSymbols`], [`WriteSymbols`]: the scope only; the handler checks each symbol
//!   its body names against [`Principal::check_symbol`].
//! - [`AdminAccess`]: the `admin` scope, never a symbol-limited token.
//!
//! `/health`, `/metrics`, `/openapi.json`, `/docs` and the console's assets take none,
//! so they never need a token. The extractors run before the body is read, so an
//! unauthenticated client cannot make the server buffer a large body. Every accepted
//! write, delete and admin request is logged (target `fastk::audit`) with the token's
//! name, never its secret.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::AppError;
use crate::auth::{Access, Principal};
use crate::query::Engine;

/// How a route holds a symbol-limited token to its symbols.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Symbols {
    /// By the route's `{symbol}`; without one the token is refused.
    Path,
    /// By the handler, from the body.
    Handler,
}

async fn principal(
    parts: &mut Parts,
    engine: &Engine,
    access: Access,
    symbols: Symbols,
) -> Result<Principal, AppError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let p = engine.auth.authorize(header, peer, access).await?;
    if p.limited() && symbols == Symbols::Path {
        let params = RawPathParams::from_request_parts(parts, &())
            .await
            .map_err(|_| AppError::invalid("the request path could not be read"))?;
        let symbol = params.iter().find(|(k, _)| *k == "symbol").map(|(_, v)| v);
        let checked = match symbol {
            Some(s) => p.check_symbol(s),
            None => p.check_every_symbol("this route"),
        };
        checked.inspect_err(|e| engine.auth.note_forbidden(e))?;
    }
    // A handler that checks symbols itself logs once they passed.
    if symbols == Symbols::Path {
        audit(&p, access, parts.method.as_str(), parts.uri.path());
    }
    Ok(p)
}

/// The audit line of an accepted request ([`Principal::audit`]).
fn audit(p: &Principal, access: Access, method: &str, path: &str) {
    p.audit(access, method, Some(path));
}

macro_rules! extractor {
    ($(#[$doc:meta])* $name:ident, $access:expr, $symbols:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl FromRequestParts<Arc<Engine>> for $name {
            type Rejection = AppError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &Arc<Engine>,
            ) -> Result<Self, AppError> {
                principal(parts, state, $access, $symbols).await.map($name)
            }
        }
    };
}

/// The `write` scope; the handler checks the symbols its body names
/// ([`WriteSymbols::check`], which also writes the audit line).
#[derive(Debug, Clone)]
pub struct WriteSymbols {
    pub principal: Principal,
    method: String,
    path: String,
}

impl FromRequestParts<Arc<Engine>> for WriteSymbols {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Engine>) -> Result<Self, AppError> {
        let principal = principal(parts, state, Access::Write, Symbols::Handler).await?;
        Ok(WriteSymbols {
            principal,
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
        })
    }
}

extractor!(
    /// The `read` scope (when `auth.protect_reads` is set), held to the path's symbol.
    ReadAccess,
    Access::Read,
    Symbols::Path
);
extractor!(
    /// The `write` scope, held to the path's symbol.
    WriteAccess,
    Access::Write,
    Symbols::Path
);
extractor!(
    /// The `read` scope; the handler checks the symbols its body names.
    ReadSymbols,
    Access::Read,
    Symbols::Handler
);
extractor!(
    /// The `admin` scope, for a token not limited to symbols.
    AdminAccess,
    Access::Admin,
    Symbols::Path
);

impl WriteSymbols {
    /// `forbidden` unless every symbol is within the token's patterns; the audit line
    /// once they are.
    pub fn check<'a>(
        &self,
        engine: &Engine,
        symbols: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), crate::error::Error> {
        let p = &self.principal;
        if p.limited() {
            for s in symbols {
                p.check_symbol(s)
                    .inspect_err(|e| engine.auth.note_forbidden(e))?;
            }
        }
        audit(p, Access::Write, &self.method, &self.path);
        Ok(())
    }
}

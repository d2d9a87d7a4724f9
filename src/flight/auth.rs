//! Tokens and scopes on gRPC metadata ([`crate::auth`] decides; this file reads the
//! call). `authorization: Bearer <token>` carries a token or a Handshake session.
//!
//! What each call needs: ListActions, Handshake and the `health` action nothing; DoGet,
//! GetFlightInfo, GetSchema, ListFlights, Flight SQL and the read actions `read` (when
//! `auth.protect_reads` is set); DoPut and `delete-range` `write`; the admin actions
//! `admin`. A token limited to symbols must name allowed ones ([`check_symbols`],
//! [`check_body_symbol`]); calls that name none (listings, admin) refuse it.

use std::net::IpAddr;

use tonic::Status;
use tonic::metadata::MetadataMap;

use super::conn::ConnInfo;
use super::ticket::{GetCommand, Target};
use crate::auth::Principal;
use crate::error::Error;
use crate::query::Engine;
use crate::query::tick::TickRequest;

pub use crate::auth::Access;

/// The client address of a call, for the brute-force throttle.
pub fn peer(extensions: &tonic::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnInfo>()
        .and_then(|c| c.tcp.remote_addr)
        .map(|a| a.ip())
}

/// Who the call runs as, if it may make a call needing `access`.
pub async fn authorize(
    engine: &Engine,
    metadata: &MetadataMap,
    peer: Option<IpAddr>,
    access: Access,
) -> Result<Principal, Status> {
    let header = metadata
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    Ok(engine.auth.authorize(header, peer, access).await?)
}

/// The audit line of an accepted call ([`Principal::audit`]).
pub fn audit(p: &Principal, access: Access, method: &str) {
    p.audit(access, method, None);
}

/// `forbidden` unless every series of `cmd` is within the principal's symbols.
pub fn check_symbols(engine: &Engine, p: &Principal, cmd: &GetCommand) -> Result<(), Status> {
    if !p.limited() {
        return Ok(());
    }
    let checked = match cmd {
        GetCommand::Read(r) => match &r.target {
            Target::One(key) => p.check_symbol(key.symbol()),
            Target::Many(sel) => sel.symbols.check(p),
        },
        GetCommand::Aligned { key, .. } | GetCommand::Ticks(TickRequest::One { key, .. }) => {
            p.check_symbol(key.symbol())
        }
        GetCommand::Ticks(TickRequest::Many { symbols, .. }) => symbols.check(p),
    };
    checked.map_err(|e| refused(engine, e))
}

/// `forbidden` unless the JSON `body` of an action names a `symbol` within the
/// principal's patterns (an action naming none refuses a symbol-limited token).
pub fn check_body_symbol(
    engine: &Engine,
    p: &Principal,
    body: &[u8],
    what: &str,
) -> Result<(), Status> {
    if !p.limited() {
        return Ok(());
    }
    let symbol = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("symbol").and_then(|s| s.as_str().map(str::to_owned)));
    let checked = match symbol {
        Some(s) => p.check_symbol(&s),
        None => p.check_every_symbol(what),
    };
    checked.map_err(|e| refused(engine, e))
}

/// `forbidden` for a symbol-limited principal: the call names no symbols.
pub fn check_unlimited(engine: &Engine, p: &Principal, what: &str) -> Result<(), Status> {
    p.check_every_symbol(what).map_err(|e| refused(engine, e))
}

/// Counts a refusal for `/metrics` and makes it a status.
pub fn refused(engine: &Engine, e: Error) -> Status {
    engine.auth.note_forbidden(&e);
    Status::from(e)
}

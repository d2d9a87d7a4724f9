//! The HTTP API through the router (`oneshot`, no socket) and once through a real
//! server on port 0: every endpoint of the contract and every documented error.

mod admin_registry;
mod auth;
mod common;
mod errors;
mod hostile;
mod kline;
mod many;
mod market;
mod scalar;
mod server;
/// The helpers every test binary shares (`tests/common`); [`common`] re-exports the
/// ones these tests use.
#[path = "../common/mod.rs"]
mod shared;
mod sql;
mod system;
mod ticks;

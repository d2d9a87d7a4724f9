//! Helpers shared by the integration tests, one copy instead of one per test file.
//!
//! Each `tests/*.rs` binary that needs them says `mod common;` (Cargo does not build a
//! folder of `tests/` as a binary of its own, so nothing here compiles as an empty test).
//! - the engine fixtures below: an `Engine` over a temporary root, a registered kline
//!   series, a deep validation that must come back clean;
//! - [`flight`]: a real server on port 0 and a Flight client, with data builders.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

pub mod flight;

pub use flight::*;

use std::path::Path;
use std::sync::Arc;

use fastk::admin::AdminAction;
use fastk::config::Config;
use fastk::query::Engine;
use fastk::query::types::{AdminReport, AdminRequest, RegisterKline};
use fastk::record::SeriesKey;

/// 2024-01-01T00:00:00Z.
pub const JAN_2024: i64 = 1_704_067_200_000;
pub const MINUTE: i64 = 60_000;

/// An engine over `root` with the default configuration changed by `configure`.
pub fn engine_with(root: &Path, configure: impl FnOnce(&mut Config)) -> Arc<Engine> {
    let mut c = Config::default();
    c.storage.root = root.to_path_buf();
    configure(&mut c);
    Engine::open(c).unwrap()
}

/// Registers the 1m kline series of `symbol` (prices in cents, volume in units).
pub fn register_kline(e: &Engine, symbol: &str) -> SeriesKey {
    let r = RegisterKline {
        symbol: symbol.into(),
        timeframe: "1m".into(),
        timeframe_ms: None,
        price_scale: 100,
        volume_scale: 1,
    };
    e.register_kline(&r).unwrap();
    SeriesKey::kline(symbol, "1m").unwrap()
}

/// A deep validation of every series (checksums included).
pub fn validate_deep(e: &Engine) -> AdminReport {
    e.admin(
        AdminAction::Validate,
        &AdminRequest {
            deep: Some(true),
            ..Default::default()
        },
    )
    .unwrap()
}

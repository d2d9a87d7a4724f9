//! # FastK
//!
//! A local store and query server for market time series: kline (OHLCV) bars and
//! scalar series in memory-mapped, column-major month chunks, served over HTTP JSON
//! and Arrow Flight from one binary.
//!
//! # Layout
//! - [`record`]: record types, names, timestamps and month partitions (validated once).
//! - [`storage`]: the engine: chunk and manifest formats, mmap, crash-safe publication,
//!   recovery, zero-copy Arrow batches, sidecars. Knows nothing of HTTP, gRPC or SQLite.
#![deny(unsafe_code)]

pub mod record;
pub mod storage;

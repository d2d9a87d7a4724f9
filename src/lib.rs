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
//! - [`registry`]: the SQLite control plane (series catalog, datasets, features, factors).
//! - [`query`]: the command and query layer every front end calls; predicate queries.
//! - [`admin`]: validate, scrub, repair, rebuild-manifest, compact.
//! - [`error`]: the one client-facing error kind, mapped once to HTTP and once to gRPC.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`config`]: layered configuration (defaults < TOML < `FASTK__SECTION__KEY`).
//! - [`http`]: the axum JSON API, OpenAPI document and offline docs (a thin adapter).
//! - [`flight`]: the Arrow Flight service (a thin adapter).
//! - [`server`]: runs both listeners over one engine; graceful shutdown.
//! - [`replica`]: read replicas through object storage: publishing sealed files and
//!   manifests (`object_store`), following them into a read-only node's own root.
//! - [`cluster`]: the static shard map of symbol-sharded nodes (who owns a symbol).
//! - [`transfer`]: `fastk import` / `fastk export`: CSV, Parquet and Arrow IPC files in
//!   and out, as one all-or-nothing write (a client of [`query`], never of chunk files).
//! - [`auth`]: bearer tokens with scopes and symbol patterns, Handshake sessions, the
//!   brute-force throttle (shared by both front ends).
//! - [`tls`]: TLS for both listeners, certificates re-read when they change.
//! - [`cli`]: the `fastk` command line.
//! - [`sync`]: the one lock policy (a poisoned lock is recovered).
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod flight;
pub mod http;
pub mod metrics;
pub mod query;
pub mod record;
pub mod registry;
pub mod replica;
pub mod server;
pub mod storage;
pub mod sync;
pub mod tls;
pub mod transfer;

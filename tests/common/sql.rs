//! Running SQL on an engine in a test: a small runtime and a query that must succeed.

use std::sync::Arc;

use fastk::query::Engine;
use fastk::query::sql::{self, SqlAnswer};

/// A two-thread runtime, as the server runs SQL.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The answer of `q`, which must succeed (the panic names the query).
pub fn run(e: &Arc<Engine>, q: &str) -> SqlAnswer {
    rt().block_on(sql::collect(e, q, Vec::new(), None))
        .unwrap_or_else(|err| panic!("{q}: {err}"))
}

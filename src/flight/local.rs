//! The `local-read` action: a co-located client's read plan (docs/flight.md,
//! "Co-located reads").
//!
//! The body is a single-series kline or scalar ticket. The answer is two Results: the
//! plan as JSON (the chunk files to map, with byte offsets, and DoGet tickets for the
//! rows that cannot be mapped), then the schema DoGet would send, encoded as
//! GetSchema encodes it. Paths mean nothing to another host, so only connections on
//! the Unix socket listener are answered.

use std::sync::Arc;

use arrow_flight::{IpcMessage, SchemaAsIpc};
use arrow_ipc::writer::IpcWriteOptions;
use bytes::Bytes;
use tonic::Status;

use super::error::{internal, invalid};
use super::ticket::{GetCommand, ReadCommand, Target};
use crate::query::Engine;
use crate::query::local::{LocalPart, LocalPlan};
use crate::record::SeriesKey;

/// Name of the action.
pub const LOCAL_READ: &str = "local-read";

/// Why a TCP client is refused.
pub const TCP_REFUSED: &str = "local-read answers only clients on the Unix socket (flight.unix_socket): its plan names files of this host; use DoGet over TCP";

/// Runs `local-read` for `body` (already authorized, on the Unix socket).
pub async fn run(engine: Arc<Engine>, body: &[u8]) -> Result<Vec<Bytes>, Status> {
    let cmd = match GetCommand::parse(body)? {
        GetCommand::Read(cmd) => cmd,
        GetCommand::Aligned { .. } => {
            return Err(invalid(
                "local-read takes a single-series kline or scalar ticket; kind \"aligned\" is not supported (use DoGet)",
            ));
        }
        GetCommand::Ticks(_) => {
            return Err(invalid(
                "local-read does not compute: bars from trades and trade_quote are DoGet tickets",
            ));
        }
    };
    let key = single_series(&cmd)?;
    let max = engine.config.flight.max_local_parts;
    tokio::task::spawn_blocking(move || {
        let meta = Arc::clone(&engine.series(&key)?.meta);
        let plan = engine.local_plan(&key, &cmd.spec, max)?;
        let schema = cmd.schema(&meta)?;
        let IpcMessage(ipc) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(internal)?;
        let json = plan_json(&key, cmd.spec.columns.as_deref(), &plan);
        Ok(vec![Bytes::from(json.to_string()), ipc])
    })
    .await
    .map_err(internal)?
}

/// The series of a plain single-series read, or `InvalidArgument` naming the field
/// that asks for more.
fn single_series(cmd: &ReadCommand) -> Result<SeriesKey, Status> {
    if cmd.predicate.is_some() {
        return Err(invalid(
            "local-read serves stored rows only: predicate is not supported (use DoGet)",
        ));
    }
    match &cmd.target {
        Target::One(key) => Ok(key.clone()),
        Target::Many(_) => Err(invalid(
            "local-read reads one series: give symbol, not symbols (use DoGet for many)",
        )),
    }
}

/// The plan's JSON: a `ticket` (the DoGet ticket of exactly its rows) on every
/// `rows` part.
fn plan_json(key: &SeriesKey, columns: Option<&[String]>, plan: &LocalPlan) -> serde_json::Value {
    let parts: Vec<serde_json::Value> = plan
        .parts
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let LocalPart::Rows {
                first_ts, last_ts, ..
            } = p
            {
                v["ticket"] = ticket(key, columns, *first_ts, *last_ts).into();
            }
            v
        })
        .collect();
    serde_json::json!({
        "version": plan.version,
        "rows": plan.rows,
        "columns": plan.columns,
        "parts": parts,
    })
}

/// The DoGet ticket of the rows of `key` in `[start_ts, end_ts]`, `columns` only.
fn ticket(key: &SeriesKey, columns: Option<&[String]>, start_ts: i64, end_ts: i64) -> String {
    let mut v = serde_json::json!({
        "kind": key.kind().as_str(),
        "symbol": key.symbol(),
        "timeframe": key.timeframe(),
        "start_ts": start_ts,
        "end_ts": end_ts,
    });
    if let (Some(c), Some(n)) = (key.category(), key.name()) {
        v["category"] = c.into();
        v["name"] = n.into();
    }
    if let Some(cols) = columns {
        v["columns"] = cols.into();
    }
    v.to_string()
}

//! `POST /v1/sql`: SQL over the store (docs/sql.md), answered as JSON or as an Arrow
//! IPC stream.
//!
//! JSON answers are collected in memory and refused past `http.max_limit` rows (the
//! query is cancelled then, never silently truncated); an Arrow answer streams batches
//! as the query produces them, whatever its size. A client that disconnects drops the
//! stream, which cancels the query.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::ReadSymbols;
use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::error::Error;
use crate::query::Engine;
use crate::query::sql::{self, ScanSummary};

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// A SQL query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"query": "SELECT ts, close FROM kline WHERE symbol = $1 AND timeframe = '1m' ORDER BY ts DESC LIMIT 3", "params": ["BTCUSDT"]}))]
pub struct SqlRequest {
    /// One read-only SQL statement (DataFusion's dialect; tables in docs/sql.md).
    pub query: String,
    /// Values of the positional parameters `$1`, `$2`, ...: numbers, strings,
    /// booleans or null.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub params: Vec<Value>,
}

/// One result column.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"name": "close", "type": "Float64"}))]
pub struct SqlColumn {
    pub name: String,
    /// The Arrow type, e.g. `Int64`, `Float64`, `Utf8`, `Timestamp(ms, "UTC")`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A query's answer as JSON.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"columns": [{"name": "ts", "type": "Timestamp(ms, \"UTC\")"}, {"name": "close", "type": "Float64"}], "rows": [[1704067380000_i64, 42011.5], [1704067320000_i64, 42010.0]], "stats": {"series_total": 12, "series_selected": 1, "chunks_total": 24, "chunks_pruned": 23, "blocks_total": 0, "blocks_pruned": 0, "rows_scanned": 2, "rows_out": 2, "index_used": "none"}}))]
pub struct SqlResponse {
    pub columns: Vec<SqlColumn>,
    /// Rows as arrays in column order. Timestamps are milliseconds since the epoch;
    /// NaN and infinities are null.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Value>>,
    /// What the table scans did: series selected, chunks and blocks pruned, rows read.
    pub stats: ScanSummary,
}

/// Run a SQL query
///
/// Read-only SQL over the tables `kline`, `kline_raw`, `scalar`, `scalar_i64`,
/// `trade`, `trade_raw`, `quote`, `quote_raw`, `series`, `datasets`, `features` and
/// `factors` (catalog `fastk`, schema `public`).
/// Conditions on `symbol`, `timeframe`, `category`, `name`, `ts` and scalar `value`
/// are answered by the store's own indexes. JSON answers hold at most
/// `http.max_limit` rows (413 beyond, never truncated); with
/// `Accept: application/vnd.apache.arrow.stream` the answer is an Arrow IPC stream of
/// any size. A query is limited by `sql.memory_per_query_bytes` and
/// `sql.query_timeout_s` (413) and `sql.max_concurrent_queries` (503).
#[utoipa::path(post, path = "/v1/sql", tag = "sql", operation_id = "sql_query",
    request_body = SqlRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The answer: JSON columns and rows, or an Arrow IPC stream when asked for.", body = SqlResponse,
            content(
                (SqlResponse = "application/json"),
                (Vec<u8> = "application/vnd.apache.arrow.stream"),
            )),
        (status = 400, description = "`invalid_argument`: the query does not parse or plan (the engine's message), writes or DDL, or a bad parameter.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the JSON answer has more than `http.max_limit` rows, or the query outgrew its memory or time limit.", body = ErrorBody),
        (status = 503, description = "`unavailable`: `sql.max_concurrent_queries` queries are running; retry.", body = ErrorBody),
    ))]
pub async fn query(
    State(engine): State<Arc<Engine>>,
    ReadSymbols(principal): ReadSymbols,
    headers: HeaderMap,
    JsonBody(req): JsonBody<SqlRequest>,
) -> Result<Response, AppError> {
    let params = req
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| param(i, v))
        .collect::<Result<Vec<_>, Error>>()?;
    if wants_arrow(&headers) {
        let stream = sql::run_as(&engine, &principal, &req.query, params).await?;
        let schema = Arc::clone(&stream.schema);
        let body = ipc_stream(schema, stream.map(|b| b.map_err(std::io::Error::other)));
        let mut res = Body::from_stream(body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
        return Ok(res);
    }
    let max = engine.config.http.max_limit;
    let answer = sql::collect_as(&engine, &principal, &req.query, params, Some(max)).await?;
    Ok(Json(to_json(&answer.schema, &answer.batches, answer.stats)?).into_response())
}

fn wants_arrow(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.trim()
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(ARROW_STREAM))
        })
}

/// A JSON parameter as a SQL value.
fn param(i: usize, v: &Value) -> Result<ScalarValue, Error> {
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(x), _) => ScalarValue::Int64(Some(x)),
            (None, Some(x)) => ScalarValue::Float64(Some(x)),
            _ => return Err(Error::invalid(format!("params[{i}]: {n} is out of range"))),
        },
        Value::Array(_) | Value::Object(_) => {
            return Err(Error::invalid(format!(
                "params[{i}]: a parameter is a number, string, boolean or null"
            )));
        }
    })
}

/// The answer as JSON columns and rows.
pub fn to_json(
    schema: &datafusion::arrow::datatypes::Schema,
    batches: &[RecordBatch],
    stats: ScanSummary,
) -> Result<SqlResponse, Error> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| SqlColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
        })
        .collect();
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in batches {
        let cols: Vec<Vec<Value>> = b
            .columns()
            .iter()
            .map(column_json)
            .collect::<Result<_, _>>()?;
        for r in 0..b.num_rows() {
            rows.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(SqlResponse {
        columns,
        rows,
        stats,
    })
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Every value of one column as JSON.
fn column_json(a: &ArrayRef) -> Result<Vec<Value>, Error> {
    use datafusion::arrow::datatypes::*;
    let n = a.len();
    let out = |f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if a.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    Ok(match a.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => out(&|i| Value::Bool(a.as_boolean().value(i))),
        DataType::Int8 => out(&|i| a.as_primitive::<Int8Type>().value(i).into()),
        DataType::Int16 => out(&|i| a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => out(&|i| a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => out(&|i| a.as_primitive::<Int64Type>().value(i).into()),
        DataType::UInt8 => out(&|i| a.as_primitive::<UInt8Type>().value(i).into()),
        DataType::UInt16 => out(&|i| a.as_primitive::<UInt16Type>().value(i).into()),
        DataType::UInt32 => out(&|i| a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::UInt64 => out(&|i| a.as_primitive::<UInt64Type>().value(i).into()),
        DataType::Float32 => out(&|i| float(a.as_primitive::<Float32Type>().value(i) as f64)),
        DataType::Float64 => out(&|i| float(a.as_primitive::<Float64Type>().value(i))),
        DataType::Utf8 => out(&|i| Value::String(a.as_string::<i32>().value(i).to_string())),
        DataType::LargeUtf8 => out(&|i| Value::String(a.as_string::<i64>().value(i).to_string())),
        DataType::Utf8View => out(&|i| Value::String(a.as_string_view().value(i).to_string())),
        DataType::Timestamp(unit, _) => {
            let per_ms: (i64, i64) = match unit {
                TimeUnit::Second => (1000, 1),
                TimeUnit::Millisecond => (1, 1),
                TimeUnit::Microsecond => (1, 1000),
                TimeUnit::Nanosecond => (1, 1_000_000),
            };
            let v = |i: usize| -> i64 {
                match unit {
                    TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i),
                    TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i),
                    TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                    TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
                }
            };
            out(&|i| Value::from(v(i).saturating_mul(per_ms.0).div_euclid(per_ms.1)))
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                if a.is_null(i) {
                    vals.push(Value::Null);
                    continue;
                }
                let item = match a.data_type() {
                    DataType::List(_) => a.as_list::<i32>().value(i),
                    DataType::LargeList(_) => a.as_list::<i64>().value(i),
                    _ => a.as_fixed_size_list().value(i),
                };
                vals.push(Value::Array(column_json(&item)?));
            }
            vals
        }
        DataType::Dictionary(..) => {
            let plain = datafusion::arrow::compute::cast(a, &dictionary_value(a.data_type()))
                .map_err(|e| {
                    Error::invalid(format!("a result column could not be converted: {e}"))
                })?;
            column_json(&plain)?
        }
        _ => {
            let opts = FormatOptions::default();
            let f = ArrayFormatter::try_new(a.as_ref(), &opts)
                .map_err(|e| Error::invalid(format!("a result column could not be shown: {e}")))?;
            out(&|i| Value::String(f.value(i).to_string()))
        }
    })
}

fn dictionary_value(dt: &DataType) -> DataType {
    match dt {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    }
}

/// The Arrow IPC stream format over `batches`: the schema message, one message per
/// batch (dictionaries first), then the end-of-stream marker. A failure mid-stream
/// ends the body without the marker, so readers see an incomplete stream, not a short
/// answer.
pub fn ipc_stream(
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: impl futures::Stream<Item = Result<RecordBatch, std::io::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use datafusion::arrow::ipc::writer::{
        DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, write_message,
    };
    let opts = IpcWriteOptions::default();
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
    let mut compression = IpcWriteContext::default();
    let head = {
        let mut buf = Vec::new();
        let enc = generator.schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &opts);
        write_message(&mut buf, enc, &opts)
            .map(|_| Bytes::from(buf))
            .map_err(std::io::Error::other)
    };
    let body = batches.map(move |b| {
        let b = b?;
        let (dicts, enc) = generator
            .encode(&b, &mut tracker, &opts, &mut compression)
            .map_err(std::io::Error::other)?;
        let mut buf = Vec::new();
        for d in dicts {
            write_message(&mut buf, d, &opts).map_err(std::io::Error::other)?;
        }
        write_message(&mut buf, enc, &opts).map_err(std::io::Error::other)?;
        Ok(Bytes::from(buf))
    });
    // Continuation marker and a zero length: the end of the stream.
    let end = Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
    futures::stream::once(async move { head })
        .chain(body)
        .chain(futures::stream::once(async move { Ok(end) }))
}

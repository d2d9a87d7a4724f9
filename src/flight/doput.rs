//! DoPut: one client stream is one all-or-nothing write.
//!
//! The first message names the series with a PATH descriptor (the series must exist).
//! Batches come in the read schema (`ts` as timestamp[ms] or int64, raw int64 prices,
//! scalar `value` as the series' value type); columns are matched by name, in any
//! order. Every batch is checked and copied into one column-major
//! [`WriteBatch`], which is committed by a single `Engine::write` once the stream
//! ends, so an error anywhere leaves the series untouched. The optional
//! `{"expected_version": N}` may ride in the app_metadata of any message (the schema
//! message for Rust clients, a metadata-only message for pyarrow's `write_metadata`).
//!
//! The write starts only when the client ended the stream normally (half-close,
//! [`super::putbody`]); a cancel, a reset, an expired deadline or a broken connection
//! writes nothing. Every received batch first reserves its memory in the engine's
//! write budget ([`crate::query::budget`]), and a client that sends no message for
//! `flight.stall_timeout_s` is dropped, so a stalled upload gives its slot and its
//! memory back.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, PutResult};
use arrow_schema::{DataType, Schema, TimeUnit};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, future, stream};
use serde::Deserialize;
use tonic::{Status, Streaming};

use super::error::{internal, invalid, status};
use super::putbody::BodyEnd;
use crate::error::{Error, ErrorKind};
use crate::query::Engine;
use crate::query::budget::PUT_EXPANSION;
use crate::record::{SeriesKey, SeriesKind, SeriesMeta, ValueType};
use crate::storage::WriteBatch;
use crate::storage::batch::KLINE_COLUMNS;

/// The app_metadata a DoPut message may carry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutMetadata {
    #[serde(default)]
    expected_version: Option<u64>,
}

/// The first message of a DoPut stream (it names what the stream is for).
pub async fn first_message(
    engine: &Engine,
    input: &mut Streaming<FlightData>,
) -> Result<FlightData, Status> {
    let stall = Duration::from_secs(engine.config.flight.stall_timeout_s);
    within(stall, input.message()).await??.ok_or_else(|| {
        invalid("empty DoPut stream: the first message must carry a PATH descriptor")
    })
}

/// Reads the rest of the stream after `first`, then commits it if the client ended
/// it normally.
pub async fn do_put(
    engine: Arc<Engine>,
    first: FlightData,
    input: Streaming<FlightData>,
    end: Option<BodyEnd>,
) -> Result<PutResult, Status> {
    let stall = Duration::from_secs(engine.config.flight.stall_timeout_s);
    let key = series_key(first.flight_descriptor.as_ref())?;
    let meta = Arc::clone(&engine.series(&key)?.meta);
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let raw = metadata_filtered(first, input, Arc::clone(&seen));
    let mut decoder = FlightDataDecoder::new(raw);
    let mut cols = Columns::new(&meta, engine.config.flight.max_put_rows);
    let mut held = engine.write_budget.empty();
    let started = std::time::Instant::now();
    while let Some(msg) = within(stall, decoder.next()).await? {
        match msg.map_err(decode_status)?.payload {
            DecodedPayload::Schema(schema) => cols.plan(&schema)?,
            DecodedPayload::RecordBatch(batch) => {
                let bytes = batch.num_rows() as u64 * cols.names.len() as u64 * 8;
                held.grow(bytes * PUT_EXPANSION).await.map_err(status)?;
                cols.append(&batch)?;
            }
            DecodedPayload::None => {}
        }
    }
    // tonic ends the message stream on a client's cancel as if it had half-closed;
    // only the raw body knows which it was.
    match end {
        Some(end) if end.ended_cleanly() => {}
        Some(_) => {
            return Err(Status::cancelled(
                "the DoPut stream was cancelled or broken before the client ended it; nothing was written",
            ));
        }
        None => {
            return Err(internal(
                "DoPut reached the handler without its end-of-stream watch; \
                 serve Flight through fastk::flight::service",
            ));
        }
    }
    let expected = expected_version(&seen.lock().unwrap_or_else(|p| p.into_inner()))?;
    let batch = cols.finish()?;
    let received = started.elapsed();
    let rows = batch.len();
    let write_engine = Arc::clone(&engine);
    // The reservation moves into the write, so the memory stays counted until the
    // write is done, even if the call is dropped meanwhile.
    let response = tokio::task::spawn_blocking(move || {
        let _held = held;
        write_engine.write(&key, batch, expected)
    })
    .await
    .map_err(internal)??;
    tracing::debug!(
        rows,
        receive_ms = received.as_secs_f64() * 1e3,
        write_ms = (started.elapsed() - received).as_secs_f64() * 1e3,
        "DoPut committed"
    );
    let body = serde_json::to_vec(&response).map_err(internal)?;
    Ok(PutResult {
        app_metadata: body.into(),
    })
}

/// `next` unless the client sends nothing for `stall`: then `DeadlineExceeded`.
async fn within<T>(stall: Duration, next: impl Future<Output = T>) -> Result<T, Status> {
    tokio::time::timeout(stall, next).await.map_err(|_| {
        Status::deadline_exceeded(format!(
            "the client sent no DoPut message for {} s (flight.stall_timeout_s); nothing was written",
            stall.as_secs()
        ))
    })
}

/// The series a DoPut targets, from the first message's PATH descriptor.
fn series_key(d: Option<&arrow_flight::FlightDescriptor>) -> Result<SeriesKey, Status> {
    let Some(d) = d.filter(|d| d.r#type == DescriptorType::Path as i32) else {
        return Err(invalid(
            "DoPut needs a PATH descriptor on its first message: [\"kline\", symbol, timeframe] \
             or [\"scalar\", symbol, timeframe, category, name]",
        ));
    };
    let parts: Vec<&str> = d.path.iter().map(String::as_str).collect();
    SeriesKey::from_parts(&parts)
        .map_err(|e| invalid(format!("invalid descriptor path {:?}: {e}", d.path)))
}

/// The raw stream with metadata-only messages (empty IPC header) taken out, since the
/// IPC decoder refuses them; every app_metadata seen is noted in `seen`.
fn metadata_filtered(
    first: FlightData,
    rest: Streaming<FlightData>,
    seen: Arc<Mutex<Vec<Bytes>>>,
) -> impl futures::Stream<Item = Result<FlightData, FlightError>> + Send + 'static {
    stream::once(future::ready(Ok(first)))
        .chain(rest.map_err(FlightError::from))
        .filter(move |m| {
            let keep = match m {
                Ok(d) => {
                    if !d.app_metadata.is_empty() {
                        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                        if !s.contains(&d.app_metadata) {
                            s.push(d.app_metadata.clone());
                        }
                    }
                    !d.data_header.is_empty()
                }
                Err(_) => true,
            };
            future::ready(keep)
        })
}

fn expected_version(seen: &[Bytes]) -> Result<Option<u64>, Status> {
    match seen {
        [] => Ok(None),
        [one] => serde_json::from_slice::<PutMetadata>(one)
            .map(|m| m.expected_version)
            .map_err(|e| {
                invalid(format!(
                    "DoPut app_metadata must be JSON like {{\"expected_version\": 7}}: {e}"
                ))
            }),
        _ => Err(invalid(
            "DoPut messages carried different app_metadata; send {\"expected_version\": N} once",
        )),
    }
}

/// Client transport errors pass through; anything else is bad Arrow data.
fn decode_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        e => invalid(format!("invalid Arrow IPC data in DoPut: {e}")),
    }
}

/// The stored columns of a series, gathered from the incoming batches.
struct Columns {
    names: Vec<&'static str>,
    types: Vec<Expected>,
    /// For each stored column, its index in the incoming schema.
    positions: Option<Vec<usize>>,
    /// The incoming arrays of each stored column, kept as received (their buffers are
    /// the gRPC messages' own memory) and copied once, into exactly sized columns, when
    /// the stream ends.
    arrays: Vec<Vec<ArrayRef>>,
    rows: usize,
    /// Most rows one stream may carry (`flight.max_put_rows`).
    rows_max: usize,
}

/// What the incoming type of a stored column may be.
#[derive(Debug, Clone, Copy)]
enum Expected {
    Ts,
    Int64,
    Float64,
}

impl Expected {
    fn accepts(self, dt: &DataType) -> bool {
        match self {
            Expected::Ts => matches!(
                dt,
                DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)
            ),
            Expected::Int64 => *dt == DataType::Int64,
            Expected::Float64 => *dt == DataType::Float64,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Expected::Ts => "timestamp[ms] or int64 (milliseconds since the epoch, UTC)",
            Expected::Int64 => "int64 (raw fixed-point integers: real value × scale)",
            Expected::Float64 => "float64 (this series' value_type is f64)",
        }
    }
}

impl Columns {
    fn new(meta: &SeriesMeta, rows_max: usize) -> Columns {
        let (names, types) = match meta.key.kind() {
            SeriesKind::Kline => {
                let mut names = vec!["ts"];
                names.extend(KLINE_COLUMNS);
                let mut types = vec![Expected::Ts];
                types.extend([Expected::Int64; 5]);
                (names, types)
            }
            SeriesKind::Scalar => {
                let value = match meta.value_type {
                    ValueType::I64 => Expected::Int64,
                    ValueType::F64 => Expected::Float64,
                };
                (vec!["ts", "value"], vec![Expected::Ts, value])
            }
        };
        let arrays = vec![Vec::new(); names.len()];
        Columns {
            names,
            types,
            positions: None,
            arrays,
            rows: 0,
            rows_max,
        }
    }

    /// Checks the incoming schema and notes where each stored column is.
    fn plan(&mut self, schema: &Schema) -> Result<(), Status> {
        let expected = self.names.join(", ");
        for (i, f) in schema.fields().iter().enumerate() {
            if !self.names.contains(&f.name().as_str()) {
                return Err(invalid(format!(
                    "unexpected column {:?}: this series takes {expected}",
                    f.name()
                )));
            }
            if schema.fields()[..i].iter().any(|g| g.name() == f.name()) {
                return Err(invalid(format!("column {:?} appears twice", f.name())));
            }
        }
        let mut positions = Vec::with_capacity(self.names.len());
        for (name, ty) in self.names.iter().zip(&self.types) {
            let Ok(i) = schema.index_of(name) else {
                return Err(invalid(format!(
                    "missing column {name:?}: this series takes {expected}"
                )));
            };
            let dt = schema.field(i).data_type();
            if !ty.accepts(dt) {
                return Err(invalid(format!(
                    "column {name:?} has type {dt}; expected {}",
                    ty.describe()
                )));
            }
            positions.push(i);
        }
        self.positions = Some(positions);
        Ok(())
    }

    /// Appends one batch's rows, refusing nulls and going past `flight.max_put_rows`.
    fn append(&mut self, batch: &RecordBatch) -> Result<(), Status> {
        let Some(positions) = &self.positions else {
            return Err(invalid("DoPut record batch arrived before its schema"));
        };
        if self.rows + batch.num_rows() > self.rows_max {
            return Err(status(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "one DoPut stream may carry at most {} rows (flight.max_put_rows); split the upload into several streams",
                    self.rows_max
                ),
            )));
        }
        for (c, &i) in positions.iter().enumerate() {
            let array = batch.column(i);
            if array.null_count() > 0 {
                return Err(invalid(format!(
                    "column {:?} contains nulls; every value must be present",
                    self.names[c]
                )));
            }
        }
        for (c, &i) in positions.iter().enumerate() {
            self.arrays[c].push(Arc::clone(batch.column(i)));
        }
        self.rows += batch.num_rows();
        Ok(())
    }

    fn finish(self) -> Result<WriteBatch, Status> {
        if self.positions.is_none() {
            return Err(invalid(
                "the DoPut stream carried no Arrow schema; send at least the schema message",
            ));
        }
        let mut batch = WriteBatch::with_capacity(self.names.len(), self.rows);
        for (out, arrays) in batch.cols.iter_mut().zip(&self.arrays) {
            for array in arrays {
                match array.data_type() {
                    DataType::Timestamp(..) => out.extend_from_slice(
                        array.as_primitive::<TimestampMillisecondType>().values(),
                    ),
                    DataType::Float64 => out.extend(
                        array
                            .as_primitive::<Float64Type>()
                            .values()
                            .iter()
                            .map(|v| v.to_bits() as i64),
                    ),
                    _ => out.extend_from_slice(array.as_primitive::<Int64Type>().values()),
                }
            }
        }
        Ok(batch)
    }
}

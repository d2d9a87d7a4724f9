//! DoPut: one client stream is one all-or-nothing write.
//!
//! The first message names the series with a PATH descriptor (the series must exist).
//! `["kline", "*", timeframe]`, `["scalar", "*", timeframe, category, name]`,
//! `["trade", "*"]` or `["quote", "*"]` names many series at once: the batches then carry a `symbol` column (utf8, large utf8 or
//! a dictionary of them), every symbol's series must exist, and the whole stream is one
//! all-or-nothing write of all of them (`Engine::write_many`, one log record).
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

use crate::sync::LockExt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int8Type, Int64Type, TimestampMillisecondType, TimestampNanosecondType, UInt64Type,
};
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
use crate::query::many::{Grouped, ManyRows};
use crate::query::{KLINE_COLUMNS, WriteBatch};
use crate::record::{SEQ_UNASSIGNED, SeriesKey, SeriesKind, ValueType};

/// The position of a column the stream left out (an optional tick column).
const ABSENT: usize = usize::MAX;

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

/// Each scalar series of a many-series DoPut stores the value column's type.
fn check_value_types(rows: &Grouped, value_f64: bool) -> Result<(), Status> {
    for (key, vt) in rows.value_types() {
        if key.kind() == SeriesKind::Scalar && (vt == ValueType::F64) != value_f64 {
            return Err(invalid(format!(
                "symbol {}: the series stores {} values but the value column is {}",
                key.symbol(),
                vt.as_str(),
                if value_f64 { "float64" } else { "int64" }
            )));
        }
    }
    Ok(())
}

/// Reads the rest of the stream after `first`, then commits it if the client ended
/// it normally.
/// `principal` has the write scope; a many-series stream must name only its symbols.
pub async fn do_put(
    engine: Arc<Engine>,
    principal: crate::auth::Principal,
    first: FlightData,
    input: Streaming<FlightData>,
    end: Option<BodyEnd>,
) -> Result<PutResult, Status> {
    let stall = Duration::from_secs(engine.config.flight.stall_timeout_s);
    let target = put_target(first.flight_descriptor.as_ref())?;
    // The stream is bound to the series that exist now: one delete and registration
    // again while it is sent must not receive its rows (they were scaled for the old).
    let since = engine.write_begins();
    let bound = match &target {
        Target::One(key) => Some(engine.series(key)?),
        Target::Many(_) => None,
    };
    let mut cols = match &target {
        Target::One(_) => {
            let meta = Arc::clone(&bound.as_ref().expect("one series is resolved").meta);
            Columns::new(
                meta.key.kind(),
                Some(meta.value_type),
                engine.config.flight.max_put_rows,
            )
        }
        Target::Many(template) => {
            Columns::new(template.kind(), None, engine.config.flight.max_put_rows)
        }
    };
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let raw = metadata_filtered(first, input, Arc::clone(&seen));
    let mut decoder = FlightDataDecoder::new(raw);
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
    let expected = expected_version(&seen.locked())?;
    let received = started.elapsed();
    let rows = cols.rows;
    let write_engine = Arc::clone(&engine);
    // The reservation moves into the write, so the memory stays counted until the
    // write is done, even if the call is dropped meanwhile.
    let body = match target {
        Target::One(key) if key.kind().is_tick() => {
            let series = bound.expect("one series is resolved");
            put_ticks(write_engine, series, cols, expected, held).await?
        }
        Target::One(_) => {
            // The received arrays are written in place, not copied into one batch:
            // a bulk load then takes no second copy of its size in fresh memory.
            let arrays = cols.into_arrays()?;
            let series = bound.expect("one series is resolved");
            let response = tokio::task::spawn_blocking(move || {
                let _held = held;
                write_engine.write_pieces_to(&series, &pieces_of(&arrays), expected)
            })
            .await
            .map_err(internal)??;
            serde_json::to_vec(&response).map_err(internal)?
        }
        Target::Many(template) => {
            if expected.is_some() {
                return Err(invalid(
                    "expected_version applies to one series; a many-series DoPut takes none",
                ));
            }
            let value_f64 = cols.value_f64;
            let rows = cols.finish_many(&engine, &principal, &template, since)?;
            super::auth::audit(&principal, super::auth::Access::Write, "DoPut");
            check_value_types(&rows, value_f64)?;
            let response = tokio::task::spawn_blocking(move || {
                let _held = held;
                write_engine.write_rows(rows)
            })
            .await
            .map_err(internal)??;
            serde_json::to_vec(&response).map_err(internal)?
        }
    };
    tracing::debug!(
        rows,
        receive_ms = received.as_secs_f64() * 1e3,
        write_ms = (started.elapsed() - received).as_secs_f64() * 1e3,
        "DoPut committed"
    );
    Ok(PutResult {
        app_metadata: body.into(),
    })
}

/// Writes a tick stream as one batch: its columns convert (ns timestamps, uint64
/// `seq`, int8 `side`, absent optional columns), and the store sorts the rows by
/// `(ts, seq)`, checks them and numbers a missing `seq`. Answers the `WriteResponse`.
async fn put_ticks(
    engine: Arc<Engine>,
    series: Arc<crate::query::Series>,
    cols: Columns,
    expected: Option<u64>,
    held: crate::query::budget::Reservation,
) -> Result<Vec<u8>, Status> {
    let batch = cols.finish()?;
    let response = tokio::task::spawn_blocking(move || {
        let _held = held;
        let piece: Vec<&[i64]> = batch.cols.iter().map(|c| &c[..]).collect();
        engine.write_pieces_to(&series, &[piece], expected)
    })
    .await
    .map_err(internal)??;
    serde_json::to_vec(&response).map_err(internal)
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

/// What a DoPut writes: one series, or many of one timeframe (and category, name).
enum Target {
    One(SeriesKey),
    /// The key of a placeholder symbol: every field but the symbol applies to all.
    Many(SeriesKey),
}

/// Placeholder symbol of [`Target::Many`]'s template key (never written).
const TEMPLATE_SYMBOL: &str = "_";

/// The series a DoPut targets, from the first message's PATH descriptor.
fn put_target(d: Option<&arrow_flight::FlightDescriptor>) -> Result<Target, Status> {
    let Some(d) = d.filter(|d| d.r#type == DescriptorType::Path as i32) else {
        return Err(invalid(
            "DoPut needs a PATH descriptor on its first message: [\"kline\", symbol, timeframe], \
             [\"scalar\", symbol, timeframe, category, name], [\"trade\", symbol] or \
             [\"quote\", symbol] (symbol \"*\": many series, with a symbol column)",
        ));
    };
    let mut parts: Vec<&str> = d.path.iter().map(String::as_str).collect();
    let many = parts.get(1) == Some(&"*");
    if many {
        parts[1] = TEMPLATE_SYMBOL;
    }
    let key = SeriesKey::from_parts(&parts)
        .map_err(|e| invalid(format!("invalid descriptor path {:?}: {e}", d.path)))?;
    Ok(if many {
        Target::Many(key)
    } else {
        Target::One(key)
    })
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
                        let mut s = seen.locked();
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

/// The rows of a many-series stream listed group by group, each group's rows in
/// stream order (a stable counting sort of the rows by group). Each group's columns
/// are then gathered front to back into exactly sized columns: a live feed's stream is
/// 50,000 trades of 500 symbols, and a push per cell into 3,000 interleaved columns
/// was a sixth of the server's time on it.
struct GroupOrder {
    /// Group `g`'s rows are `rows[start[g]..start[g + 1]]`.
    start: Vec<usize>,
    rows: Vec<u32>,
}

impl GroupOrder {
    fn of(group_of: &[u32], groups: usize) -> GroupOrder {
        let mut start = vec![0usize; groups + 1];
        for &g in group_of {
            start[g as usize + 1] += 1;
        }
        for g in 0..groups {
            start[g + 1] += start[g];
        }
        let mut next = start.clone();
        let mut rows = vec![0u32; group_of.len()];
        for (r, &g) in group_of.iter().enumerate() {
            let at = &mut next[g as usize];
            rows[*at] = u32::try_from(r).expect("a stream's rows fit u32 (flight.max_put_rows)");
            *at += 1;
        }
        debug_assert!(
            (0..groups).all(|g| next[g] == start[g + 1]),
            "every row is placed once"
        );
        GroupOrder { start, rows }
    }

    fn rows(&self, g: usize) -> &[u32] {
        &self.rows[self.start[g]..self.start[g + 1]]
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
    /// A many-series stream: where its `symbol` column is, and its arrays.
    many: bool,
    symbol_pos: Option<usize>,
    symbols: Vec<ArrayRef>,
    /// Whether the incoming scalar `value` column is float64 (else int64).
    value_f64: bool,
}

/// What the incoming type of a stored column may be.
#[derive(Debug, Clone, Copy)]
enum Expected {
    Ts,
    Int64,
    Float64,
    /// A many-series scalar value: int64 or float64, each series checked at the end.
    Number,
    /// A tick's `ts`: timestamp[ns] or int64 nanoseconds (the type decides the unit).
    TsNs,
    /// A tick's `seq`: uint64 (or a non-negative int64); may be absent.
    Seq,
    /// A trade's `side`: int8 or int64, -1, 0 or 1.
    Side,
    /// An int64 column that may be absent (0 then: a trade's `trade_id`).
    OptionalInt64,
}

impl Expected {
    fn accepts(self, dt: &DataType) -> bool {
        match self {
            Expected::Ts => matches!(
                dt,
                DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _)
            ),
            Expected::Int64 | Expected::OptionalInt64 => *dt == DataType::Int64,
            Expected::Float64 => *dt == DataType::Float64,
            Expected::Number => matches!(dt, DataType::Int64 | DataType::Float64),
            Expected::TsNs => matches!(
                dt,
                DataType::Int64 | DataType::Timestamp(TimeUnit::Nanosecond, _)
            ),
            Expected::Seq => matches!(dt, DataType::UInt64 | DataType::Int64),
            Expected::Side => matches!(dt, DataType::Int8 | DataType::Int64),
        }
    }

    /// A column the stream may leave out.
    fn optional(self) -> bool {
        matches!(self, Expected::Seq | Expected::OptionalInt64)
    }

    fn describe(self) -> &'static str {
        match self {
            Expected::Ts => "timestamp[ms] or int64 (milliseconds since the epoch, UTC)",
            Expected::Int64 => "int64 (raw fixed-point integers: real value × scale)",
            Expected::Float64 => "float64 (this series' value_type is f64)",
            Expected::Number => "int64 or float64 (the series' value_type)",
            Expected::TsNs => {
                "timestamp[ns] or int64 (nanoseconds since the epoch, UTC; a timestamp of another unit is refused, never guessed)"
            }
            Expected::Seq => "uint64 (or int64), or leave the column out to have seq assigned",
            Expected::Side => "int8 or int64 (1 buy, -1 sell, 0 unknown)",
            Expected::OptionalInt64 => "int64 (or leave the column out)",
        }
    }
}

impl Columns {
    /// Columns of a series of `kind`; `value_type` is `None` for a many-series stream
    /// (which also takes a `symbol` column).
    fn new(kind: SeriesKind, value_type: Option<ValueType>, rows_max: usize) -> Columns {
        let (names, types) = match kind {
            SeriesKind::Kline => {
                let mut names = vec!["ts"];
                names.extend(KLINE_COLUMNS);
                let mut types = vec![Expected::Ts];
                types.extend([Expected::Int64; 5]);
                (names, types)
            }
            SeriesKind::Scalar => {
                let value = match value_type {
                    Some(ValueType::I64) => Expected::Int64,
                    Some(ValueType::F64) => Expected::Float64,
                    None => Expected::Number,
                };
                (vec!["ts", "value"], vec![Expected::Ts, value])
            }
            SeriesKind::Trade | SeriesKind::Quote => {
                let names = kind.layout().columns.to_vec();
                let types = names
                    .iter()
                    .map(|n| match *n {
                        "ts" => Expected::TsNs,
                        "seq" => Expected::Seq,
                        "side" => Expected::Side,
                        "trade_id" => Expected::OptionalInt64,
                        _ => Expected::Int64,
                    })
                    .collect();
                (names, types)
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
            many: value_type.is_none(),
            symbol_pos: None,
            symbols: Vec::new(),
            value_f64: value_type == Some(ValueType::F64),
        }
    }

    /// Checks the incoming schema and notes where each stored column is.
    fn plan(&mut self, schema: &Schema) -> Result<(), Status> {
        let mut expected = self.names.join(", ");
        if self.many {
            expected.push_str(", symbol");
            let Ok(i) = schema.index_of("symbol") else {
                return Err(invalid(format!(
                    "missing column \"symbol\": a many-series DoPut takes {expected}"
                )));
            };
            let dt = schema.field(i).data_type();
            let text = |t: &DataType| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            };
            let ok = text(dt) || matches!(dt, DataType::Dictionary(_, v) if text(v));
            if !ok {
                return Err(invalid(format!(
                    "column \"symbol\" has type {dt}; expected utf8 (or a dictionary of utf8)"
                )));
            }
            self.symbol_pos = Some(i);
        }
        for (i, f) in schema.fields().iter().enumerate() {
            if self.many && f.name() == "symbol" {
                continue;
            }
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
                if ty.optional() {
                    positions.push(ABSENT);
                    continue;
                }
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
            if name == &"value" {
                self.value_f64 = *dt == DataType::Float64;
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
            if i == ABSENT {
                continue;
            }
            let array = batch.column(i);
            if array.null_count() > 0 {
                return Err(invalid(format!(
                    "column {:?} contains nulls; every value must be present",
                    self.names[c]
                )));
            }
        }
        if let Some(i) = self.symbol_pos {
            if batch.column(i).null_count() > 0 {
                return Err(invalid("column \"symbol\" contains nulls"));
            }
            self.symbols.push(Arc::clone(batch.column(i)));
        }
        for (c, &i) in positions.iter().enumerate() {
            if i != ABSENT {
                self.arrays[c].push(Arc::clone(batch.column(i)));
            }
        }
        self.rows += batch.num_rows();
        Ok(())
    }

    /// The rows of a many-series stream, one batch per symbol in the order symbols
    /// first appear. A dictionary-encoded `symbol` column (what a feed handler's
    /// minute table usually is) is read through its dictionary: each distinct value is
    /// looked up once per batch, not once per row, and no symbol is copied.
    fn finish_many(
        mut self,
        engine: &Engine,
        principal: &crate::auth::Principal,
        template: &SeriesKey,
        since: u64,
    ) -> Result<Grouped, Status> {
        let symbols = std::mem::take(&mut self.symbols);
        let all = self.finish()?;
        let as_text = |a: &ArrayRef| {
            arrow_cast::cast(a, &DataType::Utf8)
                .map_err(|e| invalid(format!("column \"symbol\" could not be read as text: {e}")))
        };
        // Per received batch: its symbols as text, and for a dictionary the row's
        // index into them (else row i is text i).
        let mut texts: Vec<(ArrayRef, Option<Vec<usize>>)> = Vec::with_capacity(symbols.len());
        for array in &symbols {
            texts.push(match array.as_any_dictionary_opt() {
                Some(d) => (as_text(d.values())?, Some(d.normalized_keys())),
                None => (as_text(array)?, None),
            });
        }
        let mut rows = ManyRows::new(template.clone(), all.len(), since);
        // Each row's group first; then each group's columns are sized once and filled
        // column by column (a live feed's stream is 50,000 trades of 500 symbols: a push
        // per cell into columns that grow as they go cost a third of its time).
        let mut group_of: Vec<u32> = Vec::with_capacity(all.len());
        for (text, keys) in &texts {
            let text = text.as_string::<i32>();
            // A dictionary's rows name their values by key: each distinct value's
            // series is found once. Plain text is looked up row by row.
            let mut of_value: Vec<Option<usize>> =
                vec![None; keys.as_ref().map_or(0, |_| text.len())];
            let n = keys.as_ref().map_or(text.len(), Vec::len);
            for r in 0..n {
                let v = keys.as_ref().map_or(r, |k| k[r]);
                if v >= text.len() {
                    return Err(invalid(
                        "column \"symbol\": a dictionary key points past its values",
                    ));
                }
                let known = of_value.get(v).copied().flatten();
                let j = match known {
                    Some(j) => j,
                    None => {
                        // A limited token is refused before a series is looked up, so
                        // it learns nothing of series outside its patterns.
                        let symbol = text.value(v);
                        if principal.limited() {
                            principal
                                .check_symbol(symbol)
                                .map_err(|e| super::auth::refused(engine, e))?;
                        }
                        let j = rows.group(engine, symbol)?;
                        if let Some(slot) = of_value.get_mut(v) {
                            *slot = Some(j);
                        }
                        j
                    }
                };
                group_of.push(u32::try_from(j).expect("a stream's groups fit u32"));
            }
        }
        assert_eq!(group_of.len(), all.len(), "one symbol per row");
        let order = GroupOrder::of(&group_of, rows.groups());
        let cols: Vec<&[i64]> = all.cols.iter().map(|c| c.as_slice()).collect();
        for g in 0..rows.groups() {
            let picked = order.rows(g);
            for (out, col) in rows.batch(g).cols.iter_mut().zip(&cols) {
                debug_assert!(out.is_empty(), "a group's columns are filled once");
                // Collected into a Vec (an exact-size loop), then moved in, not copied.
                *out = picked
                    .iter()
                    .map(|&r| col[r as usize])
                    .collect::<Vec<i64>>()
                    .into();
            }
        }
        Ok(rows.finish())
    }

    /// The received arrays of each stored column (one per batch, in order), once the
    /// schema was seen.
    fn into_arrays(self) -> Result<Vec<Vec<ArrayRef>>, Status> {
        self.planned()?;
        Ok(self.arrays)
    }

    /// Refuses a stream that ended without its schema.
    fn planned(&self) -> Result<(), Status> {
        match self.positions {
            Some(_) => Ok(()),
            None => Err(invalid(
                "the DoPut stream carried no Arrow schema; send at least the schema message",
            )),
        }
    }

    fn finish(self) -> Result<WriteBatch, Status> {
        self.planned()?;
        let mut batch = WriteBatch::with_capacity(self.names.len(), self.rows);
        let positions = self.positions.as_deref().unwrap_or_default();
        for (c, (out, arrays)) in batch.cols.iter_mut().zip(&self.arrays).enumerate() {
            if positions.get(c) == Some(&ABSENT) {
                // Left out: `seq` is assigned by the store, `trade_id` is 0.
                let fill = if self.names[c] == "seq" {
                    SEQ_UNASSIGNED
                } else {
                    0
                };
                out.resize(self.rows, fill);
                continue;
            }
            for array in arrays {
                match array.data_type() {
                    DataType::Timestamp(TimeUnit::Nanosecond, _) => out.extend_from_slice(
                        array.as_primitive::<TimestampNanosecondType>().values(),
                    ),
                    DataType::Timestamp(..) => out.extend_from_slice(
                        array.as_primitive::<TimestampMillisecondType>().values(),
                    ),
                    DataType::UInt64 => out.extend(
                        array
                            .as_primitive::<UInt64Type>()
                            .values()
                            .iter()
                            .map(|&v| v as i64),
                    ),
                    // An int64 `seq` is taken as its bits too; a negative one is refused
                    // below, like the reserved uint64 2^64 - 1.
                    DataType::Int64 if self.names[c] == "seq" => {
                        let values = array.as_primitive::<Int64Type>().values();
                        if let Some(r) = values.iter().position(|&v| v < 0) {
                            return Err(invalid(format!(
                                "column \"seq\": row {} is {}; a seq is a non-negative integer (leave the column out to have seq assigned)",
                                out.len() + r,
                                values[r]
                            )));
                        }
                        out.extend_from_slice(values);
                    }
                    DataType::Int8 => out.extend(
                        array
                            .as_primitive::<Int8Type>()
                            .values()
                            .iter()
                            .map(|&v| v as i64),
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
            if self.names[c] == "seq"
                && let Some(r) = out.iter().position(|&v| v == SEQ_UNASSIGNED)
            {
                return Err(invalid(format!(
                    "column \"seq\": row {r} is {}, which is reserved (leave the column out to have seq assigned)",
                    u64::MAX
                )));
            }
        }
        Ok(batch)
    }
}

/// The rows of `arrays` (per stored column, one array per received batch) as pieces
/// of the write, one per batch: each column's values in place, float64 values by
/// their bits (as stored).
fn pieces_of(arrays: &[Vec<ArrayRef>]) -> Vec<Vec<&[i64]>> {
    let batches = arrays.first().map_or(0, Vec::len);
    (0..batches)
        .map(|k| {
            arrays
                .iter()
                .map(|col| {
                    let a = &col[k];
                    match a.data_type() {
                        DataType::Timestamp(..) => {
                            &a.as_primitive::<TimestampMillisecondType>().values()[..]
                        }
                        DataType::Float64 => {
                            bytemuck::cast_slice(&a.as_primitive::<Float64Type>().values()[..])
                        }
                        _ => &a.as_primitive::<Int64Type>().values()[..],
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{DictionaryArray, Int64Array, StringArray, types::Int32Type};
    use arrow_schema::Field;

    /// A many-series scalar batch: `symbols` as given (dictionary or plain), `ts` and
    /// `value` columns.
    fn batch(symbols: ArrayRef, ts: &[i64], value: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", symbols.data_type().clone(), false),
            Field::new("ts", DataType::Int64, false),
            Field::new("value", DataType::Int64, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            symbols,
            Arc::new(Int64Array::from(ts.to_vec())),
            Arc::new(Int64Array::from(value.to_vec())),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    fn dict(values: &[&str], keys: &[i32]) -> ArrayRef {
        let keys = arrow_array::Int32Array::from(keys.to_vec());
        let values: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
        Arc::new(DictionaryArray::<Int32Type>::try_new(keys, values).unwrap())
    }

    /// A series' symbol, `ts` and `value` columns.
    type Group = (String, Vec<i64>, Vec<i64>);

    /// An engine over a fresh root with the scalar series (signal s, 1m) of `symbols`.
    fn engine_with(symbols: &[&str]) -> (tempfile::TempDir, Arc<Engine>) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::config::Config::default();
        c.storage.root = dir.path().to_path_buf();
        let engine = Engine::open(c).unwrap();
        for s in symbols {
            let r = crate::query::types::RegisterScalar {
                symbol: s.to_string(),
                timeframe: "1m".into(),
                timeframe_ms: None,
                category: "signal".into(),
                name: "s".into(),
                value_type: None,
                retention_ms: None,
            };
            engine.register_scalar(&r).unwrap();
        }
        (dir, engine)
    }

    fn finish(batches: &[RecordBatch]) -> Result<Vec<Group>, Status> {
        let (_dir, engine) = engine_with(&["A", "B", "C", "OK"]);
        let template = SeriesKey::scalar("X", "1m", "signal", "s").unwrap();
        let mut cols = Columns::new(SeriesKind::Scalar, None, 1_000);
        cols.plan(&batches[0].schema())?;
        for b in batches {
            cols.append(b)?;
        }
        Ok(cols
            .finish_many(
                &engine,
                &crate::auth::Principal::anonymous(),
                &template,
                u64::MAX,
            )?
            .rows()
            .map(|(k, b)| {
                (
                    k.symbol().to_string(),
                    b.cols[0].to_vec(),
                    b.cols[1].to_vec(),
                )
            })
            .collect())
    }

    #[test]
    fn symbols_group_rows_alike_through_a_dictionary_or_as_text() {
        // Two batches with different dictionaries (one with a value no row uses), the
        // same symbols as plain text: the same groups, in the order symbols first
        // appear, each row in its own series.
        let by_dict = finish(&[
            batch(
                dict(&["B", "A", "UNUSED"], &[1, 0, 1]),
                &[1, 2, 3],
                &[10, 20, 30],
            ),
            batch(dict(&["C", "A"], &[1, 0, 0]), &[4, 5, 6], &[40, 50, 60]),
        ])
        .unwrap();
        let text = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
        let by_text = finish(&[
            batch(text(&["A", "B", "A"]), &[1, 2, 3], &[10, 20, 30]),
            batch(text(&["A", "C", "C"]), &[4, 5, 6], &[40, 50, 60]),
        ])
        .unwrap();
        let want = vec![
            ("A".to_string(), vec![1, 3, 4], vec![10, 30, 40]),
            ("B".to_string(), vec![2], vec![20]),
            ("C".to_string(), vec![5, 6], vec![50, 60]),
        ];
        assert_eq!(by_dict, want);
        assert_eq!(by_text, want);
    }

    #[test]
    fn a_bad_symbol_is_refused_by_name_through_a_dictionary_too() {
        let err =
            finish(&[batch(dict(&["OK", "no/slash"], &[0, 1]), &[1, 2], &[1, 2])]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("no/slash"), "{}", err.message());
    }
}

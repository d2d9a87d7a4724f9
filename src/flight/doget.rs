//! DoGet: ranges, latest-N and predicate matches, streamed straight from chunk memory.
//!
//! A blocking producer walks the lazily mapped slices of the range (or runs the
//! predicate) and sends record batches of at most `flight.max_batch_rows` rows into a
//! bounded channel; the async side encodes them as they arrive. So the first batch
//! leaves as soon as the first chunk is mapped, memory holds only a few batches
//! whatever the range, and a closed channel (the client went away) stops the producer.
//! Raw columns are zero-copy up to the IPC encoder: each array's buffer is a slice of
//! the chunk mapping (see [`slice_batches`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::streams::{StreamGuard, Watched};
use super::ticket::{GetCommand, PredicateQuery, ReadCommand, Target};
use crate::error::Error;
use crate::query::Engine;
use crate::query::market::Selection;
use crate::query::predicate::{Compiled, Sink, run_into};
use crate::record::{SeriesMeta, ValueType};
use crate::storage::batch::{Projection, column_scale};
use crate::storage::{ChunkSlice, Series};

/// Batches buffered between the producer and the encoder. Two keep the encoder busy
/// while the producer maps the next chunk, and bound memory to a few batches.
const CHANNEL_BATCHES: usize = 2;

/// A predicate stream with sparse matches sends what it has at least this often, so
/// the client sees results while a long range is still being scanned.
const PREDICATE_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

type BatchResult = Result<RecordBatch, FlightError>;

/// Batches of at most `max_rows` rows over `slice`, built one at a time. Raw columns
/// are zero-copy: their buffers are exact slices of the chunk's mapping.
pub fn slice_batches<'a>(
    projection: &'a Projection,
    slice: &'a ChunkSlice,
    max_rows: usize,
) -> impl Iterator<Item = RecordBatch> + 'a {
    let max_rows = max_rows.max(1);
    (0..slice.len())
        .step_by(max_rows)
        .map(move |a| projection.batch(&slice.sub(a, (a + max_rows).min(slice.len()))))
}

/// The record batches of a DoGet, counted in the metrics as they leave.
pub type BatchStream = BoxStream<'static, Result<RecordBatch, FlightError>>;

/// Starts the producer for `cmd` and returns the response schema and its batches.
/// Errors known before the first byte (unknown series, bad columns, resample or
/// predicate) are returned as the call's status. The producer holds `guard` until it
/// is done.
pub fn start(
    engine: Arc<Engine>,
    cmd: GetCommand,
    guard: &Arc<StreamGuard>,
) -> Result<(SchemaRef, BatchStream), Status> {
    let max_rows = engine.config.flight.max_batch_rows;
    let (tx, rx) = mpsc::channel::<BatchResult>(CHANNEL_BATCHES);
    let producer_guard = Arc::clone(guard);
    let producer_engine = Arc::clone(&engine);
    let schema = match cmd {
        GetCommand::Aligned { key, body } => {
            let plan = engine.aligned(&key, &body)?;
            let schema = Arc::clone(&plan.schema);
            tokio::task::spawn_blocking(move || {
                let _guard = producer_guard;
                let r = plan.run(max_rows, None, &mut |b| tx.blocking_send(Ok(b)).is_ok());
                if let Err(e) = r {
                    send_error(&tx, e);
                }
            });
            schema
        }
        GetCommand::Read(cmd) => {
            let plan = ReadPlan::new(&engine, cmd)?;
            let schema = Arc::clone(&plan.schema);
            let mut out = Out::new(tx, plan.symbols.clone());
            tokio::task::spawn_blocking(move || {
                let _guard = producer_guard;
                plan.produce(&producer_engine, max_rows, &mut out);
            });
            schema
        }
    };
    let batches = ReceiverStream::new(rx).map(move |b| {
        if let Ok(b) = &b {
            count_sent(&engine, b);
        }
        b
    });
    Ok((schema, batches.boxed()))
}

/// A read resolved against the store: its series, the stream's schema and, for many
/// series, the `symbol` column's dictionary.
pub struct ReadPlan {
    pub cmd: ReadCommand,
    pub series: Vec<Arc<Series>>,
    pub schema: SchemaRef,
    symbols: Option<Symbols>,
    /// Per series, the compiled predicate (predicate reads only).
    compiled: Vec<Compiled>,
}

/// The `symbol` column of a many-series stream.
#[derive(Clone)]
struct Symbols {
    schema: SchemaRef,
    dict: ArrayRef,
}

impl ReadPlan {
    /// Resolves the series and checks the read against each, so a bad request fails
    /// before the first byte.
    pub fn new(engine: &Engine, cmd: ReadCommand) -> Result<ReadPlan, Status> {
        let series = match &cmd.target {
            Target::One(key) => vec![engine.series(key)?],
            Target::Many(sel) => {
                let all = engine.select(sel, engine.config.flight.max_series_per_ticket)?;
                if all.is_empty() {
                    let placeholder = placeholder_meta(sel)?;
                    let one = cmd.schema(&placeholder)?;
                    let schema = many_schema(&one, &[]);
                    return Ok(ReadPlan {
                        cmd,
                        series: Vec::new(),
                        schema: Arc::clone(&schema),
                        symbols: Some(Symbols {
                            schema,
                            dict: Arc::new(StringArray::from(Vec::<&str>::new())),
                        }),
                        compiled: Vec::new(),
                    });
                }
                all
            }
        };
        let mut schema = cmd.schema(&series[0].meta)?;
        let mut compiled = Vec::new();
        let first = &series[0].meta;
        for s in &series {
            // Every series must take the read (a resample that fits its timeframe, its
            // columns), and all share one schema but for their metadata. A series of
            // the first one's kind, value type and timeframe takes it as the first did
            // (the fields depend on nothing else), so a cross section of 100,000
            // series builds one schema, not 100,000.
            let same = s.meta.key.kind() == first.key.kind()
                && s.meta.value_type == first.value_type
                && s.meta.timeframe_ms == first.timeframe_ms;
            if !same && *cmd.schema(&s.meta)?.fields() != *schema.fields() {
                return Err(Status::invalid_argument(format!(
                    "series {} does not have the columns of series {}: read them separately",
                    s.meta.key, series[0].meta.key
                )));
            }
            if let Some(p) = &cmd.predicate {
                compiled.push(Compiled::new(&p.predicate, s.meta.value_type)?);
            }
        }
        let symbols = match &cmd.target {
            Target::One(_) => None,
            Target::Many(_) => {
                let names: Vec<&str> = series.iter().map(|s| s.meta.key.symbol()).collect();
                let many = many_schema(&schema, &series);
                schema = Arc::clone(&many);
                Some(Symbols {
                    schema: many,
                    dict: Arc::new(StringArray::from(names)),
                })
            }
        };
        Ok(ReadPlan {
            cmd,
            series,
            schema,
            symbols,
            compiled,
        })
    }

    /// Sends every series' batches in symbol order; stops at the first error or when
    /// the receiver is gone.
    fn produce(&self, engine: &Engine, max_rows: usize, out: &mut Out) {
        if self.series.is_empty() {
            // `"symbols": "*"` matching nothing: the schema and no rows.
            out.flush();
            return;
        }
        let spec = &self.cmd.spec;
        if self.symbols.is_some()
            && self.cmd.predicate.is_none()
            && spec.resample.is_none()
            && spec.latest == Some(1)
        {
            return self.produce_last_rows(out);
        }
        for (i, series) in self.series.iter().enumerate() {
            out.symbol = i as i32;
            let ok = match &self.cmd.predicate {
                None => engine
                    .read_into(series, &self.cmd.spec, max_rows, None, &mut |b| out.send(b))
                    .map(|_| ()),
                Some(p) => {
                    let schema = match self.cmd.schema(&series.meta) {
                        Ok(s) => s,
                        Err(e) => return out.error_status(e),
                    };
                    let mut sink = BatchSink::new(schema, series.meta.value_type, max_rows, out);
                    produce_matches(series, &self.cmd, p, &self.compiled[i], &mut sink)
                }
            };
            if let Err(e) = ok {
                return out.error(e);
            }
            if !out.open {
                return;
            }
        }
        out.flush();
    }
}

impl ReadPlan {
    /// A cross section (`latest: 1`, or `as_of`, over many series): one row per series,
    /// gathered straight into columns of up to [`CROSS_SECTION_ROWS`] rows with no
    /// batch per series. A series whose last chunk ends inside the range answers from
    /// that chunk's kept last row, so a warm cross section maps no file: what it costs
    /// per series is a snapshot and a few values.
    fn produce_last_rows(&self, out: &mut Out) {
        let spec = &self.cmd.spec;
        // The stream's columns after `symbol`, with the stored column behind each.
        let fields: Vec<DataType> = self
            .schema
            .fields()
            .iter()
            .skip(1)
            .map(|f| f.data_type().clone())
            .collect();
        let cols = match Projection::new(
            &self.series[0].meta,
            spec.columns.as_deref(),
            spec.price_format,
        ) {
            Ok(p) => p.cols,
            Err(e) => return out.error(Error::invalid(e)),
        };
        assert_eq!(cols.len(), fields.len(), "one stored column per field");
        let mut keys: Vec<i32> = Vec::new();
        // Float64 columns hold the bits of their values.
        let mut values: Vec<Vec<i64>> = vec![Vec::new(); cols.len()];
        for (i, series) in self.series.iter().enumerate() {
            let meta = &series.meta;
            let found = series.snapshot().with_last_row(spec.range, |row| {
                for (k, &c) in cols.iter().enumerate() {
                    values[k].push(match column_scale(meta, c, spec.price_format) {
                        Some(scale) => (row[c] as f64 / scale).to_bits() as i64,
                        None => row[c],
                    });
                }
            });
            match found {
                Ok(Some(())) => keys.push(i as i32),
                Ok(None) => {}
                Err(e) => return out.error(e.into()),
            }
            if keys.len() == CROSS_SECTION_ROWS {
                let arrays = take_columns(&fields, &mut values);
                if !out.send_rows(std::mem::take(&mut keys), arrays) {
                    return;
                }
            }
        }
        if !keys.is_empty() {
            let arrays = take_columns(&fields, &mut values);
            if !out.send_rows(keys, arrays) {
                return;
            }
        }
        out.flush();
    }
}

/// Rows per message of a cross section (one row per series).
const CROSS_SECTION_ROWS: usize = 65_536;

/// The gathered values as Arrow arrays of the stream's types, leaving `values` empty.
fn take_columns(fields: &[DataType], values: &mut [Vec<i64>]) -> Vec<ArrayRef> {
    fields
        .iter()
        .zip(values.iter_mut())
        .map(|(dt, v)| -> ArrayRef {
            let len = v.len();
            let buf = Buffer::from_vec(std::mem::take(v));
            match dt {
                DataType::Timestamp(_, tz) => Arc::new(
                    TimestampMillisecondArray::new(ScalarBuffer::new(buf, 0, len), None)
                        .with_timezone_opt(tz.clone()),
                ),
                DataType::Float64 => {
                    Arc::new(Float64Array::new(ScalarBuffer::new(buf, 0, len), None))
                }
                _ => Arc::new(Int64Array::new(ScalarBuffer::new(buf, 0, len), None)),
            }
        })
        .collect()
}

/// The schema of a many-series stream: `symbol` first, then the columns of one
/// series; per-series metadata that differs between the series is left out.
fn many_schema(one: &Schema, series: &[Arc<Series>]) -> SchemaRef {
    let mut fields = vec![Field::new(
        "symbol",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    )];
    fields.extend(one.fields().iter().map(|f| f.as_ref().clone()));
    let mut md = one.metadata().clone();
    md.remove("fastk.symbol");
    let mixed = series.first().is_none_or(|first| {
        series.iter().any(|s| {
            s.meta.price_scale != first.meta.price_scale
                || s.meta.volume_scale != first.meta.volume_scale
        })
    });
    if mixed {
        md.remove("fastk.price_scale");
        md.remove("fastk.volume_scale");
    }
    md.insert("fastk.series".into(), series.len().to_string());
    Arc::new(Schema::new_with_metadata(fields, md))
}

/// The columns of a selection that matches no series: a series of its kind and
/// timeframe with unit scales (a scalar's values as int64, the default value type).
/// Only its schema is used, for an empty stream.
fn placeholder_meta(sel: &Selection) -> Result<SeriesMeta, Status> {
    let key = sel.key("_")?;
    Ok(SeriesMeta {
        key,
        timeframe_ms: crate::record::standard_timeframe_ms(&sel.timeframe).unwrap_or(60_000),
        price_scale: 1,
        volume_scale: 1,
        value_type: ValueType::default(),
    })
}

/// Batches smaller than this are merged before they are sent in a many-series
/// stream, so a cross section of 2,000 series is a few messages, not 2,000.
const COALESCE_ROWS: usize = 4096;

/// The sending end of a DoGet: adds the `symbol` column of a many-series stream and
/// merges its small batches; remembers when the receiver is gone.
struct Out {
    tx: mpsc::Sender<BatchResult>,
    symbols: Option<Symbols>,
    /// Index of the current series in the dictionary.
    symbol: i32,
    held: Vec<RecordBatch>,
    held_rows: usize,
    open: bool,
}

impl Out {
    fn new(tx: mpsc::Sender<BatchResult>, symbols: Option<Symbols>) -> Out {
        Out {
            tx,
            symbols,
            symbol: 0,
            held: Vec::new(),
            held_rows: 0,
            open: true,
        }
    }

    /// Sends (or holds) one batch of the current series; false once the receiver is gone.
    fn send(&mut self, batch: RecordBatch) -> bool {
        let Some(sym) = &self.symbols else {
            self.open = self.open && self.tx.blocking_send(Ok(batch)).is_ok();
            return self.open;
        };
        let n = batch.num_rows();
        let batch = match keyed(sym, vec![self.symbol; n], batch.columns().to_vec()) {
            Ok(b) => b,
            Err(e) => {
                self.error(e);
                return false;
            }
        };
        if n >= COALESCE_ROWS {
            return self.flush() && self.forward(batch);
        }
        self.held_rows += n;
        self.held.push(batch);
        if self.held_rows >= COALESCE_ROWS {
            return self.flush();
        }
        self.open
    }

    /// Sends rows of many series as one batch: row r is of series `keys[r]`.
    fn send_rows(&mut self, keys: Vec<i32>, columns: Vec<ArrayRef>) -> bool {
        let Some(sym) = &self.symbols else {
            self.error(Error::internal(
                "rows of many series in a one-series stream",
            ));
            return false;
        };
        match keyed(sym, keys, columns) {
            Ok(b) => self.flush() && self.forward(b),
            Err(e) => {
                self.error(e);
                false
            }
        }
    }

    fn forward(&mut self, batch: RecordBatch) -> bool {
        self.open = self.open && self.tx.blocking_send(Ok(batch)).is_ok();
        self.open
    }

    /// Sends the held batches as one.
    fn flush(&mut self) -> bool {
        if self.held.is_empty() {
            return self.open;
        }
        let held = std::mem::take(&mut self.held);
        self.held_rows = 0;
        let schema = held[0].schema();
        match arrow_select::concat::concat_batches(&schema, &held) {
            Ok(b) => self.forward(b),
            Err(e) => {
                self.error(Error::internal(format!("merging batches: {e}")));
                false
            }
        }
    }

    fn error(&mut self, e: Error) {
        self.error_status(Status::from(e));
    }

    fn error_status(&mut self, s: Status) {
        self.flush();
        let _ = self.tx.blocking_send(Err(FlightError::Tonic(Box::new(s))));
        self.open = false;
    }
}

/// A batch of the many-series schema: the `symbol` column of `keys`, then `columns`.
fn keyed(sym: &Symbols, keys: Vec<i32>, columns: Vec<ArrayRef>) -> Result<RecordBatch, Error> {
    let column: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::new(
        Int32Array::from(keys),
        Arc::clone(&sym.dict),
    ));
    let mut cols = vec![column];
    cols.extend(columns);
    RecordBatch::try_new(Arc::clone(&sym.schema), cols)
        .map_err(|e| Error::internal(format!("many-series batch: {e}")))
}

/// The DoGet stream as `FlightData` messages through arrow-flight's encoder, for the
/// generated tonic service (the server itself answers DoGet through [`super::wire`],
/// which sends the same messages without copying column data).
pub fn encode(
    schema: SchemaRef,
    batches: BatchStream,
    max_bytes: usize,
    guard: Arc<StreamGuard>,
    stall: Duration,
) -> BoxStream<'static, Result<FlightData, Status>> {
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(max_bytes)
        .build(batches)
        .map(|r| r.map_err(Status::from));
    Watched::new(encoded.boxed(), guard, stall).boxed()
}

fn count_sent(engine: &Engine, b: &RecordBatch) {
    let rows = b.num_rows() as u64;
    let bytes = rows * b.num_columns() as u64 * 8;
    let m = &engine.metrics;
    m.flight_rows_sent.fetch_add(rows, Ordering::Relaxed);
    m.flight_bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    m.add_read(rows, bytes);
}

fn send_error(tx: &mpsc::Sender<BatchResult>, e: Error) {
    let _ = tx.blocking_send(Err(FlightError::Tonic(Box::new(Status::from(e)))));
}

/// Runs the predicate over one series, streaming matches as they are found (or,
/// with `latest`, keeping only the last ones and sending them at the end).
fn produce_matches(
    series: &Series,
    cmd: &ReadCommand,
    p: &PredicateQuery,
    pred: &Compiled,
    sink: &mut BatchSink<'_>,
) -> crate::error::Result<()> {
    let snap = series.snapshot();
    let range = cmd.spec.range;
    let stats = match cmd.spec.latest {
        None => run_into(&snap, range, pred, p.strategy, sink)?,
        Some(n) => {
            let mut last = LastMatches::new(n);
            let stats = run_into(&snap, range, pred, p.strategy, &mut last)?;
            last.drain_into(sink);
            stats
        }
    };
    tracing::debug!(series = %series.meta.key, ?stats, "flight predicate stream");
    sink.flush();
    Ok(())
}

/// A predicate sink that turns matches into record batches and sends them.
struct BatchSink<'a> {
    out: &'a mut Out,
    schema: SchemaRef,
    value_type: ValueType,
    max_rows: usize,
    ts: Vec<i64>,
    values: Vec<i64>,
    last_flush: Instant,
    open: bool,
}

impl<'a> BatchSink<'a> {
    fn new(
        schema: SchemaRef,
        value_type: ValueType,
        max_rows: usize,
        out: &'a mut Out,
    ) -> BatchSink<'a> {
        BatchSink {
            out,
            schema,
            value_type,
            max_rows: max_rows.max(1),
            ts: Vec::new(),
            values: Vec::new(),
            last_flush: Instant::now(),
            open: true,
        }
    }

    /// Sends the buffered matches as one batch; false once the receiver is gone.
    fn flush(&mut self) -> bool {
        self.last_flush = Instant::now();
        if self.ts.is_empty() || !self.open {
            return self.open;
        }
        let ts = std::mem::take(&mut self.ts);
        let values = std::mem::take(&mut self.values);
        let mut cols: Vec<ArrayRef> = vec![Arc::new(
            TimestampMillisecondArray::from(ts).with_timezone("UTC"),
        )];
        if self.schema.fields().len() == 2 {
            cols.push(match self.value_type {
                ValueType::I64 => Arc::new(Int64Array::from(values)),
                // The stored f64 bits are reinterpreted in place, without a copy.
                ValueType::F64 => {
                    let n = values.len();
                    Arc::new(Float64Array::new(
                        ScalarBuffer::new(Buffer::from_vec(values), 0, n),
                        None,
                    ))
                }
            });
        }
        self.open = match RecordBatch::try_new(Arc::clone(&self.schema), cols) {
            Ok(batch) => self.out.send(batch),
            Err(e) => {
                self.out
                    .error(Error::internal(format!("predicate batch: {e}")));
                false
            }
        };
        self.open
    }
}

impl Sink for BatchSink<'_> {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool {
        let mut i = 0;
        while i < ts.len() {
            let take = (self.max_rows - self.ts.len()).min(ts.len() - i);
            self.ts.extend_from_slice(&ts[i..i + take]);
            self.values.extend_from_slice(&values[i..i + take]);
            i += take;
            if self.ts.len() == self.max_rows && !self.flush() {
                return false;
            }
        }
        if !self.ts.is_empty() && self.last_flush.elapsed() >= PREDICATE_FLUSH_INTERVAL {
            return self.flush();
        }
        self.open
    }
}

/// Keeps the last `n` matches of a predicate run.
struct LastMatches {
    n: usize,
    ring: VecDeque<(i64, i64)>,
}

impl LastMatches {
    fn new(n: usize) -> LastMatches {
        LastMatches {
            n,
            ring: VecDeque::with_capacity(n.min(1 << 16)),
        }
    }

    fn drain_into(self, sink: &mut BatchSink<'_>) {
        let (ts, values): (Vec<i64>, Vec<i64>) = self.ring.into_iter().unzip();
        sink.push(&ts, &values);
    }
}

impl Sink for LastMatches {
    fn push(&mut self, ts: &[i64], values: &[i64]) -> bool {
        if self.n == 0 {
            return false;
        }
        // Only the tail of a long push can survive, so skip the rest outright.
        let skip = ts.len().saturating_sub(self.n);
        for (&t, &v) in ts[skip..].iter().zip(&values[skip..]) {
            if self.ring.len() == self.n {
                self.ring.pop_front();
            }
            self.ring.push_back((t, v));
        }
        true
    }
}

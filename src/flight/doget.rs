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

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::streams::{StreamGuard, Watched};
use super::ticket::ReadCommand;
use crate::error::Error;
use crate::query::Engine;
use crate::query::predicate::{Compiled, Sink, run_into};
use crate::record::ValueType;
use crate::storage::ChunkSlice;
use crate::storage::batch::Projection;

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
/// Errors known before the first byte (unknown series, bad columns or predicate) are
/// returned as the call's status. The producer holds `guard` until it is done.
pub fn start(
    engine: Arc<Engine>,
    cmd: ReadCommand,
    guard: &Arc<StreamGuard>,
) -> Result<(SchemaRef, BatchStream), Status> {
    let meta = Arc::clone(&engine.series(&cmd.key)?.meta);
    let schema = cmd.schema(&meta)?;
    let max_rows = engine.config.flight.max_batch_rows;
    let (tx, rx) = mpsc::channel::<BatchResult>(CHANNEL_BATCHES);
    let producer_guard = Arc::clone(guard);
    let producer_engine = Arc::clone(&engine);
    match &cmd.predicate {
        None => {
            let projection = cmd.projection(&meta)?;
            tokio::task::spawn_blocking(move || {
                let _guard = producer_guard;
                produce_range(&producer_engine, &cmd, &projection, max_rows, &tx);
            });
        }
        Some(p) => {
            let compiled = Compiled::new(&p.predicate, meta.value_type)?;
            let sink = BatchSink::new(Arc::clone(&schema), meta.value_type, max_rows, tx);
            tokio::task::spawn_blocking(move || {
                let _guard = producer_guard;
                produce_matches(&producer_engine, &cmd, &compiled, sink);
            });
        }
    }
    let batches = ReceiverStream::new(rx).map(move |b| {
        if let Ok(b) = &b {
            count_sent(&engine, b);
        }
        b
    });
    Ok((schema, batches.boxed()))
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

/// Sends the batches of a plain range or latest-N read; returns when done, on the
/// first storage error, or as soon as the receiver is gone.
fn produce_range(
    engine: &Engine,
    cmd: &ReadCommand,
    projection: &Projection,
    max_rows: usize,
    tx: &mpsc::Sender<BatchResult>,
) {
    let slices = match engine.stream(&cmd.key, cmd.range, cmd.latest) {
        Ok((_, s)) => s,
        Err(e) => return send_error(tx, e),
    };
    for slice in slices {
        let slice = match slice {
            Ok(s) => s,
            Err(e) => return send_error(tx, e.into()),
        };
        for batch in slice_batches(projection, &slice, max_rows) {
            if tx.blocking_send(Ok(batch)).is_err() {
                return;
            }
        }
    }
}

/// Runs the predicate, streaming matches as they are found (or, with `latest`,
/// keeping only the last ones and sending them at the end).
fn produce_matches(engine: &Engine, cmd: &ReadCommand, pred: &Compiled, mut sink: BatchSink) {
    let snap = match engine.series(&cmd.key) {
        Ok(s) => s.snapshot(),
        Err(e) => return send_error(&sink.tx, e),
    };
    let strategy = cmd
        .predicate
        .as_ref()
        .map(|p| p.strategy)
        .unwrap_or_default();
    let stats = match cmd.latest {
        None => run_into(&snap, cmd.range, pred, strategy, &mut sink),
        Some(n) => {
            let mut last = LastMatches::new(n);
            let stats = run_into(&snap, cmd.range, pred, strategy, &mut last);
            if stats.is_ok() {
                last.drain_into(&mut sink);
            }
            stats
        }
    };
    match stats {
        Ok(stats) => {
            tracing::debug!(series = %cmd.key, ?stats, "flight predicate stream");
            sink.flush();
        }
        Err(e) => send_error(&sink.tx, e),
    }
}

/// A predicate sink that turns matches into record batches and sends them.
struct BatchSink {
    tx: mpsc::Sender<BatchResult>,
    schema: SchemaRef,
    value_type: ValueType,
    max_rows: usize,
    ts: Vec<i64>,
    values: Vec<i64>,
    last_flush: Instant,
    open: bool,
}

impl BatchSink {
    fn new(
        schema: SchemaRef,
        value_type: ValueType,
        max_rows: usize,
        tx: mpsc::Sender<BatchResult>,
    ) -> BatchSink {
        BatchSink {
            tx,
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
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(FlightError::from);
        self.open = self.tx.blocking_send(batch).is_ok();
        self.open
    }
}

impl Sink for BatchSink {
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

    fn drain_into(self, sink: &mut BatchSink) {
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

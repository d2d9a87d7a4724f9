//! DoGet: ranges, latest-N and predicate matches, streamed straight from chunk memory.
//!
//! A blocking producer walks the lazily mapped slices of the range (or runs the
//! predicate) and sends record batches of at most `flight.max_batch_rows` rows into a
//! bounded channel; the async side encodes them as they arrive. So the first batch
//! leaves as soon as the first chunk is mapped, memory holds only a few batches
//! whatever the range, and a closed channel (the client went away) stops the producer.
//! Raw columns are zero-copy up to the IPC encoder: each array's buffer is a slice of
//! the chunk mapping. What is read, and how, is [`crate::query::stream`]'s work; this
//! file only carries its batches to the wire.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_array::RecordBatch;
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
use super::ticket::GetCommand;
use crate::error::Error;
use crate::query::Engine;
use crate::query::stream::ReadPlan;

/// Batches buffered between the producer and the encoder. Two keep the encoder busy
/// while the producer maps the next chunk, and bound memory to a few batches.
const CHANNEL_BATCHES: usize = 2;

type BatchResult = Result<RecordBatch, FlightError>;

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
        GetCommand::Ticks(req) => {
            let plan = engine.tick_stream(req)?;
            let schema = plan.schema();
            tokio::task::spawn_blocking(move || {
                let _guard = producer_guard;
                if let Err(e) = plan.run(max_rows, &mut |b| tx.blocking_send(Ok(b)).is_ok()) {
                    send_error(&tx, e);
                }
            });
            schema
        }
        GetCommand::Read(cmd) => {
            let plan = ReadPlan::new(&engine, cmd)?;
            let schema = Arc::clone(&plan.schema);
            tokio::task::spawn_blocking(move || {
                let _guard = producer_guard;
                let r = plan.produce(&producer_engine, max_rows, &mut |b| {
                    tx.blocking_send(Ok(b)).is_ok()
                });
                if let Err(e) = r {
                    send_error(&tx, e);
                }
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

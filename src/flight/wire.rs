//! DoGet on the wire without copying column data.
//!
//! The generated tonic service would send each batch through two copies: arrow-ipc
//! assembles an IPC body by copying every buffer, then prost copies that body into the
//! gRPC frame. Here the gRPC response body is built from [`Bytes`] chunks instead: per
//! message, one small chunk holds the gRPC prefix, the `FlightData` protobuf fields and
//! the IPC `Message` flatbuffer, and every column's values follow as their own chunk,
//! which for a range read is an exact slice of the chunk file's mapping. hyper hands
//! those chunks to the socket as they are, so the only copy left is the kernel's.
//!
//! The bytes on the wire are the same `FlightData` messages any Flight client decodes
//! (checked by `tests/flight.rs` with the arrow-flight client and by the pyarrow
//! suite). Every other Flight method, and DoGet for anything this module does not
//! handle, goes to the generated service unchanged.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::{Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, Ticket};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::{ArrowError, DataType, Schema};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt, stream};
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

use super::conn::{CallBody, ConnInfo};
use super::doget::BatchStream;
use super::service::FlightSvc;
use super::streams::Watched;

/// The gRPC path of DoGet.
pub const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// The gRPC path of DoPut, whose body is watched for a clean end ([`super::putbody`]).
pub const DO_PUT_PATH: &str = "/arrow.flight.protocol.FlightService/DoPut";

/// Largest DoGet request body accepted (a ticket is a small JSON document).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Protobuf tag of `FlightData.data_header` (field 2, length-delimited).
const TAG_DATA_HEADER: u8 = 0x12;
/// Protobuf tag of `FlightData.data_body` (field 1000, length-delimited), as a varint.
const TAG_DATA_BODY: [u8; 2] = [0xC2, 0x3E];

/// The Flight service: DoGet answered here, everything else by the generated server.
#[derive(Clone)]
pub struct FlightRoutes {
    svc: Arc<FlightSvc>,
    generated: FlightServiceServer<FlightSvc>,
}

impl FlightRoutes {
    pub fn new(svc: Arc<FlightSvc>, generated: FlightServiceServer<FlightSvc>) -> FlightRoutes {
        FlightRoutes { svc, generated }
    }
}

impl NamedService for FlightRoutes {
    const NAME: &'static str = "arrow.flight.protocol.FlightService";
}

impl tower::Service<http::Request<Body>> for FlightRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <FlightServiceServer<FlightSvc> as tower::Service<http::Request<Body>>>::poll_ready(
            &mut self.generated,
            cx,
        )
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The call counts as activity on its connection (the idle timeout) from now
        // until its response body is dropped.
        let call = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.activity.begin());
        let routed = self.route(req);
        match call {
            None => routed,
            Some(call) => Box::pin(async move {
                let res = match routed.await {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(res.map(|b| CallBody::wrap(b, call)))
            }),
        }
    }
}

impl FlightRoutes {
    fn route(
        &mut self,
        req: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, Infallible>> {
        let path = req.uri().path();
        let (get, put) = (path == DO_GET_PATH, path == DO_PUT_PATH);
        match (get, put) {
            (true, _) => {
                let svc = Arc::clone(&self.svc);
                Box::pin(async move { Ok(do_get(svc, req).await) })
            }
            (_, true) => {
                let (mut parts, body) = req.into_parts();
                let (body, end) = super::putbody::watch(body);
                parts.extensions.insert(end);
                Box::pin(tower::Service::call(
                    &mut self.generated,
                    http::Request::from_parts(parts, body),
                ))
            }
            _ => Box::pin(tower::Service::call(&mut self.generated, req)),
        }
    }
}

/// Answers one DoGet: a trailers-only error response when the call is refused before
/// the first message, else the streamed messages and a `grpc-status` trailer.
async fn do_get(svc: Arc<FlightSvc>, req: http::Request<Body>) -> http::Response<Body> {
    match start(&svc, req).await {
        Ok(body) => {
            let mut res = http::Response::new(body);
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            res
        }
        Err(status) => status.into_http(),
    }
}

async fn start(svc: &FlightSvc, req: http::Request<Body>) -> Result<Body, Status> {
    let (parts, body) = req.into_parts();
    let ticket = svc.refused("DoGet", read_ticket(&parts.headers, body).await)?;
    let metadata = MetadataMap::from_headers(parts.headers);
    let peer = parts
        .extensions
        .get::<super::conn::ConnInfo>()
        .and_then(|c| c.tcp.remote_addr)
        .map(|a| a.ip());
    let (schema, batches, guard) = svc.open_get(&metadata, peer, &ticket.ticket).await?;
    let flight = &svc.engine().config.flight;
    let stall = Duration::from_secs(flight.stall_timeout_s);
    let messages = encode(&schema, batches, flight.max_message_bytes).boxed();
    Ok(Body::new(StreamBody::new(with_trailers(Watched::new(
        messages, guard, stall,
    )))))
}

/// The request's single length-prefixed `Ticket` message.
async fn read_ticket(headers: &HeaderMap, body: Body) -> Result<Ticket, Status> {
    if let Some(enc) = headers.get("grpc-encoding")
        && enc.as_bytes() != b"identity"
    {
        return Err(Status::unimplemented(format!(
            "grpc-encoding {enc:?} is not supported; send DoGet requests uncompressed"
        )));
    }
    let bytes = Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("could not read the DoGet request: {e}")))?
        .to_bytes();
    if bytes.len() < 5 || bytes[0] != 0 {
        return Err(Status::invalid_argument(
            "a DoGet request must be one uncompressed gRPC message holding a Ticket",
        ));
    }
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if len != bytes.len() - 5 {
        return Err(Status::invalid_argument(
            "a DoGet request must be exactly one gRPC message holding a Ticket",
        ));
    }
    Ticket::decode(&bytes[5..])
        .map_err(|e| Status::invalid_argument(format!("the DoGet request is not a Ticket: {e}")))
}

/// Ends the body with the `grpc-status` trailer: 0 after the last message, or the
/// error's code and message when the stream fails.
fn with_trailers(
    messages: impl Stream<Item = Result<Vec<Bytes>, Status>> + Send + 'static,
) -> impl Stream<Item = Result<Frame<Bytes>, Status>> + Send + 'static {
    let mut done = false;
    messages
        .map(Some)
        .chain(stream::once(async { None }))
        .flat_map(move |item| {
            let frames: Vec<Result<Frame<Bytes>, Status>> = match item {
                _ if done => Vec::new(),
                Some(Ok(chunks)) => chunks.into_iter().map(|c| Ok(Frame::data(c))).collect(),
                Some(Err(status)) => {
                    done = true;
                    vec![Ok(Frame::trailers(status_trailers(&status)))]
                }
                None => {
                    done = true;
                    vec![Ok(Frame::trailers(status_trailers(&Status::ok(""))))]
                }
            };
            stream::iter(frames)
        })
}

fn status_trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    map
}

/// The schema message, then each batch as one or more messages of at most about
/// `max_bytes` of column data; every item is one message's body chunks. Batches of
/// null-free fixed-width and `Utf8` columns (every range read: bars, scalars, and
/// ticks with their uint64 `seq` and int8 `side`; the tape and other many-symbol
/// reads with their `symbol`) go out without copying their values; any other batch
/// (nulls, dictionaries, views) through arrow-ipc's encoder.
pub fn encode(
    schema: &Schema,
    batches: BatchStream,
    max_bytes: usize,
) -> impl Stream<Item = Result<Vec<Bytes>, Status>> + Send + 'static {
    let opts = IpcWriteOptions::default();
    let mut general = GeneralEncoder {
        generator: IpcDataGenerator::default(),
        tracker: DictionaryTracker::new(false),
        compression: IpcWriteContext::default(),
        opts,
    };
    // The schema goes through the stream's dictionary tracker, which gives each
    // dictionary field (the `symbol` of a many-series read) the id its batches use.
    let schema_msg: FlightData = general
        .generator
        .schema_to_bytes_with_dictionary_tracker(schema, &mut general.tracker, &general.opts)
        .into();
    let first = stream::once(async move { Ok(vec![prost_message(&schema_msg)]) });
    let rest = batches.flat_map(move |b| {
        let msgs: Vec<Result<Vec<Bytes>, Status>> = match b {
            Ok(batch) => {
                let encoded = if zero_copy(&batch) {
                    batch_messages(&batch, max_bytes)
                } else {
                    general.messages(&batch, max_bytes)
                };
                match encoded {
                    Ok(m) => m.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(Status::internal(format!("encoding a batch: {e}")))],
                }
            }
            Err(e) => vec![Err(Status::from(e))],
        };
        stream::iter(msgs)
    });
    first.chain(rest)
}

/// Whether every column of `batch` is a null-free fixed-width or `Utf8` column (sent
/// without copy).
fn zero_copy(batch: &RecordBatch) -> bool {
    batch.columns().iter().all(|a| {
        (value_width(a.data_type()).is_some() || *a.data_type() == DataType::Utf8)
            && a.null_count() == 0
    })
}

/// Bytes per value of a column the zero-copy encoder sends: fixed-width integers,
/// floats and timestamps (one values buffer, no children); `None` for the rest
/// (booleans are bit-packed, strings and dictionaries have more buffers).
fn value_width(t: &DataType) -> Option<usize> {
    match t {
        DataType::Int8 | DataType::UInt8 => Some(1),
        DataType::Int16 | DataType::UInt16 => Some(2),
        DataType::Int32 | DataType::UInt32 | DataType::Float32 => Some(4),
        DataType::Int64 | DataType::UInt64 | DataType::Float64 | DataType::Timestamp(..) => Some(8),
        _ => None,
    }
}

/// IPC body buffers start at multiples of this many bytes (the format's rule).
const IPC_ALIGN: usize = 8;

/// Zero bytes that pad a column's values to [`IPC_ALIGN`].
static PADDING: [u8; IPC_ALIGN] = [0; IPC_ALIGN];

/// `len` rounded up to [`IPC_ALIGN`].
fn padded(len: usize) -> usize {
    len.div_ceil(IPC_ALIGN) * IPC_ALIGN
}

/// arrow-ipc's encoder for batches the zero-copy path does not take; it keeps the
/// stream's dictionary state.
struct GeneralEncoder {
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    compression: IpcWriteContext,
    opts: IpcWriteOptions,
}

impl GeneralEncoder {
    /// `batch` as dictionary messages then record batch messages, split so each
    /// holds about `max_bytes` at most.
    fn messages(
        &mut self,
        batch: &RecordBatch,
        max_bytes: usize,
    ) -> Result<Vec<Vec<Bytes>>, ArrowError> {
        let n = batch.num_rows();
        let bytes: usize = batch
            .columns()
            .iter()
            .map(|a| a.get_buffer_memory_size())
            .sum();
        let per_row = (bytes / n.max(1)).max(1);
        let rows_per_msg = (max_bytes.saturating_sub(4096) / per_row).max(1);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let len = rows_per_msg.min(n - at);
            let part = batch.slice(at, len);
            let (dicts, data) = self.generator.encode(
                &part,
                &mut self.tracker,
                &self.opts,
                &mut self.compression,
            )?;
            for d in dicts {
                out.push(vec![prost_message(&FlightData::from(d))]);
            }
            out.push(vec![prost_message(&FlightData::from(data))]);
            at += len;
            if at >= n {
                return Ok(out);
            }
        }
    }
}

/// A protobuf message with its gRPC length prefix, copied: the schema message, and
/// the batches the zero-copy path does not take (arrow-ipc has copied them already).
fn prost_message(m: &FlightData) -> Bytes {
    let len = m.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(len as u32);
    m.encode(&mut b)
        .expect("a BytesMut with enough capacity takes any message");
    b.freeze()
}

/// `batch` as gRPC messages of at most about `max_bytes` of column data each.
pub fn batch_messages(
    batch: &RecordBatch,
    max_bytes: usize,
) -> Result<Vec<Vec<Bytes>>, ArrowError> {
    let n = batch.num_rows();
    let row_bytes: usize = batch
        .columns()
        .iter()
        .map(|a| {
            value_width(a.data_type())
                // A string: its offset and the values buffer averaged over the rows
                // (a slice's whole buffer: never less than its share), as the
                // general encoder estimates.
                .unwrap_or_else(|| {
                    4 + a.to_data().buffers().get(1).map_or(0, |b| b.len()) / n.max(1)
                })
        })
        .sum::<usize>()
        .max(1);
    let rows_per_msg = (max_bytes.saturating_sub(4096) / row_bytes).max(1);
    if n <= rows_per_msg {
        return Ok(vec![message(batch)?]);
    }
    (0..n)
        .step_by(rows_per_msg)
        .map(|at| message(&batch.slice(at, rows_per_msg.min(n - at))))
        .collect()
}

/// One `FlightData` message for `batch`: the prefix chunk, then one chunk per buffer
/// of each column (followed by zero padding when its length is not a multiple of
/// [`IPC_ALIGN`]).
fn message(batch: &RecordBatch) -> Result<Vec<Bytes>, ArrowError> {
    let rows = batch.num_rows();
    let cols = batch
        .columns()
        .iter()
        .map(|a| column_bytes(a.as_ref()))
        .collect::<Result<Vec<Vec<Bytes>>, ArrowError>>()?;
    let header = ipc_header(rows, &cols);
    let body_len: usize = cols.iter().flatten().map(|c| padded(c.len())).sum();
    let proto_len = 1
        + varint_len(header.len() as u64)
        + header.len()
        + TAG_DATA_BODY.len()
        + varint_len(body_len as u64)
        + body_len;
    let mut first = BytesMut::with_capacity(32 + header.len());
    first.put_u8(0);
    first.put_u32(
        u32::try_from(proto_len)
            .map_err(|_| ArrowError::InvalidArgumentError("message over 4 GiB".into()))?,
    );
    first.put_u8(TAG_DATA_HEADER);
    put_varint(&mut first, header.len() as u64);
    first.put_slice(&header);
    first.put_slice(&TAG_DATA_BODY);
    put_varint(&mut first, body_len as u64);
    let mut chunks = Vec::with_capacity(1 + 4 * cols.len());
    chunks.push(first.freeze());
    for c in cols.into_iter().flatten().filter(|c| !c.is_empty()) {
        let pad = padded(c.len()) - c.len();
        chunks.push(c);
        if pad > 0 {
            chunks.push(Bytes::from_static(&PADDING[..pad]));
        }
    }
    debug_assert_eq!(
        chunks[1..].iter().map(Bytes::len).sum::<usize>(),
        body_len,
        "the body holds what the header says"
    );
    Ok(chunks)
}

/// The data buffers of a null-free column, after its empty validity buffer: the
/// values of a fixed-width column as a zero-copy [`Bytes`] over the array's own
/// buffer (the chunk mapping, for range reads); a `Utf8` column's offsets and values.
fn column_bytes(a: &dyn Array) -> Result<Vec<Bytes>, ArrowError> {
    let refused = || {
        ArrowError::InvalidArgumentError(format!(
            "the zero-copy encoder takes null-free fixed-width and Utf8 columns, not {}{}",
            a.data_type(),
            if a.null_count() > 0 {
                " with nulls"
            } else {
                ""
            }
        ))
    };
    if a.null_count() > 0 {
        return Err(refused());
    }
    let data = a.to_data();
    if let Some(w) = value_width(a.data_type()) {
        let values = data.buffers()[0].slice_with_length(data.offset() * w, data.len() * w);
        return Ok(vec![Bytes::from_owner(OwnedBuffer(values))]);
    }
    if *a.data_type() != DataType::Utf8 {
        return Err(refused());
    }
    utf8_bytes(&data)
}

/// A `Utf8` column's offsets (from 0, as a reader expects of a sliced column: rebased,
/// the one copy, of 4 bytes a row) and the values they span, uncopied.
fn utf8_bytes(data: &arrow_data::ArrayData) -> Result<Vec<Bytes>, ArrowError> {
    const W: usize = std::mem::size_of::<i32>();
    let offsets: &[i32] = &data.buffer::<i32>(0)[..=data.len()];
    let (first, last) = (offsets[0], offsets[data.len()]);
    let span = |o: i32| {
        usize::try_from(o)
            .map_err(|_| ArrowError::InvalidArgumentError("a negative string offset".into()))
    };
    let (lo, hi) = (span(first)?, span(last)?);
    let offsets = if first == 0 {
        Bytes::from_owner(OwnedBuffer(
            data.buffers()[0].slice_with_length(data.offset() * W, (data.len() + 1) * W),
        ))
    } else {
        let rebased: Vec<u8> = offsets
            .iter()
            .flat_map(|o| (o - first).to_le_bytes())
            .collect();
        Bytes::from(rebased)
    };
    let values = data.buffers()[1].slice_with_length(lo, hi - lo);
    Ok(vec![offsets, Bytes::from_owner(OwnedBuffer(values))])
}

/// An arrow [`Buffer`] lent to [`Bytes`]; the bytes live as long as the buffer's owner
/// (for a range read, the chunk's `Arc` mapping).
struct OwnedBuffer(Buffer);

impl AsRef<[u8]> for OwnedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The IPC `Message` flatbuffer of a record batch whose columns' buffers are `cols`,
/// laid out back to back in the body (each column: an empty validity buffer, then its
/// data buffers, each padded to [`IPC_ALIGN`]).
fn ipc_header(rows: usize, cols: &[Vec<Bytes>]) -> Vec<u8> {
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(256);
    let nodes: Vec<arrow_ipc::FieldNode> = cols
        .iter()
        .map(|_| arrow_ipc::FieldNode::new(rows as i64, 0))
        .collect();
    let mut buffers = Vec::with_capacity(3 * cols.len());
    let mut offset = 0i64;
    for col in cols {
        buffers.push(arrow_ipc::Buffer::new(offset, 0));
        for c in col {
            buffers.push(arrow_ipc::Buffer::new(offset, c.len() as i64));
            offset += padded(c.len()) as i64;
        }
    }
    let nodes = fbb.create_vector(&nodes);
    let buffers = fbb.create_vector(&buffers);
    let mut rb = arrow_ipc::RecordBatchBuilder::new(&mut fbb);
    rb.add_length(rows as i64);
    rb.add_nodes(nodes);
    rb.add_buffers(buffers);
    let rb = rb.finish();
    let mut m = arrow_ipc::MessageBuilder::new(&mut fbb);
    m.add_version(arrow_ipc::MetadataVersion::V5);
    m.add_header_type(arrow_ipc::MessageHeader::RecordBatch);
    m.add_header(rb.as_union_value());
    m.add_bodyLength(offset);
    let m = m.finish();
    fbb.finish(m, None);
    fbb.finished_data().to_vec()
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, TimestampMillisecondArray};
    use arrow_flight::utils::flight_data_to_arrow_batch;
    use arrow_schema::{Field, TimeUnit};
    use std::collections::HashMap;

    fn batch(n: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("open", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
        ]));
        let ts =
            TimestampMillisecondArray::from((0..n as i64).map(|i| i * 60_000).collect::<Vec<_>>())
                .with_timezone("UTC");
        let open = Int64Array::from((0..n as i64).map(|i| i * 7 - 3).collect::<Vec<_>>());
        let value = Float64Array::from((0..n).map(|i| i as f64 / 3.0).collect::<Vec<_>>());
        RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(open), Arc::new(value)]).unwrap()
    }

    /// Parses our hand-built bytes back as prost `FlightData` and decodes them with
    /// arrow-flight's own decoder.
    fn decode(chunks: &[Bytes], schema: &Arc<Schema>) -> RecordBatch {
        let all: Vec<u8> = chunks.concat();
        assert_eq!(all[0], 0, "uncompressed");
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        assert_eq!(len, all.len() - 5, "the prefix counts the whole message");
        let fd = FlightData::decode(&all[5..]).unwrap();
        flight_data_to_arrow_batch(&fd, Arc::clone(schema), &HashMap::new()).unwrap()
    }

    /// Decoded one after another, `msgs` give every row of `part` once, in order.
    fn assert_messages_are_the_rows(msgs: &[Vec<Bytes>], part: &RecordBatch) {
        let mut at = 0;
        for m in msgs {
            let got = decode(m, &part.schema());
            assert_eq!(got, part.slice(at, got.num_rows()));
            at += got.num_rows();
        }
        assert_eq!(at, part.num_rows());
    }

    #[test]
    fn messages_decode_to_the_same_batch_and_columns_are_not_copied() {
        let b = batch(1000);
        let msgs = batch_messages(&b, 1 << 20).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(decode(&msgs[0], &b.schema()), b);
        // Each column chunk points at the array's own memory.
        for (chunk, col) in msgs[0][1..].iter().zip(b.columns()) {
            let values = col.to_data().buffers()[0].as_ptr();
            assert_eq!(chunk.as_ptr(), values, "column bytes were copied");
        }
    }

    #[test]
    fn slices_and_splits_keep_every_row_once() {
        let b = batch(10_000).slice(123, 9_000);
        // 24 bytes per row: about 2,500 rows per message under a 64 KiB budget.
        let msgs = batch_messages(&b, 64 << 10).unwrap();
        assert!(msgs.len() > 3, "{} messages", msgs.len());
        let mut at = 0;
        for m in &msgs {
            let part = decode(m, &b.schema());
            assert_eq!(part, b.slice(at, part.num_rows()));
            at += part.num_rows();
        }
        assert_eq!(at, b.num_rows());
        let empty = batch(0);
        assert_eq!(
            decode(
                &batch_messages(&empty, 1 << 20).unwrap()[0],
                &empty.schema()
            ),
            empty
        );
    }

    /// A tick batch: uint64 `seq` and int8 `side` beside 8-byte columns, at row counts
    /// that leave `side` unaligned, sliced at odd offsets and split.
    #[test]
    fn narrow_and_unsigned_columns_go_out_padded_and_uncopied() {
        use arrow_array::{Int8Array, TimestampNanosecondArray, UInt64Array};
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("seq", DataType::UInt64, false),
            Field::new("side", DataType::Int8, false),
            Field::new("price", DataType::Int64, false),
        ]));
        let n = 10_001usize;
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(
                        (0..n as i64).map(|i| i / 3).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(UInt64Array::from_iter_values(
                    (0..n as u64).map(|i| i % 3 + (1 << 63)),
                )),
                Arc::new(Int8Array::from_iter_values(
                    (0..n).map(|i| (i % 3) as i8 - 1),
                )),
                Arc::new(Int64Array::from(
                    (0..n as i64).map(|i| i * 5).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        assert!(zero_copy(&b));
        for (start, len, budget) in [(0, n, 1 << 20), (3, 9_995, 1 << 20), (7, 9_001, 20_000)] {
            let part = b.slice(start, len);
            let msgs = batch_messages(&part, budget).unwrap();
            assert_messages_are_the_rows(&msgs, &part);
        }
        // The side column's chunk is the array's own memory, then its padding.
        let msgs = batch_messages(&b, 1 << 20).unwrap();
        let side = b.column(2).to_data().buffers()[0].as_ptr();
        let i = msgs[0]
            .iter()
            .position(|c| c.as_ptr() == side)
            .expect("side not copied");
        assert_eq!((msgs[0][i].len(), msgs[0][i + 1].len()), (n, padded(n) - n));
    }

    #[test]
    fn null_or_variable_width_columns_are_refused_not_mangled() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let with_null = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        assert!(batch_messages(&with_null, 1 << 20).is_err());
        let strings = |a: arrow_array::ArrayRef| {
            let schema = Arc::new(Schema::new(vec![Field::new(
                "s",
                a.data_type().clone(),
                true,
            )]));
            RecordBatch::try_new(schema, vec![a]).unwrap()
        };
        let null_string = strings(Arc::new(arrow_array::StringArray::from(vec![
            Some("a"),
            None,
        ])));
        assert!(!zero_copy(&null_string));
        assert!(batch_messages(&null_string, 1 << 20).is_err());
        let large = strings(Arc::new(arrow_array::LargeStringArray::from(vec![
            "a", "b",
        ])));
        assert!(!zero_copy(&large));
        assert!(batch_messages(&large, 1 << 20).is_err());
    }

    /// A tape batch: a `symbol` string column beside fixed-width ones, whole (values
    /// and offsets uncopied), sliced at odd offsets (offsets rebased) and split.
    #[test]
    fn string_columns_go_out_with_offsets_from_zero() {
        use arrow_array::StringArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Int64, false),
        ]));
        let n = 10_003usize;
        let symbols: Vec<String> = (0..n).map(|i| format!("S{}", i % 97 * 1_001)).collect();
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(symbols.iter())),
                Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        assert!(zero_copy(&b));
        let msgs = batch_messages(&b, 1 << 20).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(decode(&msgs[0], &schema), b);
        let data = b.column(0).to_data();
        for buffer in data.buffers() {
            assert!(
                msgs[0].iter().any(|c| c.as_ptr() == buffer.as_ptr()),
                "a string buffer was copied"
            );
        }
        for (start, len, budget) in [
            (1, n - 1, 1 << 20),
            (5_000, 17, 1 << 20),
            (7, 9_001, 20_000),
        ] {
            let part = b.slice(start, len);
            let msgs = batch_messages(&part, budget).unwrap();
            if budget < 1 << 20 {
                assert!(msgs.len() > 3, "{} messages", msgs.len());
            }
            assert_messages_are_the_rows(&msgs, &part);
        }
        let empty = b.slice(n, 0);
        assert_eq!(
            decode(&batch_messages(&empty, 1 << 20).unwrap()[0], &schema),
            empty
        );
    }

    #[test]
    fn varints_match_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            u32::MAX as u64,
        ] {
            let mut ours = BytesMut::new();
            put_varint(&mut ours, v);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(&ours[..], &theirs[..], "{v}");
            assert_eq!(varint_len(v), theirs.len());
        }
    }
}

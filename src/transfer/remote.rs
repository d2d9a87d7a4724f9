//! Import and export through a running server's Arrow Flight endpoint.
//!
//! This is the safe way to load data while a server runs: the server keeps the store
//! lock, and the whole import travels as ONE DoPut stream, which the server commits as
//! one all-or-nothing write (see the contract's DoPut). The series' scales come from
//! GetSchema's `fastk.*` metadata, so real prices convert exactly as they would
//! locally. The CLI is synchronous; a small current-thread runtime drives tonic.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, TimestampMillisecondArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Schema, SchemaRef, TimeUnit};
use futures::{StreamExt, TryStreamExt};

use super::{Result, TransferError};
use crate::query::types::WriteResponse;
use crate::record::{SEQ_UNASSIGNED, SeriesKey, SeriesKind, SeriesMeta, TsRange, ValueType};
use crate::storage::WriteBatch;
use crate::storage::batch::Projection;

/// Rows per DoPut batch (the contract's default DoGet batch size).
const PUT_BATCH_ROWS: usize = 65_536;
/// Largest message accepted from the server.
const MAX_DECODE_BYTES: usize = 256 << 20;

/// A connected Flight client.
pub struct FlightRemote {
    rt: tokio::runtime::Runtime,
    client: FlightClient,
    addr: String,
}

impl FlightRemote {
    /// Connects to `addr` (`host:port`, `http://host:port`, or `grpc+tls://host:port`
    /// / `https://host:port` for a server with TLS, trusting `tls.ca`), sending `token`
    /// as a bearer token on every call when given.
    pub fn connect(
        addr: &str,
        token: Option<&str>,
        tls: &crate::tls::ClientFiles,
    ) -> Result<FlightRemote> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TransferError::Remote(format!("cannot start a runtime: {e}")))?;
        let (host, secure) = match addr.split_once("://") {
            Some(("grpc+tls" | "https", rest)) => (rest, true),
            Some((_, rest)) => (rest, tls.ca.is_some()),
            None => (addr, tls.ca.is_some()),
        };
        let url = format!("{}://{host}", if secure { "https" } else { "http" });
        let tls_config = match secure {
            true => Some(tls.tonic().map_err(TransferError::Usage)?),
            false => None,
        };
        let channel = rt
            .block_on(async {
                let mut e = tonic::transport::Endpoint::from_shared(url.clone())?;
                if let Some(c) = tls_config {
                    e = e.tls_config(c)?;
                }
                e.connect().await
            })
            .map_err(|e| {
                TransferError::Remote(format!("cannot reach the Flight server at {url}: {e}"))
            })?;
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_DECODE_BYTES)
            .max_encoding_message_size(MAX_DECODE_BYTES);
        let mut client = FlightClient::new_from_inner(inner);
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            client
                .add_header("authorization", &format!("Bearer {t}"))
                .map_err(|e| TransferError::Remote(format!("bad token: {e}")))?;
        }
        Ok(FlightRemote {
            rt,
            client,
            addr: addr.to_string(),
        })
    }

    /// The series' metadata, from GetSchema's `fastk.*` schema metadata, or `None`
    /// when the server does not have the series.
    pub fn series_meta(&mut self, key: &SeriesKey) -> Result<Option<SeriesMeta>> {
        let cmd = ticket_json(key, TsRange::all(), "raw");
        let schema = match self
            .rt
            .block_on(self.client.get_schema(FlightDescriptor::new_cmd(cmd)))
        {
            Ok(s) => s,
            Err(FlightError::Tonic(s)) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e, key)),
        };
        let md = schema.metadata();
        let num = |k: &str| md.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(1);
        let value_type = match schema.field_with_name("value").map(|f| f.data_type()) {
            Ok(DataType::Float64) => ValueType::F64,
            _ => ValueType::I64,
        };
        Ok(Some(SeriesMeta {
            key: key.clone(),
            timeframe_ms: num("fastk.timeframe_ms"),
            price_scale: num("fastk.price_scale"),
            volume_scale: match key.kind().is_tick() {
                true => num("fastk.size_scale"),
                false => num("fastk.volume_scale"),
            },
            value_type,
        }))
    }

    /// Sends every row as one DoPut stream (one write) and returns the server's answer.
    pub fn put(&mut self, meta: &SeriesMeta, batch: WriteBatch) -> Result<WriteResponse> {
        let (schema, skip) = put_schema(meta, &batch)?;
        let cols = Arc::new(batch);
        let n = cols.len();
        let f64_value = meta.value_type == ValueType::F64 && meta.key.kind() == SeriesKind::Scalar;
        let batches = (0..n.max(1)).step_by(PUT_BATCH_ROWS).map(move |a| {
            let b = (a + PUT_BATCH_ROWS).min(n);
            Ok(to_record_batch(&schema, &cols, skip, a..b, f64_value))
        });
        let descriptor = FlightDescriptor::new_path(meta.key.parts());
        let stream = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(batches));
        let key = meta.key.clone();
        let results = self.rt.block_on(async {
            let results = self.client.do_put(stream).await?;
            results.try_collect::<Vec<_>>().await
        });
        let results = results.map_err(|e| self.error(e, &key))?;
        let md = results
            .first()
            .map(|r| r.app_metadata.clone())
            .unwrap_or_default();
        serde_json::from_slice(&md).map_err(|e| {
            TransferError::Remote(format!(
                "the server's DoPut answer is not a write response: {e}"
            ))
        })
    }

    /// Streams `range` of a series (raw prices) batch by batch into `each`.
    pub fn get(
        &mut self,
        key: &SeriesKey,
        range: TsRange,
        mut each: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let ticket = Ticket::new(ticket_json(key, range, "raw"));
        let mut stream = self
            .rt
            .block_on(self.client.do_get(ticket))
            .map_err(|e| self.error(e, key))?;
        while let Some(b) = self.rt.block_on(stream.next()) {
            each(&b.map_err(|e| self.error(e, key))?)?;
        }
        Ok(())
    }

    fn error(&self, e: FlightError, key: &SeriesKey) -> TransferError {
        match e {
            FlightError::Tonic(s) if s.code() == tonic::Code::NotFound => {
                TransferError::Remote(format!(
                    "series {key} does not exist on the server at {}; register it first \
                 (POST /v1/{}/series) or import with --root while the server is stopped",
                    self.addr,
                    key.kind().as_str()
                ))
            }
            FlightError::Tonic(s) => TransferError::Remote(format!(
                "the Flight server at {} refused: {} ({:?})",
                self.addr,
                s.message(),
                s.code()
            )),
            e => TransferError::Remote(format!("Flight error from {}: {e}", self.addr)),
        }
    }
}

/// The DoPut schema of a write to `meta`'s series, and the stored column it leaves
/// out: a tick write whose rows all leave `seq` to the store sends no `seq` column
/// (the contract's way to have it assigned). Rows that mix both cannot travel as one
/// DoPut stream, so they are refused before anything is sent.
fn put_schema(meta: &SeriesMeta, batch: &WriteBatch) -> Result<(SchemaRef, Option<usize>)> {
    let schema = Projection::all(meta).schema;
    if !meta.key.kind().is_tick() {
        return Ok((schema, None));
    }
    let seq = &batch.cols[1];
    let unassigned = seq.iter().filter(|&&s| s == SEQ_UNASSIGNED).count();
    if unassigned == 0 {
        return Ok((schema, None));
    }
    if unassigned < seq.len() {
        return Err(TransferError::Usage(
            "some input rows have a seq and others do not; a server import sends one DoPut \
             stream, which takes a seq for every row or for none: import the files \
             separately, or into a data root with --root"
                .into(),
        ));
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != "seq")
        .cloned()
        .collect();
    let md = schema.metadata().clone();
    Ok((Arc::new(Schema::new_with_metadata(fields, md)), Some(1)))
}

/// The contract's ticket / command JSON for a series and range.
fn ticket_json(key: &SeriesKey, range: TsRange, price_format: &str) -> String {
    if key.kind().is_tick() {
        let mut v = serde_json::json!({
            "kind": key.kind().as_str(),
            "symbol": key.symbol(),
            "price_format": price_format,
        });
        if let Some(s) = range.start {
            v["start_ns"] = s.into();
        }
        if let Some(e) = range.end {
            v["end_ns"] = e.into();
        }
        return v.to_string();
    }
    let mut v = serde_json::json!({
        "kind": key.kind().as_str(),
        "symbol": key.symbol(),
        "timeframe": key.timeframe(),
    });
    if let (Some(c), Some(n)) = (key.category(), key.name()) {
        v["category"] = c.into();
        v["name"] = n.into();
    }
    if key.kind() == SeriesKind::Kline {
        v["price_format"] = price_format.into();
    }
    if let Some(s) = range.start {
        v["start_ts"] = s.into();
    }
    if let Some(e) = range.end {
        v["end_ts"] = e.into();
    }
    v.to_string()
}

/// Rows `r` of `cols` in the DoPut schema (raw integers; ts in the series' unit),
/// leaving out stored column `skip`.
fn to_record_batch(
    schema: &SchemaRef,
    cols: &WriteBatch,
    skip: Option<usize>,
    r: std::ops::Range<usize>,
    f64_value: bool,
) -> RecordBatch {
    let sent = (0..cols.cols.len()).filter(|&c| Some(c) != skip);
    let arrays: Vec<ArrayRef> = sent
        .zip(schema.fields())
        .map(|(c, field)| -> ArrayRef {
            let part = &cols.cols[c][r.clone()];
            match field.data_type() {
                DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                    Arc::new(TimestampNanosecondArray::from(part.to_vec()).with_timezone("UTC"))
                }
                DataType::Timestamp(..) => {
                    Arc::new(TimestampMillisecondArray::from(part.to_vec()).with_timezone("UTC"))
                }
                DataType::UInt64 => Arc::new(UInt64Array::from_iter_values(
                    part.iter().map(|&v| v as u64),
                )),
                DataType::Int8 => {
                    Arc::new(Int8Array::from_iter_values(part.iter().map(|&v| v as i8)))
                }
                _ if f64_value => Arc::new(Float64Array::from_iter_values(
                    part.iter().map(|&b| f64::from_bits(b as u64)),
                )),
                _ => Arc::new(Int64Array::from(part.to_vec())),
            }
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), arrays).expect("columns match the put schema")
}

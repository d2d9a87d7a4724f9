//! Arrow Flight transport ceiling (`cargo bench --bench flight_ceiling`).
//!
//! A minimal Flight server that holds record batches in RAM and does nothing else,
//! built with the same crates and the same HTTP/2 windows, message limits and
//! TCP_NODELAY as FastK's, plus a Rust `arrow-flight` client. Results of 65,536 rows
//! or more are IPC-encoded on first request and replayed from memory afterwards
//! (the benchmarks warm up first), so the server's work is the transport alone. What this server
//! reaches over loopback is the most any Flight server can deliver on this machine,
//! so FastK's DoGet rate divided by it says how much FastK's storage path costs.
//!
//! Modes (arguments after `--`; `cargo bench` alone runs the first):
//! - no argument: self-contained run on synthetic data (one year of 1m bars and a
//!   20M-row scalar series) with the Rust client; prints GB/s.
//! - `serve DIR`: serves `DIR/kline/*.arrow` and `DIR/scalar.arrow` (Arrow IPC files)
//!   on 127.0.0.1:0 with FastK's JSON tickets (`kind`, `symbol`, `start_ts`,
//!   `end_ts`, `latest`), printing `ceiling listening on ADDR`; runs until killed.
//!   `scripts/bench.sh` uses it as the ceiling for pyarrow clients too.
//! - `client ADDR REPS NAME=TICKET ...`: DoGet each JSON ticket REPS times with the
//!   Rust client and prints one JSON object of `{NAME: {rows, bytes, median_s, best_s}}`.
//!   With `--ca=PEM` the client dials `https://` (tonic's rustls, the ring provider, as
//!   FastK's server uses), trusting that CA and naming the server `localhost`: the
//!   `tls` workload uses it to split what TLS costs the server from what it costs
//!   pyarrow's gRPC client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// FastK's batches for 1m data: one batch per month chunk, at most 31 x 1440 rows
/// (below `flight.max_batch_rows`). Serving the same batch sizes matters: the Rust
/// client decodes 3 MiB messages (65,536-row kline batches) markedly slower than
/// 2 MiB ones, which would make the "ceiling" slower than FastK itself.
const BATCH_ROWS: usize = 44_640;
/// The same limits FastK's Flight server uses (src/flight/mod.rs, docs/flight.md).
const MAX_MESSAGE_BYTES: usize = 256 << 20;
const STREAM_WINDOW_BYTES: u32 = 8 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// One series held in RAM: its batches and the timestamps to find ranges by.
struct Series {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    ts: Vec<i64>,
}

impl Series {
    fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Series {
        // Re-cut into batches of at most BATCH_ROWS rows (zero-copy slices).
        let mut cut = Vec::new();
        for b in batches {
            let mut off = 0;
            while off < b.num_rows() {
                let len = BATCH_ROWS.min(b.num_rows() - off);
                cut.push(b.slice(off, len));
                off += len;
            }
        }
        let mut ts = Vec::new();
        for b in &cut {
            let col = b.column(0);
            let arr = col
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .expect("ts is timestamp[ms]");
            ts.extend_from_slice(arr.values());
        }
        Series {
            schema,
            batches: cut,
            ts,
        }
    }

    /// Zero-copy slices covering rows `lo..hi`.
    fn slice(&self, lo: usize, hi: usize) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        let mut start = 0;
        for b in &self.batches {
            let end = start + b.num_rows();
            let (a, z) = (lo.max(start), hi.min(end));
            if a < z {
                out.push(b.slice(a - start, z - a));
            }
            start = end;
        }
        out
    }
}

/// Results of at least this many rows are encoded once and then replayed.
const CACHE_MIN_ROWS: usize = 65_536;

#[derive(Clone)]
struct Ceiling {
    series: Arc<HashMap<String, Series>>,
    /// Encoded messages of large results by ticket, so that a repeated DoGet costs
    /// only the transport (gRPC framing and the socket), not even IPC encoding.
    encoded: Arc<std::sync::Mutex<HashMap<Vec<u8>, Vec<FlightData>>>>,
}

impl Ceiling {
    fn select(&self, ticket: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), Status> {
        let t: serde_json::Value = serde_json::from_slice(ticket)
            .map_err(|e| Status::invalid_argument(format!("ticket: {e}")))?;
        let name = match t["kind"].as_str() {
            Some("kline") => t["symbol"].as_str().unwrap_or_default(),
            _ => "scalar",
        };
        let s = self
            .series
            .get(name)
            .ok_or_else(|| Status::not_found(name.to_string()))?;
        let lo = t["start_ts"]
            .as_i64()
            .map_or(0, |v| s.ts.partition_point(|&x| x < v));
        let hi = t["end_ts"]
            .as_i64()
            .map_or(s.ts.len(), |v| s.ts.partition_point(|&x| x <= v));
        let lo = match t["latest"].as_u64() {
            Some(n) => lo.max(hi.saturating_sub(n as usize)),
            None => lo,
        };
        Ok((s.schema.clone(), s.slice(lo, hi.max(lo))))
    }
}

type Bs<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for Ceiling {
    type HandshakeStream = Bs<HandshakeResponse>;
    type ListFlightsStream = Bs<FlightInfo>;
    type DoGetStream = Bs<FlightData>;
    type DoPutStream = Bs<PutResult>;
    type DoActionStream = Bs<arrow_flight::Result>;
    type ListActionsStream = Bs<ActionType>;
    type DoExchangeStream = Bs<FlightData>;

    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = req.into_inner().ticket.to_vec();
        let cached = self.encoded.lock().unwrap().get(&ticket).cloned();
        if let Some(messages) = cached {
            // FlightData holds `Bytes`: cloning the cached messages copies no data.
            return Ok(Response::new(
                stream::iter(messages.into_iter().map(Ok)).boxed(),
            ));
        }
        let (schema, batches) = self.select(&ticket)?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(MAX_MESSAGE_BYTES)
            .build(stream::iter(batches.into_iter().map(Ok)))
            .map_err(Status::from);
        if rows < CACHE_MIN_ROWS {
            return Ok(Response::new(stream.boxed()));
        }
        let messages: Vec<FlightData> = stream.try_collect().await?;
        self.encoded
            .lock()
            .unwrap()
            .insert(ticket, messages.clone());
        Ok(Response::new(
            stream::iter(messages.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("ceiling: DoGet only"))
    }
}

/// Binds 127.0.0.1:0 and serves in the background; returns the bound address.
async fn serve(series: HashMap<String, Series>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let svc = FlightServiceServer::new(Ceiling {
        series: Arc::new(series),
        encoded: Arc::default(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        Server::builder()
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    addr
}

fn load_ipc(path: &Path) -> Series {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).expect("Arrow IPC file");
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    Series::new(schema, batches)
}

fn load_dir(dir: &Path) -> HashMap<String, Series> {
    let mut series = HashMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("kline"))
        .expect("DIR/kline")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.push(dir.join("scalar.arrow"));
    for p in files {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        series.insert(name, load_ipc(&p));
    }
    series
}

struct Stat {
    rows: usize,
    bytes: usize,
    times: Vec<Duration>,
}

/// A client of the server at `addr`; over TLS when `ca_pem` (the CA's PEM) is given.
async fn client(addr: &str, ca_pem: Option<&[u8]>) -> FlightClient {
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("address")
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    if let Some(pem) = ca_pem {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name("localhost");
        endpoint = endpoint.tls_config(tls).expect("TLS configuration");
    }
    let channel = endpoint.connect().await.expect("connect");
    let inner = FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    FlightClient::new_from_inner(inner)
}

/// DoGet `ticket` `reps` times (after one warm-up), keeping every decoded batch
/// until the stream ends, as a client building a table would.
async fn measure(c: &mut FlightClient, ticket: &str, reps: usize) -> Stat {
    let mut stat = Stat {
        rows: 0,
        bytes: 0,
        times: Vec::new(),
    };
    for i in 0..=reps {
        let t = Instant::now();
        let batches: Vec<RecordBatch> = c
            .do_get(Ticket::new(ticket.to_string()))
            .await
            .expect("do_get")
            .try_collect()
            .await
            .expect("stream");
        let elapsed = t.elapsed();
        stat.rows = batches.iter().map(|b| b.num_rows()).sum();
        stat.bytes = batches
            .iter()
            .map(|b| b.num_rows() * b.num_columns() * 8)
            .sum();
        if i > 0 {
            stat.times.push(elapsed);
        }
    }
    stat.times.sort();
    stat
}

fn synthetic(rows: usize, kline: bool) -> Series {
    let ts_field = Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    );
    let names: &[&str] = if kline {
        &["open", "high", "low", "close", "volume"]
    } else {
        &["value"]
    };
    let mut fields = vec![ts_field];
    fields.extend(names.iter().map(|n| Field::new(*n, DataType::Int64, false)));
    let schema = Arc::new(Schema::new(fields));
    let ts: Vec<i64> = (0..rows as i64)
        .map(|i| 1_704_067_200_000 + i * 60_000)
        .collect();
    let mut cols: Vec<arrow_array::ArrayRef> = vec![Arc::new(
        TimestampMillisecondArray::from(ts).with_timezone("UTC"),
    )];
    for (k, _) in names.iter().enumerate() {
        cols.push(Arc::new(Int64Array::from_iter_values(
            (0..rows as i64).map(|i| i.wrapping_mul(2_654_435_761 + k as i64) % 1_000_000_007),
        )));
    }
    Series::new(
        schema.clone(),
        vec![RecordBatch::try_new(schema, cols).expect("batch")],
    )
}

fn main() {
    let ca_pem: Option<Vec<u8>> = std::env::args()
        .find_map(|a| a.strip_prefix("--ca=").map(str::to_string))
        .map(|path| std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")));
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("serve") => rt.block_on(async {
            let addr = serve(load_dir(Path::new(&args[1]))).await;
            println!("ceiling listening on {addr}");
            std::future::pending::<()>().await;
        }),
        Some("client") => rt.block_on(async {
            let mut c = client(&args[1], ca_pem.as_deref()).await;
            let reps: usize = args[2].parse().expect("REPS");
            let mut out = serde_json::Map::new();
            for spec in &args[3..] {
                let (name, ticket) = spec.split_once('=').expect("NAME=TICKET");
                let s = measure(&mut c, ticket, reps).await;
                out.insert(
                    name.to_string(),
                    serde_json::json!({
                        "rows": s.rows, "bytes": s.bytes,
                        "median_s": s.times[s.times.len() / 2].as_secs_f64(),
                        "best_s": s.times[0].as_secs_f64(),
                    }),
                );
            }
            println!("{}", serde_json::Value::Object(out));
        }),
        _ => rt.block_on(self_contained()),
    }
}

async fn self_contained() {
    let quick = std::env::var("FASTK_BENCH_QUICK").is_ok();
    let year = 527_040;
    let scalar_rows = if quick { 2_000_000 } else { 20_000_000 };
    let mut series = HashMap::new();
    series.insert("BENCH".to_string(), synthetic(year, true));
    series.insert("scalar".to_string(), synthetic(scalar_rows, false));
    let addr = serve(series).await;
    let mut c = client(&addr.to_string(), None).await;
    println!(
        "in-memory Flight server (same limits as FastK) -> Rust arrow-flight client, loopback"
    );
    for (name, ticket) in [
        (
            "one year of 1m bars",
            r#"{"kind":"kline","symbol":"BENCH"}"#,
        ),
        ("scalar series", r#"{"kind":"scalar"}"#),
    ] {
        let s = measure(&mut c, ticket, 5).await;
        let med = s.times[s.times.len() / 2].as_secs_f64();
        println!(
            "{name:<24} {:>10} rows {:>9.2} ms {:>8.2} GB/s",
            s.rows,
            med * 1e3,
            s.bytes as f64 / med / 1e9
        );
    }
}

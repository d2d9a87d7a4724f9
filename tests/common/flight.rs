//! Shared fixture for the Flight tests: a real server on port 0 over a temporary data
//! root, a tonic-based `FlightClient` with a raised decode limit, and data builders.
//! Part of the shared test module `tests/common` (used by the `tests/flight*.rs` binaries).

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, Ticket};
use arrow_schema::DataType;
use fastk::config::Config;
use fastk::query::types::{RegisterKline, RegisterScalar};
use fastk::record::{KlineRecord, SeriesKey, ValueType};
use fastk::server::{Running, start};
use futures::TryStreamExt;
use tonic::transport::Channel;

pub use super::{JAN_2024, MINUTE};

/// A server on port 0 and a client connected to it.
pub struct Fixture {
    pub running: Running,
    pub client: FlightClient,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts a server whose config `tweak` may adjust (limits, auth).
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = super::server_config(dir.path(), tweak);
        let running = start(config).await.expect("server starts");
        let client = client(running.flight_addr).await;
        Fixture {
            running,
            client,
            _dir: dir,
        }
    }

    pub fn engine(&self) -> &fastk::query::Engine {
        &self.running.engine
    }

    pub async fn shutdown(self) {
        drop(self.client);
        self.running.shutdown().await;
    }

    /// Registers a kline series (price scale 100, volume scale 1000).
    pub fn kline_series(&self, symbol: &str, timeframe: &str) -> SeriesKey {
        let r = RegisterKline {
            volume_scale: 1000,
            ..super::kline_registration(symbol, timeframe)
        };
        self.engine().register_kline(&r).expect("register kline");
        SeriesKey::kline(symbol, timeframe).expect("key")
    }

    pub fn scalar_series(&self, symbol: &str, name: &str, vt: ValueType) -> SeriesKey {
        let r = super::scalar_registration(symbol, "1m", "indicator", name, Some(vt));
        self.engine().register_scalar(&r).expect("register scalar");
        SeriesKey::scalar(symbol, "1m", "indicator", name).expect("key")
    }

    /// Writes kline rows through the engine (the write path Flight shares with HTTP).
    pub fn write_klines(&self, key: &SeriesKey, rows: &[KlineRecord]) {
        self.engine()
            .write_kline(key, rows, None)
            .expect("write klines");
    }

    /// Writes scalar rows given as (ts, value bits).
    pub fn write_scalars(&self, key: &SeriesKey, rows: &[(i64, i64)]) {
        let mut b = fastk::storage::WriteBatch::with_capacity(2, rows.len());
        for &(ts, v) in rows {
            b.cols[0].push(ts);
            b.cols[1].push(v);
        }
        self.engine().write(key, b, None).expect("write scalars");
    }
}

/// A Flight client whose decode limit is raised past tonic's 4 MiB default, as
/// docs/flight.md tells Rust users to do.
pub async fn client(addr: std::net::SocketAddr) -> FlightClient {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let inner = FlightServiceClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    FlightClient::new_from_inner(inner)
}

/// Deterministic valid bars: `n` rows from `start`, `step` apart, seeded by `seed`.
pub fn klines(start: i64, n: usize, step: i64, seed: i64) -> Vec<KlineRecord> {
    (0..n as i64)
        .map(|i| {
            let base = 1_000_000 + ((i * 7919 + seed * 104_729) % 50_000);
            let (open, close) = (base, base + (i % 13) - 6);
            KlineRecord {
                ts: start + i * step,
                open,
                high: open.max(close) + (i % 5),
                low: open.min(close) - (i % 3),
                close,
                volume: (i * 31 + seed) % 100_000,
            }
        })
        .collect()
}

pub fn ticket(v: serde_json::Value) -> Ticket {
    Ticket::new(v.to_string())
}

/// DoGet of `v`, all batches.
pub async fn get(
    client: &mut FlightClient,
    v: serde_json::Value,
) -> Result<Vec<RecordBatch>, FlightError> {
    client.do_get(ticket(v)).await?.try_collect().await
}

/// DoGet of an endpoint's ticket `t`, all batches; it must succeed.
pub async fn fetch(client: &mut FlightClient, t: Ticket) -> Vec<RecordBatch> {
    client.do_get(t).await.unwrap().try_collect().await.unwrap()
}

/// The gRPC status code behind a client error.
pub fn code(e: &FlightError) -> tonic::Code {
    match e {
        FlightError::Tonic(s) => s.code(),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

pub fn message(e: &FlightError) -> String {
    match e {
        FlightError::Tonic(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

/// Column `name` of every batch as i64 (timestamps and int64; f64 as bits).
pub fn col_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).expect("column present");
        assert_eq!(a.null_count(), 0, "{name} has nulls");
        match a.data_type() {
            DataType::Timestamp(..) => {
                out.extend(a.as_primitive::<TimestampMillisecondType>().values())
            }
            DataType::Float64 => out.extend(
                a.as_primitive::<Float64Type>()
                    .values()
                    .iter()
                    .map(|v| v.to_bits() as i64),
            ),
            _ => out.extend(a.as_primitive::<Int64Type>().values()),
        }
    }
    out
}

pub fn col_f64(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(name).expect("column present");
            a.as_primitive::<Float64Type>().values().to_vec()
        })
        .collect()
}

/// The six kline columns of `rows`, column-major, in storage order.
pub fn kline_cols(rows: &[KlineRecord]) -> [Vec<i64>; 6] {
    [
        rows.iter().map(|r| r.ts).collect(),
        rows.iter().map(|r| r.open).collect(),
        rows.iter().map(|r| r.high).collect(),
        rows.iter().map(|r| r.low).collect(),
        rows.iter().map(|r| r.close).collect(),
        rows.iter().map(|r| r.volume).collect(),
    ]
}

pub const KLINE_NAMES: [&str; 6] = ["ts", "open", "high", "low", "close", "volume"];

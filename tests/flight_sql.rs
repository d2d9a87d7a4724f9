//! Arrow Flight SQL on the Flight port, with arrow-flight's own Flight SQL client
//! against a real server on port 0: statements, prepared statements with bound
//! parameters, metadata, refusals, auth, and the JSON tickets on the same port.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{FlightInfo, IpcMessage};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use futures::TryStreamExt;
use tonic::transport::Channel;

async fn sql_client(f: &Fixture) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", f.running.flight_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn fetch(c: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let t = ep.ticket.expect("ticket");
        out.extend(
            c.do_get(t)
                .await
                .unwrap()
                .try_collect::<Vec<_>>()
                .await
                .unwrap(),
        );
    }
    out
}

fn code(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn seeded() -> Fixture {
    let f = Fixture::start(|_| {}).await;
    for (i, sym) in ["BTC", "ETH"].iter().enumerate() {
        let key = f.kline_series(sym, "1m");
        f.write_klines(&key, &klines(JAN_2024, 2_000, MINUTE, i as i64));
    }
    f
}

#[tokio::test]
async fn statements_and_prepared_statements_answer_like_the_native_read() {
    let f = seeded().await;
    let mut c = sql_client(&f).await;
    let info = c
        .execute(
            "SELECT ts, close FROM kline_raw WHERE symbol = 'ETH' AND timeframe = '1m' ORDER BY ts DESC LIMIT 3".into(),
            None,
        )
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(1).name(), "close");
    let batches = fetch(&mut c, info).await;
    let closes: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    let want: Vec<i64> = klines(JAN_2024, 2_000, MINUTE, 1)
        .iter()
        .rev()
        .take(3)
        .map(|r| r.close)
        .collect();
    assert_eq!(closes, want);

    // Prepared, with a parameter bound through DoPut.
    let mut ps = c
        .prepare(
            "SELECT count(*) AS n, max(high) AS hi FROM kline WHERE symbol = $1".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(ps.dataset_schema().unwrap().field(0).name(), "n");
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["BTC"]))],
    )
    .unwrap();
    ps.set_parameters(params).unwrap();
    let info = ps.execute().await.unwrap();
    let b = fetch(&mut c, info).await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 2_000);
    let max_high = klines(JAN_2024, 2_000, MINUTE, 0)
        .iter()
        .map(|r| r.high)
        .max()
        .unwrap();
    assert_eq!(
        b[0].column(1).as_primitive::<Float64Type>().value(0),
        max_high as f64 / 100.0
    );
    ps.close().await.unwrap();

    // The JSON tickets still work on the same port.
    let mut client = client(f.running.flight_addr).await;
    let rows = get(
        &mut client,
        serde_json::json!({"kind": "kline", "symbol": "BTC", "timeframe": "1m"}),
    )
    .await
    .unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2_000);
    f.shutdown().await;
}

#[tokio::test]
async fn metadata_commands_describe_the_catalog() {
    let f = seeded().await;
    let mut c = sql_client(&f).await;
    let info = c.get_catalogs().await.unwrap();
    let b = fetch(&mut c, info).await;
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "fastk");
    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await;
    assert_eq!(b[0].column(1).as_string::<i32>().value(0), "public");
    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("kline%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let b = fetch(&mut c, info).await;
    let names = b[0].column(2).as_string::<i32>();
    let got: Vec<&str> = (0..names.len()).map(|i| names.value(i)).collect();
    assert_eq!(got, vec!["kline", "kline_raw"]);
    let schema_bytes = b[0].column(4).as_binary::<i32>().value(0).to_vec();
    let schema = Schema::try_from(IpcMessage(schema_bytes.into())).unwrap();
    assert_eq!(schema.field(2).name(), "ts");
    let info = c.get_table_types().await.unwrap();
    assert!(fetch(&mut c, info).await[0].num_rows() >= 1);
    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    assert_eq!(fetch(&mut c, info).await[0].num_rows(), 2);
    f.shutdown().await;
}

#[tokio::test]
async fn updates_bad_sql_and_missing_tokens_are_refused() {
    let f = seeded().await;
    let mut c = sql_client(&f).await;
    let e = code(
        c.execute_update("DELETE FROM kline".into(), None)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("read-only"), "{e}");
    let e = code(c.execute("SELEC 1".into(), None).await.unwrap_err());
    assert!(
        e.contains("InvalidArgument") || e.contains("invalid"),
        "{e}"
    );
    let e = code(
        c.execute("INSERT INTO kline_raw SELECT * FROM kline_raw".into(), None)
            .await
            .unwrap_err(),
    );
    assert!(e.contains("read-only"), "{e}");
    f.shutdown().await;

    let f = Fixture::start(|cfg| {
        cfg.auth.token = "sekret".into();
        cfg.auth.protect_reads = true;
    })
    .await;
    let mut c = sql_client(&f).await;
    let status = c.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        status.to_string().contains("Unauthenticated") || status.to_string().contains("token"),
        "{status}"
    );
    c.set_token("sekret".into());
    let info = c.execute("SELECT 41 + 1 AS x".into(), None).await.unwrap();
    let b = fetch(&mut c, info).await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 42);
    f.shutdown().await;
}

/// A client that walks away from a DoGet cancels its query: the slot it held
/// (`sql.max_concurrent_queries`) comes back, and a runaway cross join stops.
#[tokio::test]
async fn a_dropped_doget_cancels_its_query_and_frees_its_slot() {
    let f = Fixture::start(|c| c.sql.max_concurrent_queries = 1).await;
    let key = f.kline_series("BTC", "1m");
    f.write_klines(&key, &klines(JAN_2024, 3_000, MINUTE, 0));
    let mut c = sql_client(&f).await;
    let info = c
        .execute("SELECT a.ts, b.close FROM kline a, kline b".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().expect("a first batch");
    assert!(first.num_rows() > 0);
    // The running query holds the only slot.
    let e = code(c.execute("SELECT 1".into(), None).await.unwrap_err());
    assert!(e.contains("sql.max_concurrent_queries"), "{e}");
    drop(stream);
    // The server sees the reset, drops the answer and with it the query (bounded wait).
    let mut freed = false;
    for _ in 0..100 {
        if c.execute("SELECT 1".into(), None).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(freed, "the cancelled query still holds its slot");
    assert_eq!(f.engine().sql.memory_used(), 0);
    f.shutdown().await;
}

//! Trade and quote series over HTTP: registration (201, 200, 409), writes with and
//! without `seq`, replacement by `seq`, the contract's refusals (nothing written),
//! pages keyed by `(ts, seq)`, latest, range deletes, listing and delete, and the
//! series surviving a restart of the engine.

use serde_json::{Value, json};

use crate::common::app;

/// 2024-03-10T00:00:00Z in nanoseconds.
const DAY0: i64 = 1_710_028_800_000_000_000;
const TRADES: &str = "/v1/trade/BTCUSDT";
const QUOTES: &str = "/v1/quote/BTCUSDT";

fn keys(page: &Value) -> Vec<(i64, u64)> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ts"].as_i64().unwrap(), r["seq"].as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn trades_are_written_numbered_replaced_and_paged() {
    let app = app();
    let reg = json!({"symbol": "BTCUSDT", "price_scale": 100, "size_scale": 1000});
    let info = app.post("/v1/trade/series", &reg).await.expect(201);
    assert_eq!(info["kind"], "trade");
    assert_eq!(
        info["timeframe_ms"], 86_400_000,
        "day partitions by default: {info}"
    );
    assert_eq!(
        (&info["partition"], &info["size_scale"]),
        (&json!("day"), &json!(1000))
    );
    assert_eq!(info["price_scale"], 100);
    assert!(
        info.get("value_type").is_none() && info.get("volume_scale").is_none(),
        "{info}"
    );
    app.post("/v1/trade/series", &reg).await.expect(200);
    let differs = json!({"symbol": "BTCUSDT", "price_scale": 10, "size_scale": 1000});
    app.post("/v1/trade/series", &differs)
        .await
        .expect_error(409, "conflict");
    let bad =
        json!({"symbol": "BTCUSDT", "price_scale": 100, "size_scale": 1000, "partition": "week"});
    let msg = app
        .post("/v1/trade/series", &bad)
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("partition"), "{msg}");

    // Three trades in one nanosecond and one later: seq 0, 1, 2 in arrival order.
    let body = json!({"records": [
        {"ts": DAY0, "price": 6_843_250, "size": 1500, "side": 1},
        {"ts": DAY0, "price": 6_843_300, "size": 10, "side": -1, "trade_id": 77},
        {"ts": DAY0, "price": 6_843_200, "size": 20},
        {"ts": DAY0 + 1_000, "seq": 5, "price": 6_843_100, "size": 30, "side": 0},
    ]});
    let w = app
        .post(&format!("{TRADES}/records"), &body)
        .await
        .expect(200);
    assert_eq!(
        (w["written"].as_u64(), w["inserted"].as_u64()),
        (Some(4), Some(4)),
        "{w}"
    );
    let page = app.get(&format!("{TRADES}/records")).await.expect(200);
    assert_eq!(
        keys(&page),
        vec![(DAY0, 0), (DAY0, 1), (DAY0, 2), (DAY0 + 1_000, 5)]
    );
    assert_eq!(page["records"][1]["trade_id"], 77);
    assert_eq!(page["records"][1]["side"], -1);
    assert_eq!(page["next"], Value::Null);

    // A retry with the venue's seq replaces; an append at the same ts comes after.
    let body = json!({"records": [
        {"ts": DAY0, "seq": 1, "price": 6_843_301, "size": 11, "side": -1},
        {"ts": DAY0, "price": 6_843_400, "size": 40},
    ]});
    let w = app
        .post(&format!("{TRADES}/records"), &body)
        .await
        .expect(200);
    assert_eq!(
        (w["inserted"].as_u64(), w["replaced"].as_u64()),
        (Some(1), Some(1)),
        "{w}"
    );
    let page = app
        .get(&format!("{TRADES}/records?limit=2"))
        .await
        .expect(200);
    assert_eq!(keys(&page), vec![(DAY0, 0), (DAY0, 1)]);
    assert_eq!(page["records"][1]["price"], 6_843_301);
    assert_eq!(page["next"], json!({"ts": DAY0, "seq": 1}));
    let page = app
        .get(&format!(
            "{TRADES}/records?limit=2&after_ts={DAY0}&after_seq=1"
        ))
        .await
        .expect(200);
    assert_eq!(keys(&page), vec![(DAY0, 2), (DAY0, 3)]);
    let page = app
        .get(&format!(
            "{TRADES}/records?limit=2&after_ts={DAY0}&after_seq=3"
        ))
        .await
        .expect(200);
    assert_eq!(keys(&page), vec![(DAY0 + 1_000, 5)]);
    assert_eq!(page["next"], Value::Null, "the last page");
    let latest = app.get(&format!("{TRADES}/latest?n=2")).await.expect(200);
    assert_eq!(keys(&latest), vec![(DAY0, 3), (DAY0 + 1_000, 5)]);

    // Refusals change nothing.
    for (records, status, code, says) in [
        (
            json!([{"ts": DAY0, "price": 1, "size": -1}]),
            422,
            "unprocessable",
            "size is negative",
        ),
        (
            json!([{"ts": DAY0, "price": 1, "size": 1, "side": 2}]),
            422,
            "unprocessable",
            "side must be",
        ),
        (
            json!([{"ts": DAY0, "seq": 9, "price": 1, "size": 1}, {"ts": DAY0, "seq": 9, "price": 2, "size": 1}]),
            422,
            "unprocessable",
            "repeats record 0",
        ),
        (
            json!([{"ts": -5, "price": 1, "size": 1}]),
            400,
            "invalid_argument",
            "outside the supported range",
        ),
        (
            json!([{"ts": DAY0, "seq": u64::MAX, "price": 1, "size": 1}]),
            400,
            "invalid_argument",
            "reserved",
        ),
        (
            json!([{"ts": DAY0, "price": 1}]),
            400,
            "invalid_argument",
            "size",
        ),
    ] {
        let r = app
            .post(&format!("{TRADES}/records"), &json!({"records": records}))
            .await;
        let msg = r.expect_error(status, code);
        assert!(msg.contains(says), "{says}: {msg}");
    }
    let all = app.get(&format!("{TRADES}/records")).await.expect(200);
    assert_eq!(keys(&all).len(), 5, "refused writes stored nothing: {all}");

    // A range delete in nanoseconds.
    let d = app
        .delete(&format!("{TRADES}/records?start_ns={DAY0}&end_ns={DAY0}"))
        .await
        .expect(200);
    assert_eq!(d["deleted"], 4, "{d}");
    let all = app.get(&format!("{TRADES}/records")).await.expect(200);
    assert_eq!(keys(&all), vec![(DAY0 + 1_000, 5)]);

    let list = app.get("/v1/trade/series").await.expect(200);
    assert_eq!(list["series"].as_array().unwrap().len(), 1, "{list}");
    let one = app.get(TRADES).await.expect(200);
    assert_eq!(one["symbol"], "BTCUSDT");
    app.delete(TRADES).await;
    app.get(TRADES).await.expect_error(404, "not_found");
    app.get("/v1/bond/series")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn quotes_are_checked_and_partitioned_by_hour() {
    let app = app();
    let reg =
        json!({"symbol": "BTCUSDT", "price_scale": 100, "size_scale": 1000, "partition": "hour"});
    let info = app.post("/v1/quote/series", &reg).await.expect(201);
    assert_eq!(info["timeframe_ms"], 3_600_000, "{info}");
    let hour = 3_600_000_000_000i64;
    let body = json!({"records": [
        {"ts": DAY0 + 5, "bid": 100, "ask": 101, "bid_size": 3, "ask_size": 4},
        {"ts": DAY0 + hour, "bid": 102, "ask": 0, "bid_size": 3, "ask_size": 0},
    ]});
    app.post(&format!("{QUOTES}/records"), &body)
        .await
        .expect(200);
    let crossed =
        json!({"records": [{"ts": DAY0, "bid": 102, "ask": 101, "bid_size": 1, "ask_size": 1}]});
    let msg = app
        .post(&format!("{QUOTES}/records"), &crossed)
        .await
        .expect_error(422, "unprocessable");
    assert!(msg.contains("record 0: bid is greater than ask"), "{msg}");
    let info = app.get(QUOTES).await.expect(200);
    let parts: Vec<&str> = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["month"].as_str().unwrap())
        .collect();
    assert_eq!(parts, vec!["2024-03-10T00", "2024-03-10T01"], "{info}");
    // A trade body is not a quote body.
    let wrong = json!({"records": [{"ts": DAY0, "price": 1, "size": 1}]});
    app.post(&format!("{QUOTES}/records"), &wrong)
        .await
        .expect_error(400, "invalid_argument");
}

/// `POST /v1/{kind}/records`: trades (or quotes) of many symbols in one all-or-nothing
/// write, `seq` numbered per symbol and `ts` in request order; a bad record, an
/// unknown symbol or a repeated key refuses the whole request, naming the symbol.
#[tokio::test]
async fn trades_and_quotes_of_many_symbols_are_one_write() {
    let app = app();
    for s in ["AAA", "BBB", "CCC"] {
        let reg = json!({"symbol": s, "price_scale": 100, "size_scale": 1});
        app.post("/v1/trade/series", &reg).await.expect(201);
        app.post("/v1/quote/series", &reg).await.expect(201);
    }
    let body = json!({"records": [
        {"symbol": "AAA", "ts": DAY0, "price": 100, "size": 1},
        {"symbol": "BBB", "ts": DAY0, "price": 200, "size": 2, "side": -1},
        {"symbol": "AAA", "ts": DAY0, "price": 101, "size": 3, "side": 1},
        {"symbol": "AAA", "ts": DAY0, "seq": 9, "price": 102, "size": 4},
        {"symbol": "BBB", "ts": DAY0 + 5, "price": 201, "size": 5, "trade_id": 42},
    ]});
    let w = app.post("/v1/trade/records", &body).await.expect(200);
    assert_eq!(
        (w["written"].as_u64(), w["inserted"].as_u64()),
        (Some(5), Some(5)),
        "{w}"
    );
    let a = app.get("/v1/trade/AAA/records").await.expect(200);
    // Numbered after the explicit 9 of the same request and ts, in request order.
    assert_eq!(keys(&a), vec![(DAY0, 9), (DAY0, 10), (DAY0, 11)]);
    assert_eq!(
        a["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["price"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![102, 100, 101]
    );
    let b = app.get("/v1/trade/BBB/records").await.expect(200);
    assert_eq!(keys(&b), vec![(DAY0, 0), (DAY0 + 5, 0)]);
    assert_eq!(b["records"][1]["trade_id"], 42);
    assert_eq!(b["records"][0]["side"], -1);
    // A second write appends after what is stored at the same ts.
    let more = json!({"records": [{"symbol": "BBB", "ts": DAY0, "price": 202, "size": 6}]});
    app.post("/v1/trade/records", &more).await.expect(200);
    let b = app.get("/v1/trade/BBB/records").await.expect(200);
    assert_eq!(keys(&b), vec![(DAY0, 0), (DAY0, 1), (DAY0 + 5, 0)]);

    // Refused whole: nothing of the good records is written.
    let stored = stored_trades(&app).await;
    for (records, status, code, needle) in [
        (
            json!([{"symbol": "CCC", "ts": DAY0, "price": 1, "size": 1},
                {"symbol": "AAA", "ts": DAY0, "price": 1, "size": -1}]),
            422,
            "unprocessable",
            "AAA",
        ),
        (
            json!([{"symbol": "CCC", "ts": DAY0, "price": 1, "size": 1},
                {"symbol": "CCC", "ts": DAY0, "price": 1, "size": 1, "side": 2}]),
            422,
            "unprocessable",
            "side",
        ),
        (
            json!([{"symbol": "CCC", "ts": DAY0, "seq": 1, "price": 1, "size": 1},
                {"symbol": "CCC", "ts": DAY0, "seq": 1, "price": 2, "size": 1}]),
            422,
            "unprocessable",
            "repeats",
        ),
        (
            json!([{"symbol": "CCC", "ts": DAY0, "price": 1, "size": 1},
                {"symbol": "ZZZ", "ts": DAY0, "price": 1, "size": 1}]),
            404,
            "not_found",
            "ZZZ",
        ),
        (
            json!([{"symbol": "CCC", "ts": DAY0, "price": 1, "size": 1},
                {"symbol": "AAA", "ts": DAY0, "seq": u64::MAX, "price": 1, "size": 1}]),
            400,
            "invalid_argument",
            "reserved",
        ),
    ] {
        let msg = app
            .post("/v1/trade/records", &json!({"records": records}))
            .await
            .expect_error(status, code);
        assert!(msg.contains(needle), "{msg}");
    }
    assert_eq!(
        stored_trades(&app).await,
        stored,
        "a refused write changes nothing"
    );

    // Quotes: a crossed quote is refused, good ones land.
    let crossed = json!({"records": [
        {"symbol": "AAA", "ts": DAY0, "bid": 10, "ask": 11, "bid_size": 1, "ask_size": 1},
        {"symbol": "BBB", "ts": DAY0, "bid": 12, "ask": 11, "bid_size": 1, "ask_size": 1}]});
    let msg = app
        .post("/v1/quote/records", &crossed)
        .await
        .expect_error(422, "unprocessable");
    assert!(msg.contains("BBB") && msg.contains("bid"), "{msg}");
    let quotes = json!({"records": [
        {"symbol": "AAA", "ts": DAY0, "bid": 10, "ask": 11, "bid_size": 1, "ask_size": 1},
        {"symbol": "BBB", "ts": DAY0, "bid": 11, "ask": 12, "bid_size": 2, "ask_size": 3}]});
    let w = app.post("/v1/quote/records", &quotes).await.expect(200);
    assert_eq!(w["written"], 2, "{w}");
    let q = app.get("/v1/quote/BBB/records").await.expect(200);
    assert_eq!(
        (
            q["records"][0]["bid"].as_i64(),
            q["records"][0]["ask_size"].as_i64()
        ),
        (Some(11), Some(3))
    );
    // A trade record in a quote write is refused by its fields.
    let wrong = json!({"records": [{"symbol": "AAA", "ts": DAY0, "price": 1, "size": 1}]});
    app.post("/v1/quote/records", &wrong)
        .await
        .expect_error(400, "invalid_argument");
}

/// Trades stored over the symbols of the many-symbol test.
async fn stored_trades(app: &crate::common::App) -> usize {
    let mut n = 0;
    for s in ["AAA", "BBB", "CCC"] {
        let p = app.get(&format!("/v1/trade/{s}/records")).await.expect(200);
        n += p["records"].as_array().unwrap().len();
    }
    n
}

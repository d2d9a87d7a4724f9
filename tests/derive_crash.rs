//! SIGKILL of a real `fastk serve` while derived series are materialized under writes
//! (docs/derived.md). A writer appends bars and rewrites old windows of the base (each
//! rewrite makes the next pass rematerialize from that month), so kills land in passes.
//! After each kill the store is reopened: every acknowledged write of the base is there
//! whole, the derived series read what the resample of the base reads before and after
//! the first pass, and a deep validation is clean.
//!
//! Quick by default (3 kills); `FASTK_TEST_LONG=1` runs 12.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{MINUTE, Rng, engine_with};
use fastk::query::Engine;
use fastk::query::market::spec::Resample;
use fastk::query::market::{ReadArgs, ReadSpec};
use fastk::query::snapshots::At;
use fastk::record::{SeriesKey, TsRange};

const BASE: i64 = 1_600_000_000_000;
/// Bars per write.
const ROWS: i64 = 30;
/// Appends go on from here; rewrites land in the first `REWRITE_SPAN` writes' bars.
const REWRITE_SPAN: i64 = 2_000;

/// Write `i`: `ROWS` bars from `start`, every close `i` (a rewrite of old bars too).
fn body(start: i64, i: i64) -> serde_json::Value {
    let recs: Vec<_> = (0..ROWS)
        .map(|k| {
            let ts = start + k * MINUTE;
            serde_json::json!({"ts": ts, "open": i, "high": i + 1, "low": i, "close": i, "volume": k})
        })
        .collect();
    serde_json::json!({ "records": recs })
}

/// Writes until the server goes: appends, and every third write a rewrite of an old
/// window. Returns the acknowledged writes as (start, close).
async fn writer(
    base: String,
    mut next_append: i64,
    mut n: i64,
    seed: u64,
) -> (i64, i64, Vec<(i64, i64)>) {
    let c = reqwest::Client::new();
    let mut rng = Rng(seed | 1);
    let mut acked = Vec::new();
    loop {
        let start = if n % 3 == 2 {
            BASE + rng.below(REWRITE_SPAN as u64) as i64 * ROWS * MINUTE
        } else {
            next_append
        };
        let url = format!("{base}/v1/kline/DRVK/1m/records");
        match c.post(&url).json(&body(start, n)).send().await {
            Ok(r) if r.status().is_success() => {
                acked.push((start, n));
                if start == next_append {
                    next_append += ROWS * MINUTE;
                }
                n += 1;
            }
            _ => return (next_append, n, acked),
        }
    }
}

fn resample(e: &Engine, tf: &str) -> Vec<Vec<i64>> {
    let base = SeriesKey::kline("DRVK", "1m").unwrap();
    let spec = ReadSpec::new(ReadArgs {
        resample: Some(Resample {
            timeframe: tf.into(),
            offset_ms: None,
            fill: None,
            agg: None,
        }),
        ..ReadArgs::default()
    })
    .unwrap();
    let (batches, _) = e
        .read_page(&e.series(&base).unwrap(), &spec, usize::MAX)
        .unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::TimestampMillisecondArray>()
            .unwrap();
        let close = b
            .column(4)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        for j in 0..b.num_rows() {
            out.push(vec![ts.value(j), close.value(j)]);
        }
    }
    out
}

fn derived(e: &Engine, tf: &str) -> Vec<Vec<i64>> {
    let key = SeriesKey::kline("DRVK", tf).unwrap();
    let page = e
        .read_at(&key, &At::Now, TsRange::all(), usize::MAX)
        .unwrap();
    page.slices
        .iter()
        .flat_map(|s| s.ts().iter().copied().zip(s.col(4).iter().copied()))
        .map(|(t, c)| vec![t, c])
        .collect()
}

fn verify(root: &Path, acked: &[(i64, i64)], round: usize) {
    let e = engine_with(root, |_| {});
    // Every acknowledged write is there: each bar holds the close of the last
    // acknowledged write covering it, or of a later one (the write in flight at the kill).
    let base = SeriesKey::kline("DRVK", "1m").unwrap();
    let page = e
        .read_at(&base, &At::Now, TsRange::all(), usize::MAX)
        .unwrap();
    let got: BTreeMap<i64, i64> = page
        .slices
        .iter()
        .flat_map(|s| s.ts().iter().copied().zip(s.col(4).iter().copied()))
        .collect();
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for &(start, close) in acked {
        for k in 0..ROWS {
            want.insert(start + k * MINUTE, close);
        }
    }
    for (ts, close) in &want {
        let have = got.get(ts).copied();
        assert!(
            have.is_some_and(|h| h >= *close),
            "round {round}: bar {ts} of an acknowledged write holds {have:?}, not {close} or later"
        );
    }
    for tf in ["1h", "1d"] {
        assert_eq!(
            derived(&e, tf),
            resample(&e, tf),
            "round {round}: {tf} after the restart"
        );
    }
    e.derive_pass();
    for tf in ["1h", "1d"] {
        assert_eq!(
            derived(&e, tf),
            resample(&e, tf),
            "round {round}: {tf} after the first pass"
        );
    }
    let report = common::validate_deep(&e);
    assert!(report.clean, "round {round}: {:#?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_derived_series_are_materialized_loses_nothing() {
    let rounds = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        12
    } else {
        3
    };
    let dir = tempfile::tempdir().unwrap();
    let mut acked_all: Vec<(i64, i64)> = Vec::new();
    let (mut next_append, mut n) = (BASE + REWRITE_SPAN * ROWS * MINUTE, 0i64);
    let mut seed: u64 = 0xdec0de;
    for round in 0..rounds {
        let mut server = common::spawn_server(dir.path(), &[]);
        let base = format!("http://{}", server.http);
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{base}/v1/kline/series"))
            .json(&serde_json::json!({"symbol": "DRVK", "timeframe": "1m", "price_scale": 1, "volume_scale": 1}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register: {}", r.status());
        if round == 0 {
            // The old windows exist before the rules, so rewrites replace bars.
            for w in 0..REWRITE_SPAN / 20 {
                let start = BASE + w * 20 * ROWS * MINUTE;
                let recs: Vec<_> = (0..20 * ROWS)
                    .map(|k| serde_json::json!({"ts": start + k * MINUTE, "open": -1, "high": 0, "low": -1, "close": -1, "volume": 1}))
                    .collect();
                let r = c
                    .post(format!("{base}/v1/kline/DRVK/1m/records"))
                    .json(&serde_json::json!({"records": recs}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "load: {}", r.status());
            }
            for tf in ["1h", "1d"] {
                let r = c
                    .post(format!("{base}/v1/kline/derive"))
                    .json(&serde_json::json!({"from_timeframe": "1m", "timeframe": tf, "symbols": "*"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "rule {tf}");
            }
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let w = tokio::spawn(writer(base.clone(), next_append, n, seed));
        tokio::time::sleep(Duration::from_millis(1200 + seed % 1500)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let (a, b, acked) = w.await.unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged before the kill"
        );
        next_append = a;
        n = b + 1;
        acked_all.extend(acked);
        let root = dir.path().to_path_buf();
        let list = acked_all.clone();
        tokio::task::spawn_blocking(move || verify(&root, &list, round))
            .await
            .unwrap();
    }
}

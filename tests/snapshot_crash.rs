//! SIGKILL of a real `fastk serve` while snapshots are being created under concurrent
//! writes. After each kill the store is reopened: every snapshot whose create was
//! acknowledged is there and reads exactly what it read before the kill; every
//! snapshot there (acknowledged or not) holds whole writes only; no temp file of a
//! snapshot survives; a deep validation is clean.
//!
//! Quick by default (3 kills); `FASTK_TEST_LONG=1` runs 12.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{MINUTE, engine_with};
use fastk::query::snapshots::At;
use fastk::record::{SeriesKey, TsRange};

const BASE: i64 = 1_600_000_000_000;
/// Every acknowledged snapshot and the `(ts, close)` rows it read right after its 201.
type Acked = Arc<Mutex<BTreeMap<String, Vec<(i64, i64)>>>>;

/// Bars per write; write `i` covers `[BASE + i * ROWS min, ...)` and every bar's close is `i`.
const ROWS: i64 = 20;

fn body(i: i64) -> serde_json::Value {
    let recs: Vec<_> = (0..ROWS)
        .map(|k| {
            let ts = BASE + (i * ROWS + k) * MINUTE;
            serde_json::json!({"ts": ts, "open": i, "high": i, "low": i, "close": i, "volume": k})
        })
        .collect();
    serde_json::json!({ "records": recs })
}

/// `(ts, close)` of every bar of the snapshot `name` (or the series, `None`) over HTTP.
async fn http_rows(c: &reqwest::Client, base: &str, name: &str) -> Option<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let mut start: Option<i64> = None;
    loop {
        let mut url = format!("{base}/v1/kline/SNAPK/1m/records?snapshot={name}&limit=100000");
        if let Some(s) = start {
            url.push_str(&format!("&start_ts={s}"));
        }
        let r = c.get(&url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let page: serde_json::Value = r.json().await.ok()?;
        for rec in page["records"].as_array()? {
            out.push((rec["ts"].as_i64()?, rec["close"].as_i64()?));
        }
        match page["next_start_ts"].as_i64() {
            Some(n) => start = Some(n),
            None => return Some(out),
        }
    }
}

/// Every write whose bars are present is present whole.
fn whole_writes(rows: &[(i64, i64)]) -> Result<usize, String> {
    let mut per: BTreeMap<i64, i64> = BTreeMap::new();
    for &(ts, close) in rows {
        let w = (ts - BASE) / (ROWS * MINUTE);
        if w != close {
            return Err(format!("bar at {ts} carries write {close}, not {w}"));
        }
        *per.entry(w).or_default() += 1;
    }
    match per.iter().find(|(_, n)| **n != ROWS) {
        Some((w, n)) => Err(format!("write {w} is partial: {n} of {ROWS} bars")),
        None => Ok(per.len()),
    }
}

async fn writer(base: String, mut i: i64) -> i64 {
    let c = reqwest::Client::new();
    loop {
        let url = format!("{base}/v1/kline/SNAPK/1m/records");
        match c.post(&url).json(&body(i)).send().await {
            Ok(r) if r.status().is_success() => i += 1,
            _ => return i,
        }
    }
}

/// Creates snapshots one after another until the server goes; each acknowledged one
/// is read back at once and recorded with what it read.
async fn snapshotter(base: String, round: usize, acked: Acked) {
    let c = reqwest::Client::new();
    for n in 0.. {
        let name = format!("r{round}-{n}");
        let body = serde_json::json!({"name": name, "series": [{"kind": "kline", "symbol": "SNAPK", "timeframe": "1m"}]});
        match c
            .post(format!("{base}/v1/snapshots"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 201 => {}
            _ => return,
        }
        let Some(rows) = http_rows(&c, &base, &name).await else {
            return;
        };
        acked.lock().unwrap().insert(name, rows);
    }
}

fn verify(root: &Path, acked: &BTreeMap<String, Vec<(i64, i64)>>, round: usize) -> i64 {
    let e = engine_with(root, |_| {});
    let key = SeriesKey::kline("SNAPK", "1m").unwrap();
    let rows_of = |at: Option<&str>| -> Vec<(i64, i64)> {
        let at = at.map_or(At::Now, |s| At::Snapshot(s.to_string()));
        let page = e.read_at(&key, &at, TsRange::all(), usize::MAX).unwrap();
        page.slices
            .iter()
            .flat_map(|s| s.ts().iter().copied().zip(s.col(4).iter().copied()))
            .collect()
    };
    for (name, rows) in acked {
        assert_eq!(
            &rows_of(Some(name)),
            rows,
            "round {round}: acknowledged snapshot {name} changed or lost"
        );
    }
    for snap in e.list_snapshots() {
        let rows = rows_of(Some(&snap.name));
        if let Err(why) = whole_writes(&rows) {
            panic!("round {round}: snapshot {}: {why}", snap.name);
        }
    }
    let live = rows_of(None);
    let writes = whole_writes(&live).unwrap_or_else(|why| panic!("round {round}: {why}"));
    let report = common::validate_deep(&e);
    assert!(report.clean, "round {round}: {:#?}", report.findings);
    for f in std::fs::read_dir(root.join("snapshots")).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".tmp-") && name.ends_with(".snap"),
            "round {round}: {name} left in snapshots/"
        );
    }
    writes as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_snapshots_are_created_loses_no_acknowledged_snapshot() {
    let rounds = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        12
    } else {
        3
    };
    let dir = tempfile::tempdir().unwrap();
    let all_acked: Acked = Arc::default();
    let mut next = 0i64;
    let mut seed: u64 = 0x5eed_0b5e;
    for round in 0..rounds {
        let mut server = common::spawn_server(dir.path(), &[]);
        let base = format!("http://{}", server.http);
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{base}/v1/kline/series"))
            .json(&serde_json::json!({"symbol": "SNAPK", "timeframe": "1m", "price_scale": 1, "volume_scale": 1}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register: {}", r.status());
        let before = all_acked.lock().unwrap().len();
        let w = tokio::spawn(writer(base.clone(), next));
        let s = tokio::spawn(snapshotter(base.clone(), round, Arc::clone(&all_acked)));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 700)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let _ = w.await;
        s.await.unwrap();
        let acked = all_acked.lock().unwrap().clone();
        assert!(
            acked.len() > before,
            "round {round}: no snapshot was acknowledged before the kill"
        );
        let root = dir.path().to_path_buf();
        next = tokio::task::spawn_blocking(move || verify(&root, &acked, round))
            .await
            .unwrap();
    }
}

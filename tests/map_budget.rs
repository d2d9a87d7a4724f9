//! The mapping budget: a store with far more chunk files than `storage.max_mapped_files`
//! reads correctly, end to end and again, without ever holding more mappings than the
//! budget; a read that needs a mapping while every slot is held by reads in progress is
//! `unavailable` (503), and `/health` says so while it lasts.
//!
//! The story: every chunk a server had ever read stayed mapped for the life of the
//! process. With 10,000 kline series of a year of 1h bars (120,000 month files),
//! reading each series once ran into the kernel's `vm.max_map_count` (65,530): from
//! then on about half the series read as 500 "Cannot allocate memory", writes and the
//! blocking pool failed with them, `/health` still said ok, and only a restart helped.
//! Before the fix the first assertion on live mappings below failed (every chunk read
//! stayed mapped), and a refused mapping was a 500 `internal`.
//!
//! `FASTK_TEST_LONG=1` makes the big series 2,500 months long (quick default: 700).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::{DAY, HOUR, JAN_2024, engine_with, kline_registration, scalar_registration};
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::types::{Predicate, QueryRequest, Strategy};
use fastk::record::{SeriesKey, TsRange, ValueType};
use fastk::storage::batch::Projection;
use fastk::storage::{ChunkSlice, WriteBatch};
use serde_json::Value;
use tower::ServiceExt;

const BUDGET: usize = 64;
/// Rows of the big series are 10 days apart: about three per month, one chunk each month.
const STEP: i64 = 10 * DAY;

type Kline = [i64; 6];

struct Fixture {
    _dir: tempfile::TempDir,
    e: Arc<Engine>,
    big: SeriesKey,
    big_rows: BTreeMap<i64, Kline>,
    smalls: Vec<(SeriesKey, BTreeMap<i64, Kline>)>,
    scalar: SeriesKey,
    scalar_rows: Vec<(i64, i64)>,
}

fn months() -> usize {
    if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        2500
    } else {
        700
    }
}

fn kline_row(ts: i64, k: i64) -> Kline {
    let open = 1_000 + (k * 7919) % 500;
    [ts, open, open + 9, open - 9, open + (k % 5) - 2, k]
}

fn write_klines(e: &Engine, key: &SeriesKey, rows: &[Kline]) {
    let mut b = WriteBatch::with_capacity(6, rows.len());
    for r in rows {
        for (c, v) in r.iter().enumerate() {
            b.cols[c].push(*v);
        }
    }
    e.write(key, b, None).unwrap();
    // Small writes go through the write-ahead log: fold them, so the rows are in
    // chunk files (what this test maps).
    e.store.fold_all();
}

fn register_kline(e: &Engine, symbol: &str, timeframe: &str) -> SeriesKey {
    e.register_kline(&kline_registration(symbol, timeframe))
        .unwrap();
    SeriesKey::kline(symbol, timeframe).unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |c| {
        c.storage.max_mapped_files = BUDGET;
        // Room for a few zone maps only, so they are evicted too.
        c.storage.zonemap_cache_bytes = 4096;
        c.storage.zonemap_block_rows = 2;
        // Thousands of chunk files, as the budget is about (writes pack nothing, and
        // small series fold into files, not the catalog).
        c.storage.pack_target_bytes = 0;
        c.storage.resident_rows_max = 0;
        // Mapped raw files: sealed months would be written compressed (decompressed
        // images, whose budget tests/compression.rs covers).
        c.storage.compress_on_write = false;
    });

    // One series spanning thousands of months, written in four big writes.
    let big = register_kline(&e, "BIG", "1d");
    let n = (months() as i64 * 304 / 100) as usize; // ~3.04 rows a month
    let rows: Vec<Kline> = (0..n as i64).map(|k| kline_row(k * STEP, k)).collect();
    for part in rows.chunks(n.div_ceil(4)) {
        write_klines(&e, &big, part);
    }
    let big_rows = rows.iter().map(|r| (r[0], *r)).collect();

    // Many small series: six months each.
    let mut smalls = Vec::new();
    for i in 0..16 {
        let key = register_kline(&e, &format!("S{i:02}"), "1h");
        let rows: Vec<Kline> = (0..12i64)
            .map(|k| kline_row(JAN_2024 + k * 15 * DAY + i * HOUR, k + i))
            .collect();
        write_klines(&e, &key, &rows);
        smalls.push((key, rows.iter().map(|r| (r[0], *r)).collect()));
    }

    // A scalar series over 300 months for predicate queries (zone maps, value indexes).
    e.register_scalar(&scalar_registration(
        "BIG",
        "1d",
        "signal",
        "x",
        Some(ValueType::I64),
    ))
    .unwrap();
    let scalar = SeriesKey::scalar("BIG", "1d", "signal", "x").unwrap();
    let scalar_rows: Vec<(i64, i64)> = (0..912).map(|k| (k * STEP, (k * 37) % 50)).collect();
    let mut b = WriteBatch::with_capacity(2, scalar_rows.len());
    for &(ts, v) in &scalar_rows {
        b.cols[0].push(ts);
        b.cols[1].push(v);
    }
    e.write(&scalar, b, None).unwrap();
    e.store.fold_all();

    Fixture {
        _dir: dir,
        e,
        big,
        big_rows,
        smalls,
        scalar,
        scalar_rows,
    }
}

fn live(e: &Engine) -> usize {
    e.store.options().map_cache.live()
}

fn assert_within_budget(e: &Engine, what: &str) {
    let s = e.store.options().map_cache.stats();
    assert!(
        s.live <= BUDGET && s.peak <= BUDGET,
        "{what}: {} live mappings (peak {}) over the budget of {BUDGET}",
        s.live,
        s.peak
    );
}

fn rows_of(slices: &[ChunkSlice]) -> Vec<Kline> {
    let mut out = Vec::new();
    for s in slices {
        for i in 0..s.len() {
            let mut r = [0; 6];
            for (c, v) in r.iter_mut().enumerate() {
                *v = s.col(c)[i];
            }
            out.push(r);
        }
    }
    out
}

/// Pages through `key` with `limit` rows a page and returns every row.
fn read_all(e: &Engine, key: &SeriesKey, limit: usize) -> Vec<Kline> {
    let mut out = Vec::new();
    let mut from = None;
    loop {
        let page = e.read(key, TsRange::new(from, None), limit).unwrap();
        out.extend(rows_of(&page.slices));
        drop(page.slices);
        assert_within_budget(e, "paged read");
        match page.next_start_ts {
            Some(ts) => from = Some(ts),
            None => return out,
        }
    }
}

fn read_everything(f: &Fixture, round: usize) {
    let e = &f.e;
    let want: Vec<Kline> = f.big_rows.values().copied().collect();
    // Range reads, paged (a page of 90 rows holds about 30 chunks at once).
    assert_eq!(
        read_all(e, &f.big, 90),
        want,
        "round {round}: paged range read"
    );

    // The streaming path (Flight DoGet): slices become zero-copy batches one by one.
    let (meta, stream) = e.stream(&f.big, TsRange::all(), None).unwrap();
    let projection = Projection::all(&meta);
    let mut streamed = Vec::new();
    for s in stream {
        let s = s.unwrap();
        let batch = projection.batch(&s);
        assert_eq!(batch.num_rows(), s.len());
        streamed.extend(rows_of(std::slice::from_ref(&s)));
        assert_within_budget(e, "stream");
    }
    assert_eq!(streamed, want, "round {round}: stream");

    // Latest, and counts over a window that cuts chunks at both ends.
    let latest = e.latest(&f.big, TsRange::all(), 100).unwrap();
    assert_eq!(rows_of(&latest.slices), want[want.len() - 100..]);
    drop(latest);
    let (lo, hi) = (want[100][0] + 1, want[want.len() - 100][0] - 1);
    let n = want.iter().filter(|r| r[0] >= lo && r[0] <= hi).count() as u64;
    assert_eq!(
        e.count(&f.big, TsRange::new(Some(lo), Some(hi)), None)
            .unwrap(),
        n
    );

    for (key, rows) in &f.smalls {
        let got = e.read(key, TsRange::all(), 10_000).unwrap();
        assert_eq!(
            rows_of(&got.slices),
            rows.values().copied().collect::<Vec<_>>()
        );
    }
    assert_within_budget(e, "small series");

    // Predicate queries with every strategy: value indexes are mappings in the budget,
    // zone maps are heap in theirs; neither may make an answer fall back or differ.
    let preds = [
        (
            Predicate::Eq { value: 7.into() },
            (|v| v == 7) as fn(i64) -> bool,
        ),
        (
            Predicate::Gte { value: 45.into() },
            (|v| v >= 45) as fn(i64) -> bool,
        ),
        (
            Predicate::Between {
                min: 10.into(),
                max: 12.into(),
                inclusive: true,
            },
            (|v| (10..=12).contains(&v)) as fn(i64) -> bool,
        ),
    ];
    for (p, matches) in preds {
        let want: Vec<i64> = f
            .scalar_rows
            .iter()
            .filter(|(_, v)| matches(*v))
            .map(|(ts, _)| *ts)
            .collect();
        for strategy in [
            Strategy::Scan,
            Strategy::Zonemap,
            Strategy::ValueIndex,
            Strategy::Auto,
        ] {
            let req = QueryRequest {
                start_ts: None,
                end_ts: None,
                predicate: p.clone(),
                return_values: None,
                limit: None,
                strategy: Some(strategy),
                snapshot: None,
                version: None,
                as_of_commit: None,
            };
            let r = e.query(&f.scalar, &req, usize::MAX).unwrap();
            assert_eq!(r.timestamps, want, "round {round}: {p:?} with {strategy:?}");
            assert_eq!(r.stats.sidecar_fallbacks, 0, "{p:?} with {strategy:?}");
            assert_within_budget(e, "query");
        }
    }
    let s = e.store.options().map_cache.stats();
    assert!(s.zonemap_bytes <= 4096, "zone maps over their cache: {s:?}");
}

async fn get(e: &Arc<Engine>, uri: &str) -> (u16, Value) {
    let resp = fastk::http::router(Arc::clone(e))
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn more_chunks_than_the_budget_read_correctly_twice_and_a_full_budget_is_503() {
    let f = fixture();
    let e = &f.e;
    let chunks: usize = e
        .store
        .list()
        .iter()
        .map(|s| s.snapshot().chunks().count())
        .sum();
    assert!(
        chunks > BUDGET * 10,
        "the store must hold many more chunks ({chunks}) than the budget"
    );
    for round in 0..2 {
        read_everything(&f, round);
        let s = e.store.options().map_cache.stats();
        assert_eq!(s.in_use, 0, "nothing is held after the reads: {s:?}");
        assert_eq!(s.failures_total, 0, "no read was refused: {s:?}");
        assert_eq!(s.peak, BUDGET, "the reads filled the cache: {s:?}");
        assert_eq!(e.health().status, "ok", "{:?}", e.health().details);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Pin every slot: half by slices, half by Arrow batches alone (as DoGet holds them).
    let (meta, mut stream) = e.stream(&f.big, TsRange::all(), None).unwrap();
    let projection = Projection::all(&meta);
    let mut slices = Vec::new();
    let mut batches = Vec::new();
    while slices.len() + batches.len() < BUDGET {
        let s = stream.next().unwrap().unwrap();
        if slices.len() < BUDGET / 2 {
            slices.push(s);
        } else {
            batches.push(projection.batch(&s));
        }
    }
    let s = e.store.options().map_cache.stats();
    assert_eq!((s.live, s.in_use), (BUDGET, BUDGET), "{s:?}");
    let health = e.health();
    assert_eq!(health.status, "degraded");
    assert_eq!(health.mapped_files, BUDGET as u64);
    assert_eq!(health.max_mapped_files, BUDGET as u64);
    assert!(
        health
            .details
            .iter()
            .any(|d| d.contains("storage.max_mapped_files")),
        "{:?}",
        health.details
    );

    // The next chunk of the same stream, and any other series, cannot be mapped.
    let err = stream.next().unwrap().unwrap_err();
    assert!(
        err.to_string().contains("storage.max_mapped_files"),
        "{err}"
    );
    let err = e.read(&f.smalls[3].0, TsRange::all(), 10).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    assert!(err.message.contains("storage.max_mapped_files"));
    let (status, body) = rt.block_on(get(e, "/v1/kline/S05/1h/records"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, body) = rt.block_on(get(e, "/health"));
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")));
    let metrics = e.metrics_text();
    assert!(metrics.contains(&format!("fastk_mapped_files_in_use {BUDGET}")));
    assert!(metrics.contains(&format!("fastk_mapped_files_max {BUDGET}")));
    assert!(metrics.contains("fastk_map_failures_total 3"), "{metrics}");
    assert_within_budget(e, "pinned");

    // Released: everything reads again, and health recovers.
    drop((slices, batches, stream));
    assert_eq!(e.store.options().map_cache.stats().in_use, 0);
    read_everything(&f, 2);
    let (status, body) = rt.block_on(get(e, "/health"));
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    assert!(body["mapped_files"].as_u64().unwrap() <= BUDGET as u64);
}

/// Re-mapping a released chunk skips the checksum only for the very file verified
/// before: a chunk changed in place after verification (same name, same length) is
/// caught when it is mapped again, not served.
#[test]
fn a_chunk_changed_after_verification_is_caught_when_mapped_again() {
    let f = fixture();
    let e = &f.e;
    let want: Vec<Kline> = f.big_rows.values().copied().collect();
    assert_eq!(read_all(e, &f.big, 90), want);
    let dir = e.store.root().join("series/kline/BIG/1d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "chunk"))
        .collect();
    files.sort();
    let victim = &files[5];
    // Its mapping is long evicted: the reads above went through hundreds of chunks.
    let mut bytes = std::fs::read(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(victim, &bytes).unwrap();
    let mut from = None;
    let err = loop {
        match e.read(&f.big, TsRange::new(from, None), 90) {
            Ok(p) => from = Some(p.next_start_ts.expect("the damaged chunk is read")),
            Err(err) => break err,
        }
    };
    assert_eq!(err.kind, ErrorKind::Corrupted, "{err:?}");
    assert!(live(e) <= BUDGET);
}

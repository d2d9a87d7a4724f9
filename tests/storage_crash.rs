//! Crash test: a child process writing in a loop is killed with SIGKILL at random
//! points, again and again. After each kill the store is reopened: every acknowledged
//! write is present, the write in flight is either wholly there or wholly absent,
//! nothing half-written is visible, no temp file survives recovery, and a deep
//! validation is clean.
//!
//! Meanwhile a second thread of the child churns another series: register, write,
//! write through a handle of a deleted incarnation (must be refused NotFound), delete,
//! over and over. After each kill that series is either absent or holds exactly one
//! whole write of one incarnation, and validation is still clean.
//!
//! Quick by default (a handful of kills); `FASTK_TEST_LONG=1` runs many more.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{MINUTE, engine_with, scalar_meta, series_rows, store_opts, validate_deep};
use fastk::record::{SeriesKey, SeriesMeta, TsRange, ValueType};
use fastk::storage::{Store, StoreOptions, WriteBatch};

/// Each write `i` appends in its own window of this many minutes (about 2 weeks), so
/// appends cross month boundaries regularly.
const WINDOW: i64 = 20_000;
const BASE_TS: i64 = 1_700_000_000_000;

fn meta() -> SeriesMeta {
    scalar_meta("CRASH", "1m", "signal", "s", ValueType::I64)
}

fn opts() -> StoreOptions {
    store_opts(|o| {
        o.max_chunks_per_month = 4;
        o.zonemap_block_rows = Some(64);
    })
}

/// Deterministic xorshift so parent and child agree on write `i` without talking.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The rows of write number `i` (1-based): mostly appends, every fourth rewrites a
/// stretch of an earlier write (a copy-on-write month rewrite), shuffled.
fn write_rows(i: u64) -> Vec<(i64, i64)> {
    let mut r = rng(i);
    let n = 1 + (r() % 3000) as i64;
    let window = if i.is_multiple_of(4) && i > 1 {
        1 + r() % (i - 1)
    } else {
        i
    };
    let start = BASE_TS + window as i64 * WINDOW * MINUTE + (r() % 1000) as i64 * MINUTE;
    let mut rows: Vec<(i64, i64)> = (0..n)
        .map(|k| (start + k * MINUTE, (i as i64) << 32 | k))
        .collect();
    for k in (1..rows.len()).rev() {
        rows.swap(k, (r() % (k as u64 + 1)) as usize);
    }
    rows
}

fn model_after(v: u64) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for i in 1..=v {
        m.extend(write_rows(i));
    }
    m
}

fn churn_meta() -> SeriesMeta {
    SeriesMeta {
        key: SeriesKey::scalar("CHURN", "1m", "signal", "s").unwrap(),
        ..meta()
    }
}

/// Rows of churn write `n`: always `CHURN_ROWS` rows over two months, value `n`.
const CHURN_ROWS: i64 = 500;
fn churn_batch(n: i64) -> WriteBatch {
    let ts: Vec<i64> = (0..CHURN_ROWS).map(|k| BASE_TS + k * 97 * MINUTE).collect();
    WriteBatch::from_cols(vec![ts, vec![n; CHURN_ROWS as usize]])
}

/// The churning thread of the child: see the module comment. Prints `VIOLATION` when
/// a stale handle is not refused.
fn churn(store: &Store) {
    for n in 1.. {
        let (old, _) = store.register(churn_meta()).unwrap();
        old.write(churn_batch(n), None).unwrap();
        store.delete(&churn_meta().key).unwrap();
        let (new, _) = store.register(churn_meta()).unwrap();
        match old.write(churn_batch(-n), None) {
            Err(fastk::storage::StorageError::NotFound(_)) => {}
            other => println!("VIOLATION stale write: {other:?}"),
        }
        new.write(churn_batch(n), None).unwrap();
        store.delete(&churn_meta().key).unwrap();
    }
}

/// The child: opens the store and writes forever, printing each acknowledged version.
#[test]
#[ignore = "run by crash_kill_loop as a child process"]
fn crash_child() {
    let Ok(root) = std::env::var("FASTK_CRASH_ROOT") else {
        return;
    };
    let store: &'static Store = Box::leak(Box::new(Store::open(&root, opts()).unwrap()));
    std::thread::spawn(|| churn(store));
    let (series, _) = store.register(meta()).unwrap();
    loop {
        let i = series.version() + 1;
        let rows = write_rows(i);
        let mut b = WriteBatch::with_capacity(2, rows.len());
        for (ts, v) in rows {
            b.cols[0].push(ts);
            b.cols[1].push(v);
        }
        let r = series.write(b, Some(i - 1)).unwrap();
        println!("ack {}", r.version);
    }
}

/// Runs this binary's ignored test `child` over `root` (passed in the variable `env`),
/// kills it with SIGKILL after `target` acknowledgements (zero: before the first, mid-
/// write; or after a minute without one) and a pause of `pause_us` microseconds, and
/// returns the highest version it acknowledged (0: none).
fn kill_after_acks(child: &str, env: &str, root: &Path, target: u64, pause_us: u64) -> u64 {
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    // Read acknowledgements on a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        // The test harness prints `test crash_child ... ` without a newline before the
        // child's first line, so an acknowledgement may sit mid-line. Missing it once
        // made a round look like it had lost a write (version two past the last
        // acknowledgement seen).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            assert!(!line.contains("VIOLATION"), "{line}");
            if let Some((_, v)) = line.rsplit_once("ack ") {
                let _ = tx.send(v.trim().parse::<u64>().unwrap());
            }
        }
    });
    let mut last_acked = 0;
    let mut seen = 0;
    while seen < target {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => {
                last_acked = last_acked.max(v);
                seen += 1;
            }
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_micros(pause_us));
    proc.kill().unwrap();
    proc.wait().unwrap();
    reader.join().unwrap();
    while let Ok(v) = rx.try_recv() {
        last_acked = last_acked.max(v);
    }
    last_acked
}

#[test]
fn crash_kill_loop() {
    let kills = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        60
    } else {
        6
    };
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(42);
    let mut last_acked = 0u64;
    for round in 0..kills {
        let target = r() % 12;
        let pause = r() % 20_000;
        let acked = kill_after_acks("crash_child", "FASTK_CRASH_ROOT", dir.path(), target, pause);
        last_acked = last_acked.max(acked);
        verify(dir.path(), last_acked, round);
    }
    assert!(last_acked > 0, "the child never acknowledged a write");
}

fn verify(root: &std::path::Path, last_acked: u64, round: u32) {
    let store = Store::open(root, opts()).unwrap();
    let series = store
        .get(&meta().key)
        .unwrap_or_else(|_| panic!("round {round}: series missing"));
    let v = series.version();
    assert!(
        v == last_acked || v == last_acked + 1,
        "round {round}: version {v}, last acknowledged {last_acked}"
    );
    let want = model_after(v);
    let got: BTreeMap<i64, i64> = series_rows(&series).into_iter().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "round {round}: row count at version {v}"
    );
    assert!(
        got == want,
        "round {round}: contents differ from the model at version {v}"
    );
    if let Ok(churn) = store.get(&churn_meta().key) {
        let snap = churn.snapshot();
        let mut values = Vec::new();
        for s in snap.range(TsRange::all()) {
            values.extend_from_slice(s.unwrap().col(1));
        }
        assert!(
            values.is_empty()
                || (values.len() == CHURN_ROWS as usize
                    && values[0] > 0
                    && values.iter().all(|&v| v == values[0])),
            "round {round}: the churned series holds {} rows, not one whole write",
            values.len()
        );
    }
    for e in std::fs::read_dir(series.dir()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".tmp-"),
            "round {round}: temp file {name} survived recovery"
        );
    }
    drop(series);
    drop(store);
    let report = validate_deep(&engine_with(root, |c| {
        c.storage.max_chunks_per_month = 4;
        c.storage.zonemap_block_rows = 64;
    }));
    assert!(
        report.clean,
        "round {round}: validate found {:#?}",
        report.findings
    );
}

// ------------------------------------------------- the write-ahead log under SIGKILL

/// Series of the logged kill loop; every write `i` puts one row (ts `i` minutes past
/// `BASE_TS`, value `i`) into each of them, as one many-series write through the log.
/// At least 256, so a write is applied by two threads and, when the solo writer's
/// write is not in its group, its record is synced while it applies (the log's
/// invariant 5): kills land in that overlap too.
const LOGGED_SERIES: usize = 256;

fn logged_meta(k: usize) -> SeriesMeta {
    SeriesMeta {
        key: SeriesKey::scalar(&format!("S{k:03}"), "1m", "signal", "s").unwrap(),
        ..meta()
    }
}

/// Small fold thresholds, so folds into chunk files (and the dropping of log segments)
/// race the kills too.
fn logged_opts() -> StoreOptions {
    let mut o = opts();
    o.wal.fold_rows = 7;
    o.wal.fold_age = Duration::from_millis(20);
    o.wal.fold_interval = Duration::from_millis(5);
    // About 20 writes of the 256 series a segment: segments roll and are dropped
    // often, and most writes still fit the open one (a write that would start a
    // segment is not synced while it applies).
    o.wal.segment_bytes = 256 << 10;
    o
}

/// The child of the logged loop: tiny many-series writes forever, each acknowledged
/// write printed; a second thread writes one-row single-series writes to its own
/// series through the log, checking versions.
#[test]
#[ignore = "run by crash_kill_loop_logged_many_series as a child process"]
fn crash_child_logged() {
    logged_child("FASTK_CRASH_WAL_ROOT", logged_opts());
}

/// As [`logged_opts`], with the series folding into the store's catalog while they
/// hold at most 256 rows (`storage::resident`), then into directories of their own:
/// kills land in the catalog's state records and in a series' move out of it.
fn resident_opts() -> StoreOptions {
    let mut o = logged_opts();
    o.resident_rows_max = 256;
    o
}

#[test]
#[ignore = "run by crash_kill_loop_resident_many_series as a child process"]
fn crash_child_resident() {
    logged_child("FASTK_CRASH_RES_ROOT", resident_opts());
}

fn logged_child(env: &str, opts: StoreOptions) {
    let Ok(root) = std::env::var(env) else {
        return;
    };
    let store: &'static Store = Box::leak(Box::new(Store::open(&root, opts).unwrap()));
    let series: Vec<_> = (0..LOGGED_SERIES)
        .map(|k| store.register(logged_meta(k)).unwrap().0)
        .collect();
    let (solo, _) = store.register(meta()).unwrap();
    std::thread::spawn(move || {
        loop {
            let v = solo.version();
            let b =
                WriteBatch::from_cols(vec![vec![BASE_TS + v as i64 * MINUTE], vec![v as i64 + 1]]);
            match store.write(&solo, b, Some(v)) {
                Ok(r) if r.version == v + 1 => {}
                other => println!("VIOLATION solo write: {other:?}"),
            }
            // Most groups then hold the many-series write alone, which (appends only,
            // no expected version) is synced while it applies.
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    loop {
        let i = series[0].version() + 1;
        let entries = series
            .iter()
            .map(|s| {
                let b =
                    WriteBatch::from_cols(vec![vec![BASE_TS + i as i64 * MINUTE], vec![i as i64]]);
                (std::sync::Arc::clone(s), b)
            })
            .collect();
        let reports = store.write_many(entries).unwrap();
        if reports.iter().any(|r| r.version != i) {
            println!("VIOLATION versions {reports:?} for write {i}");
        }
        println!("ack {i}");
    }
}

/// SIGKILL during tiny many-series writes through the log, with folds racing: every
/// acknowledged write is in every series, the write in flight is in all of them or
/// in none, and the log replays to exactly that state.
#[test]
fn crash_kill_loop_logged_many_series() {
    logged_kill_loop("crash_child_logged", "FASTK_CRASH_WAL_ROOT", logged_opts);
}

/// The same with small series folding into the catalog, then out of it.
#[test]
fn crash_kill_loop_resident_many_series() {
    let (dir, resident_rounds) = logged_kill_loop(
        "crash_child_resident",
        "FASTK_CRASH_RES_ROOT",
        resident_opts,
    );
    // The loop went through both: series kept in the catalog, then in directories.
    assert!(
        resident_rounds > 0,
        "no round found the series in the catalog"
    );
    let store = Store::open(dir.path(), resident_opts()).unwrap();
    let s = store.get(&logged_meta(0).key).unwrap();
    assert!(
        s.version() > 256 && s.is_materialized(),
        "the series outgrew the catalog: version {}",
        s.version()
    );
    store.abandon();
}

/// Returns the store's directory and the rounds that reopened series 0 with rows and
/// no directory (kept in the catalog, or only in the log).
fn logged_kill_loop(
    child: &str,
    env: &str,
    opts: fn() -> StoreOptions,
) -> (tempfile::TempDir, u32) {
    let mut resident_rounds = 0;
    let kills = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        60
    } else {
        6
    };
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(7);
    let mut last_acked = 0u64;
    for round in 0..kills {
        // Enough acknowledged writes over the rounds that the series pass 256 rows.
        let target = 60 + r() % 120;
        let pause = r() % 5_000;
        let acked = kill_after_acks(child, env, dir.path(), target, pause);
        last_acked = last_acked.max(acked);
        let store = Store::open(dir.path(), opts()).unwrap();
        let mut versions = Vec::new();
        for k in 0..LOGGED_SERIES {
            let s = store
                .get(&logged_meta(k).key)
                .unwrap_or_else(|_| panic!("round {round}: series {k} missing"));
            let v = s.version();
            let got = series_rows(&s);
            let want: Vec<(i64, i64)> = (1..=v as i64).map(|i| (BASE_TS + i * MINUTE, i)).collect();
            assert!(
                got == want,
                "round {round}: series {k} at version {v} holds {} rows",
                got.len()
            );
            versions.push(v);
        }
        let first = store.get(&logged_meta(0).key).unwrap();
        if !first.is_materialized() && first.version() > 0 {
            resident_rounds += 1;
        }
        assert!(
            versions.iter().all(|&v| v == versions[0]),
            "round {round}: a many-series write is torn: versions {versions:?}"
        );
        assert!(
            versions[0] == last_acked || versions[0] == last_acked + 1,
            "round {round}: version {}, last acknowledged {last_acked}",
            versions[0]
        );
        let solo = store.get(&meta().key).unwrap();
        let v = solo.version() as i64;
        let mut got = Vec::new();
        for sl in solo.snapshot().range(TsRange::all()) {
            got.extend_from_slice(sl.unwrap().col(1));
        }
        assert_eq!(
            got,
            (1..=v).collect::<Vec<_>>(),
            "round {round}: the solo series"
        );
        store.abandon();
    }
    assert!(last_acked > 0, "the child never acknowledged a write");
    (dir, resident_rounds)
}

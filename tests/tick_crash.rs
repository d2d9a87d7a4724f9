//! Crash test for tick series: a child process writing trades in a loop (bursts of
//! many trades per nanosecond, `seq` mostly left to the store, some given, every
//! fourth write rewriting an earlier day) is killed with SIGKILL at random points,
//! again and again. After each kill the store is reopened: every acknowledged write is
//! there, the write in flight is wholly there or wholly absent (the `seq` the store
//! numbered included), no temp file survives recovery, and a deep validation is clean.
//!
//! Quick by default (a handful of kills); `FASTK_TEST_LONG=1` runs many more.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::ticks::{DAY0, HOUR_NS, Model, Row, apply_model, batch, metas, model_rows};
use common::{engine_with, store_opts, validate_deep};
use fastk::record::{SeriesMeta, TsRange};
use fastk::storage::{Store, StoreOptions};

fn meta() -> SeriesMeta {
    metas().remove(0)
}

fn opts() -> StoreOptions {
    store_opts(|o| o.max_chunks_per_month = 4)
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The rows of write number `i` (1-based): up to 2,000 trades over a few hours of
/// one day per write (every fourth goes back to an earlier write's day), bursts at
/// one nanosecond, a fifth of them with an explicit `seq` (unique in the write).
fn write_rows(i: u64) -> Vec<Row> {
    let mut r = rng(i);
    let n = 1 + r() % 2_000;
    let day = if i.is_multiple_of(4) && i > 1 {
        1 + r() % (i - 1)
    } else {
        i
    };
    let mut ts = DAY0 + day as i64 * 24 * HOUR_NS + (r() % 1_000) as i64;
    (0..n)
        .map(|k| {
            ts += [0, 0, 0, 1, 1_000, 3 * HOUR_NS / 2_000][(r() % 6) as usize];
            let seq = r().is_multiple_of(5).then_some(k);
            (ts, seq, (i as i64) << 32 | k as i64)
        })
        .collect()
}

fn model_after(v: u64) -> Model {
    let mut m = Model::new();
    for i in 1..=v {
        apply_model(0, &mut m, &write_rows(i)).expect("no write repeats a key");
    }
    m
}

/// The child: opens the store and writes forever, printing each acknowledged version.
#[test]
#[ignore = "run by tick_kill_loop as a child process"]
fn tick_child() {
    let Ok(root) = std::env::var("FASTK_TICK_CRASH_ROOT") else {
        return;
    };
    let store = Store::open(&root, opts()).unwrap();
    let (series, _) = store.register(meta()).unwrap();
    loop {
        let i = series.version() + 1;
        let r = store
            .write(&series, batch(0, &write_rows(i)), Some(i - 1))
            .unwrap();
        println!("ack {}", r.version);
    }
}

/// Runs the child over `root`, kills it with SIGKILL after `target` acknowledgements
/// and a pause of `pause_us` microseconds, and returns the highest version it
/// acknowledged (0: none).
fn kill_after_acks(root: &Path, target: u64, pause_us: u64) -> u64 {
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tick_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FASTK_TICK_CRASH_ROOT", root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        // An acknowledgement may sit mid-line, after the harness's `test ... `.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, v)) = line.rsplit_once("ack ") {
                let _ = tx.send(v.trim().parse::<u64>().unwrap());
            }
        }
    });
    let mut last_acked = 0;
    for _ in 0..target {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(v) => last_acked = last_acked.max(v),
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
fn tick_kill_loop() {
    let kills = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        60
    } else {
        6
    };
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(7);
    let mut last_acked = 0u64;
    for round in 0..kills {
        let acked = kill_after_acks(dir.path(), r() % 12, r() % 20_000);
        last_acked = last_acked.max(acked);
        verify(dir.path(), last_acked, round);
    }
    assert!(last_acked > 0, "the child never acknowledged a write");
}

fn verify(root: &Path, last_acked: u64, round: u32) {
    let store = Store::open(root, opts()).unwrap();
    let series = store
        .get(&meta().key)
        .unwrap_or_else(|_| panic!("round {round}: series missing"));
    let v = series.version();
    assert!(
        v == last_acked || v == last_acked + 1,
        "round {round}: version {v}, last acknowledged {last_acked}"
    );
    let want = model_rows(&model_after(v), TsRange::all());
    let snap = series.snapshot();
    let mut got = Vec::new();
    for s in snap.range(TsRange::all()) {
        let s = s.unwrap();
        for row in 0..s.len() {
            got.push((0..6).map(|c| s.col(c)[row]).collect::<Vec<i64>>());
        }
    }
    assert_eq!(got.len(), want.len(), "round {round}: rows at version {v}");
    assert!(
        got == want,
        "round {round}: contents differ from the model at version {v}"
    );
    if let Ok(files) = std::fs::read_dir(series.dir()) {
        for e in files {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                !name.starts_with(".tmp-"),
                "round {round}: temp file {name} survived"
            );
        }
    }
    drop(snap);
    drop(series);
    drop(store);
    let report = validate_deep(&engine_with(root, |c| c.storage.max_chunks_per_month = 4));
    assert!(
        report.clean,
        "round {round}: validate found {:#?}",
        report.findings
    );
}

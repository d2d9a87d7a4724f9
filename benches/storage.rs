//! Storage engine benchmark harness (`cargo bench --bench storage`).
//!
//! Reports throughput for batch ingest of 10M 1m klines, a one-year range read to
//! zero-copy RecordBatches (warm and cold), latest-100, and, as the machine's own
//! reference in the same run, `memcpy` of the same bytes. `FASTK_BENCH_QUICK=1`
//! shrinks the dataset for a smoke run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fastk::record::{SeriesKey, SeriesMeta, TsRange, ValueType};
use fastk::storage::batch::Projection;
use fastk::storage::{Store, StoreOptions, WriteBatch};

const MINUTE: i64 = 60_000;
const START: i64 = 1_104_537_600_000; // 2005-01-01

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn walk(rows: usize, seed: u64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(6, rows);
    let mut x = seed | 1;
    let mut p: i64 = 4_000_000;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let step = (x % 201) as i64 - 100;
        let open = p;
        p = (p + step).max(1000);
        let (hi, lo) = (
            open.max(p) + (x >> 8) as i64 % 50,
            open.min(p) - (x >> 16) as i64 % 50,
        );
        for (c, v) in [
            START + i as i64 * MINUTE,
            open,
            hi,
            lo,
            p,
            (x >> 24) as i64 % 100_000,
        ]
        .into_iter()
        .enumerate()
        {
            b.cols[c].push(v);
        }
    }
    b
}

fn report(name: &str, d: Duration, rows: usize, bytes: usize) {
    let s = d.as_secs_f64();
    println!(
        "{name:<44} {:>10.3} ms {:>12.1} Mrows/s {:>9.2} GB/s",
        s * 1e3,
        rows as f64 / s / 1e6,
        bytes as f64 / s / 1e9
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var("FASTK_BENCH_QUICK").is_ok();
    let total = if quick { 1_000_000 } else { 10_000_000 };
    let year = 525_600usize;
    let dir = tempfile::tempdir_in(std::env::var("FASTK_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let meta = SeriesMeta {
        key: SeriesKey::kline("BENCH", "1m").unwrap(),
        timeframe_ms: MINUTE,
        price_scale: 100,
        volume_scale: 1,
        value_type: ValueType::I64,
    };
    let (series, _) = store.register(meta.clone()).unwrap();
    println!("fastk storage benchmark: {total} rows of 1m klines (48 B/row)\n");

    // Ingest in 1M-row batches: sort check, month split, chunk build, xxh3, fsync, commit.
    // The request batches are built before the clock starts: the engine's work is what
    // is measured, not the benchmark's copying.
    let data = walk(total, 7);
    let batch_rows = 1_000_000.min(total);
    let batches: Vec<WriteBatch> = (0..total)
        .step_by(batch_rows)
        .map(|lo| {
            WriteBatch::from_cols(
                data.cols
                    .iter()
                    .map(|c| c[lo..(lo + batch_rows).min(total)].to_vec())
                    .collect(),
            )
        })
        .collect();
    drop(data);
    let t = Instant::now();
    for b in batches {
        series.write(b, None).unwrap();
    }
    report(
        &format!("ingest {total} rows in {batch_rows}-row writes"),
        t.elapsed(),
        total,
        total * 48,
    );

    // Reopen so every chunk is mapped afresh: the first read in a process verifies
    // each chunk's checksum (cold); later reads reuse the verified mapping (warm).
    drop(series);
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let snap = store.get(&meta.key).unwrap().snapshot();
    // The third year of the data (the first in quick mode, which holds under two).
    let y0: i64 = if quick { 0 } else { 2 };
    let range = TsRange::new(
        Some(START + y0 * year as i64 * MINUTE),
        Some(START + (y0 + 1) * year as i64 * MINUTE - MINUTE),
    );
    let proj = Projection::all(&meta);
    let t = Instant::now();
    let cold_batches: usize = snap
        .range(range)
        .map(|s| proj.batches(&s.unwrap(), 65_536).len())
        .sum();
    let cold = t.elapsed();
    assert!(cold_batches > 0);
    let build = || {
        let mut rows = 0;
        let mut batches = Vec::new();
        for s in snap.range(range) {
            for b in proj.batches(&s.unwrap(), 65_536) {
                rows += b.num_rows();
                batches.push(b);
            }
        }
        assert_eq!(rows, year);
        batches
    };
    let warm = time(50, build);
    report(
        "1-year range -> RecordBatches (warm, zero copy)",
        warm,
        year,
        year * 48,
    );
    report(
        "1-year range -> RecordBatches (cold, verify)",
        cold,
        year,
        year * 48,
    );
    // Reference: copying the same bytes once (what any non-zero-copy reader must do).
    let src: Vec<u8> = vec![7u8; year * 48];
    let mut dst = vec![0u8; year * 48];
    let memcpy = time(50, || {
        dst.copy_from_slice(&src);
        dst[year] as usize
    });
    report(
        "memcpy of the same 25 MB (machine reference)",
        memcpy,
        year,
        year * 48,
    );
    println!(
        "  ratio: building batches takes {:.4}x the time of one memcpy",
        warm.as_secs_f64() / memcpy.as_secs_f64()
    );

    let latest = time(2000, || snap.latest(TsRange::all(), 100).unwrap());
    report("latest-100 (slices)", latest, 100, 4800);
    let latest_b = time(2000, || {
        snap.latest(TsRange::all(), 100)
            .unwrap()
            .iter()
            .map(|s| proj.batch(s).num_rows())
            .sum::<usize>()
    });
    report("latest-100 -> RecordBatch", latest_b, 100, 4800);
}

//! Predicate query benchmark harness (`cargo bench --bench predicate`).
//!
//! A 20M-row i64 scalar series of 1m bars (38 years: 456 month chunks), values
//! uniform in [0, 1e9) so zone maps cannot help and the value index must. Sweeps
//! selectivity from 0.001% to 50% and times scan, zone map, value index and the auto
//! planner. Writes `target/bench-results/predicate.json` and the raw data to
//! `target/bench-data/scalar.bin` (ts and value as little-endian i64 pairs) so
//! `scripts/bench_predicate_duckdb.py` can time DuckDB over Parquet on the same data
//! in the same run. `FASTK_BENCH_QUICK=1` uses 2M rows.

use std::io::Write;
use std::time::{Duration, Instant};

use fastk::config::Config;
use fastk::query::Engine;
use fastk::query::types::{Predicate, QueryRequest, RegisterScalar, Strategy};
use fastk::record::{SeriesKey, ValueType};
use fastk::storage::WriteBatch;

const MINUTE: i64 = 60_000;
const START: i64 = 946_684_800_000; // 2000-01-01
const RANGE: i64 = 1_000_000_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var("FASTK_BENCH_QUICK").is_ok();
    let rows: usize = if quick { 2_000_000 } else { 20_000_000 };
    let dir = tempfile::tempdir_in(std::env::var("FASTK_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let mut config = Config::default();
    config.storage.root = dir.path().to_path_buf();
    let engine = Engine::open(config).unwrap();
    let reg = RegisterScalar {
        symbol: "BENCH".into(),
        timeframe: "1m".into(),
        timeframe_ms: None,
        category: "feature".into(),
        name: "uniform".into(),
        value_type: Some(ValueType::I64),
        retention_ms: None,
    };
    engine.register_scalar(&reg).unwrap();
    let key = SeriesKey::scalar("BENCH", "1m", "feature", "uniform").unwrap();
    let mut b = WriteBatch::with_capacity(2, rows);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.cols[0].push(START + i as i64 * MINUTE);
        b.cols[1].push((x % RANGE as u64) as i64);
    }
    dump(&b);
    let t = Instant::now();
    engine.write(&key, b, None).unwrap();
    println!(
        "ingested {rows} scalar rows with sidecars in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    println!(
        "\n{:>10} {:>12} {:>12} {:>12} {:>12} {:>9} {:>10}",
        "select%", "scan ms", "zonemap ms", "index ms", "auto ms", "matches", "scan/auto"
    );
    let mut results = Vec::new();
    for pct in [0.001, 0.01, 0.1, 1.0, 10.0, 50.0] {
        let width = (RANGE as f64 * pct / 100.0) as i64;
        let lo = RANGE / 3;
        let pred = Predicate::Between {
            min: lo.into(),
            max: (lo + width - 1).into(),
            inclusive: true,
        };
        let mut times = Vec::new();
        let mut matches = 0;
        for strategy in [
            Strategy::Scan,
            Strategy::Zonemap,
            Strategy::ValueIndex,
            Strategy::Auto,
        ] {
            let req = QueryRequest {
                start_ts: None,
                end_ts: None,
                predicate: pred.clone(),
                return_values: Some(false),
                limit: None,
                strategy: Some(strategy),
                snapshot: None,
                version: None,
                as_of_commit: None,
            };
            let reps = if pct >= 10.0 { 3 } else { 7 };
            let d = median(
                (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        let r = engine.query(&key, &req, usize::MAX).unwrap();
                        matches = r.timestamps.len();
                        t.elapsed()
                    })
                    .collect(),
            );
            times.push(d.as_secs_f64() * 1e3);
        }
        println!(
            "{pct:>10} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {matches:>9} {:>9.1}x",
            times[0],
            times[1],
            times[2],
            times[3],
            times[0] / times[3]
        );
        results.push(format!(
            "{{\"selectivity_pct\": {pct}, \"min\": {lo}, \"max\": {}, \"matches\": {matches}, \"scan_ms\": {:.4}, \"zonemap_ms\": {:.4}, \"value_index_ms\": {:.4}, \"auto_ms\": {:.4}}}",
            lo + width - 1,
            times[0],
            times[1],
            times[2],
            times[3]
        ));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&out).unwrap();
    let json = format!(
        "{{\"rows\": {rows}, \"results\": [\n  {}\n]}}\n",
        results.join(",\n  ")
    );
    std::fs::write(out.join("predicate.json"), json).unwrap();
    println!(
        "\nresults: target/bench-results/predicate.json; DuckDB peer: python3 scripts/bench_predicate_duckdb.py"
    );
}

/// Raw (ts, value) pairs for the DuckDB peer script.
fn dump(b: &WriteBatch) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("scalar.bin")).unwrap());
    for i in 0..b.len() {
        f.write_all(&b.cols[0][i].to_le_bytes()).unwrap();
        f.write_all(&b.cols[1][i].to_le_bytes()).unwrap();
    }
}

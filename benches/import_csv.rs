//! Import throughput: a 1m-bar CSV (2M rows by default) into a fresh data root.
//!
//! Run with `cargo bench --bench import_csv`. It generates the CSV once (kept under
//! `target/bench/`), then times three things on it:
//! - `parse`: the import with `--dry-run` (read, convert, check, no write);
//! - `import`: the full import into an empty temporary root (one write);
//! - `polars`: Polars `read_csv` on the same file, as a reference, when the project's
//!   Python environment (`.venv`, see scripts/test.sh) is there.
//!
//! `FASTK_BENCH_ROWS` changes the row count. Figures are printed, never asserted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fastk::query::types::RegisterKline;
use fastk::record::SeriesKey;
use fastk::transfer::import::{ImportOptions, Registration};
use fastk::transfer::{Destination, import};

const JAN_1_2024: i64 = 1_704_067_200_000;

fn main() {
    let rows: usize = std::env::var("FASTK_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench is writable");
    let csv = dir.join(format!("import_1m_{rows}.csv"));
    if !csv.is_file() {
        generate(&csv, rows);
    }
    let bytes = std::fs::metadata(&csv).map_or(0, |m| m.len());
    println!(
        "import_csv: {rows} rows, {:.1} MB ({})",
        bytes as f64 / 1e6,
        csv.display()
    );

    let best = |dry_run: bool| {
        (0..3)
            .map(|_| run(&csv, dry_run))
            .fold(f64::INFINITY, f64::min)
    };
    let parse_s = best(true);
    report("parse (dry run)", rows, bytes, parse_s);
    let import_s = best(false);
    report("import (parse + one write)", rows, bytes, import_s);

    match polars_seconds(&csv) {
        Some(p) => {
            report("polars read_csv (reference)", rows, bytes, p);
            println!(
                "  ratio: fastk import takes {:.2}x the time of polars read_csv",
                import_s / p
            );
        }
        None => println!("  polars reference skipped (no .venv with polars; see scripts/test.sh)"),
    }
}

fn report(what: &str, rows: usize, bytes: u64, secs: f64) {
    println!(
        "  {what:<30} {secs:>7.3} s  {:>6.2} M rows/s  {:>7.1} MB/s",
        rows as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
}

/// One import of `csv` into a fresh root; returns the seconds it took.
fn run(csv: &Path, dry_run: bool) -> f64 {
    let root = tempfile::tempdir().expect("a temporary root");
    let opts = ImportOptions {
        key: SeriesKey::kline("BTCUSDT", "1m").expect("valid key"),
        register: Some(Registration::Kline(RegisterKline {
            symbol: "BTCUSDT".into(),
            timeframe: "1m".into(),
            timeframe_ms: None,
            price_scale: 100,
            volume_scale: 1000,
            retention_ms: None,
            irregular: None,
        })),
        files: vec![csv.to_path_buf()],
        format: None,
        csv: Default::default(),
        ts_unit: None,
        prices: Default::default(),
        strict_scale: false,
        overrides: Default::default(),
        skip_invalid: false,
        rejects: None,
        dry_run,
        quiet: true,
        dest: Destination::Root(root.path().join("data")),
    };
    let t = Instant::now();
    let s = import(&opts).expect("the benchmark file imports");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(s.rejected, 0);
    secs
}

/// Writes `rows` valid 1m bars: `open_time,open,high,low,close,volume` with epoch-ms
/// timestamps, prices with two decimals and volume with three (a Binance-like dump).
fn generate(path: &PathBuf, rows: usize) {
    use std::io::Write;
    let f = std::fs::File::create(path).expect("bench file");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    writeln!(w, "open_time,open,high,low,close,volume").expect("write");
    let mut price: i64 = 4_200_000;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rows as i64 {
        // xorshift: cheap, deterministic noise for the random walk.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let close = (price + (x % 2001) as i64 - 1000).max(100);
        let high = price.max(close) + (x >> 20) as i64 % 300;
        let low = price.min(close) - (x >> 30) as i64 % 300;
        let vol = (x >> 40) % 50_000_000;
        let p = |v: i64| format!("{}.{:02}", v / 100, v % 100);
        writeln!(
            w,
            "{},{},{},{},{},{}.{:03}",
            JAN_1_2024 + i * 60_000,
            p(price),
            p(high),
            p(low),
            p(close),
            vol / 1000,
            vol % 1000
        )
        .expect("write");
        price = close;
    }
    w.flush().expect("flush");
}

/// Best of three Polars `read_csv` timings from scripts/bench_import_reference.py.
fn polars_seconds(csv: &Path) -> Option<f64> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    if !python.is_file() {
        return None;
    }
    let out = std::process::Command::new(python)
        .arg(repo.join("scripts/bench_import_reference.py"))
        .arg(csv)
        .arg("--seconds-only")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

//! One minute of 2,000 series as one many-series write, in process
//! (`cargo bench --bench write_many`): the storage engine's share of the harness'
//! `feed_many` workload (the harness measures it through HTTP and Flight, against the
//! peers). Reports the median and p99 of `Store::write_many`, durable (one log record,
//! one sync) before it returns. `FASTK_BENCH_QUICK=1` makes fewer writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fastk::record::{SeriesKey, SeriesMeta, ValueType};
use fastk::storage::{Store, StoreOptions, WriteBatch};

/// The allocator of the `fastk` binary (`src/main.rs`): a write's cost is mostly
/// small allocations, so the benchmark measures them as the server makes them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MINUTE: i64 = 60_000;
const START: i64 = 1_709_251_200_000; // 2024-03-01
const SERIES: usize = 2_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var("FASTK_BENCH_QUICK").is_ok();
    let (warm, timed) = if quick { (2, 10) } else { (2, 200) };
    let dir = tempfile::tempdir_in(std::env::var("FASTK_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let metas: Vec<SeriesMeta> = (0..SERIES)
        .map(|i| SeriesMeta {
            key: SeriesKey::kline(&format!("S{i:05}USDT"), "1m").unwrap(),
            timeframe_ms: MINUTE,
            price_scale: 100,
            volume_scale: 1,
            value_type: ValueType::I64,
        })
        .collect();
    let series: Vec<_> = metas
        .into_iter()
        .map(|m| store.register(m).unwrap().0)
        .collect();
    let minute = |m: usize| -> Vec<(Arc<fastk::storage::Series>, WriteBatch)> {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = 1_000 + i as i64 + m as i64;
                let b = WriteBatch::from_cols(vec![
                    vec![START + m as i64 * MINUTE],
                    vec![p],
                    vec![p + 2],
                    vec![p - 2],
                    vec![p + 1],
                    vec![10 + m as i64],
                ]);
                (Arc::clone(s), b)
            })
            .collect()
    };
    let mut times = Vec::new();
    for m in 0..warm + timed {
        let entries = minute(m);
        let t = Instant::now();
        let r = store.write_many(entries).unwrap();
        let d = t.elapsed();
        assert_eq!(r.len(), SERIES);
        if m >= warm {
            times.push(d);
        }
    }
    times.sort();
    let q = |f: f64| times[((times.len() - 1) as f64 * f) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "write_many: {SERIES} series x 1 bar, {timed} writes: median {:.3} ms, p99 {:.3} ms ({:.2} us per series)",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(q(0.5)) * 1e3 / SERIES as f64
    );
}

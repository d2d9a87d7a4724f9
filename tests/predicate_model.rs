//! Property test: predicate queries equal a naive scan for random series (runs,
//! plateaus, NaN, infinities, -0.0, extremes) and random predicates, with every
//! strategy forced in turn, on raw chunks (base and delta) and on compressed ones,
//! in months of many rows or of a single row; and a chunk of more than 65,536 rows
//! (u32 positions in the value index) checked the same way.

mod common;

use std::sync::Arc;

use common::{JAN_2024, MINUTE, engine_with, files_under, scalar_registration};
use fastk::query::Engine;
use fastk::query::types::{Predicate, QueryRequest, Strategy as Plan};
use fastk::record::{SeriesKey, ValueType};
use fastk::storage::WriteBatch;
use proptest::prelude::*;
use serde_json::Number;

/// Values drawn from a small pool so equality predicates hit, with plateaus and runs.
fn values(vt: ValueType) -> impl Strategy<Value = Vec<f64>> {
    let pool = prop_oneof![
        4 => (-20i64..20).prop_map(|v| v as f64),
        1 => Just(i64::MAX as f64),
        1 => Just(i64::MIN as f64),
        1 => if vt == ValueType::F64 { Just(f64::NAN).boxed() } else { Just(0.0).boxed() },
        1 => if vt == ValueType::F64 { (-20.0f64..20.0).boxed() } else { Just(3.0).boxed() },
        1 => if vt == ValueType::F64 {
            prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(-0.0)].boxed()
        } else {
            Just(-1.0).boxed()
        },
    ];
    prop::collection::vec((pool, 1usize..300), 1..40).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(v, n)| std::iter::repeat_n(v, n))
            .collect()
    })
}

fn num(v: f64, vt: ValueType) -> Number {
    match vt {
        ValueType::I64 => Number::from(v as i64),
        ValueType::F64 => Number::from_f64(v).unwrap(),
    }
}

fn predicate(vt: ValueType) -> impl Strategy<Value = Predicate> {
    // -0.0 equals 0.0 for every comparison (the index sorts it first by total order).
    let v = prop_oneof![9 => (-22i64..22).prop_map(|v| v as f64), 1 => Just(-0.0)];
    let list = prop::collection::vec((-22i64..22).prop_map(|v| v as f64), 1..5);
    prop_oneof![
        v.clone()
            .prop_map(move |x| Predicate::Eq { value: num(x, vt) }),
        v.clone()
            .prop_map(move |x| Predicate::Ne { value: num(x, vt) }),
        v.clone()
            .prop_map(move |x| Predicate::Gt { value: num(x, vt) }),
        v.clone()
            .prop_map(move |x| Predicate::Gte { value: num(x, vt) }),
        v.clone()
            .prop_map(move |x| Predicate::Lt { value: num(x, vt) }),
        v.clone()
            .prop_map(move |x| Predicate::Lte { value: num(x, vt) }),
        (v.clone(), 0i64..10, any::<bool>()).prop_map(move |(a, w, inclusive)| {
            Predicate::Between {
                min: num(a, vt),
                max: num(a + w as f64, vt),
                inclusive,
            }
        }),
        list.clone().prop_map(move |l| Predicate::In {
            values: l.into_iter().map(|x| num(x, vt)).collect()
        }),
        list.prop_map(move |l| Predicate::NotIn {
            values: l.into_iter().map(|x| num(x, vt)).collect()
        }),
    ]
}

fn naive(p: &Predicate, x: f64, vt: ValueType) -> bool {
    if x.is_nan() {
        return false;
    }
    let f = |n: &Number| match vt {
        ValueType::I64 => n.as_i64().unwrap() as f64,
        ValueType::F64 => n.as_f64().unwrap(),
    };
    // i64 values compare exactly as i64; the f64 detour is exact for the pool used here
    // except at the extremes, which compare as i64 below.
    let cmp_i = |n: &Number| (x as i64).cmp(&n.as_i64().unwrap());
    let cmp = |n: &Number| match vt {
        ValueType::I64 => cmp_i(n),
        ValueType::F64 => x.partial_cmp(&f(n)).unwrap(),
    };
    use std::cmp::Ordering::*;
    match p {
        Predicate::Eq { value } => cmp(value) == Equal,
        Predicate::Ne { value } => cmp(value) != Equal,
        Predicate::Gt { value } => cmp(value) == Greater,
        Predicate::Gte { value } => cmp(value) != Less,
        Predicate::Lt { value } => cmp(value) == Less,
        Predicate::Lte { value } => cmp(value) != Greater,
        Predicate::Between {
            min,
            max,
            inclusive: true,
        } => cmp(min) != Less && cmp(max) != Greater,
        Predicate::Between {
            min,
            max,
            inclusive: false,
        } => cmp(min) == Greater && cmp(max) == Less,
        Predicate::In { values } => values.iter().any(|v| cmp(v) == Equal),
        Predicate::NotIn { values } => values.iter().all(|v| cmp(v) != Equal),
    }
}

/// How the rows lie in time: `spacing` ms apart (37 minutes: months of about 1,200
/// rows; 32 days: every row a month, so every chunk a single row), in `timeframe`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    timeframe: &'static str,
    spacing: i64,
    compress: bool,
    /// Chunks under 64 rows are written without sidecars (`storage.sidecar_min_rows`,
    /// its default); otherwise every chunk has them.
    bare_small: bool,
}

const DENSE: i64 = 37 * MINUTE;
/// Series longer than this are written in one chunk and not paged through.
const BIG: usize = 20_000;
const MONTHLY: i64 = 32 * 1440 * MINUTE;

fn setup(
    vt: ValueType,
    vals: &[f64],
    block_rows: usize,
    layout: Layout,
) -> (tempfile::TempDir, Arc<Engine>, SeriesKey) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |c| {
        c.storage.zonemap_block_rows = block_rows;
        c.storage.compress_after_s = 0;
        c.storage.compress_on_write = false;
        // Every write straight to chunk files, which carry sidecars (logged rows wait
        // in memory without them and are scanned).
        c.storage.wal_direct_rows = 0;
        c.storage.sidecar_min_rows = if layout.bare_small { 64 } else { 0 };
    });
    let r = scalar_registration("S", layout.timeframe, "signal", "x", Some(vt));
    e.register_scalar(&r).unwrap();
    let key = SeriesKey::scalar("S", layout.timeframe, "signal", "x").unwrap();
    // Two writes so months hold a base chunk and a delta (one for a long series, so its
    // chunk holds more than 65,536 rows).
    let half = if vals.len() > BIG { 0 } else { vals.len() / 2 };
    for (lo, hi) in [(0, half), (half, vals.len())] {
        if lo == hi {
            continue;
        }
        let mut b = WriteBatch::with_capacity(2, hi - lo);
        for (i, &v) in vals.iter().enumerate().take(hi).skip(lo) {
            b.cols[0].push(JAN_2024 + i as i64 * layout.spacing);
            b.cols[1].push(match vt {
                ValueType::I64 => v as i64,
                ValueType::F64 => v.to_bits() as i64,
            });
        }
        e.write(&key, b, None).unwrap();
    }
    if layout.compress {
        // Every month ends before this "now": each becomes one compressed chunk.
        assert!(e.compress_sealed(i64::MAX / 2) > 0);
    }
    (dir, e, key)
}

fn check(
    vt: ValueType,
    vals: Vec<f64>,
    p: Predicate,
    block_rows: usize,
    window: (usize, usize),
    layout: Layout,
) -> Result<(), TestCaseError> {
    let mut vals = vals;
    if layout.spacing == MONTHLY {
        vals.truncate(40);
    }
    let (dir, e, key) = setup(vt, &vals, block_rows, layout);
    if layout.bare_small && layout.spacing == MONTHLY {
        // Every chunk is one row: none has sidecars, every predicate scans.
        prop_assert!(vidx_widths(dir.path()).is_empty());
    }
    verify(&e, &key, vt, &vals, &p, window, layout)
}

/// Queries `p` over the rows of `window` with every strategy and compares with a
/// naive scan of `vals` (row `i` at `JAN_2024 + i * step`).
fn verify(
    e: &Engine,
    key: &SeriesKey,
    vt: ValueType,
    vals: &[f64],
    p: &Predicate,
    window: (usize, usize),
    layout: Layout,
) -> Result<(), TestCaseError> {
    let step = layout.spacing;
    let (a, b) = (
        window.0.min(window.1) % vals.len(),
        window.0.max(window.1) % vals.len(),
    );
    let start = JAN_2024 + a as i64 * step;
    let end = JAN_2024 + b as i64 * step;
    let want: Vec<i64> = (a..=b)
        .filter(|&i| naive(p, vals[i], vt))
        .map(|i| JAN_2024 + i as i64 * step)
        .collect();
    for strategy in [Plan::Scan, Plan::Zonemap, Plan::ValueIndex, Plan::Auto] {
        let req = QueryRequest {
            start_ts: Some(start),
            end_ts: Some(end),
            predicate: p.clone(),
            return_values: Some(true),
            limit: None,
            strategy: Some(strategy),
            snapshot: None,
            version: None,
            as_of_commit: None,
        };
        let r = e.query(key, &req, usize::MAX).unwrap();
        prop_assert_eq!(&r.timestamps, &want, "{:?} with {:?}", strategy, p);
        prop_assert_eq!(r.stats.rows_matched as usize, want.len());
        prop_assert!(r.stats.blocks_pruned <= r.stats.blocks_total);
        prop_assert_eq!(r.stats.sidecar_fallbacks, 0);
        let ranged = !matches!(p, Predicate::Ne { .. } | Predicate::NotIn { .. });
        if strategy == Plan::ValueIndex && ranged && !layout.bare_small {
            // Every chunk has an index: each is answered by it (or holds no row in range).
            prop_assert!(
                ["value_index", "none"].contains(&r.stats.index_used.as_str()),
                "{}",
                r.stats.index_used
            );
        }
        if vals.len() > BIG {
            continue;
        }
        // Paging with a small limit walks the same rows.
        let mut paged = Vec::new();
        let mut from = Some(start);
        while let Some(s) = from {
            let page = e
                .query(
                    key,
                    &QueryRequest {
                        start_ts: Some(s),
                        limit: Some(7),
                        ..req.clone()
                    },
                    7,
                )
                .unwrap();
            prop_assert!(page.timestamps.len() <= 7);
            paged.extend(page.timestamps);
            from = page.next_start_ts;
        }
        prop_assert_eq!(&paged, &want);
    }
    Ok(())
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        prop_oneof![4 => Just(DENSE), 1 => Just(MONTHLY)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(spacing, compress, bare_small)| Layout {
            timeframe: "1h",
            spacing,
            compress,
            bare_small,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") { 400 } else { 40 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn i64_predicates_equal_naive_scan(vals in values(ValueType::I64), p in predicate(ValueType::I64), block in 1usize..64, w in (0usize..10_000, 0usize..10_000), l in layout()) {
        check(ValueType::I64, vals, p, block, w, l)?;
    }

    #[test]
    fn f64_predicates_equal_naive_scan(vals in values(ValueType::F64), p in predicate(ValueType::F64), block in 1usize..64, w in (0usize..10_000, 0usize..10_000), l in layout()) {
        check(ValueType::F64, vals, p, block, w, l)?;
    }
}

/// One chunk of 70,000 rows of 1s values (u32 positions in the value index), raw and
/// compressed: every kind of predicate equals the naive scan, over the whole chunk and
/// over a window inside it.
#[test]
fn a_chunk_over_65536_rows_answers_like_a_scan() {
    let pool = [
        -3.0,
        0.0,
        -0.0,
        2.5,
        7.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let f64s: Vec<f64> = (0..70_000)
        .map(|i| match i % 3 {
            0 => pool[(next() % pool.len() as u64) as usize],
            _ => (next() % 4000) as f64 / 100.0 - 20.0,
        })
        .collect();
    let i64s: Vec<f64> = (0..70_000).map(|_| (next() % 41) as f64 - 20.0).collect();
    for compress in [false, true] {
        let layout = Layout {
            timeframe: "1s",
            spacing: 1000,
            compress,
            bare_small: false,
        };
        for (vt, vals) in [(ValueType::F64, &f64s), (ValueType::I64, &i64s)] {
            let n = |v: f64| num(v, vt);
            let preds = [
                Predicate::Eq { value: n(2.5) },
                Predicate::Eq { value: n(-0.0) },
                Predicate::Gt { value: n(7.0) },
                Predicate::Lte { value: n(-3.0) },
                Predicate::Between {
                    min: n(-1.0),
                    max: n(1.0),
                    inclusive: true,
                },
                Predicate::Between {
                    min: n(0.0),
                    max: n(19.0),
                    inclusive: false,
                },
                Predicate::In {
                    values: vec![n(0.0), n(-3.0), n(11.0), n(11.0)],
                },
                Predicate::Ne { value: n(7.0) },
            ];
            let (dir, e, key) = setup(vt, vals, 4096, layout);
            assert!(
                vidx_widths(dir.path()).contains(&4),
                "one chunk over 65,536 rows: u32 positions"
            );
            for p in preds {
                for w in [(0, vals.len() - 1), (12_345, 66_000)] {
                    verify(&e, &key, vt, vals, &p, w, layout).unwrap();
                }
            }
        }
    }
}

/// The position width (byte 13) of every version 2 value index under `root`.
fn vidx_widths(root: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for p in files_under(root) {
        if p.extension().is_some_and(|x| x == "vidx") {
            let b = std::fs::read(&p).unwrap();
            assert_eq!(b[8], 2, "written as version 2");
            out.push(b[13]);
        }
    }
    out
}

//! Property test: predicate queries equal a naive scan for random series (runs,
//! plateaus, NaN, extremes) and random predicates, with every strategy forced in turn.

use std::sync::Arc;

use fastk::config::Config;
use fastk::query::Engine;
use fastk::query::types::{Predicate, QueryRequest, RegisterScalar, Strategy as Plan};
use fastk::record::{SeriesKey, ValueType};
use fastk::storage::WriteBatch;
use proptest::prelude::*;
use serde_json::Number;

const MINUTE: i64 = 60_000;
const JAN_2024: i64 = 1_704_067_200_000;

/// Values drawn from a small pool so equality predicates hit, with plateaus and runs.
fn values(vt: ValueType) -> impl Strategy<Value = Vec<f64>> {
    let pool = prop_oneof![
        4 => (-20i64..20).prop_map(|v| v as f64),
        1 => Just(i64::MAX as f64),
        1 => Just(i64::MIN as f64),
        1 => if vt == ValueType::F64 { Just(f64::NAN).boxed() } else { Just(0.0).boxed() },
        1 => if vt == ValueType::F64 { (-20.0f64..20.0).boxed() } else { Just(3.0).boxed() },
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
    let v = (-22i64..22).prop_map(|v| v as f64);
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

fn setup(
    vt: ValueType,
    vals: &[f64],
    block_rows: usize,
) -> (tempfile::TempDir, Arc<Engine>, SeriesKey) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.storage.root = dir.path().to_path_buf();
    c.storage.zonemap_block_rows = block_rows;
    let e = Engine::open(c).unwrap();
    let r = RegisterScalar {
        symbol: "S".into(),
        timeframe: "1h".into(),
        timeframe_ms: None,
        category: "signal".into(),
        name: "x".into(),
        value_type: Some(vt),
        retention_ms: None,
    };
    e.register_scalar(&r).unwrap();
    let key = SeriesKey::scalar("S", "1h", "signal", "x").unwrap();
    // Two writes so months hold a base chunk and a delta.
    let half = vals.len() / 2;
    for (lo, hi) in [(0, half), (half, vals.len())] {
        if lo == hi {
            continue;
        }
        let mut b = WriteBatch::with_capacity(2, hi - lo);
        for (i, &v) in vals.iter().enumerate().take(hi).skip(lo) {
            b.cols[0].push(JAN_2024 + i as i64 * 37 * MINUTE);
            b.cols[1].push(match vt {
                ValueType::I64 => v as i64,
                ValueType::F64 => v.to_bits() as i64,
            });
        }
        e.write(&key, b, None).unwrap();
    }
    (dir, e, key)
}

fn check(
    vt: ValueType,
    vals: Vec<f64>,
    p: Predicate,
    block_rows: usize,
    window: (usize, usize),
) -> Result<(), TestCaseError> {
    let (_dir, e, key) = setup(vt, &vals, block_rows);
    let (a, b) = (
        window.0.min(window.1) % vals.len(),
        window.0.max(window.1) % vals.len(),
    );
    let start = JAN_2024 + a as i64 * 37 * MINUTE;
    let end = JAN_2024 + b as i64 * 37 * MINUTE;
    let want: Vec<i64> = (a..=b)
        .filter(|&i| naive(&p, vals[i], vt))
        .map(|i| JAN_2024 + i as i64 * 37 * MINUTE)
        .collect();
    for strategy in [Plan::Scan, Plan::Zonemap, Plan::ValueIndex, Plan::Auto] {
        let req = QueryRequest {
            start_ts: Some(start),
            end_ts: Some(end),
            predicate: p.clone(),
            return_values: Some(true),
            limit: None,
            strategy: Some(strategy),
        };
        let r = e.query(&key, &req, usize::MAX).unwrap();
        prop_assert_eq!(&r.timestamps, &want, "{:?} with {:?}", strategy, p);
        prop_assert_eq!(r.stats.rows_matched as usize, want.len());
        prop_assert!(r.stats.blocks_pruned <= r.stats.blocks_total);
        prop_assert_eq!(r.stats.sidecar_fallbacks, 0);
        // Paging with a small limit walks the same rows.
        let mut paged = Vec::new();
        let mut from = Some(start);
        while let Some(s) = from {
            let page = e
                .query(
                    &key,
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

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") { 400 } else { 40 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn i64_predicates_equal_naive_scan(vals in values(ValueType::I64), p in predicate(ValueType::I64), block in 1usize..64, w in (0usize..10_000, 0usize..10_000)) {
        check(ValueType::I64, vals, p, block, w)?;
    }

    #[test]
    fn f64_predicates_equal_naive_scan(vals in values(ValueType::F64), p in predicate(ValueType::F64), block in 1usize..64, w in (0usize..10_000, 0usize..10_000)) {
        check(ValueType::F64, vals, p, block, w)?;
    }
}

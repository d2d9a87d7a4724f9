//! Property test: the engine against a naive `BTreeMap` model.
//!
//! Random interleavings of writes (in and out of order, replacements, month
//! boundaries, several series), compactions and reopens; after every step every read
//! (range, sub-range, latest-N, at) equals the model.

use std::collections::BTreeMap;

use fastk::record::{MonthPartition, SeriesKey, SeriesMeta, TsRange, ValueType};
use fastk::storage::{Store, StoreOptions, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        series: usize,
        rows: Vec<(i64, i64)>,
    },
    Compact {
        series: usize,
    },
    Reopen,
}

const MINUTE: i64 = 60_000;

/// Timestamps cluster around month boundaries so writes split across partitions.
fn ts_strategy() -> impl Strategy<Value = i64> {
    let boundaries: Vec<i64> = (0..4).map(|m| MonthPartition(648 + m).start_ts()).collect();
    (0..boundaries.len(), -40i64..40).prop_map(move |(b, k)| boundaries[b] + k * MINUTE)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, prop::collection::vec((ts_strategy(), any::<i64>()), 1..60))
            .prop_map(|(series, rows)| Op::Write { series, rows }),
        1 => (0..3usize).prop_map(|series| Op::Compact { series }),
        1 => Just(Op::Reopen),
    ]
}

fn metas() -> Vec<SeriesMeta> {
    let scalar = |name: &str, vt| SeriesMeta {
        key: SeriesKey::scalar("BTCUSDT", "1m", "feature", name).unwrap(),
        timeframe_ms: MINUTE,
        price_scale: 1,
        volume_scale: 1,
        value_type: vt,
    };
    vec![
        SeriesMeta {
            key: SeriesKey::kline("BTCUSDT", "1m").unwrap(),
            timeframe_ms: MINUTE,
            price_scale: 100,
            volume_scale: 1,
            value_type: ValueType::I64,
        },
        scalar("a", ValueType::I64),
        scalar("b", ValueType::F64),
    ]
}

/// Stored columns for one model value (kline columns derive from it, OHLC-valid).
fn row_cols(meta: &SeriesMeta, v: i64) -> Vec<i64> {
    match meta.key.kind() {
        fastk::record::SeriesKind::Kline => {
            let base = v.rem_euclid(1_000_000);
            vec![base + 1, base + 3, base, base + 2, v.rem_euclid(97)]
        }
        fastk::record::SeriesKind::Scalar => vec![v],
    }
}

fn read_all(store: &Store, meta: &SeriesMeta, range: TsRange) -> Vec<Vec<i64>> {
    let snap = store.get(&meta.key).unwrap().snapshot();
    let mut out = Vec::new();
    for s in snap.range(range) {
        let s = s.unwrap();
        for r in 0..s.len() {
            out.push((0..meta.key.kind().ncols()).map(|c| s.col(c)[r]).collect());
        }
    }
    out
}

fn model_rows(meta: &SeriesMeta, model: &BTreeMap<i64, i64>, range: TsRange) -> Vec<Vec<i64>> {
    model
        .range(range.lo()..=range.hi())
        .map(|(&ts, &v)| std::iter::once(ts).chain(row_cols(meta, v)).collect())
        .collect()
}

fn check(
    store: &Store,
    metas: &[SeriesMeta],
    models: &[BTreeMap<i64, i64>],
    probe: (i64, i64, usize),
) {
    for (meta, model) in metas.iter().zip(models) {
        assert_eq!(
            read_all(store, meta, TsRange::all()),
            model_rows(meta, model, TsRange::all()),
            "{}",
            meta.key
        );
        let (a, b) = (probe.0.min(probe.1), probe.0.max(probe.1));
        let sub = TsRange::new(Some(a), Some(b));
        assert_eq!(read_all(store, meta, sub), model_rows(meta, model, sub));
        let snap = store.get(&meta.key).unwrap().snapshot();
        let latest: Vec<i64> = snap
            .latest(TsRange::all(), probe.2)
            .unwrap()
            .iter()
            .flat_map(|s| s.ts().to_vec())
            .collect();
        let want: Vec<i64> = model.keys().rev().take(probe.2).rev().copied().collect();
        assert_eq!(latest, want, "latest {}", probe.2);
        assert_eq!(snap.rows(), model.len() as u64);
        if let Some((&ts, _)) = model.iter().next() {
            let at = snap.at(ts).unwrap().expect("stored row found by at()");
            assert_eq!(at.ts()[0], ts);
        }
        assert!(
            snap.at(probe.0 + 1)
                .unwrap()
                .is_none_or(|s| model.contains_key(&s.ts()[0]))
        );
    }
}

fn apply(store: &Store, meta: &SeriesMeta, model: &mut BTreeMap<i64, i64>, rows: &[(i64, i64)]) {
    let mut b = WriteBatch::with_capacity(meta.key.kind().ncols(), rows.len());
    for &(ts, v) in rows {
        b.cols[0].push(ts);
        for (c, x) in row_cols(meta, v).into_iter().enumerate() {
            b.cols[c + 1].push(x);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let has_dup = rows.iter().any(|(ts, _)| !seen.insert(*ts));
    let series = store.get(&meta.key).unwrap();
    let before = series.version();
    match series.write(b, None) {
        Ok(r) => {
            assert!(!has_dup, "a request with a repeated ts must be refused");
            let replaced = rows.iter().filter(|(ts, _)| model.contains_key(ts)).count() as u64;
            assert_eq!((r.written, r.replaced), (rows.len() as u64, replaced));
            assert_eq!(r.version, before + 1);
            for &(ts, v) in rows {
                model.insert(ts, v);
            }
        }
        Err(fastk::storage::StorageError::Unprocessable(_)) => {
            assert!(has_dup);
            assert_eq!(series.version(), before, "a refused write changes nothing");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") { 512 } else { 48 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_btreemap_model(ops in prop::collection::vec(op_strategy(), 1..25), probe in (ts_strategy(), ts_strategy(), 0usize..120)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions { max_chunks_per_month: 3, zonemap_block_rows: Some(16), ..StoreOptions::default() };
        let metas = metas();
        let mut store = Store::open(dir.path(), opts.clone()).unwrap();
        for m in &metas {
            store.register(m.clone()).unwrap();
        }
        let mut models = vec![BTreeMap::new(); metas.len()];
        for op in &ops {
            match op {
                Op::Write { series, rows } => apply(&store, &metas[*series], &mut models[*series], rows),
                Op::Compact { series } => {
                    let s = store.get(&metas[*series].key).unwrap();
                    s.compact().unwrap();
                    prop_assert!(s.snapshot().live.values().all(|c| c.len() == 1));
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path(), opts.clone()).unwrap();
                    prop_assert!(store.recovery().iter().all(|n| n.unknown_files.is_empty()));
                }
            }
            check(&store, &metas, &models, probe);
        }
        drop(store);
        let store = Store::open(dir.path(), opts).unwrap();
        check(&store, &metas, &models, probe);
    }
}

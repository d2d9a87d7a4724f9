//! Property test: the engine against a naive `BTreeMap` model.
//!
//! Random interleavings of writes (in and out of order, replacements, month
//! boundaries, several series; through the write-ahead log or as chunk files
//! directly), many-series writes, folds of the log, crashes (the log replayed on the
//! next open), compressions of sealed months, pack passes (sealed months gathered
//! into pack files, with a small size target so a series holds several packs),
//! compactions, range deletes (whole and cut months, with the version check; an open
//! start is what retention does), deletes, re-registrations, writes
//! through a handle that outlived a delete and re-registration, and reopens; after
//! every step every read (range, sub-range, latest-N, at) equals the model. A
//! threaded test races writers against deletes, re-registrations and compactions.

mod common;

use std::collections::BTreeMap;

use common::{MINUTE, kline_meta, scalar_meta, store_opts};
use fastk::record::{MonthPartition, SeriesMeta, TsRange, ValueType};
use fastk::storage::{StorageError, Store, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        series: usize,
        rows: Vec<(i64, i64)>,
        /// Through the write-ahead log (`Store::write`) or as chunk files directly.
        logged: bool,
    },
    /// One all-or-nothing write to several series through the log.
    WriteMany {
        rows: Vec<(usize, Vec<(i64, i64)>)>,
    },
    /// Folds every series' log rows into chunk files.
    Fold,
    /// Compresses every sealed month of a series (all of them: the test's clock is far
    /// in the future).
    Compress {
        series: usize,
    },
    /// Compresses the sealed months of a series and packs them (`Series::pack_sealed`).
    Pack {
        series: usize,
    },
    /// Drops the store as a crash would (nothing folded) and opens it again.
    Crash,
    Compact {
        series: usize,
    },
    Delete {
        series: usize,
    },
    Register {
        series: usize,
    },
    /// Takes a handle, deletes and re-registers the series, then writes through the
    /// old handle: refused NotFound, the new series stays empty.
    StaleWrite {
        series: usize,
        rows: Vec<(i64, i64)>,
    },
    Reopen,
    /// Deletes the rows of a range (either end may be open), whole months or parts.
    DeleteRange {
        series: usize,
        start: Option<i64>,
        end: Option<i64>,
    },
}

/// Timestamps cluster around month boundaries so writes split across partitions.
fn ts_strategy() -> impl Strategy<Value = i64> {
    let boundaries: Vec<i64> = (0..4).map(|m| MonthPartition(648 + m).start_ts()).collect();
    (0..boundaries.len(), -40i64..40).prop_map(move |(b, k)| boundaries[b] + k * MINUTE)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, prop::collection::vec((ts_strategy(), any::<i64>()), 1..60), any::<bool>())
            .prop_map(|(series, rows, logged)| Op::Write { series, rows, logged }),
        2 => prop::collection::vec((0..3usize, prop::collection::vec((ts_strategy(), any::<i64>()), 1..8)), 1..4)
            .prop_map(|rows| Op::WriteMany { rows }),
        1 => Just(Op::Fold),
        1 => (0..3usize).prop_map(|series| Op::Compress { series }),
        2 => (0..3usize).prop_map(|series| Op::Pack { series }),
        1 => Just(Op::Crash),
        1 => (0..3usize).prop_map(|series| Op::Compact { series }),
        1 => (0..3usize).prop_map(|series| Op::Delete { series }),
        1 => (0..3usize).prop_map(|series| Op::Register { series }),
        1 => (0..3usize, prop::collection::vec((ts_strategy(), any::<i64>()), 1..20))
            .prop_map(|(series, rows)| Op::StaleWrite { series, rows }),
        1 => Just(Op::Reopen),
        2 => (0..3usize, prop::option::of(ts_strategy()), prop::option::of(ts_strategy()))
            .prop_map(|(series, a, b)| match (a, b) {
                (Some(a), Some(b)) => Op::DeleteRange { series, start: Some(a.min(b)), end: Some(a.max(b)) },
                (None, None) => Op::DeleteRange { series, start: a, end: Some(0) },
                (a, b) => Op::DeleteRange { series, start: a, end: b },
            }),
    ]
}

fn metas() -> Vec<SeriesMeta> {
    vec![
        SeriesMeta {
            volume_scale: 1,
            ..kline_meta("BTCUSDT", "1m")
        },
        scalar_meta("BTCUSDT", "1m", "feature", "a", ValueType::I64),
        scalar_meta("BTCUSDT", "1m", "feature", "b", ValueType::F64),
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
        kind => unreachable!("the model holds no {kind:?} series (tests/tick_model.rs)"),
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
    models: &[Option<BTreeMap<i64, i64>>],
    probe: (i64, i64, usize),
) {
    for (meta, model) in metas.iter().zip(models) {
        let Some(model) = model else {
            assert!(
                matches!(store.get(&meta.key), Err(StorageError::NotFound(_))),
                "{} was deleted",
                meta.key
            );
            continue;
        };
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

fn batch(meta: &SeriesMeta, rows: &[(i64, i64)]) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(meta.key.kind().ncols(), rows.len());
    for &(ts, v) in rows {
        b.cols[0].push(ts);
        for (c, x) in row_cols(meta, v).into_iter().enumerate() {
            b.cols[c + 1].push(x);
        }
    }
    b
}

fn apply(
    store: &Store,
    meta: &SeriesMeta,
    model: &mut BTreeMap<i64, i64>,
    rows: &[(i64, i64)],
    logged: bool,
) {
    let b = batch(meta, rows);
    let mut seen = std::collections::HashSet::new();
    let has_dup = rows.iter().any(|(ts, _)| !seen.insert(*ts));
    let series = store.get(&meta.key).unwrap();
    let before = series.version();
    let r = if logged {
        store.write(&series, b, None)
    } else {
        series.write(b, None)
    };
    match r {
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
        let opts = store_opts(|o| {
            o.max_chunks_per_month = 3;
            o.zonemap_block_rows = Some(16);
            o.compress_after_ms = Some(0);
            // A few months per pack, so passes split, rewrite and retire packs.
            o.pack_target_bytes = 4096;
            // Small in-memory chunks, so a month often holds several.
            o.wal.memory_chunk_rows = 8;
        });
        let metas = metas();
        let mut store = Store::open(dir.path(), opts.clone()).unwrap();
        for m in &metas {
            store.register(m.clone()).unwrap();
        }
        let mut models = vec![Some(BTreeMap::new()); metas.len()];
        for op in &ops {
            match op {
                Op::Write { series, rows, logged } => match &mut models[*series] {
                    Some(model) => apply(&store, &metas[*series], model, rows, *logged),
                    None => prop_assert!(store.get(&metas[*series].key).is_err()),
                },
                Op::WriteMany { rows } => {
                    // One batch per series (the first one named wins), live series only.
                    let mut entries = Vec::new();
                    let mut named = std::collections::BTreeSet::new();
                    for (i, r) in rows {
                        if models[*i].is_some() && named.insert(*i) {
                            entries.push((*i, r.clone()));
                        }
                    }
                    let dup = entries.iter().any(|(_, r)| {
                        let mut seen = std::collections::HashSet::new();
                        r.iter().any(|(ts, _)| !seen.insert(*ts))
                    });
                    let before: Vec<u64> = entries.iter().map(|(i, _)| store.get(&metas[*i].key).unwrap().version()).collect();
                    let batches = entries
                        .iter()
                        .map(|(i, r)| (store.get(&metas[*i].key).unwrap(), batch(&metas[*i], r)))
                        .collect();
                    match store.write_many(batches) {
                        Ok(reports) => {
                            prop_assert!(!dup);
                            for (((i, r), rep), v) in entries.iter().zip(reports).zip(before) {
                                prop_assert_eq!(rep.version, v + 1);
                                prop_assert_eq!(rep.written, r.len() as u64);
                                let model = models[*i].as_mut().unwrap();
                                for &(ts, val) in r {
                                    model.insert(ts, val);
                                }
                            }
                        }
                        Err(StorageError::Unprocessable(_)) => {
                            prop_assert!(dup);
                            for ((i, _), v) in entries.iter().zip(before) {
                                prop_assert_eq!(store.get(&metas[*i].key).unwrap().version(), v, "a refused write changes nothing");
                            }
                        }
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::Compress { series } => match store.get(&metas[*series].key) {
                    Ok(s) => {
                        let before = s.version();
                        s.compress_sealed(i64::MAX / 2).unwrap();
                        prop_assert_eq!(s.version(), before, "compression keeps the version");
                        prop_assert!(s.sealed_uncompressed(i64::MAX / 2).is_empty());
                    }
                    Err(_) => prop_assert!(models[*series].is_none()),
                },
                Op::Pack { series } => match store.get(&metas[*series].key) {
                    Ok(s) => {
                        let before = s.version();
                        s.compress_sealed(i64::MAX / 2).unwrap();
                        s.pack_sealed(i64::MAX / 2).unwrap();
                        prop_assert_eq!(s.version(), before, "packing keeps the version");
                        prop_assert!(s.pack_groups(&s.snapshot(), i64::MAX / 2).is_empty());
                    }
                    Err(_) => prop_assert!(models[*series].is_none()),
                },
                Op::Fold => {
                    let r = store.fold_all();
                    prop_assert_eq!(r.failed, 0);
                    prop_assert_eq!(store.wal_stats().unfolded_rows, 0);
                }
                Op::Crash => {
                    store.abandon();
                    store = Store::open(dir.path(), opts.clone()).unwrap();
                    prop_assert!(store.recovery().iter().all(|n| n.unknown_files.is_empty()));
                }
                Op::Compact { series } => match store.get(&metas[*series].key) {
                    Ok(s) => {
                        s.compact().unwrap();
                        prop_assert!(s.snapshot().live.values().all(|c| c.len() == 1));
                    }
                    Err(_) => prop_assert!(models[*series].is_none()),
                },
                Op::Delete { series } => {
                    let r = store.delete(&metas[*series].key);
                    prop_assert_eq!(r.is_ok(), models[*series].is_some());
                    models[*series] = None;
                }
                Op::Register { series } => {
                    let (_, created) = store.register(metas[*series].clone()).unwrap();
                    prop_assert_eq!(created, models[*series].is_none());
                    models[*series].get_or_insert_with(BTreeMap::new);
                }
                Op::StaleWrite { series, rows } => {
                    let meta = &metas[*series];
                    let (old, _) = store.register(meta.clone()).unwrap();
                    store.delete(&meta.key).unwrap();
                    let (new, created) = store.register(meta.clone()).unwrap();
                    prop_assert!(created);
                    let r = old.write(batch(meta, rows), None);
                    let mut seen = std::collections::HashSet::new();
                    let has_dup = rows.iter().any(|(ts, _)| !seen.insert(*ts));
                    // A malformed request is refused before the lock; any other fails there.
                    if has_dup {
                        prop_assert!(matches!(r, Err(StorageError::Unprocessable(_))), "{:?}", r);
                    } else {
                        prop_assert!(matches!(r, Err(StorageError::NotFound(_))), "{:?}", r);
                    }
                    prop_assert!(old.compact().is_err());
                    prop_assert_eq!(new.version(), 0);
                    models[*series] = Some(BTreeMap::new());
                }
                Op::DeleteRange { series, start, end } => {
                    let range = TsRange::new(*start, *end);
                    match (store.get(&metas[*series].key), &mut models[*series]) {
                        (Ok(s), Some(model)) => {
                            let before = s.version();
                            let gone: Vec<i64> = model.keys().copied().filter(|t| range.contains(*t)).collect();
                            let r = s.delete_range(range, Some(before)).unwrap();
                            prop_assert_eq!(r.deleted, gone.len() as u64);
                            prop_assert_eq!(r.version, before + u64::from(!gone.is_empty()));
                            for t in gone {
                                model.remove(&t);
                            }
                            // A stale If-Match deletes nothing.
                            if r.deleted > 0 {
                                prop_assert!(s.delete_range(TsRange::all(), Some(before)).is_err());
                            }
                        }
                        (Err(_), None) => {}
                        (got, want) => prop_assert!(false, "series presence {:?} vs model {:?}", got.is_ok(), want.is_some()),
                    }
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

/// Writers race deletes, re-registrations, compactions, repairs and manifest rebuilds
/// on other threads. Every
/// write either commits to the incarnation whose handle it used or fails NotFound;
/// at the end (and after a reopen) the last incarnation holds exactly the rows
/// acknowledged to it.
#[test]
fn writers_racing_delete_reregister_compact_and_repair() {
    let rounds = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        400
    } else {
        40
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = store_opts(|o| o.max_chunks_per_month = 3);
    let meta = metas().remove(1);
    let store = std::sync::Arc::new(Store::open(dir.path(), opts.clone()).unwrap());
    let (first, _) = store.register(meta.clone()).unwrap();
    type Acked = Vec<(std::sync::Arc<fastk::storage::Series>, Vec<(i64, i64)>)>;
    let acked: std::sync::Mutex<Acked> = std::sync::Mutex::new(Vec::new());
    let mut incarnations = vec![first];
    std::thread::scope(|s| {
        for w in 0..2i64 {
            let (store, meta, acked) = (&store, &meta, &acked);
            s.spawn(move || {
                for i in 0..rounds as i64 {
                    let Ok(series) = store.get(&meta.key) else {
                        continue;
                    };
                    // Rows unique per writer and round, spread over three months.
                    let rows: Vec<(i64, i64)> = (0..30)
                        .map(|k| {
                            (
                                MonthPartition(648 + (k % 3) as i32).start_ts()
                                    + (w * 100_000 + i * 100 + k) * MINUTE,
                                i,
                            )
                        })
                        .collect();
                    match series.write(batch(meta, &rows), None) {
                        Ok(_) => acked.lock().unwrap().push((series, rows)),
                        Err(StorageError::NotFound(m)) => assert!(m.contains("deleted"), "{m}"),
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            });
        }
        // Maintenance against in-flight writes: each must either run on the live
        // incarnation or find it deleted, and never lose an acknowledged row.
        let maintained = |r: Result<(), StorageError>| match r {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(e) => panic!("maintenance racing writes failed: {e}"),
        };
        for i in 0..rounds {
            match i % 6 {
                0 | 4 => {
                    if let Ok(s) = store.get(&meta.key) {
                        maintained(s.compact().map(drop));
                    }
                }
                1 => {
                    let _ = store.delete(&meta.key);
                }
                2 => {
                    if let Ok(s) = store.get(&meta.key) {
                        let q = fastk::storage::maintain::Quarantine::new(&store);
                        maintained(s.repair(&q, false).map(drop));
                    }
                }
                3 => {
                    if let Ok(s) = store.get(&meta.key) {
                        maintained(s.rebuild_manifest(false).map(drop));
                    }
                }
                _ => {
                    let (s, created) = store.register(meta.clone()).unwrap();
                    if created {
                        incarnations.push(s);
                    }
                }
            }
        }
        let (s, created) = store.register(meta.clone()).unwrap();
        if created {
            incarnations.push(s);
        }
    });
    let last = incarnations.last().unwrap();
    let mut want = BTreeMap::new();
    for (s, rows) in acked.lock().unwrap().iter() {
        if std::sync::Arc::ptr_eq(s, last) {
            want.extend(rows.iter().copied());
        }
    }
    let mut models = vec![None, Some(want), None];
    let metas3 = metas();
    let only = |store: &Store, models: &[Option<BTreeMap<i64, i64>>]| {
        check(store, &metas3[1..2], &models[1..2], (0, 0, 5));
    };
    only(&store, &models);
    drop(incarnations);
    acked.lock().unwrap().clear();
    drop(std::sync::Arc::try_unwrap(store).expect("no other owner"));
    let store = Store::open(dir.path(), opts).unwrap();
    assert!(store.unopenable().is_empty());
    assert!(
        store
            .recovery()
            .iter()
            .all(|n| n.unknown_files.is_empty() && n.corrupt_files.is_empty())
    );
    only(&store, &models);
    models.clear();
}

/// Found by the model test: rows of one series in the log, a crash, that series
/// deleted, a clean stop (which removes the folded segment and leaves the empty one
/// the crashed open made, named by the next lsn), then a write. The write's lsn must
/// follow that segment's name: given lsn 1 again, it made the next open find a
/// segment that starts past the records before it, and the store would not open.
#[test]
fn the_next_lsn_follows_an_empty_segment_after_its_records_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let opts = store_opts(|_| {});
    let metas = metas();
    let mut store = Store::open(dir.path(), opts.clone()).unwrap();
    for m in &metas {
        store.register(m.clone()).unwrap();
    }
    let s2 = store.get(&metas[2].key).unwrap();
    store
        .write_many(vec![(s2.clone(), batch(&metas[2], &[(1704067200000, 0)]))])
        .unwrap();
    store
        .write(&s2, batch(&metas[2], &[(1704067200000, -23)]), None)
        .unwrap();
    drop(s2);
    store.abandon();
    store = Store::open(dir.path(), opts.clone()).unwrap();
    store.delete(&metas[2].key).unwrap();
    drop(store);
    store = Store::open(dir.path(), opts.clone()).unwrap();
    let s0 = store.get(&metas[0].key).unwrap();
    let rows = [(1704065340000, 7), (1709252280000, -4)];
    store
        .write_many(vec![(s0, batch(&metas[0], &rows))])
        .unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    let got = store.get(&metas[0].key).unwrap().snapshot().rows();
    assert_eq!(got, 2, "the write survived the reopen");
}

//! Property test: tick series (trades in day partitions, quotes in hour partitions)
//! against a naive `BTreeMap<(ts, seq), row>` model.
//!
//! Many events share a nanosecond; writes mix explicit `seq` (replacing what is
//! stored under it) and `seq` left for the store to assign (the next after the
//! largest stored or given for that `ts`, in arrival order); a `(ts, seq)` repeated
//! inside one request is refused and changes nothing. Range deletes, compression of
//! sealed partitions, packs, compactions, crashes and reopens interleave; after every
//! step the range, sub-range and latest-N reads equal the model, every chunk file is
//! named by its day or hour, and a deep check of the store finds nothing.

mod common;

use common::store_opts;
use common::ticks::{DAY_NS, DAY0, HOUR_NS, Model, Row, apply_model, batch, metas, model_rows};
use fastk::record::{SEQ_UNASSIGNED, SeriesMeta, TsRange};
use fastk::storage::{StorageError, Store, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write {
        series: usize,
        rows: Vec<Row>,
    },
    /// One write of both series (trades and quotes), all or nothing.
    WriteBoth {
        trades: Vec<Row>,
        quotes: Vec<Row>,
    },
    DeleteRange {
        series: usize,
        start: i64,
        end: i64,
    },
    Compress {
        series: usize,
    },
    Pack {
        series: usize,
    },
    Compact {
        series: usize,
    },
    Crash,
    Reopen,
}

/// Few distinct instants, near day and hour boundaries, so many rows share a `ts`
/// and writes split across partitions.
fn ts_strategy() -> impl Strategy<Value = i64> {
    let bases = [
        DAY0 - 1,
        DAY0,
        DAY0 + HOUR_NS - 2,
        DAY0 + DAY_NS - 1,
        DAY0 + DAY_NS,
    ];
    (0..bases.len(), 0i64..4).prop_map(move |(b, k)| bases[b] + k)
}

fn row_strategy() -> impl Strategy<Value = Row> {
    (
        ts_strategy(),
        prop::option::weighted(0.4, 0u64..6),
        any::<i64>(),
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2usize, prop::collection::vec(row_strategy(), 1..40))
            .prop_map(|(series, rows)| Op::Write { series, rows }),
        3 => (
            prop::collection::vec(row_strategy(), 1..20),
            prop::collection::vec(row_strategy(), 1..20),
        )
            .prop_map(|(trades, quotes)| Op::WriteBoth { trades, quotes }),
        2 => (0..2usize, ts_strategy(), ts_strategy()).prop_map(|(series, a, b)| {
            Op::DeleteRange { series, start: a.min(b), end: a.max(b) }
        }),
        1 => (0..2usize).prop_map(|series| Op::Compress { series }),
        1 => (0..2usize).prop_map(|series| Op::Pack { series }),
        1 => (0..2usize).prop_map(|series| Op::Compact { series }),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn read_all(store: &Store, meta: &SeriesMeta, range: TsRange) -> Vec<Vec<i64>> {
    let snap = store.get(&meta.key).unwrap().snapshot();
    let mut out = Vec::new();
    for s in snap.range(range) {
        let s = s.unwrap();
        for r in 0..s.len() {
            out.push((0..6).map(|c| s.col(c)[r]).collect());
        }
    }
    out
}

fn check(store: &Store, metas: &[SeriesMeta], models: &[Model], probe: (i64, i64, usize)) {
    for (meta, model) in metas.iter().zip(models) {
        assert_eq!(
            read_all(store, meta, TsRange::all()),
            model_rows(model, TsRange::all()),
            "{}",
            meta.key
        );
        let (a, b) = (probe.0.min(probe.1), probe.0.max(probe.1));
        let sub = TsRange::new(Some(a), Some(b));
        assert_eq!(
            read_all(store, meta, sub),
            model_rows(model, sub),
            "{} {a}..={b}",
            meta.key
        );
        let series = store.get(&meta.key).unwrap();
        let snap = series.snapshot();
        let latest: Vec<(i64, u64)> = snap
            .latest(TsRange::all(), probe.2)
            .unwrap()
            .iter()
            .flat_map(|s| {
                (0..s.len())
                    .map(|r| (s.col(0)[r], s.col(1)[r] as u64))
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<(i64, u64)> = model.keys().rev().take(probe.2).rev().copied().collect();
        assert_eq!(latest, want, "latest {} of {}", probe.2, meta.key);
        assert_eq!(snap.rows(), model.len() as u64);
        // Every chunk file is named by its partition: a day (`YYYY-MM-DD`) for the
        // trades, an hour (`YYYY-MM-DDTHH`) for the quotes.
        let label_len = if meta.key.kind() == fastk::record::SeriesKind::Trade {
            10
        } else {
            13
        };
        // A deep check of every chunk (checksums, bounds inside the partition, keys
        // ascending by (ts, seq)) finds nothing.
        for c in snap.chunks().filter(|c| !c.is_memory()) {
            let (fault, _) = fastk::storage::verify::verify_chunk(&series, c, true);
            assert!(fault.is_none(), "{}: {fault:?}", meta.key);
        }
        let Ok(files) = std::fs::read_dir(series.dir()) else {
            continue; // nothing written yet: registration makes no directory
        };
        for e in files {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".chunk") {
                let label = stem.split(".g").next().unwrap();
                assert_eq!(label.len(), label_len, "{name}");
            }
        }
    }
}

fn run(ops: Vec<Op>, probe: (i64, i64, usize)) {
    let dir = tempfile::tempdir().unwrap();
    let opts = store_opts(|o| {
        o.compress_after_ms = Some(0);
        o.compress_on_write = false;
    });
    let metas = metas();
    let mut store = Store::open(dir.path(), opts.clone()).unwrap();
    for m in &metas {
        store.register(m.clone()).unwrap();
    }
    let mut models: Vec<Model> = vec![Model::new(); metas.len()];
    // Far in the future: every partition is sealed.
    let later = 4_000_000_000_000;
    for op in ops {
        match op {
            Op::Write { series, rows } => {
                let s = store.get(&metas[series].key).unwrap();
                let before = models[series].clone();
                let got = store.write(&s, batch(series, &rows), None);
                match apply_model(series, &mut models[series], &rows) {
                    Ok(()) => {
                        let r = got.unwrap();
                        assert_eq!(r.written, rows.len() as u64);
                        let inserted = models[series].len() - before.len();
                        assert_eq!(r.inserted, inserted as u64, "inserted");
                    }
                    Err(()) => {
                        let err = got.unwrap_err();
                        assert!(
                            matches!(&err, StorageError::Unprocessable(m) if m.contains("repeats record")),
                            "{err}"
                        );
                    }
                }
            }
            Op::WriteBoth { trades, quotes } => {
                let entries = [&trades, &quotes]
                    .iter()
                    .enumerate()
                    .map(|(i, rows)| (store.get(&metas[i].key).unwrap(), batch(i, rows)))
                    .collect();
                let got = store.write_many(entries);
                let mut next = models.clone();
                let ok = apply_model(0, &mut next[0], &trades).is_ok()
                    && apply_model(1, &mut next[1], &quotes).is_ok();
                if ok {
                    let r = got.unwrap();
                    assert_eq!(r.len(), 2);
                    for (i, rows) in [&trades, &quotes].into_iter().enumerate() {
                        assert_eq!(r[i].written, rows.len() as u64);
                        let inserted = next[i].len() - models[i].len();
                        assert_eq!(r[i].inserted, inserted as u64, "inserted");
                    }
                    models = next;
                } else {
                    let err = got.unwrap_err();
                    assert!(
                        matches!(&err, StorageError::Unprocessable(m) if m.contains("repeats record")),
                        "{err}"
                    );
                }
            }
            Op::DeleteRange { series, start, end } => {
                let s = store.get(&metas[series].key).unwrap();
                let r = s
                    .delete_range(TsRange::new(Some(start), Some(end)), None)
                    .unwrap();
                let before = models[series].len();
                models[series].retain(|&(ts, _), _| ts < start || ts > end);
                assert_eq!(r.deleted, (before - models[series].len()) as u64);
            }
            Op::Compress { series } => {
                store
                    .get(&metas[series].key)
                    .unwrap()
                    .compress_sealed(later)
                    .unwrap();
            }
            Op::Pack { series } => {
                store
                    .get(&metas[series].key)
                    .unwrap()
                    .pack_sealed(later)
                    .unwrap();
            }
            Op::Compact { series } => {
                store.get(&metas[series].key).unwrap().compact().unwrap();
            }
            Op::Crash => {
                store.abandon();
                store = Store::open(dir.path(), opts.clone()).unwrap();
                assert!(store.recovery().iter().all(|n| n.unknown_files.is_empty()));
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir.path(), opts.clone()).unwrap();
            }
        }
        check(&store, &metas, &models, probe);
    }
    let engine_dir = dir.path().to_path_buf();
    drop(store);
    let store = Store::open(&engine_dir, opts).unwrap();
    check(&store, &metas, &models, probe);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("FASTK_TEST_LONG").is_ok() { 512 } else { 48 },
        ..ProptestConfig::default()
    })]
    #[test]
    fn tick_series_match_the_model(
        ops in prop::collection::vec(op_strategy(), 1..30),
        a in ts_strategy(),
        b in ts_strategy(),
        n in 0usize..12,
    ) {
        run(ops, (a, b, n));
    }
}

/// Rows without a `seq` are numbered in arrival order after the largest stored for
/// their `ts`; an explicit `seq` replaces; a repeated `(ts, seq)` is refused whole.
#[test]
fn seq_is_assigned_in_arrival_order_and_replaced_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), store_opts(|_| {})).unwrap();
    let meta = metas().remove(0);
    let (s, _) = store.register(meta.clone()).unwrap();
    let t = DAY0 + 5;
    let r = store
        .write(
            &s,
            batch(0, &[(t, None, 10), (t, None, 11), (t, Some(7), 12)]),
            None,
        )
        .unwrap();
    assert_eq!((r.inserted, r.replaced), (3, 0));
    // Assigned after the explicit 7 given in the same request: 8 and 9.
    let seqs = |s: &fastk::storage::Series| -> Vec<u64> {
        common::series_cols(s)[1]
            .iter()
            .map(|&x| x as u64)
            .collect()
    };
    assert_eq!(seqs(&s), vec![7, 8, 9]);
    let r = store
        .write(&s, batch(0, &[(t, None, 13), (t, Some(8), 14)]), None)
        .unwrap();
    assert_eq!((r.inserted, r.replaced), (1, 1));
    assert_eq!(seqs(&s), vec![7, 8, 9, 10]);
    let err = store
        .write(
            &s,
            batch(0, &[(t, Some(1), 1), (t + 1, None, 2), (t, Some(1), 3)]),
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("record 2: ts"), "{err}");
    assert_eq!(seqs(&s), vec![7, 8, 9, 10]);
    // Before 1970 is refused, naming the record.
    let err = store
        .write(&s, batch(0, &[(t, None, 1), (-1, None, 2)]), None)
        .unwrap_err();
    assert!(
        err.to_string().contains("record 1: ts -1 is outside"),
        "{err}"
    );
}

/// The contract's sanity checks refuse a whole request, naming the first bad record,
/// and leave the series as it was; an empty book side (0) is not a crossed quote.
#[test]
fn bad_ticks_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), store_opts(|_| {})).unwrap();
    let metas = metas();
    let (trades, _) = store.register(metas[0].clone()).unwrap();
    let (quotes, _) = store.register(metas[1].clone()).unwrap();
    let t = DAY0 + 1;
    let row = |cols: [i64; 6]| WriteBatch::from_cols(cols.iter().map(|&v| vec![v]).collect());
    let two = |a: [i64; 6], b: [i64; 6]| {
        WriteBatch::from_cols((0..6).map(|c| vec![a[c], b[c]]).collect())
    };
    let good_trade = [t, SEQ_UNASSIGNED, 100, 5, 1, 0];
    for (bad, why) in [
        (
            [t, SEQ_UNASSIGNED, 100, -5, 1, 0],
            "record 1: size is negative",
        ),
        ([t, SEQ_UNASSIGNED, 100, 5, 2, 0], "record 1: side must be"),
    ] {
        let err = store
            .write(&trades, two(good_trade, bad), None)
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::Unprocessable(m) if m.contains(why)),
            "{err}"
        );
    }
    assert_eq!(trades.snapshot().rows(), 0);
    let err = store
        .write(&quotes, row([t, 0, 101, 100, 1, 1]), None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("record 0: bid is greater than ask"),
        "{err}"
    );
    let err = store
        .write(&quotes, row([t, 0, 100, 101, -1, 1]), None)
        .unwrap_err();
    assert!(
        err.to_string().contains("record 0: a size is negative"),
        "{err}"
    );
    assert_eq!(quotes.snapshot().rows(), 0);
    // One side empty: accepted.
    store
        .write(&quotes, row([t, 0, 101, 0, 3, 0]), None)
        .unwrap();
    store.write(&trades, row(good_trade), None).unwrap();
    assert_eq!((trades.snapshot().rows(), quotes.snapshot().rows()), (1, 1));
}

/// A write of many tick series goes through the write-ahead log: the committer
/// numbers each series' missing `seq`s under the series' lock, against the rows the
/// writes before it left, and logs them numbered. 300 series are past the size at
/// which an appends-only group is synced while it applies (its records are numbered
/// from the rows alone); a crash before any fold then replays the same numbers.
#[test]
fn a_many_series_tick_write_is_numbered_in_the_log_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = store_opts(|_| {});
    let t = DAY0 + 5;
    let metas: Vec<SeriesMeta> = (0..300)
        .map(|i| {
            let mut m = metas().remove(0);
            m.key = fastk::record::SeriesKey::trade(&format!("S{i:03}")).unwrap();
            m
        })
        .collect();
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let series: Vec<_> = metas
        .iter()
        .map(|m| store.register(m.clone()).unwrap().0)
        .collect();
    let write = |rows: &[Row]| {
        let entries = series
            .iter()
            .map(|s| (std::sync::Arc::clone(s), batch(0, rows)))
            .collect();
        store.write_many(entries).unwrap()
    };
    // Appends (nothing stored yet), then more rows at the same ts (numbered after
    // the stored ones: not an append), then appends at later ts.
    write(&[(t, None, 1), (t, None, 2), (t, Some(7), 3)]);
    write(&[(t, None, 4), (t + 1, None, 5)]);
    write(&[(t + 2, None, 6), (t + 2, None, 7)]);
    let want: Vec<(i64, u64)> = vec![
        (t, 7),
        (t, 8),
        (t, 9),
        (t, 10),
        (t + 1, 0),
        (t + 2, 0),
        (t + 2, 1),
    ];
    let keys = |s: &fastk::storage::Series| -> Vec<(i64, u64)> {
        let c = common::series_cols(s);
        c[0].iter()
            .zip(&c[1])
            .map(|(&ts, &q)| (ts, q as u64))
            .collect()
    };
    for s in &series {
        assert_eq!(keys(s), want, "{}", s.meta.key);
    }
    assert!(
        series
            .iter()
            .all(|s| s.snapshot().chunks().all(|c| c.is_memory())),
        "the writes wait in the log, not in chunk files"
    );
    store.abandon();
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let rec = store.wal_recovery();
    assert_eq!(
        (rec.records, rec.rows),
        (900, 2_100),
        "three writes of 300 series replayed"
    );
    for m in &metas {
        assert_eq!(
            keys(&store.get(&m.key).unwrap()),
            want,
            "{} after replay",
            m.key
        );
    }
    // Folded into chunk files, and read the same after a clean reopen.
    assert_eq!(store.fold_all().failed, 0);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    for m in &metas {
        let s = store.get(&m.key).unwrap();
        assert!(s.snapshot().chunks().all(|c| !c.is_memory()), "folded");
        assert_eq!(keys(&s), want, "{} once folded", m.key);
    }
}

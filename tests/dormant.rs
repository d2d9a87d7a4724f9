//! Dormant series (`storage::seriesmap`): after an open, a small series the catalog
//! holds whole is not built until asked for; the figures over every series read it
//! without building it; asking builds it once, with its rows, version and commit
//! time; a close with `fold_small_on_close` writes small series' logged rows into the
//! catalog, so the next open replays none of them and leaves them dormant.

use std::collections::BTreeMap;
use std::sync::Arc;

mod common;

use common::{JAN_2024, never_folding_opts, read_values, scalar_meta};
use fastk::record::{SeriesMeta, ValueType};
use fastk::storage::{Settings, Store, StoreOptions, WriteBatch};

const DAY: i64 = 86_400_000;

fn meta(i: usize) -> SeriesMeta {
    scalar_meta(
        &format!("D{:03}", i / 10),
        "1d",
        "factor",
        &format!("f{}", i % 10),
        ValueType::I64,
    )
}

fn opts(fold_small_on_close: bool) -> StoreOptions {
    never_folding_opts(|o| {
        o.fold_on_close = false;
        o.fold_small_on_close = fold_small_on_close;
        o.resident_rows_max = 16;
    })
}

/// `n` rows of series `i`: `i*1000 + k` at `JAN_2024 + k` days.
fn rows(i: usize, n: i64) -> WriteBatch {
    let ts: Vec<i64> = (0..n).map(|k| JAN_2024 + k * DAY).collect();
    let v: Vec<i64> = (0..n).map(|k| i as i64 * 1000 + k).collect();
    WriteBatch::from_cols(vec![ts, v])
}

fn expected(i: usize, n: i64) -> BTreeMap<i64, i64> {
    (0..n)
        .map(|k| (JAN_2024 + k * DAY, i as i64 * 1000 + k))
        .collect()
}

fn fill(store: &Store, n: usize, rows_each: i64) -> Vec<SeriesMeta> {
    let metas: Vec<SeriesMeta> = (0..n).map(meta).collect();
    store
        .register_many(
            metas
                .iter()
                .map(|m| (m.clone(), Settings::default()))
                .collect(),
        )
        .unwrap();
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, rows_each), None).unwrap();
    }
    metas
}

#[test]
fn an_open_builds_no_catalog_series_until_one_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(false)).unwrap();
    let metas = fill(&store, 200, 3);
    let r = store.fold_all();
    assert_eq!((r.series, r.failed), (200, 0));
    let before: Vec<_> = metas
        .iter()
        .map(|m| store.versions_of(&m.key).unwrap())
        .collect();
    let resident = store.wal_stats();
    drop(store);

    let store = Store::open(dir.path(), opts(false)).unwrap();
    assert_eq!(store.dormant_count(), 200, "nothing built by the open");
    // Figures over every series, from the seeds.
    assert_eq!(store.series_count(), 200);
    assert_eq!(store.total_rows(), 600);
    assert_eq!(store.metas().len(), 200);
    assert_eq!(store.metas()[0], metas[0]);
    let st = store.wal_stats();
    assert_eq!(
        (st.resident_series, st.resident_bytes),
        (resident.resident_series, resident.resident_bytes),
        "a seed counts the bytes its built chunks will take"
    );
    assert_eq!(store.bytes(), 0);
    assert_eq!(store.dormant_count(), 200, "figures build nothing");

    // Asking builds one series, once, with its rows, version and commit time; it is
    // as old as the open, so a write that began before the build is for this series.
    let write_began = fastk::storage::series::registration_stamp();
    let a = store.get(&metas[7].key).unwrap();
    assert!(
        a.born() <= write_began,
        "a built series is as old as its open"
    );
    let b = store.get(&metas[7].key).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one series per key");
    assert_eq!(store.dormant_count(), 199);
    assert_eq!(read_values(&store, &metas[7].key), expected(7, 3));
    assert_eq!(store.versions_of(&metas[7].key).unwrap(), before[7]);
    assert!(
        before[7].last().unwrap().exact,
        "the commit time was kept exactly"
    );

    // Many threads asking for the same dormant series get the same one.
    let key = metas[42].key.clone();
    let got: Vec<Arc<fastk::storage::Series>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| store.get(&key).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(got.iter().all(|s| Arc::ptr_eq(s, &got[0])));

    // A write to a dormant series, then a crash: the log brings it back on top.
    let s = store.get(&metas[100].key).unwrap();
    store
        .write(
            &s,
            WriteBatch::from_cols(vec![vec![JAN_2024 + 9 * DAY], vec![-1]]),
            None,
        )
        .unwrap();
    drop(s);
    // A listing builds every series.
    assert_eq!(store.list().len(), 200);
    assert_eq!(store.dormant_count(), 0);
    store.abandon();

    let store = Store::open(dir.path(), opts(false)).unwrap();
    assert_eq!(
        store.dormant_count(),
        199,
        "the series the log wrote to is built by the replay"
    );
    let mut want = expected(100, 3);
    want.insert(JAN_2024 + 9 * DAY, -1);
    assert_eq!(read_values(&store, &metas[100].key), want);
    for (i, m) in metas.iter().enumerate().filter(|(i, _)| *i != 100) {
        assert_eq!(read_values(&store, &m.key), expected(i, 3), "{}", m.key);
        assert_eq!(store.versions_of(&m.key).unwrap(), before[i], "{}", m.key);
    }
}

#[test]
fn a_close_folds_small_series_into_the_catalog_and_leaves_big_ones_to_the_log() {
    for fold_small in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts(fold_small)).unwrap();
        // 50 small series (3 rows) and 5 over `resident_rows_max` (20 rows).
        let small = fill(&store, 50, 3);
        let big: Vec<SeriesMeta> = (1000..1005).map(meta).collect();
        for (j, m) in big.iter().enumerate() {
            let s = store.register(m.clone()).unwrap().0;
            store.write(&s, rows(1000 + j, 20), None).unwrap();
        }
        assert_eq!(store.wal_stats().unfolded_series, 55);
        drop(store);

        let store = Store::open(dir.path(), opts(fold_small)).unwrap();
        let rec = store.wal_recovery().clone();
        if fold_small {
            assert_eq!(rec.records, 5, "only the big series are replayed");
            assert_eq!(store.dormant_count(), 50);
            assert_eq!(store.wal_stats().unfolded_series, 5);
        } else {
            assert_eq!(rec.records, 55, "every series is replayed");
            assert_eq!(store.dormant_count(), 0);
            assert_eq!(store.wal_stats().unfolded_series, 55);
        }
        for (i, m) in small.iter().enumerate() {
            assert_eq!(read_values(&store, &m.key), expected(i, 3), "{}", m.key);
            assert_eq!(store.get(&m.key).unwrap().version(), 1);
        }
        for (j, m) in big.iter().enumerate() {
            assert_eq!(
                read_values(&store, &m.key),
                expected(1000 + j, 20),
                "{}",
                m.key
            );
        }
    }
}

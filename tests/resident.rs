//! Small series kept in the store's catalog (`storage::resident`): the fold writes
//! the rows of many series with no directory as state records of `CATALOG`, not a
//! directory, a manifest and a chunk file each; they come back after a clean stop,
//! a crash (with log rows on top), a rewrite of the catalog, a failed append; a
//! series that outgrows the limit, or gets a direct write, a range delete or a
//! delete, moves to a directory or goes with every row it had.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use common::{
    JAN_2024, files_under, kline_meta, never_folding_opts, read_cols, read_values, scalar_meta,
};
use fastk::record::{SeriesMeta, TsRange, ValueType};
use fastk::storage::catalog::CATALOG_FILE;
use fastk::storage::fsio::failpoints::{self, Op};
use fastk::storage::{Settings, Store, StoreOptions, WriteBatch};

fn meta(i: usize) -> SeriesMeta {
    scalar_meta(
        &format!("S{:03}", i / 10),
        "1d",
        "factor",
        &format!("f{}", i % 10),
        ValueType::I64,
    )
}

/// Folds only when asked; small series (at most `rows_max` rows) fold into the
/// catalog.
fn opts(rows_max: u64) -> StoreOptions {
    never_folding_opts(|o| {
        o.fold_on_close = false;
        o.resident_rows_max = rows_max;
    })
}

fn manifests(root: &Path) -> usize {
    files_under(&root.join("series"))
        .iter()
        .filter(|p| p.ends_with("MANIFEST"))
        .count()
}

fn wal_segments(root: &Path) -> usize {
    files_under(&root.join("wal")).len()
}

/// Rows `i*10 + k` at `JAN_2024 + (start + k) days` for `k` in `0..n`.
fn rows(i: usize, start: i64, n: i64) -> WriteBatch {
    let ts: Vec<i64> = (start..start + n)
        .map(|k| JAN_2024 + k * 86_400_000)
        .collect();
    let v: Vec<i64> = (start..start + n).map(|k| i as i64 * 1000 + k).collect();
    WriteBatch::from_cols(vec![ts, v])
}

fn expected(i: usize, ks: impl Iterator<Item = i64>) -> BTreeMap<i64, i64> {
    ks.map(|k| (JAN_2024 + k * 86_400_000, i as i64 * 1000 + k))
        .collect()
}

fn register(store: &Store, n: usize) -> Vec<SeriesMeta> {
    let metas: Vec<SeriesMeta> = (0..n).map(meta).collect();
    store
        .register_many(
            metas
                .iter()
                .map(|m| (m.clone(), Settings::default()))
                .collect(),
        )
        .unwrap();
    metas
}

#[test]
fn small_series_fold_into_the_catalog_and_come_back_after_a_stop_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    let metas = register(&store, 500);
    // Three days of rows each, across a month's end (two partitions).
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 29, 3), None).unwrap();
    }
    let kline = store.register(kline_meta("K", "1d")).unwrap().0;
    let bars: Vec<Vec<i64>> = vec![
        vec![JAN_2024, JAN_2024 + 86_400_000],
        vec![10, 11],
        vec![12, 13],
        vec![9, 10],
        vec![11, 12],
        vec![100, 200],
    ];
    store
        .write(&kline, WriteBatch::from_cols(bars.clone()), None)
        .unwrap();
    let before = store.wal_stats();
    assert_eq!(before.unfolded_series, 501);
    let report = store.fold_all();
    assert_eq!((report.series, report.failed), (501, 0));
    assert_eq!(manifests(dir.path()), 0, "no directory per small series");
    assert_eq!(
        store.wal_stats().unfolded_series,
        0,
        "nothing left unfolded"
    );
    let files = files_under(dir.path()).len();
    assert!(files < 10, "{files} files for 501 series");
    let versions: Vec<u64> = metas
        .iter()
        .map(|m| store.get(&m.key).unwrap().version())
        .collect();
    drop(store);

    // A clean stop: the rows are the catalog's, the log holds none of them.
    let store = Store::open(dir.path(), opts(512)).unwrap();
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(
            read_values(&store, &m.key),
            expected(i, 29..32),
            "{}",
            m.key
        );
        let s = store.get(&m.key).unwrap();
        assert_eq!(s.version(), versions[i], "the version survives");
        assert!(!s.is_materialized());
    }
    assert_eq!(read_cols(&store, &kline.meta.key), bars);
    assert_eq!(store.wal_stats().unfolded_series, 0);
    // Rows on top of the catalog's, only in the log, then a crash.
    for (i, m) in metas.iter().enumerate().step_by(7) {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 40, 2), None).unwrap();
        // One row rewritten in place: the resident month is rewritten in memory.
        store.write(&s, rows(i, 29, 1), None).unwrap();
    }
    store.abandon();

    let store = Store::open(dir.path(), opts(512)).unwrap();
    for (i, m) in metas.iter().enumerate() {
        let want = if i % 7 == 0 {
            expected(i, (29..32).chain(40..42))
        } else {
            expected(i, 29..32)
        };
        assert_eq!(read_values(&store, &m.key), want, "{}", m.key);
    }
    // The second fold records the joined rows again; the log can go.
    store.fold_all();
    assert_eq!(manifests(dir.path()), 0);
    assert!(wal_segments(dir.path()) <= 1, "folded segments removed");
    drop(store);
    let store = Store::open(dir.path(), opts(512)).unwrap();
    assert_eq!(
        read_values(&store, &metas[7].key),
        expected(7, (29..32).chain(40..42))
    );
    assert_eq!(read_values(&store, &metas[8].key), expected(8, 29..32));
}

#[test]
fn a_series_that_outgrows_the_limit_moves_to_a_directory_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(8)).unwrap();
    let metas = register(&store, 3);
    let s = store.get(&metas[0].key).unwrap();
    store.write(&s, rows(0, 0, 5), None).unwrap();
    store.fold_all();
    assert_eq!(manifests(dir.path()), 0);
    store.write(&s, rows(0, 5, 5), None).unwrap();
    store.fold_all();
    assert_eq!(
        manifests(dir.path()),
        1,
        "ten rows are past the limit of eight"
    );
    assert!(s.is_materialized());
    drop(store);
    let store = Store::open(dir.path(), opts(8)).unwrap();
    assert_eq!(read_values(&store, &metas[0].key), expected(0, 0..10));
}

#[test]
fn direct_writes_range_deletes_and_settings_take_the_resident_rows_along() {
    let dir = tempfile::tempdir().unwrap();
    let o = || {
        let mut o = opts(512);
        // More rows than this skip the log: a commit to files of their own.
        o.wal.direct_rows = 16;
        o
    };
    let store = Store::open(dir.path(), o()).unwrap();
    let metas = register(&store, 3);
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 0, 4), None).unwrap();
    }
    store.fold_all();
    assert_eq!(manifests(dir.path()), 0);
    // A direct write of 40 rows after the resident ones.
    let a = store.get(&metas[0].key).unwrap();
    store.write(&a, rows(0, 10, 40), None).unwrap();
    // A range delete of the second resident row.
    let b = store.get(&metas[1].key).unwrap();
    let day = |k: i64| JAN_2024 + k * 86_400_000;
    let deleted = b
        .delete_range(TsRange::new(Some(day(1)), Some(day(1))), None)
        .unwrap();
    assert_eq!(deleted.deleted, 1);
    // A settings change.
    let c = store.get(&metas[2].key).unwrap();
    c.set_settings(Some(0), Some(true)).unwrap();
    drop(store);
    let store = Store::open(dir.path(), o()).unwrap();
    assert_eq!(
        read_values(&store, &metas[0].key),
        expected(0, (0..4).chain(10..50))
    );
    assert_eq!(
        read_values(&store, &metas[1].key),
        expected(1, [0, 2, 3].into_iter())
    );
    assert_eq!(read_values(&store, &metas[2].key), expected(2, 0..4));
    assert!(store.get(&metas[2].key).unwrap().snapshot().irregular);
    assert!(
        metas
            .iter()
            .all(|m| store.get(&m.key).unwrap().is_materialized()),
        "each commit to files made the series' directory"
    );
}

#[test]
fn a_failed_catalog_append_leaves_the_rows_in_the_log_and_the_next_fold_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    let metas = register(&store, 20);
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 0, 3), None).unwrap();
    }
    let catalog = dir.path().join(CATALOG_FILE);
    for op in [Op::Write, Op::Fsync] {
        let armed = failpoints::arm(&catalog, op, 1);
        let report = store.fold_all();
        assert!(armed.fired(), "{op:?}");
        assert_eq!((report.series, report.failed), (0, 20), "{op:?}");
        assert_eq!(store.wal_stats().unfolded_series, 20, "still the log's");
        assert_eq!(read_values(&store, &metas[3].key), expected(3, 0..3));
    }
    store.abandon();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    assert_eq!(read_values(&store, &metas[3].key), expected(3, 0..3));
    let report = store.fold_all();
    assert_eq!((report.series, report.failed), (20, 0));
    store.abandon();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(read_values(&store, &m.key), expected(i, 0..3));
    }
}

#[test]
fn deletes_registrations_again_and_the_catalog_rewrite_keep_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    let metas = register(&store, 3000);
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 0, 2), None).unwrap();
    }
    store.fold_all();
    // Most go: their entries become garbage the next open sheds.
    for m in &metas[..2900] {
        store.delete(&m.key).unwrap();
    }
    // One deleted and registered again is empty.
    store
        .register_many(vec![(metas[5].clone(), Settings::default())])
        .unwrap();
    let before = std::fs::metadata(dir.path().join(CATALOG_FILE))
        .unwrap()
        .len();
    drop(store);
    let store = Store::open(dir.path(), opts(512)).unwrap();
    assert!(store.catalog_recovery().compacted, "the garbage was shed");
    let after = std::fs::metadata(dir.path().join(CATALOG_FILE))
        .unwrap()
        .len();
    assert!(after < before / 5, "{after} < {before} / 5");
    assert_eq!(store.list().len(), 101);
    assert!(read_values(&store, &metas[5].key).is_empty());
    assert!(store.get(&metas[0].key).is_err());
    for (i, m) in metas.iter().enumerate().skip(2900) {
        assert_eq!(read_values(&store, &m.key), expected(i, 0..2), "{}", m.key);
    }
    drop(store);
    let store = Store::open(dir.path(), opts(512)).unwrap();
    assert!(!store.catalog_recovery().compacted);
    assert_eq!(read_values(&store, &metas[2999].key), expected(2999, 0..2));
}

#[test]
fn with_the_catalog_fold_off_resident_rows_move_to_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    let metas = register(&store, 4);
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 0, 3), None).unwrap();
    }
    store.fold_all();
    assert_eq!(manifests(dir.path()), 0);
    drop(store);
    // What a primary that starts publishing to replicas does: every series it
    // ships has a directory.
    let store = Store::open(dir.path(), opts(0)).unwrap();
    store.fold_all();
    assert_eq!(manifests(dir.path()), 4);
    drop(store);
    let store = Store::open(dir.path(), opts(0)).unwrap();
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(read_values(&store, &m.key), expected(i, 0..3));
        assert!(store.get(&m.key).unwrap().is_materialized());
    }
}

#[test]
fn a_named_snapshot_of_resident_series_reads_the_same_after_writes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(512)).unwrap();
    let metas = register(&store, 10);
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 0, 3), None).unwrap();
    }
    store.fold_all();
    store.create_snapshot("before", None, "").unwrap();
    for (i, m) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        store.write(&s, rows(i, 1, 5), None).unwrap();
    }
    store.fold_all();
    assert_eq!(manifests(dir.path()), 0);
    drop(store);
    let store = Store::open(dir.path(), opts(512)).unwrap();
    for (i, m) in metas.iter().enumerate() {
        let at = store.series_at("before", &m.key).unwrap();
        let pinned: BTreeMap<i64, i64> = common::series_rows(&at).into_iter().collect();
        assert_eq!(pinned, expected(i, 0..3), "{}", m.key);
        assert_eq!(read_values(&store, &m.key), expected(i, 0..6));
    }
}

//! The store's catalog: a registration writes one record and no file per series;
//! the series' directory is made by its first commit to files; a crash, a failed
//! append, a delete and a registration again all come back as they were
//! acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use common::{JAN_2024, MINUTE, files_under, never_folding_opts, read_values, scalar_meta};
use fastk::record::{SeriesMeta, ValueType};
use fastk::storage::catalog::CATALOG_FILE;
use fastk::storage::fsio::failpoints::{self, Op};
use fastk::storage::{Settings, Store, StoreOptions, WriteBatch};

fn meta(symbol: &str, name: &str) -> SeriesMeta {
    scalar_meta(symbol, "1m", "factor", name, ValueType::I64)
}

/// Thresholds that never fold by themselves: the tests fold when they mean to.
fn opts() -> StoreOptions {
    never_folding_opts(|o| o.fold_on_close = false)
}

fn series_dirs(root: &Path) -> usize {
    files_under(&root.join("series"))
        .iter()
        .filter(|p| p.ends_with("MANIFEST"))
        .count()
}

fn settings(retention_ms: i64) -> Settings {
    Settings {
        retention_ms: Some(retention_ms),
        irregular: None,
    }
}

#[test]
fn a_registration_of_many_series_makes_no_file_per_series_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let metas: Vec<(SeriesMeta, Settings)> = (0..2000)
        .map(|i| {
            (
                meta(&format!("S{}", i / 20), &format!("f{}", i % 20)),
                settings(i),
            )
        })
        .collect();
    let done = store.register_many(metas.clone()).unwrap();
    assert!(done.iter().all(|(_, created)| *created));
    assert_eq!(series_dirs(dir.path()), 0, "no directory per series");
    let files = files_under(dir.path()).len();
    assert!(files < 20, "{files} files for 2,000 series");
    // Rows of a few series go to the log only.
    for (s, _) in &done[..3] {
        let b = WriteBatch::from_cols(vec![vec![JAN_2024, JAN_2024 + MINUTE], vec![1, 2]]);
        store.write(s, b, None).unwrap();
    }
    assert_eq!(series_dirs(dir.path()), 0);
    store.abandon();

    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.list().len(), 2000);
    for (i, (m, _)) in metas.iter().enumerate() {
        let s = store.get(&m.key).unwrap();
        assert_eq!(*s.meta, *m);
        assert_eq!(s.snapshot().retention_ms, i as i64, "{}", m.key);
        assert!(!s.is_materialized());
    }
    let replayed = read_values(&store, &metas[1].0.key);
    assert_eq!(
        replayed,
        BTreeMap::from([(JAN_2024, 1), (JAN_2024 + MINUTE, 2)])
    );
    // Registering the same again creates nothing; different metadata conflicts.
    let again = store.register_many(metas[..5].to_vec()).unwrap();
    assert!(again.iter().all(|(_, created)| !*created));
    let mut other = metas[0].0.clone();
    other.timeframe_ms = 2 * MINUTE;
    assert!(store.register(other).is_err());

    // The fold makes directories for the series that have rows, and only for them.
    store.fold_all();
    assert_eq!(series_dirs(dir.path()), 3);
    assert!(store.get(&metas[0].0.key).unwrap().is_materialized());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.list().len(), 2000);
    assert_eq!(read_values(&store, &metas[1].0.key), replayed);
    assert_eq!(
        store.get(&metas[2].0.key).unwrap().snapshot().retention_ms,
        2
    );
}

#[test]
fn deletes_and_registrations_again_come_back_as_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (a, b, c) = (meta("A", "x"), meta("B", "x"), meta("C", "x"));
    let sa = store.register(a.clone()).unwrap().0;
    let sb = store.register(b.clone()).unwrap().0;
    store.register(c.clone()).unwrap();
    // B gets a directory; A stays in the catalog; C stays too.
    let rows = WriteBatch::from_cols(vec![vec![JAN_2024], vec![7]]);
    store.write(&sb, rows.clone(), None).unwrap();
    store.fold_all();
    assert!(sb.is_materialized() && !sa.is_materialized());
    store.write(&sa, rows.clone(), None).unwrap();
    store.delete(&a.key).unwrap();
    store.delete(&b.key).unwrap();
    assert_eq!(series_dirs(dir.path()), 0);
    // A again, with other metadata: none of the old rows in the log come back.
    let mut a2 = a.clone();
    a2.timeframe_ms = 5 * MINUTE;
    store.register(a2.clone()).unwrap();
    store.abandon();

    let store = Store::open(dir.path(), opts()).unwrap();
    let keys: Vec<_> = store.list().iter().map(|s| s.meta.key.clone()).collect();
    assert_eq!(keys, vec![a.key.clone(), c.key.clone()]);
    let s = store.get(&a.key).unwrap();
    assert_eq!(*s.meta, a2);
    assert!(read_values(&store, &a.key).is_empty(), "old rows replayed");
    assert!(store.get(&b.key).is_err());
}

#[test]
fn a_failed_registration_leaves_nothing_and_the_next_one_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.register(meta("A", "x")).unwrap();
    let catalog = dir.path().join(CATALOG_FILE);
    for op in [Op::Write, Op::Fsync] {
        let armed = failpoints::arm(&catalog, op, 1);
        let batch: Vec<_> = (0..50)
            .map(|i| (meta("B", &format!("f{i}")), Settings::default()))
            .collect();
        let err = store.register_many(batch).unwrap_err();
        assert!(armed.fired(), "{op:?}");
        assert!(err.to_string().contains(CATALOG_FILE), "{err}");
        assert_eq!(store.list().len(), 1, "{op:?}");
    }
    store.register(meta("C", "x")).unwrap();
    store.abandon();
    let store = Store::open(dir.path(), opts()).unwrap();
    let symbols: Vec<_> = store
        .list()
        .iter()
        .map(|s| s.meta.key.symbol().to_string())
        .collect();
    assert_eq!(symbols, ["A", "C"]);
    assert_eq!(store.catalog_recovery().torn_tail_bytes, 0);
}

#[test]
fn a_series_made_before_the_catalog_is_deleted_as_before() {
    // A store whose series all have directories (as every store before the catalog)
    // opens with no catalog file, and a delete needs no catalog record.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let s = store.register(meta("A", "x")).unwrap().0;
    store
        .write(
            &s,
            WriteBatch::from_cols(vec![vec![JAN_2024], vec![1]]),
            None,
        )
        .unwrap();
    store.fold_all();
    drop(store);
    std::fs::remove_file(dir.path().join(CATALOG_FILE)).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.list().len(), 1);
    store.delete(&meta("A", "x").key).unwrap();
    assert!(!dir.path().join(CATALOG_FILE).exists());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(store.list().is_empty());
}

#[test]
fn a_first_commit_that_never_finished_is_set_aside_and_the_log_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let m = meta("A", "x");
    let s = store.register(m.clone()).unwrap().0;
    let rows = WriteBatch::from_cols(vec![vec![JAN_2024, JAN_2024 + MINUTE], vec![4, 5]]);
    store.write(&s, rows, None).unwrap();
    store.abandon();
    // What a crash inside the first fold leaves: the directory and a chunk file, no
    // MANIFEST (its rename is the commit point).
    let sdir = dir.path().join("series").join(m.key.rel_dir());
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::write(
        sdir.join("2024-01.g0000000000000001.chunk"),
        b"half a chunk",
    )
    .unwrap();
    std::fs::write(sdir.join(".tmp-1-2-MANIFEST"), b"half a manifest").unwrap();

    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(!sdir.exists(), "the unfinished directory is set aside");
    let notes: Vec<_> = store.recovery().iter().filter(|n| !n.is_quiet()).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(
        (notes[0].uncommitted_removed, notes[0].temp_files_removed),
        (1, 1)
    );
    let kept = files_under(&dir.path().join("quarantine"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with("2024-01.g0000000000000001.chunk"));
    assert!(store.unopenable().is_empty());
    let s = store.get(&m.key).unwrap();
    assert!(!s.is_materialized());
    assert_eq!(
        read_values(&store, &m.key),
        BTreeMap::from([(JAN_2024, 4), (JAN_2024 + MINUTE, 5)])
    );
    // The next fold makes the directory and commits.
    store.fold_all();
    assert!(s.is_materialized() && sdir.join("MANIFEST").exists());
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(store.recovery().iter().all(|n| n.is_quiet()));
    assert_eq!(read_values(&store, &m.key).len(), 2);
}

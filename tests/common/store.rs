//! Storage-level helpers (a `Store` without an engine): options, series metadata,
//! reading a series back as plain values, and the storage half of `admin validate`.
//! Part of the shared test module `tests/common`.

use std::collections::BTreeMap;

use fastk::record::{SeriesKey, SeriesKind, SeriesMeta, TsRange, ValueType, standard_timeframe_ms};
use fastk::storage::chunk::FileKind;
use fastk::storage::{Series, Snapshot, StorageError, Store, StoreOptions};

/// The default store options changed by `configure`: each test file states only what
/// differs, e.g. `store_opts(|o| o.compress_after_ms = Some(0))`.
pub fn store_opts(configure: impl FnOnce(&mut StoreOptions)) -> StoreOptions {
    let mut o = StoreOptions::default();
    configure(&mut o);
    o
}

/// A kline series of a standard `timeframe` (prices in cents, volumes in thousandths).
/// Store options whose log never folds by itself (the tests fold when they mean to),
/// then `configure`d.
pub fn never_folding_opts(configure: impl FnOnce(&mut StoreOptions)) -> StoreOptions {
    store_opts(|o| {
        o.wal.fold_rows = u64::MAX;
        o.wal.fold_age = std::time::Duration::from_secs(3600);
        o.wal.max_log_bytes = u64::MAX;
        o.wal.memory_bytes = u64::MAX;
        configure(o);
    })
}

pub fn kline_meta(symbol: &str, timeframe: &str) -> SeriesMeta {
    SeriesMeta {
        key: SeriesKey::kline(symbol, timeframe).unwrap(),
        timeframe_ms: standard_timeframe_ms(timeframe).unwrap(),
        price_scale: 100,
        volume_scale: 1000,
        value_type: ValueType::I64,
    }
}

/// A scalar series `symbol/timeframe/category/name` of a standard `timeframe`.
pub fn scalar_meta(
    symbol: &str,
    timeframe: &str,
    category: &str,
    name: &str,
    value_type: ValueType,
) -> SeriesMeta {
    SeriesMeta {
        key: SeriesKey::scalar(symbol, timeframe, category, name).unwrap(),
        timeframe_ms: standard_timeframe_ms(timeframe).unwrap(),
        price_scale: 1,
        volume_scale: 1,
        value_type,
    }
}

/// Every column of the rows of `snap` in `range`, column by column.
pub fn snapshot_cols(snap: &Snapshot, range: TsRange) -> Vec<Vec<i64>> {
    let mut cols = vec![Vec::new(); snap.meta.key.kind().ncols()];
    for sl in snap.range(range) {
        let sl = sl.unwrap();
        for (c, out) in cols.iter_mut().enumerate() {
            out.extend_from_slice(sl.col(c));
        }
    }
    cols
}

/// Every column of every row of `s`, column by column.
pub fn series_cols(s: &Series) -> Vec<Vec<i64>> {
    snapshot_cols(&s.snapshot(), TsRange::all())
}

/// Every column of every row of the series `key` of `store`, column by column.
pub fn read_cols(store: &Store, key: &SeriesKey) -> Vec<Vec<i64>> {
    series_cols(&store.get(key).unwrap())
}

/// The `(ts, value)` rows of the scalar series `s`, in the order they are read.
pub fn series_rows(s: &Series) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for sl in s.snapshot().range(TsRange::all()) {
        let sl = sl.unwrap();
        out.extend(sl.ts().iter().copied().zip(sl.col(1).iter().copied()));
    }
    out
}

/// The values of the scalar series `key` of `store`, by ts.
pub fn read_values(store: &Store, key: &SeriesKey) -> BTreeMap<i64, i64> {
    series_rows(&store.get(key).unwrap()).into_iter().collect()
}

/// The first error a read of all of `s` meets (a damaged file); panics if none.
pub fn first_read_error(s: &Series) -> StorageError {
    s.snapshot()
        .range(TsRange::all())
        .find_map(|r| r.err())
        .expect("an error")
}

/// What `admin validate` checks of the storage, without the registry: the store opened
/// with no unopenable series and no unknown or corrupt file and no rebuilt manifest,
/// every live chunk verifies, and each series directory holds exactly the manifest and
/// the files its live entries name (a packed chunk: its pack; another: its chunk file
/// and, for a scalar series, the sidecars the store's options build; a series the
/// catalog registered that has no files yet: no directory).
pub fn assert_clean(store: &Store) {
    assert!(store.unopenable().is_empty(), "{:?}", store.unopenable());
    for n in store.recovery() {
        assert!(n.unknown_files.is_empty(), "{n:?}");
        assert!(n.corrupt_files.is_empty(), "{n:?}");
        assert!(n.manifest_rebuilt.is_none(), "{n:?}");
    }
    let opts = store.options();
    for s in store.list() {
        let scalar = s.meta.key.kind() == SeriesKind::Scalar;
        let snap = s.snapshot();
        if !s.is_materialized() {
            // Registered in the catalog, no commit to files: no MANIFEST, no data file
            // (a first commit that failed may have left its empty directory).
            let left = std::fs::read_dir(s.dir()).map_or(0, |d| d.count());
            assert_eq!(left, 0, "{}", s.meta.key);
            assert!(snap.chunks().all(|c| c.is_memory()), "{}", s.meta.key);
            continue;
        }
        let mut want: Vec<String> = vec!["MANIFEST".into()];
        for c in snap.chunks() {
            c.map().expect("every live chunk verifies");
            let name = c.file_name(FileKind::Chunk);
            let sidecars = !c.is_packed() && scalar && c.entry.rows >= opts.sidecar_min_rows as u64;
            if sidecars && opts.zonemap_block_rows.is_some() {
                want.push(name.replace(".chunk", ".zmap"));
            }
            if sidecars && opts.value_index {
                want.push(name.replace(".chunk", ".vidx"));
            }
            want.push(name);
        }
        want.sort();
        want.dedup();
        let mut files: Vec<String> = std::fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        assert_eq!(files, want, "{}", s.meta.key);
    }
}

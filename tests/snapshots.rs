//! Named snapshots (docs/research.md), against a model: writes through the log and
//! direct, many-series writes, replacements, range deletes, month drops (what the
//! retention pass does), compaction, compression, packing, folds, snapshot creates and
//! deletes, clean restarts and crashes, interleaved at random. After every step every
//! snapshot reads exactly what the model held when it was taken, and the series read
//! what the model holds now; at the end, with every snapshot deleted, no file outlives
//! the last reference to it. `FASTK_TEST_LONG=1` runs more seeds and steps.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{
    JAN_2024, MINUTE, Rng, assert_clean, kline_meta, scalar_meta, series_cols, store_opts,
};
use fastk::record::{SeriesKey, TsRange, ValueType};
use fastk::storage::series::Pick;
use fastk::storage::{Series, StorageError, Store, StoreOptions, WriteBatch};

/// Rows of one series by ts: the columns after `ts`.
type Rows = BTreeMap<i64, Vec<i64>>;
type Model = BTreeMap<SeriesKey, Rows>;
/// The rows of each version of each series the store should still read.
type Versions = BTreeMap<SeriesKey, BTreeMap<u64, Rows>>;

fn opts() -> StoreOptions {
    store_opts(|o| {
        // Every month is sealed: compression and packing have work.
        o.compress_after_ms = Some(0);
        o.wal.direct_rows = 64;
        o.wal.fold_rows = 1 << 40;
        o.wal.fold_interval = std::time::Duration::from_secs(3600);
        o.fold_on_close = false;
        // Every superseded version stays readable for the whole test.
        o.keep_versions_ms = 3_600_000;
    })
}

fn keys() -> Vec<SeriesKey> {
    vec![
        kline_meta("BTCUSDT", "1m").key,
        scalar_meta("BTCUSDT", "1m", "feature", "x", ValueType::I64).key,
        scalar_meta("ETHUSDT", "1m", "feature", "x", ValueType::I64).key,
    ]
}

fn register(store: &Store) {
    store.register(kline_meta("BTCUSDT", "1m")).unwrap();
    for sym in ["BTCUSDT", "ETHUSDT"] {
        store
            .register(scalar_meta(sym, "1m", "feature", "x", ValueType::I64))
            .unwrap();
    }
}

/// A row of `key` at `ts` with value `v` (a kline bar of one price).
fn row(key: &SeriesKey, v: i64) -> Vec<i64> {
    if key.category().is_none() {
        vec![v, v, v, v, 1 + v % 7]
    } else {
        vec![v]
    }
}

fn batch(rows: &Rows) -> WriteBatch {
    let ncols = 1 + rows.values().next().map_or(0, Vec::len);
    let mut b = WriteBatch::with_capacity(ncols, rows.len());
    for (ts, r) in rows {
        b.cols[0].push(*ts);
        for (c, v) in r.iter().enumerate() {
            b.cols[c + 1].push(*v);
        }
    }
    b
}

/// `n` rows of `key` from a random minute of the four months of 2024's first third,
/// `step` minutes apart.
fn rows(rng: &mut Rng, key: &SeriesKey, n: u64, step: i64) -> Rows {
    let start = JAN_2024 + rng.below(120 * 24 * 60) as i64 * MINUTE;
    (0..n as i64)
        .map(|i| {
            let v = 100 + rng.below(1_000_000) as i64;
            (start + i * step * MINUTE, row(key, v))
        })
        .collect()
}

fn as_cols(rows: &Rows, ncols: usize) -> Vec<Vec<i64>> {
    let mut cols = vec![Vec::new(); ncols];
    for (ts, r) in rows {
        cols[0].push(*ts);
        for (c, v) in r.iter().enumerate() {
            cols[c + 1].push(*v);
        }
    }
    cols
}

fn ncols(key: &SeriesKey) -> usize {
    key.kind().ncols()
}

/// Every version the model holds reads exactly its rows. After a crash (`crashed`) a
/// version written since the last clean stop may be gone (410), never wrong; it then
/// leaves the model. The current version always reads.
fn check_versions(store: &Store, versions: &mut Versions, crashed: bool, step: usize) {
    for (key, held) in versions.iter_mut() {
        let current = store.get(key).unwrap().version();
        let mut forgotten = Vec::new();
        for (v, rows) in held.iter() {
            match store.series_version(key, Pick::Version(*v)) {
                Ok(Some(view)) => assert_eq!(
                    series_cols(&view),
                    as_cols(rows, ncols(key)),
                    "step {step}: series {key} at version {v}"
                ),
                Err(StorageError::Gone(_)) if crashed && *v != current => forgotten.push(*v),
                other => panic!("step {step}: series {key} version {v}: {other:?}"),
            }
        }
        for v in forgotten {
            held.remove(&v);
        }
        let listed: Vec<u64> = store
            .versions_of(key)
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(
            listed,
            held.keys().copied().collect::<Vec<_>>(),
            "step {step}: the versions listed of {key}"
        );
        let now = store
            .series_version(key, Pick::Commit(fastk::storage::now_ms()))
            .unwrap()
            .unwrap();
        assert_eq!(
            now.version(),
            current,
            "step {step}: as_of_commit now is current"
        );
    }
}

/// Notes the current version of every series and its rows.
fn note_versions(store: &Store, model: &Model, versions: &mut Versions) {
    for (key, rows) in model {
        let v = store.get(key).unwrap().version();
        versions
            .entry(key.clone())
            .or_default()
            .entry(v)
            .or_insert_with(|| rows.clone());
    }
}

fn check(store: &Store, model: &Model, snaps: &BTreeMap<String, Model>, step: usize) {
    for (key, rows) in model {
        let s = store.get(key).unwrap();
        assert_eq!(
            series_cols(&s),
            as_cols(rows, ncols(key)),
            "step {step}: series {key} now"
        );
    }
    let names: Vec<String> = store.snapshots().iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names,
        snaps.keys().cloned().collect::<Vec<_>>(),
        "step {step}: the snapshots"
    );
    for (name, held) in snaps {
        for (key, rows) in held {
            let view = store.series_at(name, key).unwrap();
            assert_eq!(
                series_cols(&view),
                as_cols(rows, ncols(key)),
                "step {step}: series {key} in snapshot {name}"
            );
        }
    }
}

fn run(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut store = Some(Store::open(root, opts()).unwrap());
    register(store.as_ref().unwrap());
    let keys = keys();
    let mut model: Model = keys.iter().map(|k| (k.clone(), Rows::new())).collect();
    let mut snaps: BTreeMap<String, Model> = BTreeMap::new();
    let mut versions = Versions::new();
    note_versions(store.as_ref().unwrap(), &model, &mut versions);
    let mut rng = Rng(seed);
    let mut made = 0;
    for step in 0..steps {
        let mut crashed = false;
        let st = store.as_ref().unwrap();
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let series: Arc<Series> = st.get(&key).unwrap();
        match rng.below(16) {
            // A small write through the log, or a large one written directly; either
            // may replace rows (the random start lands on written minutes).
            0..=3 => {
                let n = 1 + rng.below(30);
                let r = rows(&mut rng, &key, n, 1);
                st.write(&series, batch(&r), None).unwrap();
                model.get_mut(&key).unwrap().extend(r);
            }
            4 | 5 => {
                let (n, step) = (100 + rng.below(3000), 1 + rng.below(3) as i64);
                let r = rows(&mut rng, &key, n, step);
                st.write(&series, batch(&r), None).unwrap();
                model.get_mut(&key).unwrap().extend(r);
            }
            // One write to both scalar series: in a snapshot whole or not at all.
            6 => {
                let mut entries = Vec::new();
                for k in &keys[1..] {
                    let n = 1 + rng.below(10);
                    let r = rows(&mut rng, k, n, 1);
                    entries.push((st.get(k).unwrap(), batch(&r)));
                    model.get_mut(k).unwrap().extend(r);
                }
                st.write_many(entries).unwrap();
            }
            7 => {
                let lo = JAN_2024 + rng.below(120 * 24 * 60) as i64 * MINUTE;
                let hi = lo + rng.below(20 * 24 * 60) as i64 * MINUTE;
                series
                    .delete_range(TsRange::new(Some(lo), Some(hi)), None)
                    .unwrap();
                model
                    .get_mut(&key)
                    .unwrap()
                    .retain(|ts, _| *ts < lo || *ts > hi);
            }
            // What the retention pass does: whole months before a boundary go.
            8 => {
                let boundary =
                    [JAN_2024, 1_706_745_600_000, 1_709_251_200_000][rng.below(3) as usize];
                series
                    .delete_range(TsRange::new(None, Some(boundary - 1)), None)
                    .unwrap();
                model.get_mut(&key).unwrap().retain(|ts, _| *ts >= boundary);
            }
            9 => {
                series.compact().unwrap();
            }
            10 => {
                let now = fastk::storage::now_ms();
                series.compress_sealed(now).unwrap();
                series.pack_sealed(now).unwrap();
            }
            11 => {
                st.fold_all();
            }
            12 | 13 => {
                made += 1;
                let name = format!("s{made}");
                let chosen: Vec<SeriesKey> =
                    keys.iter().filter(|_| rng.below(3) > 0).cloned().collect();
                let every = chosen.is_empty();
                let snap = st
                    .create_snapshot(&name, (!every).then_some(&chosen[..]), "")
                    .unwrap();
                let held: Model = model
                    .iter()
                    .filter(|(k, _)| every || chosen.contains(k))
                    .map(|(k, r)| (k.clone(), r.clone()))
                    .collect();
                assert_eq!(snap.series.len(), held.len());
                snaps.insert(name, held);
            }
            14 if !snaps.is_empty() => {
                let i = rng.below(snaps.len() as u64) as usize;
                let name = snaps.keys().nth(i).unwrap().clone();
                st.delete_snapshot(&name).unwrap();
                snaps.remove(&name);
            }
            // A clean stop (the log replays at the next open) or a crash.
            _ => {
                let s = store.take().unwrap();
                if rng.below(2) == 0 {
                    s.abandon();
                    crashed = true;
                } else {
                    drop(s);
                }
                store = Some(Store::open(root, opts()).unwrap());
            }
        }
        drop(series);
        check(store.as_ref().unwrap(), &model, &snaps, step);
        note_versions(store.as_ref().unwrap(), &model, &mut versions);
        check_versions(store.as_ref().unwrap(), &mut versions, crashed, step);
    }
    // Every snapshot goes; then no file is left that no series serves.
    let st = store.take().unwrap();
    for name in snaps.keys() {
        st.delete_snapshot(name).unwrap();
    }
    st.fold_all();
    drop(st);
    // Past versions no longer kept: their files go at the next open.
    let unkept = || {
        let mut o = opts();
        o.keep_versions_ms = 0;
        o
    };
    let st = Store::open(root, unkept()).unwrap();
    drop(st);
    let st = Store::open(root, unkept()).unwrap();
    assert_clean(&st);
    assert!(no_snapshot_files(root), "every snapshot file is gone");
}

fn no_snapshot_files(root: &Path) -> bool {
    std::fs::read_dir(root.join("snapshots"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

fn long() -> bool {
    std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1")
}

#[test]
fn snapshots_read_what_the_model_held_through_every_change_and_restart() {
    let (seeds, steps) = if long() { (24, 400) } else { (6, 120) };
    for seed in 0..seeds {
        run(0x9E37_79B9_7F4A_7C15 ^ (seed + 1), steps);
    }
}

#[test]
fn bad_snapshot_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    register(&store);
    let k = keys();
    store.create_snapshot("friday", None, "").unwrap();
    assert!(matches!(
        store.create_snapshot("friday", None, ""),
        Err(StorageError::Conflict(m)) if m.contains("friday")
    ));
    assert!(matches!(
        store.create_snapshot("no/slash", None, ""),
        Err(StorageError::InvalidArgument(_))
    ));
    let unknown = kline_meta("NOPE", "1m").key;
    match store.create_snapshot("x", Some(&[k[0].clone(), unknown]), "") {
        Err(StorageError::NotFound(m)) => assert!(m.contains("NOPE"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        store.snapshot_named("x").is_err(),
        "a refused create makes nothing"
    );
    // A series a snapshot holds cannot be deleted; once the snapshot goes it can.
    match store.delete(&k[0]) {
        Err(StorageError::Conflict(m)) => assert!(m.contains("friday"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.delete_snapshot("nope"),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        store.series_at("nope", &k[0]),
        Err(StorageError::NotFound(m)) if m.contains("nope")
    ));
    // A name off the rule is refused before any lookup, and repeated only in part.
    let long = "x".repeat(10_000);
    for r in [
        store.snapshot_named(&long).map(|_| ()),
        store.delete_snapshot(&long),
        store.series_at(&long, &k[0]).map(|_| ()),
    ] {
        match r {
            Err(StorageError::InvalidArgument(m)) => assert!(m.len() < 300, "{m}"),
            other => panic!("{other:?}"),
        }
    }
    store.delete_snapshot("friday").unwrap();
    store.delete(&k[0]).unwrap();
}

/// A crash while a snapshot's file is being written leaves no snapshot (the temp file
/// goes at the next open); a damaged file is set aside, not served.
#[test]
fn an_interrupted_or_damaged_snapshot_file_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let store = Store::open(root, opts()).unwrap();
        register(&store);
        let key = &keys()[1];
        let s = store.get(key).unwrap();
        store
            .write(&s, batch(&rows(&mut Rng(7), key, 10, 1)), None)
            .unwrap();
        store.create_snapshot("kept", None, "note").unwrap();
        store.create_snapshot("torn", None, "").unwrap();
        store.abandon();
    }
    let snaps = root.join("snapshots");
    // What a crash mid-write leaves: a temp file.
    std::fs::write(snaps.join(".tmp-1-0-half.snap"), b"FASTKSNP\x01").unwrap();
    let torn = snaps.join("torn.snap");
    let mut bytes = std::fs::read(&torn).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&torn, bytes).unwrap();
    let store = Store::open(root, opts()).unwrap();
    let names: Vec<String> = store.snapshots().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(store.snapshot_named("kept").unwrap().note, "note");
    assert!(snaps.join("torn.snap.damaged").exists());
    assert!(!snaps.join(".tmp-1-0-half.snap").exists());
}

/// Snapshots taken while a writer writes both scalar series in one many-series write
/// after another (the same rows to each): every snapshot holds both series at the
/// same write, never one write apart.
#[test]
fn a_snapshot_never_holds_half_of_a_many_series_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts()).unwrap());
    register(&store);
    let pair: Vec<SeriesKey> = keys()[1..].to_vec();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, pair, stop) = (Arc::clone(&store), pair.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows: Rows = (0..3)
                    .map(|j| (JAN_2024 + (i * 3 + j) * MINUTE, vec![i]))
                    .collect();
                let entries = pair
                    .iter()
                    .map(|k| (store.get(k).unwrap(), batch(&rows)))
                    .collect();
                store.write_many(entries).unwrap();
                i += 1;
            }
            i
        })
    };
    let mut taken = 0;
    while taken < 40 {
        let name = format!("t{taken}");
        store.create_snapshot(&name, Some(&pair), "").unwrap();
        let a = series_cols(&store.series_at(&name, &pair[0]).unwrap());
        let b = series_cols(&store.series_at(&name, &pair[1]).unwrap());
        assert_eq!(a, b, "snapshot {name} holds both series at one write");
        taken += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0, "the writer wrote");
}

#[test]
fn a_damaged_versions_file_costs_the_past_versions_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let key = keys()[0].clone();
    let mut rng = Rng(5);
    {
        let st = Store::open(root, opts()).unwrap();
        register(&st);
        let s = st.get(&key).unwrap();
        for _ in 0..2 {
            let r = rows(&mut rng, &key, 5, 1);
            st.write(&s, batch(&r), None).unwrap();
        }
    }
    // A clean stop kept them: version 1 reads after a restart.
    let want = {
        let st = Store::open(root, opts()).unwrap();
        assert!(matches!(
            st.series_version(&key, Pick::Version(1)),
            Ok(Some(_))
        ));
        series_cols(&st.get(&key).unwrap())
    };
    let path = root.join(fastk::storage::versions::VERSIONS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let st = Store::open(root, opts()).unwrap();
    assert!(
        root.join("VERSIONS.damaged").exists(),
        "the damaged file is set aside"
    );
    assert!(
        matches!(
            st.series_version(&key, Pick::Version(1)),
            Err(StorageError::Gone(_))
        ),
        "its past versions are gone"
    );
    assert_eq!(
        series_cols(&st.get(&key).unwrap()),
        want,
        "the rows are intact"
    );
}

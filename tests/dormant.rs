//! Dormant series (`storage::seriesmap`): after an open, a small series the catalog
//! holds whole is not built until asked for; the figures over every series read it
//! without building it; asking builds it once, with its rows, version and commit
//! time; a close with `fold_small_on_close` writes small series' logged rows into the
//! catalog, so the next open replays none of them and leaves them dormant; an idle
//! built series goes back to sleep (`Store::sleep_idle`, `storage.dormant_after_s`)
//! unless something holds it, and comes back the same.

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

/// Sweeps until no more series go to sleep (the fold thread may hold the built list
/// for a moment during one sweep); returns how many slept in all.
fn sweep_until_settled(store: &Store) -> u64 {
    let mut total = 0;
    let mut quiet = 0;
    for _ in 0..50 {
        let n = store.sleep_idle();
        total += n;
        quiet = if n == 0 { quiet + 1 } else { 0 };
        if quiet >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    total
}

#[test]
fn idle_series_go_back_to_sleep_and_come_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(false)).unwrap();
    let metas = fill(&store, 100, 3);
    // Three series registered with no row: they sleep too, with no months.
    let empty: Vec<SeriesMeta> = (500..503).map(meta).collect();
    for m in &empty {
        store.register(m.clone()).unwrap();
    }
    // Logged rows wait in memory: nothing can sleep until the catalog holds them.
    assert_eq!(
        store.sleep_idle(),
        0,
        "first sweep: every slot was just used"
    );
    assert_eq!(
        sweep_until_settled(&store),
        3,
        "only the empty series, with nothing unfolded"
    );
    let r = store.fold_all();
    assert_eq!((r.series, r.failed), (100, 0));
    let before: Vec<_> = metas
        .iter()
        .map(|m| store.versions_of(&m.key).unwrap())
        .collect();
    let stamps: Vec<u64> = metas
        .iter()
        .map(|m| store.get(&m.key).unwrap().born())
        .collect();
    let resident = store.wal_stats();
    assert_eq!(store.dormant_count(), 3);

    // One sweep clears the flags the reads above set, the next finds them idle; a pass
    // over the store in between (a scrape, retention) is not a use.
    assert_eq!(store.sleep_idle(), 0);
    assert_eq!(store.list_built_and(|_| false).len(), 100);
    assert_eq!(sweep_until_settled(&store), 100);
    assert_eq!(store.dormant_count(), 103);
    assert_eq!(store.slept_count(), 103);
    let st = store.wal_stats();
    assert_eq!(st.dormant_series, 103);
    assert_eq!(st.slept_series, 103);
    assert_eq!(
        (st.resident_series, st.resident_bytes),
        (resident.resident_series, resident.resident_bytes),
        "a seed counts the bytes its series' chunks took"
    );
    assert_eq!(store.total_rows(), 300);

    // Asked for again, each comes back with its rows, versions, commit times and
    // registration stamp.
    for (i, m) in metas.iter().enumerate() {
        assert!(store.is_dormant(&m.key));
        assert_eq!(read_values(&store, &m.key), expected(i, 3), "{}", m.key);
        assert_eq!(store.versions_of(&m.key).unwrap(), before[i], "{}", m.key);
        let s = store.get(&m.key).unwrap();
        assert_eq!(s.born(), stamps[i], "{}: the same registration", m.key);
        assert!(!store.is_dormant(&m.key));
    }
    for m in &empty {
        assert_eq!(read_values(&store, &m.key), BTreeMap::new());
    }

    // A write to a series that slept and came back, a sweep, a crash: the log
    // brings the row back on top of the catalog's.
    assert_eq!(store.sleep_idle(), 0);
    assert_eq!(sweep_until_settled(&store), 103);
    let s = store.get(&metas[9].key).unwrap();
    store
        .write(
            &s,
            WriteBatch::from_cols(vec![vec![JAN_2024 + 9 * DAY], vec![-9]]),
            None,
        )
        .unwrap();
    assert_eq!(s.version(), before[9].last().unwrap().version + 1);
    drop(s);
    store.sleep_idle();
    assert_eq!(
        sweep_until_settled(&store),
        0,
        "its row is unfolded: it stays built"
    );
    assert!(!store.is_dormant(&metas[9].key));
    store.abandon();

    let store = Store::open(dir.path(), opts(false)).unwrap();
    let mut want = expected(9, 3);
    want.insert(JAN_2024 + 9 * DAY, -9);
    assert_eq!(read_values(&store, &metas[9].key), want);
    for (i, m) in metas.iter().enumerate().filter(|(i, _)| *i != 9) {
        assert_eq!(read_values(&store, &m.key), expected(i, 3), "{}", m.key);
    }
}

#[test]
fn a_held_written_or_versioned_series_stays_built() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(false)).unwrap();
    let metas = fill(&store, 5, 3);
    // 3: more rows than the catalog takes, so its fold makes it a directory.
    let s3 = store.get(&metas[3].key).unwrap();
    store.write(&s3, rows(3, 40), None).unwrap();
    drop(s3);
    store.fold_all();
    assert!(store.get(&metas[3].key).unwrap().is_materialized());
    // 1: held by a reader across the sweeps; 2: written after the fold.
    let held = store.get(&metas[1].key).unwrap();
    let s2 = store.get(&metas[2].key).unwrap();
    store
        .write(
            &s2,
            WriteBatch::from_cols(vec![vec![JAN_2024 + 7 * DAY], vec![27]]),
            None,
        )
        .unwrap();
    drop(s2);
    store.sleep_idle();
    sweep_until_settled(&store);
    let dormant: Vec<bool> = metas.iter().map(|m| store.is_dormant(&m.key)).collect();
    assert_eq!(
        dormant,
        [true, false, false, false, true],
        "0 and 4 sleep; held, unfolded and materialized stay built"
    );
    assert_eq!(
        series_rows_of(&held),
        expected(1, 3),
        "the holder's series still reads"
    );
    drop(held);
    store.fold_all();
    store.sleep_idle();
    sweep_until_settled(&store);
    let dormant: Vec<bool> = metas.iter().map(|m| store.is_dormant(&m.key)).collect();
    assert_eq!(
        dormant,
        [true, true, true, false, true],
        "let go, and folded: 1 and 2 sleep too"
    );
    let mut want = expected(2, 3);
    want.insert(JAN_2024 + 7 * DAY, 27);
    assert_eq!(read_values(&store, &metas[2].key), want);
    drop(store);

    // With past versions kept, a written series keeps its superseded ones (a dormant
    // series keeps none), so it stays built; one never written has none and sleeps.
    let dir = tempfile::tempdir().unwrap();
    let o = never_folding_opts(|o| {
        o.fold_on_close = false;
        o.resident_rows_max = 16;
        o.keep_versions_ms = 3_600_000;
    });
    let store = Store::open(dir.path(), o).unwrap();
    let written = fill(&store, 1, 3).remove(0);
    let idle = meta(900);
    store.register(idle.clone()).unwrap();
    store.fold_all();
    store.sleep_idle();
    sweep_until_settled(&store);
    assert!(!store.is_dormant(&written.key), "its first version is kept");
    assert!(store.is_dormant(&idle.key));
    assert_eq!(store.versions_of(&written.key).unwrap().len(), 2);
    assert_eq!(read_values(&store, &written.key), expected(0, 3));
}

fn series_rows_of(s: &fastk::storage::Series) -> BTreeMap<i64, i64> {
    common::series_rows(s).into_iter().collect()
}

/// Writers append to their own series, readers check that every acknowledged row is
/// there, a folder settles rows into the catalog and a sweeper puts idle series to
/// sleep as fast as it can: no acknowledged row is ever missing, in memory or after
/// a reopen, and series did sleep along the way.
#[test]
fn writes_and_reads_racing_the_sweeps_lose_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const SERIES: usize = 40;
    const WRITERS: usize = 4;
    let long = std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1");
    let writes_each: usize = if long { 3_000 } else { 250 };
    let dir = tempfile::tempdir().unwrap();
    // Every series stays small enough for the catalog, so each can sleep to the end.
    let o = || {
        never_folding_opts(|o| {
            o.fold_on_close = false;
            o.resident_rows_max = 4_096;
        })
    };
    let store = Store::open(dir.path(), o()).unwrap();
    let metas = fill(&store, SERIES, 1);
    let acked: Vec<AtomicUsize> = (0..SERIES).map(|_| AtomicUsize::new(1)).collect();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (store, metas, acked) = (&store, &metas, &acked);
            writers.push(scope.spawn(move || {
                for k in 0..writes_each {
                    // Writer w owns series w, w + WRITERS, ...: its appends are in order.
                    let i = w + WRITERS * (k % (SERIES / WRITERS));
                    let n = acked[i].load(Ordering::SeqCst);
                    let s = store.get(&metas[i].key).unwrap();
                    let row = WriteBatch::from_cols(vec![
                        vec![JAN_2024 + n as i64 * DAY],
                        vec![i as i64 * 1000 + n as i64],
                    ]);
                    store.write(&s, row, None).unwrap();
                    acked[i].store(n + 1, Ordering::SeqCst);
                }
            }));
        }
        let (store, metas, acked, done) = (&store, &metas, &acked, &done);
        let reader = scope.spawn(move || {
            let mut k = 0usize;
            while !done.load(Ordering::SeqCst) {
                let i = (k * 7) % SERIES;
                k += 1;
                let want = acked[i].load(Ordering::SeqCst);
                let got = read_values(store, &metas[i].key);
                assert!(
                    got.len() >= want,
                    "{}: {} rows read, {want} acknowledged",
                    metas[i].key,
                    got.len()
                );
                assert_eq!(
                    got.into_iter().take(want).collect::<BTreeMap<_, _>>(),
                    expected(i, want as i64),
                    "{}",
                    metas[i].key
                );
            }
        });
        let folder = scope.spawn(move || {
            while !done.load(Ordering::SeqCst) {
                store.fold_all();
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        });
        let sweeper = scope.spawn(move || {
            while !done.load(Ordering::SeqCst) {
                store.sleep_idle();
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        reader.join().unwrap();
        folder.join().unwrap();
        sweeper.join().unwrap();
    });
    assert!(
        store.slept_count() > 0,
        "series slept while the writers wrote"
    );
    for (i, m) in metas.iter().enumerate() {
        let n = acked[i].load(Ordering::SeqCst);
        assert_eq!(
            read_values(&store, &m.key),
            expected(i, n as i64),
            "{}",
            m.key
        );
    }
    let total: usize = acked.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    assert_eq!(total, SERIES + WRITERS * writes_each);
    store.abandon();
    let store = Store::open(dir.path(), o()).unwrap();
    for (i, m) in metas.iter().enumerate() {
        let n = acked[i].load(Ordering::SeqCst);
        assert_eq!(
            read_values(&store, &m.key),
            expected(i, n as i64),
            "{} after a reopen",
            m.key
        );
    }
}

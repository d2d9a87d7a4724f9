//! The write path under injected faults and races, at the library level: every
//! failure branch of a commit and of a registration (through `fsio::failpoints`), a
//! write racing a delete and re-registration, thread-spawn failures, and the storage
//! row limit.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{MINUTE, assert_clean, read_values, scalar_meta, store_opts};
use fastk::error::{Error, ErrorKind};
use fastk::record::{MonthPartition, SeriesMeta, TsRange, ValueType};
use fastk::storage::fsio::failpoints::{self, Op};
use fastk::storage::{Series, StorageError, Store, StoreOptions, WriteBatch};

fn meta() -> SeriesMeta {
    scalar_meta("BTCUSDT", "1m", "feature", "f", ValueType::I64)
}

fn opts() -> StoreOptions {
    store_opts(|o| {
        o.zonemap_block_rows = Some(16);
        // Sidecars however few the rows: their writes are failure points too.
        o.sidecar_min_rows = 0;
        o.write_threads = 2;
        o.sync_threads = 2;
    })
}

/// [`opts`] with packing off: a commit of several months writes a chunk file (and
/// sidecars) per month instead of one pack.
fn opts_files() -> StoreOptions {
    StoreOptions {
        pack_target_bytes: 0,
        ..opts()
    }
}

/// [`opts`] with every chunk and pack file written around the page cache
/// (`O_DIRECT`, where the filesystem takes it).
fn opts_direct() -> StoreOptions {
    StoreOptions {
        direct_write_min_bytes: 1,
        ..opts()
    }
}

/// [`opts`] with every month sealed: a commit that makes a month its one chunk
/// writes it compressed, built before the layout (`series::sealed`).
fn opts_sealed() -> StoreOptions {
    StoreOptions {
        compress_after_ms: Some(0),
        ..opts()
    }
}

fn month_ts(m: i32, minute: i64) -> i64 {
    MonthPartition(648 + m).start_ts() + minute * MINUTE
}

fn batch(rows: &[(i64, i64)]) -> WriteBatch {
    WriteBatch::from_cols(vec![
        rows.iter().map(|r| r.0).collect(),
        rows.iter().map(|r| r.1).collect(),
    ])
}

fn read(store: &Store) -> BTreeMap<i64, i64> {
    read_values(store, &meta().key)
}

/// The base state: two months, then a write touching a new month, appending to one
/// and rewriting another (a replacement), so every kind of file of a commit is made.
fn base_rows() -> Vec<(i64, i64)> {
    (0..40)
        .map(|i| (month_ts(0, i), i))
        .chain((0..40).map(|i| (month_ts(1, i), 100 + i)))
        .collect()
}
fn next_rows() -> Vec<(i64, i64)> {
    vec![
        (month_ts(0, 5), -5),
        (month_ts(1, 50), 150),
        (month_ts(2, 1), 201),
        (month_ts(2, 2), 202),
    ]
}

/// A store over `dir` with the series of [`meta`] holding [`base_rows`].
fn base_store(dir: &std::path::Path, opts: StoreOptions) -> (Store, Arc<Series>) {
    let store = Store::open(dir, opts).unwrap();
    let (s, _) = store.register(meta()).unwrap();
    s.write(batch(&base_rows()), None).unwrap();
    (store, s)
}

/// Rows of a series, by ts.
type Rows = BTreeMap<i64, i64>;

/// One commit with the given points armed (each `(op, nth)`: the nth call of `op`
/// fails). Returns whether a point struck, the write's result, what the store served
/// afterwards (checked equal to what a reopen finds), and the state the result
/// promises (previous on error, previous plus the write on success).
fn commit_with_fault(
    points: &[(Op, u64)],
    opts: fn() -> StoreOptions,
) -> (bool, Result<(), StorageError>, Rows, Rows) {
    let dir = tempfile::tempdir().unwrap();
    let (store, s) = base_store(dir.path(), opts());
    let before = read(&store);
    let version = s.version();
    let armed: Vec<_> = points
        .iter()
        .map(|&(op, n)| failpoints::arm(dir.path(), op, n))
        .collect();
    let r = s.write(batch(&next_rows()), None).map(|_| ());
    let fired = armed.iter().any(|a| a.fired());
    drop(armed);
    let mut after = before.clone();
    after.extend(next_rows());
    if r.is_err() {
        assert!(fired, "a write failed with no fault injected: {r:?}");
    }
    let served = read(&store);
    if served == before {
        assert_eq!(s.version(), version, "a refused write keeps the version");
    } else {
        assert_eq!(s.version(), version + 1);
    }
    drop(s);
    drop(store);
    let reopened = Store::open(dir.path(), opts()).unwrap();
    assert_clean(&reopened);
    let durable = read(&reopened);
    assert_eq!(served, durable, "what was served is what a reopen finds");
    // The store takes the same write afterwards.
    let s = reopened.get(&meta().key).unwrap();
    s.write(batch(&next_rows()), None).unwrap();
    assert_eq!(read(&reopened), after);
    let want = if r.is_ok() { after } else { before };
    (fired, r, served, want)
}

/// Every fsync, rename, directory fsync and file write of a commit (chunk, sidecars,
/// manifest temp file, manifest rename, both directory fsyncs) fails in turn: the
/// write is refused, the store serves exactly the previous state, a reopen finds the
/// same, and the directory is clean. A thread that cannot be spawned costs only
/// parallelism: the write succeeds. The directory fsync after the manifest rename
/// is the branch that puts the previous manifest back. Run with packing off (a file
/// per month and sidecar) and on (the three months in one pack), and with the pack
/// written around the page cache.
#[test]
fn every_failure_point_of_a_commit_leaves_the_previous_state() {
    let struck = failure_points_of_a_commit(opts_files);
    // Three months of scalar files (chunk, zone map, value index) plus the manifest.
    assert_eq!(struck["Write"], 10, "{struck:?}");
    assert_eq!(struck["Fsync"], 10, "{struck:?}");
    assert_eq!(struck["DirFsync"], 2, "{struck:?}");
    let struck = failure_points_of_a_commit(opts);
    // One pack holding the three months and their sidecars, plus the manifest.
    assert_eq!(struck["Write"], 2, "{struck:?}");
    assert_eq!(struck["Fsync"], 2, "{struck:?}");
    assert_eq!(struck["DirFsync"], 2, "{struck:?}");
    // The same with the pack written through O_DIRECT, whose commit has one thread
    // more (its writes wait on the device while the others build): one more spawn.
    let mut direct = failure_points_of_a_commit(opts_direct);
    let mut buffered = struck.clone();
    assert_eq!(
        direct.remove("Spawn"),
        buffered.remove("Spawn").map(|n| n + 1),
        "{struck:?}"
    );
    assert_eq!(direct, buffered);
    // Sealed months: the rewritten month 0 and the new month 2 are written
    // compressed, the append to month 1 raw; kinds alternate, so each is a file.
    let struck = failure_points_of_a_commit(opts_sealed);
    assert_eq!(struck["Write"], 10, "{struck:?}");
    assert_eq!(struck["Fsync"], 10, "{struck:?}");
    assert_eq!(struck["DirFsync"], 2, "{struck:?}");
    let dir = tempfile::tempdir().unwrap();
    let (_store, s) = base_store(dir.path(), opts_sealed());
    s.write(batch(&next_rows()), None).unwrap();
    let compressed: Vec<(i32, bool)> = s
        .snapshot()
        .chunks()
        .map(|c| {
            let z = c.entry.flags & fastk::storage::format::FLAG_COMPRESSED != 0;
            (c.entry.month - 648, z)
        })
        .collect();
    assert_eq!(compressed, [(0, true), (1, true), (1, false), (2, true)]);
}

/// Twelve sealed months in one write, cut into several packs: the commit's pipeline
/// builds months on some threads while it writes closed packs on another
/// (`series::pipeline`). Every file write and fsync of it fails in turn, some while
/// packs before it are written and months after it still build: the write is
/// refused, the previous rows are served and found on reopen, the directory is clean
/// (no pack of the refused write left), and the same write then succeeds.
#[test]
fn a_failure_inside_a_pipelined_write_of_many_packs_leaves_the_previous_state() {
    let opts = || StoreOptions {
        pack_target_bytes: 48 << 10,
        ..opts_sealed()
    };
    let rows: Vec<(i64, i64)> = (0..12)
        .flat_map(|m| (0..2_000).map(move |i| (month_ts(m, i), (i * 7919 + i64::from(m)) % 1_000)))
        .collect();
    let mut struck = BTreeMap::new();
    for op in [Op::Write, Op::Fsync] {
        for nth in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let (store, s) = base_store(dir.path(), opts());
            let before = read(&store);
            let armed = failpoints::arm(dir.path(), op, nth);
            let r = s.write(batch(&rows), None);
            let fired = armed.fired();
            drop(armed);
            let mut after = before.clone();
            after.extend(rows.iter().copied());
            let want = if r.is_ok() { &after } else { &before };
            assert_eq!(&read(&store), want, "{op:?} #{nth}");
            if r.is_ok() {
                let packs: std::collections::BTreeSet<u64> = s
                    .snapshot()
                    .chunks()
                    .filter(|c| c.is_packed())
                    .map(|c| c.entry.pack.generation)
                    .collect();
                assert!(packs.len() >= 3, "the write makes several packs: {packs:?}");
            } else {
                assert!(fired, "a write failed with no fault injected: {r:?}");
            }
            drop(s);
            drop(store);
            let reopened = Store::open(dir.path(), opts()).unwrap();
            assert_clean(&reopened);
            assert_eq!(&read(&reopened), want, "{op:?} #{nth}: after a reopen");
            let s = reopened.get(&meta().key).unwrap();
            s.write(batch(&rows), None).unwrap();
            assert_eq!(read(&reopened), after);
            if !fired {
                break;
            }
            *struck.entry(format!("{op:?}")).or_insert(0) += 1;
        }
    }
    // Every pack's write and fsync, and the manifest's, struck once each.
    assert!(struck["Write"] >= 4 && struck["Fsync"] >= 4, "{struck:?}");
}

/// Every failure point of the commit of `next_rows` over `base_rows`, each checked;
/// how many times each kind of operation struck.
fn failure_points_of_a_commit(opts: fn() -> StoreOptions) -> BTreeMap<String, usize> {
    let mut struck = BTreeMap::new();
    for op in Op::FAILABLE {
        for nth in 1.. {
            let (fired, r, served, want) = commit_with_fault(&[(op, nth)], opts);
            if !fired {
                assert!(r.is_ok());
                break;
            }
            *struck.entry(format!("{op:?}")).or_insert(0) += 1;
            if op == Op::Spawn {
                assert!(r.is_ok(), "a spawn failure must not fail the write: {r:?}");
            } else {
                assert!(r.is_err(), "{op:?} #{nth} struck but the write succeeded");
            }
            assert_eq!(served, want, "{op:?} #{nth}");
        }
    }
    // The loop reached every kind of operation a commit makes.
    for op in ["Write", "Fsync", "Rename", "DirFsync", "Spawn"] {
        assert!(
            struck.get(op).is_some_and(|&n| n > 0),
            "{op} never struck: {struck:?}"
        );
    }
    struck
}

/// A range delete under every failure point of its commit: month 0 is cut (a
/// rewrite), month 1 dropped whole. Refused: the store serves exactly the previous
/// rows, and a reopen finds the same and a clean directory; then the same delete
/// succeeds and removes exactly the range.
#[test]
fn every_failure_point_of_a_range_delete_leaves_the_previous_state() {
    let range = TsRange::new(Some(month_ts(0, 30)), Some(month_ts(1, 59)));
    let mut struck = 0;
    for op in Op::FAILABLE {
        for nth in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let (store, s) = base_store(dir.path(), opts());
            let before = read(&store);
            let version = s.version();
            let armed = failpoints::arm(dir.path(), op, nth);
            let r = s.delete_range(range, Some(version));
            let fired = armed.fired();
            drop(armed);
            let mut after = before.clone();
            after.retain(|t, _| !range.contains(*t));
            let served = read(&store);
            match &r {
                Ok(rep) => {
                    assert_eq!(rep.deleted, 50, "10 rows of month 0, 40 of month 1");
                    assert_eq!(rep.months, ["2024-01", "2024-02"]);
                    assert_eq!(served, after);
                    assert_eq!(s.version(), version + 1);
                }
                Err(_) => {
                    assert!(fired, "a delete failed with no fault: {r:?}");
                    assert_eq!(served, before, "{op:?} #{nth}");
                    assert_eq!(s.version(), version);
                }
            }
            drop(s);
            drop(store);
            let reopened = Store::open(dir.path(), opts()).unwrap();
            assert_clean(&reopened);
            assert_eq!(read(&reopened), served, "served is durable ({op:?} #{nth})");
            let s = reopened.get(&meta().key).unwrap();
            s.delete_range(range, None).unwrap();
            assert_eq!(read(&reopened), after);
            if !fired {
                break;
            }
            struck += 1;
        }
    }
    assert!(
        struck >= 6,
        "the faults reached the delete's commit: {struck}"
    );
}

/// The rollback after a failed post-rename directory fsync can fail too. If the old
/// manifest was renamed back but its directory fsync failed, the old state is served
/// (and found again on reopen); if it could not be renamed back, the new state is
/// served, and a reopen finds the same: what is served always matches `MANIFEST`.
#[test]
fn a_failed_rollback_serves_exactly_what_the_manifest_says() {
    // The commit's 2nd directory fsync fails, then the rollback's (the 3rd).
    let (_, r, served, _) = commit_with_fault(&[(Op::DirFsync, 2), (Op::DirFsync, 3)], opts);
    assert!(r.is_err());
    let mut before: BTreeMap<i64, i64> = base_rows().into_iter().collect();
    assert_eq!(served, before);
    // The commit's directory fsync fails, then the rollback's rename (the 2nd).
    let (_, r, served, _) = commit_with_fault(&[(Op::DirFsync, 2), (Op::Rename, 2)], opts);
    assert!(r.is_err());
    before.extend(next_rows());
    assert_eq!(served, before);
}

/// A one-month write does its work on the caller's thread: it spawns nothing.
#[test]
fn a_one_month_write_spawns_no_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (s, _) = store.register(meta()).unwrap();
    let spawn = failpoints::arm(dir.path(), Op::Spawn, 1);
    s.write(batch(&[(month_ts(0, 1), 1), (month_ts(0, 2), 2)]), None)
        .unwrap();
    assert!(!spawn.fired(), "a one-month write spawned a thread");
    s.write(batch(&next_rows()), None).unwrap();
    assert!(spawn.fired(), "a many-month write uses helper threads");
}

/// Defect 6: a registration that failed on a full disk left an empty series
/// directory, which made /health degraded (an unopenable series) after a restart.
/// Now every failure point of a registration leaves no directory, the reopened store
/// is clean, and the same registration succeeds afterwards.
#[test]
fn a_failed_registration_leaves_nothing_behind() {
    let mut cases = 0;
    for op in [
        Op::CreateDir,
        Op::Write,
        Op::Fsync,
        Op::Rename,
        Op::DirFsync,
    ] {
        for nth in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), opts()).unwrap();
            let armed = failpoints::arm(dir.path(), op, nth);
            let r = store.register(meta());
            let fired = armed.fired();
            drop(armed);
            if !fired {
                assert!(r.is_ok());
                break;
            }
            cases += 1;
            assert!(r.is_err(), "{op:?} #{nth}");
            assert!(store.list().is_empty());
            assert!(
                !dir.path()
                    .join("series/scalar/BTCUSDT/1m/feature/f")
                    .exists(),
                "{op:?} #{nth} left the series directory"
            );
            drop(store);
            let store = Store::open(dir.path(), opts()).unwrap();
            assert!(
                store.unopenable().is_empty(),
                "{op:?} #{nth}: {:?}",
                store.unopenable()
            );
            assert!(store.list().is_empty());
            let (s, created) = store.register(meta()).unwrap();
            assert!(created);
            s.write(batch(&[(month_ts(0, 1), 1)]), None).unwrap();
            assert_clean(&store);
        }
    }
    assert!(cases >= 5, "only {cases} failure points reached");
}

/// Defect 2: a write that held the series handle while the series was deleted,
/// re-registered and written to went on into the directory that by then belonged to
/// the new series: its DoPut was acknowledged but invisible, and after a restart the
/// deleted data was back, the new series' acknowledged row gone, and reads of a
/// month failed as corrupted. (A looser race got Internal "file not found".) Now the
/// writer, parked just before the writer lock, fails NotFound and writes nothing.
#[test]
fn a_write_in_flight_across_delete_and_reregister_fails_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (old, _) = store.register(meta()).unwrap();
    old.write(batch(&base_rows()), None).unwrap();
    let sdir = old.dir().to_path_buf();
    let (armed, gate) = failpoints::pause(&sdir, Op::Lock);
    let stale = Arc::clone(&old);
    let big: Vec<(i64, i64)> = (0..20_000)
        .map(|i| (month_ts(0, 0) + i * MINUTE, i))
        .collect();
    let writer = std::thread::spawn(move || stale.write(batch(&big), None));
    gate.wait_reached();
    store.delete(&meta().key).unwrap();
    let (new, created) = store.register(meta()).unwrap();
    assert!(created && !Arc::ptr_eq(&new, &old));
    let one = [(month_ts(3, 7), 77)];
    assert_eq!(new.write(batch(&one), None).unwrap().version, 1);
    gate.release();
    let r = writer.join().unwrap();
    drop(armed);
    match r {
        Err(StorageError::NotFound(m)) => assert!(m.contains("deleted"), "{m}"),
        other => panic!("the stale write must fail NotFound, got {other:?}"),
    }
    assert_eq!(
        Error::from(old.compact().unwrap_err()).kind,
        ErrorKind::NotFound
    );
    assert!(
        old.with_write_lock(|| Ok(())).is_err(),
        "admin commits refuse too"
    );
    let want: BTreeMap<i64, i64> = one.into_iter().collect();
    assert_eq!(read(&store), want);
    drop((old, new));
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_clean(&store);
    assert_eq!(
        read(&store),
        want,
        "after a restart: exactly the acknowledged row"
    );
    assert_eq!(store.get(&meta().key).unwrap().version(), 1);
    assert!(sdir.is_dir());
}

/// The looser race: the handle outlives a delete with no re-registration. The
/// write got Internal (file not found); now NotFound, and nothing is created.
#[test]
fn a_write_through_a_deleted_handle_is_not_found_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (s, _) = store.register(meta()).unwrap();
    store.delete(&meta().key).unwrap();
    let e = s.write(batch(&base_rows()), None).unwrap_err();
    assert_eq!(Error::from(e).kind, ErrorKind::NotFound);
    assert!(!s.dir().exists());
    assert!(store.delete(&meta().key).is_err());
}

/// "Storage writes get a row limit of their own, whatever the front end": a local
/// `fastk import` had none. Over the limit is PayloadTooLarge (413) and changes
/// nothing; at the limit it is written.
#[test]
fn storage_refuses_a_write_over_max_write_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            max_write_rows: 10,
            ..opts()
        },
    )
    .unwrap();
    let (s, _) = store.register(meta()).unwrap();
    let rows: Vec<(i64, i64)> = (0..11).map(|i| (month_ts(0, i), i)).collect();
    let e = s.write(batch(&rows), None).unwrap_err();
    assert!(matches!(e, StorageError::PayloadTooLarge(_)), "{e:?}");
    assert!(e.to_string().contains("storage.max_write_rows"));
    assert_eq!(Error::from(e).kind, ErrorKind::PayloadTooLarge);
    assert_eq!(s.version(), 0);
    assert_eq!(s.write(batch(&rows[..10]), None).unwrap().written, 10);
}

/// Failpoints are scoped to a directory: one armed under another root never strikes.
#[test]
fn failpoints_strike_only_under_their_scope() {
    let other = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let armed = failpoints::arm(other.path(), Op::Fsync, 1);
    let store = Store::open(dir.path(), opts()).unwrap();
    let (s, _) = store.register(meta()).unwrap();
    s.write(batch(&base_rows()), None).unwrap();
    assert!(!armed.fired());
}

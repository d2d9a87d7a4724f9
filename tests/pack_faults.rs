//! The pack pass under injected faults (`fsio::failpoints`) and after crash-like
//! leftovers: every failing step of a pack commit leaves the previous state served and
//! found again on reopen, with a clean directory; a pack written whole or in part
//! whose manifest never committed is removed on open and nothing is lost.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::{HOUR, assert_clean, read_values, scalar_meta, store_opts};
use fastk::record::{MonthPartition, SeriesMeta, ValueType};
use fastk::storage::fsio::failpoints::{self, Op};
use fastk::storage::pack::parse_pack_file_name;
use fastk::storage::{Store, StoreOptions, WriteBatch};

const NOW: i64 = i64::MAX / 2;

fn meta() -> SeriesMeta {
    scalar_meta("BTCUSDT", "1h", "feature", "f", ValueType::I64)
}

fn opts() -> StoreOptions {
    store_opts(|o| {
        o.zonemap_block_rows = Some(16);
        o.compress_after_ms = Some(0);
    })
}

/// Four months of hourly rows, compressed: ready to pack. Each month is a write of
/// its own, written compressed (a write of several sealed months packs them itself).
fn setup(root: &Path) -> Store {
    let store = Store::open(root, opts()).unwrap();
    let (s, _) = store.register(meta()).unwrap();
    for m in 0..4 {
        let mut b = WriteBatch::with_capacity(2, 0);
        for h in 0..200 {
            b.cols[0].push(MonthPartition(648 + m).start_ts() + h * HOUR);
            b.cols[1].push(m as i64 * 1000 + h % 37);
        }
        s.write(b, None).unwrap();
    }
    assert!(s.compress_sealed(NOW).unwrap().is_empty());
    assert!(s.snapshot().chunks().all(|c| !c.is_packed()));
    store
}

fn read(store: &Store) -> BTreeMap<i64, i64> {
    read_values(store, &meta().key)
}

/// Every write, fsync, rename and directory fsync of a pack commit fails in turn:
/// refused, the previous rows served and found on reopen, the directory clean, and the
/// same pass succeeds afterwards.
#[test]
fn every_failure_point_of_a_pack_commit_leaves_the_previous_state() {
    let mut struck = BTreeMap::new();
    for op in [Op::Write, Op::Fsync, Op::Rename, Op::DirFsync] {
        for nth in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let store = setup(dir.path());
            let s = store.get(&meta().key).unwrap();
            let before = read(&store);
            let version = s.version();
            let armed = failpoints::arm(dir.path(), op, nth);
            let r = s.pack_sealed(NOW);
            let fired = armed.fired();
            drop(armed);
            let served = read(&store);
            assert_eq!(served, before, "{op:?} #{nth}: the rows never change");
            assert_eq!(s.version(), version);
            let packed = s.snapshot().chunks().all(|c| c.is_packed());
            match &r {
                Ok(months) => assert_eq!(months.len(), 4, "{op:?} #{nth}"),
                Err(_) => assert!(fired, "a pack pass failed with no fault: {r:?}"),
            }
            drop(s);
            drop(store);
            let reopened = Store::open(dir.path(), opts()).unwrap();
            assert_clean(&reopened);
            assert_eq!(read(&reopened), before, "{op:?} #{nth}");
            let s = reopened.get(&meta().key).unwrap();
            let again = s.snapshot().chunks().all(|c| c.is_packed());
            if r.is_ok() {
                assert!(packed && again, "a committed pack survives the reopen");
            }
            s.pack_sealed(NOW).unwrap();
            assert!(s.snapshot().chunks().all(|c| c.is_packed()));
            assert_eq!(read(&reopened), before);
            drop(s);
            if !fired {
                break;
            }
            *struck.entry(format!("{op:?}")).or_insert(0) += 1;
        }
    }
    // The pack itself (write, fsync), the manifest's temp file (write, fsync, rename)
    // and both directory fsyncs were reached.
    assert!(struck["Write"] >= 2 && struck["Fsync"] >= 2, "{struck:?}");
    assert!(
        struck["Rename"] >= 1 && struck["DirFsync"] >= 2,
        "{struck:?}"
    );
}

/// A crash after the pack was written (whole, or cut short) but before its manifest
/// was published: on open the pack is past `next_generation` and removed, the months
/// are served from their chunk files, and a later pass packs them.
#[test]
fn a_pack_left_by_a_crash_before_its_commit_is_removed_on_open() {
    for cut in [None, Some(100usize), Some(7)] {
        let dir = tempfile::tempdir().unwrap();
        let store = setup(dir.path());
        let s = store.get(&meta().key).unwrap();
        let series_dir = s.dir().to_path_buf();
        let before = read(&store);
        // The directory before the pass, kept aside.
        let saved = tempfile::tempdir().unwrap();
        for e in fs::read_dir(&series_dir).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), saved.path().join(e.file_name())).unwrap();
        }
        s.pack_sealed(NOW).unwrap();
        let pack = fs::read_dir(&series_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .find(|n| parse_pack_file_name(n).is_some())
            .expect("a pack");
        let mut bytes = fs::read(series_dir.join(&pack)).unwrap();
        drop(s);
        store.abandon();
        // The crash: the old directory, plus the new pack (or its first bytes).
        fs::remove_dir_all(&series_dir).unwrap();
        fs::create_dir(&series_dir).unwrap();
        for e in fs::read_dir(saved.path()).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), series_dir.join(e.file_name())).unwrap();
        }
        if let Some(n) = cut {
            bytes.truncate(n);
        }
        fs::write(series_dir.join(&pack), &bytes).unwrap();

        let store = Store::open(dir.path(), opts()).unwrap();
        let notes = &store.recovery()[0];
        assert_eq!(notes.uncommitted_removed, 1, "{notes:?}");
        assert!(!series_dir.join(&pack).exists());
        assert_clean(&store);
        assert_eq!(read(&store), before);
        let s = store.get(&meta().key).unwrap();
        assert_eq!(s.pack_sealed(NOW).unwrap().len(), 4);
        assert_eq!(read(&store), before);
    }
}

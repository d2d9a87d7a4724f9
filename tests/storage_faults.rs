//! Corruption, bad input, zero copy, locking and admin repair, at the library level.

mod common;

use common::{JAN_2024, MINUTE, kline_registration, scalar_registration};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use fastk::admin::AdminAction;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::types::{AdminRequest, Predicate, QueryRequest, RegisterKline, Strategy};
use fastk::record::{KlineRecord, SeriesKey, TsRange, ValueType};
use fastk::storage::batch::Projection;
use fastk::storage::{StorageError, Store, StoreOptions, WriteBatch};

fn engine(root: &Path) -> Arc<Engine> {
    common::engine_with(root, |c| {
        c.storage.zonemap_block_rows = 256;
        // A file per month and sidecar (no packed writes): the tests damage them one
        // by one (a damaged pack: tests/packs.rs).
        c.storage.pack_target_bytes = 0;
        // Raw mapped files: sealed months would be written compressed.
        c.storage.compress_on_write = false;
        // The tests damage the files an engine's close folds the logged rows into
        // (files of each series, not the catalog's records).
        c.storage.fold_on_stop = true;
        c.storage.resident_rows_max = 0;
    })
}

fn bars(start: i64, n: i64) -> Vec<KlineRecord> {
    (0..n)
        .map(|i| {
            let p = 10_000 + (i * 7919) % 500;
            KlineRecord {
                ts: start + i * MINUTE,
                open: p,
                high: p + 5,
                low: p - 5,
                close: p + 1,
                volume: i,
            }
        })
        .collect()
}

fn kline(e: &Engine) -> SeriesKey {
    common::register_kline(e, "BTCUSDT")
}

fn scalar(e: &Engine, vt: ValueType) -> SeriesKey {
    let r = scalar_registration("BTCUSDT", "1m", "indicator", "rsi", Some(vt));
    e.register_scalar(&r).unwrap();
    SeriesKey::scalar("BTCUSDT", "1m", "indicator", "rsi").unwrap()
}

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x10;
    fs::write(path, b).unwrap();
}

fn read_ts(e: &Engine, key: &SeriesKey) -> Result<Vec<i64>, ErrorKind> {
    let page = e.read(key, TsRange::all(), 1_000_000).map_err(|e| e.kind)?;
    Ok(page.slices.iter().flat_map(|s| s.ts().to_vec()).collect())
}

#[test]
fn flipped_chunk_byte_reads_as_corrupted_never_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let dir_series;
    {
        let e = engine(dir.path());
        let key = kline(&e);
        e.write_kline(&key, &bars(JAN_2024, 5000), None).unwrap();
        dir_series = e.series(&key).unwrap().dir().to_path_buf();
    }
    let chunk = &common::files_with(&dir_series, "chunk")[0];
    flip(chunk, 512 + 8 * 1234 + 3);
    let e = engine(dir.path());
    let key = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    assert_eq!(read_ts(&e, &key), Err(ErrorKind::Corrupted));
    let latest = e
        .latest(&key, TsRange::all(), 10)
        .map(|_| ())
        .map_err(|e| e.kind);
    assert_eq!(latest, Err(ErrorKind::Corrupted));
    let report = common::validate_deep(&e);
    assert!(
        report.findings.iter().any(|f| f.kind == "chunk_corrupt"
            && f.file.as_deref().is_some_and(|p| p.ends_with(".chunk")))
    );
    let repaired = e
        .admin(AdminAction::Repair, &AdminRequest::default())
        .unwrap();
    assert!(
        repaired
            .actions
            .iter()
            .any(|a| a.action == "quarantine_chunk")
    );
    assert!(repaired.clean, "{:#?}", repaired.findings);
    assert_eq!(
        read_ts(&e, &key),
        Ok(vec![]),
        "the corrupt month is no longer served"
    );
    assert!(dir.path().join("quarantine").is_dir());
}

#[test]
fn flipped_chunk_header_is_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 100), None).unwrap();
    let sdir = e.series(&key).unwrap().dir().to_path_buf();
    drop(e);
    flip(&common::files_with(&sdir, "chunk")[0], 20);
    let e = engine(dir.path());
    assert_eq!(read_ts(&e, &key), Err(ErrorKind::Corrupted));
}

#[test]
fn flipped_manifest_is_rebuilt_from_chunk_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (key, want, sdir) = {
        let e = engine(dir.path());
        let key = kline(&e);
        // Three months, a delta chunk, and a replacement that rewrites January.
        e.write_kline(&key, &bars(JAN_2024, 80_000), None).unwrap();
        e.write_kline(&key, &bars(JAN_2024 + 80_000 * MINUTE, 100), None)
            .unwrap();
        e.write_kline(&key, &bars(JAN_2024 + 10 * MINUTE, 5), None)
            .unwrap();
        (
            key.clone(),
            read_ts(&e, &key).unwrap(),
            e.series(&key).unwrap().dir().to_path_buf(),
        )
    };
    flip(&sdir.join("MANIFEST"), 300);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(
        store
            .recovery()
            .iter()
            .any(|n| n.manifest_rebuilt.is_some()),
        "{:?}",
        store.recovery()
    );
    drop(store);
    let e = engine(dir.path());
    assert_eq!(read_ts(&e, &key).unwrap(), want);
    assert_eq!(e.series(&key).unwrap().version(), 3);
    assert!(common::validate_deep(&e).clean);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 10), None).unwrap();
    let before = (
        e.series(&key).unwrap().version(),
        read_ts(&e, &key).unwrap(),
    );
    for bad in ["..", ".", "a/b", "", &"x".repeat(65)] {
        let r = RegisterKline {
            price_scale: 1,
            ..kline_registration(bad, "1m")
        };
        assert_eq!(
            e.register_kline(&r).unwrap_err().kind,
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    let mut dup = bars(JAN_2024 + 100 * MINUTE, 5);
    dup[3].ts = dup[1].ts;
    let err = e.write_kline(&key, &dup, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unprocessable);
    assert!(err.message.contains("record 3"), "{}", err.message);
    let mut ohlc = bars(JAN_2024 + 200 * MINUTE, 5);
    ohlc[2].high = ohlc[2].low - 1;
    let err = e.write_kline(&key, &ohlc, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unprocessable);
    assert!(err.message.contains("record 2"), "{}", err.message);
    let out_of_range = vec![KlineRecord {
        ts: i64::MAX,
        ..bars(0, 1)[0]
    }];
    assert_eq!(
        e.write_kline(&key, &out_of_range, None).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    let err = e
        .write_kline(&key, &bars(JAN_2024, 1), Some(99))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PreconditionFailed);
    let missing = SeriesKey::kline("NOPE", "1m").unwrap();
    assert_eq!(
        e.write_kline(&missing, &bars(JAN_2024, 1), None)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    let r = RegisterKline {
        price_scale: 1000,
        ..kline_registration("BTCUSDT", "1m")
    };
    assert_eq!(e.register_kline(&r).unwrap_err().kind, ErrorKind::Conflict);
    let r = RegisterKline {
        price_scale: 1,
        ..kline_registration("X", "7m")
    };
    assert_eq!(
        e.register_kline(&r).unwrap_err().kind,
        ErrorKind::InvalidArgument,
        "non-standard timeframe needs timeframe_ms"
    );
    assert_eq!(
        (
            e.series(&key).unwrap().version(),
            read_ts(&e, &key).unwrap()
        ),
        before
    );
}

#[test]
fn raw_batches_are_zero_copy_slices_of_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 100_000), None).unwrap();
    let (meta, stream) = e
        .stream(&key, TsRange::new(Some(JAN_2024 + 7 * MINUTE), None), None)
        .unwrap();
    let proj = Projection::all(&meta);
    let mut rows = 0;
    for s in stream {
        let s = s.unwrap();
        let mapping = s.chunk.file.address_range();
        for batch in proj.batches(&s, 65_536) {
            assert!(batch.num_rows() <= 65_536);
            rows += batch.num_rows();
            for col in batch.columns() {
                let data = col.to_data();
                let buf = &data.buffers()[0];
                let (p, len) = (buf.as_ptr() as usize, buf.len());
                assert!(
                    mapping.contains(&p) && p + len <= mapping.end,
                    "column buffer is not inside the mapping"
                );
                assert_eq!(buf.capacity(), len, "the buffer owns exactly its range");
            }
        }
    }
    assert_eq!(rows, 100_000 - 7);
}

#[test]
fn second_open_of_a_locked_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let asked = std::time::Instant::now();
    assert!(matches!(
        Store::open(dir.path(), StoreOptions::default()),
        Err(StorageError::Locked)
    ));
    // Refused only once the lock stayed held for the whole wait (a bound, not a speed).
    assert!(asked.elapsed() >= fastk::storage::LOCK_WAIT);
}

/// A store dropped and opened again at once, while another thread spawns processes:
/// each child holds a copy of the LOCK descriptor between its fork and its exec, so the
/// lock outlives the drop by that window. The open waits it out instead of answering
/// "locked" (this failed CI once, in `tests/transfer.rs`).
#[test]
fn a_store_reopens_at_once_while_other_threads_spawn_processes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut spawned = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if std::process::Command::new("true").status().is_ok() {
                    spawned += 1;
                }
            }
            spawned
        })
    };
    let reopened = (0..300)
        .map(|_| Store::open(dir.path(), StoreOptions::default()).map(drop))
        .collect::<Vec<_>>();
    stop.store(true, Ordering::Relaxed);
    let spawned = spawner.join().unwrap();
    assert!(spawned > 0, "no process was spawned alongside the opens");
    let refused = reopened.iter().filter(|r| r.is_err()).count();
    assert_eq!(refused, 0, "{refused} of 300 opens refused: {reopened:?}");
}

#[test]
fn sidecar_faults_fall_back_to_scan_and_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = scalar(&e, ValueType::F64);
    let n = 50_000i64;
    let mut b = WriteBatch::with_capacity(2, n as usize);
    for i in 0..n {
        b.cols[0].push(JAN_2024 + i * MINUTE);
        let v = if i % 1000 == 7 {
            f64::NAN
        } else {
            ((i * 37) % 1000) as f64 / 10.0
        };
        b.cols[1].push(v.to_bits() as i64);
    }
    e.write(&key, b, None).unwrap();
    let req = |strategy| QueryRequest {
        start_ts: None,
        end_ts: None,
        predicate: Predicate::Between {
            min: 99.0.to_string().parse().unwrap(),
            max: 99.9.to_string().parse().unwrap(),
            inclusive: true,
        },
        return_values: Some(true),
        limit: None,
        strategy: Some(strategy),
        snapshot: None,
        version: None,
        as_of_commit: None,
    };
    let scan = e.query(&key, &req(Strategy::Scan), 1_000_000).unwrap();
    assert!(!scan.timestamps.is_empty());
    let sdir = e.series(&key).unwrap().dir().to_path_buf();
    for z in common::files_with(&sdir, "zmap") {
        flip(&z, 100);
    }
    for v in common::files_with(&sdir, "vidx") {
        fs::remove_file(v).unwrap();
    }
    let e2 = {
        drop(e);
        engine(dir.path())
    };
    for strategy in [Strategy::Auto, Strategy::Zonemap, Strategy::ValueIndex] {
        let r = e2.query(&key, &req(strategy), 1_000_000).unwrap();
        assert_eq!(r.timestamps, scan.timestamps, "{strategy:?}");
        assert!(
            r.stats.sidecar_fallbacks > 0,
            "{strategy:?}: fallback not reported"
        );
        assert_eq!(r.stats.index_used, "scan");
    }
    let v = common::validate_deep(&e2);
    assert!(
        v.findings.iter().any(|f| f.kind == "sidecar_corrupt"),
        "{:#?}",
        v.findings
    );
    assert!(
        v.findings.iter().any(|f| f.kind == "sidecar_missing"),
        "{:#?}",
        v.findings
    );
    let r = e2
        .admin(AdminAction::Repair, &AdminRequest::default())
        .unwrap();
    assert!(r.clean, "{:#?}", r.findings);
    assert!(
        r.actions
            .iter()
            .filter(|a| a.action == "rebuild_sidecar")
            .count()
            >= 2
    );
    let after = e2.query(&key, &req(Strategy::Auto), 1_000_000).unwrap();
    assert_eq!(after.timestamps, scan.timestamps);
    assert_eq!(after.stats.sidecar_fallbacks, 0);
}

/// A month of a few scalar rows is one chunk file with no sidecars
/// (`storage.sidecar_min_rows`): it validates clean, repair leaves it alone, and every
/// strategy answers a predicate over it by scanning it.
#[test]
fn small_chunks_without_sidecars_validate_clean_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = scalar(&e, ValueType::I64);
    let mut b = WriteBatch::with_capacity(2, 10);
    for i in 0..10i64 {
        b.cols[0].push(JAN_2024 + i * MINUTE);
        b.cols[1].push(i * 10);
    }
    e.write(&key, b, None).unwrap();
    // The close folds the logged rows into a chunk file.
    drop(e);
    let e = engine(dir.path());
    let sdir = e.series(&key).unwrap().dir().to_path_buf();
    assert_eq!(common::files_with(&sdir, "chunk").len(), 1);
    assert!(common::files_with(&sdir, "zmap").is_empty());
    assert!(common::files_with(&sdir, "vidx").is_empty());
    let v = common::validate_deep(&e);
    assert!(v.clean, "{:#?}", v.findings);
    let r = e
        .admin(AdminAction::Repair, &AdminRequest::default())
        .unwrap();
    assert!(r.clean && r.actions.is_empty(), "{r:#?}");
    for strategy in [
        Strategy::Scan,
        Strategy::Auto,
        Strategy::Zonemap,
        Strategy::ValueIndex,
    ] {
        let req = QueryRequest {
            start_ts: None,
            end_ts: None,
            predicate: Predicate::Gte {
                value: 70.to_string().parse().unwrap(),
            },
            return_values: Some(true),
            limit: None,
            strategy: Some(strategy),
            snapshot: None,
            version: None,
            as_of_commit: None,
        };
        let q = e.query(&key, &req, 100).unwrap();
        let want: Vec<i64> = (7..10).map(|i| JAN_2024 + i * MINUTE).collect();
        assert_eq!(q.timestamps, want, "{strategy:?}");
        assert_eq!(q.stats.sidecar_fallbacks, 0, "{strategy:?}");
        assert_eq!(q.stats.index_used, "scan", "{strategy:?}");
    }
}

#[test]
fn stray_temp_and_missing_files_are_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 50_000), None).unwrap();
    let series = e.series(&key).unwrap();
    let sdir = series.dir().to_path_buf();
    let version = series.version();
    fs::write(sdir.join("stray.bin"), b"hello").unwrap();
    fs::write(sdir.join(".tmp-1-2-x.chunk"), b"partial").unwrap();
    fs::remove_file(&common::files_with(&sdir, "chunk")[1]).unwrap();
    let v = e
        .admin(AdminAction::Validate, &AdminRequest::default())
        .unwrap();
    let kinds: Vec<&str> = v.findings.iter().map(|f| f.kind.as_str()).collect();
    for k in ["unknown_file", "temp_file", "chunk_missing"] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }
    let dry = e
        .admin(
            AdminAction::Repair,
            &AdminRequest {
                dry_run: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        !dry.clean && sdir.join("stray.bin").exists(),
        "a dry run changes nothing"
    );
    let r = e
        .admin(AdminAction::Repair, &AdminRequest::default())
        .unwrap();
    assert!(r.clean, "{:#?}", r.findings);
    assert!(!sdir.join("stray.bin").exists());
    assert!(
        series.version() > version,
        "dropping data bumps the version"
    );
    assert!(common::validate_deep(&e).clean);
}

#[test]
fn delete_then_reregister_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 10), None).unwrap();
    e.delete_series(&key).unwrap();
    assert_eq!(e.series(&key).unwrap_err().kind, ErrorKind::NotFound);
    let key = kline(&e);
    assert_eq!(read_ts(&e, &key).unwrap(), Vec::<i64>::new());
    assert_eq!(e.series(&key).unwrap().version(), 0);
}

/// A write's new chunk and sidecar files are written in place under their final
/// names (no manifest refers to them until the commit), so a crash can leave a
/// partial file of an uncommitted generation: reopening removes it and the series
/// reads exactly as committed.
#[test]
fn partial_files_of_an_uncommitted_write_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (sdir, before) = {
        let e = engine(dir.path());
        let key = kline(&e);
        e.write_kline(&key, &bars(JAN_2024, 50_000), None).unwrap();
        let sdir = e.series(&key).unwrap().dir().to_path_buf();
        (sdir, read_ts(&e, &key).unwrap())
    };
    let partial = [
        "2024-02.g000000000000ffff.chunk",
        "2024-03.g0000000000010000.chunk",
        "2024-03.g0000000000010000.vidx",
    ];
    for name in partial {
        fs::write(sdir.join(name), vec![0xA5u8; 700]).unwrap();
    }
    let e = engine(dir.path());
    let key = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    for name in partial {
        assert!(!sdir.join(name).exists(), "{name} survived the reopen");
    }
    assert_eq!(read_ts(&e, &key).unwrap(), before);
    let v = common::validate_deep(&e);
    assert!(v.clean, "{:#?}", v.findings);
}

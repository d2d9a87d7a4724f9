//! Operational faults at the engine level: a full disk, truncated files, a corrupt
//! registry, and concurrent expected-version writers.

mod common;

use common::{JAN_2024, MINUTE};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fastk::admin::AdminAction;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::types::AdminRequest;
use fastk::record::{KlineRecord, SeriesKey, TsRange};
use fastk::registry::{Access, Dataset};

fn engine(root: &Path) -> Arc<Engine> {
    common::engine_with(root, |c| {
        c.storage.low_disk_bytes = 0;
        // A file per month (no packed writes): the tests damage chunk files.
        c.storage.pack_target_bytes = 0;
    })
}

fn bars(start: i64, n: i64, tag: i64) -> Vec<KlineRecord> {
    (0..n)
        .map(|i| KlineRecord {
            ts: start + i * MINUTE,
            open: 100 + tag,
            high: 110 + tag,
            low: 90,
            close: 105,
            volume: i,
        })
        .collect()
}

fn kline(e: &Engine) -> SeriesKey {
    common::register_kline(e, "ETHUSDT")
}

fn stored(e: &Engine, key: &SeriesKey) -> BTreeMap<i64, i64> {
    let page = e.read(key, TsRange::all(), usize::MAX).unwrap();
    page.slices
        .iter()
        .flat_map(|s| {
            s.ts()
                .iter()
                .copied()
                .zip(s.col(1).iter().copied())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a `size`-byte tmpfs under `dir`. The tests that call it are `#[ignore]`d:
/// run on purpose (`--ignored`, which scripts/test.sh does as root), a mount that
/// fails fails the test rather than let it pass without running.
fn small_disk(dir: &Path, size: &str) -> (PathBuf, Mount) {
    let mnt = dir.join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "cannot mount a small tmpfs here (needs root and mount permission)"
    );
    (mnt.clone(), Mount(mnt))
}

#[test]
#[ignore = "mounts a tmpfs (root only): scripts/test.sh runs it with --ignored, or reports it skipped"]
fn full_disk_fails_the_write_cleanly_and_writes_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (mnt, _guard) = small_disk(dir.path(), "6m");
    let filler = mnt.join("filler");
    fs::write(&filler, vec![1u8; 2 << 20]).unwrap();
    let root = mnt.join("data");
    let e = engine(&root);
    let key = kline(&e);
    let mut model = BTreeMap::new();
    let mut failed = None;
    for w in 0..200 {
        let rows = bars(JAN_2024 + w * 20_000 * MINUTE, 20_000, w);
        match e.write_kline(&key, &rows, None) {
            Ok(_) => model.extend(rows.iter().map(|r| (r.ts, r.open))),
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    let err = failed.expect("the small disk never filled up");
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
    assert!(err.message.contains("disk is full"), "{}", err.message);
    assert_eq!(
        stored(&e, &key),
        model,
        "acknowledged writes are intact after ENOSPC"
    );
    let v = common::validate_deep(&e);
    assert!(v.clean, "{:#?}", v.findings);
    fs::remove_file(&filler).unwrap();
    let more = bars(JAN_2024 - 1000 * MINUTE, 1000, 7);
    e.write_kline(&key, &more, None)
        .expect("writes succeed once space returns");
    model.extend(more.iter().map(|r| (r.ts, r.open)));
    assert_eq!(stored(&e, &key), model);
    drop(e);
    let e = engine(&root);
    assert_eq!(stored(&e, &key), model, "and survive a reopen");
}

#[test]
fn truncated_files_are_detected_and_handled() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 50_000, 0), None)
        .unwrap();
    let sdir = e.series(&key).unwrap().dir().to_path_buf();
    drop(e);
    let mut chunks: Vec<_> = fs::read_dir(&sdir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "chunk"))
        .collect();
    chunks.sort();
    let f = fs::OpenOptions::new().write(true).open(&chunks[0]).unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    let e = engine(dir.path());
    assert_eq!(
        e.read(&key, TsRange::all(), 10).unwrap_err().kind,
        ErrorKind::Corrupted
    );
    let v = e
        .admin(AdminAction::Validate, &AdminRequest::default())
        .unwrap();
    assert!(
        v.findings.iter().any(|f| f.kind == "chunk_corrupt"),
        "{:#?}",
        v.findings
    );
    assert!(
        e.admin(AdminAction::Repair, &AdminRequest::default())
            .unwrap()
            .clean
    );
    assert_eq!(
        stored(&e, &key).len(),
        50_000 - 44_640,
        "February survives; January is quarantined"
    );
    drop(e);
    // A truncated manifest is rebuilt from the chunk headers on open.
    let m = fs::OpenOptions::new()
        .write(true)
        .open(sdir.join("MANIFEST"))
        .unwrap();
    m.set_len(100).unwrap();
    drop(m);
    let e = engine(dir.path());
    assert_eq!(stored(&e, &key).len(), 50_000 - 44_640);
}

#[test]
fn corrupt_registry_is_quarantined_and_rebuilt_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024, 100, 0), None).unwrap();
    let d = dataset("d");
    assert!(e.put_dataset(&d).unwrap());
    drop(e);
    let reg = dir.path().join("registry.sqlite");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(dir.path().join(format!("registry.sqlite{suffix}")));
    }
    let mut b = fs::read(&reg).unwrap();
    for i in (0..b.len()).step_by(97) {
        b[i] ^= 0x5a;
    }
    fs::write(&reg, b).unwrap();
    let e = engine(dir.path());
    let h = e.health();
    assert_eq!(h.status, "degraded");
    assert!(
        h.details.iter().any(|d| d.starts_with("registry_corrupt")),
        "{:?}",
        h.details
    );
    assert_eq!(
        stored(&e, &key).len(),
        100,
        "series data never depended on the registry"
    );
    assert_eq!(
        e.registry.list_series().unwrap().len(),
        1,
        "catalog rebuilt from storage"
    );
    assert!(fs::read_dir(dir.path().join("quarantine")).unwrap().count() >= 1);
    assert!(
        e.admin(AdminAction::Validate, &AdminRequest::default())
            .unwrap()
            .clean
    );
}

/// The registry's catalog is compared with storage on open unless its digest (kept by
/// the last reconcile, deleted by SQLite triggers on any change of the table) matches
/// storage's series: an edit by hand, and a registry older than the store, are still
/// found and repaired.
#[test]
fn the_registry_catalog_is_repaired_on_open_whatever_its_digest_says() {
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry.sqlite");
    let keys = |e: &Engine| {
        let mut k: Vec<String> = e
            .registry
            .list_series()
            .unwrap()
            .into_iter()
            .map(|m| m.unwrap().key.to_string())
            .collect();
        k.sort();
        k
    };
    let digests = || {
        let c = rusqlite::Connection::open(&reg).unwrap();
        c.query_row("SELECT count(*) FROM series_digest", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
    };
    let e = engine(dir.path());
    common::register_kline(&e, "AAA");
    common::register_kline(&e, "BBB");
    drop(e);
    let e = engine(dir.path());
    assert_eq!(keys(&e), ["kline/AAA/1m", "kline/BBB/1m"]);
    drop(e);
    assert_eq!(digests(), 1, "a reconcile that agreed keeps the digest");
    // A registry copy from before a registration: its digest is of the older set.
    let old = fs::read(&reg).unwrap();
    let e = engine(dir.path());
    common::register_kline(&e, "CCC");
    drop(e);
    assert_eq!(digests(), 0, "a registration deletes the digest");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(dir.path().join(format!("registry.sqlite{suffix}")));
    }
    fs::write(&reg, &old).unwrap();
    let e = engine(dir.path());
    assert_eq!(
        keys(&e),
        ["kline/AAA/1m", "kline/BBB/1m", "kline/CCC/1m"],
        "an older registry is brought up to the store"
    );
    drop(e);
    assert_eq!(digests(), 1);
    // Edited by hand: a row gone, a row storage does not hold.
    {
        let c = rusqlite::Connection::open(&reg).unwrap();
        c.execute("DELETE FROM series WHERE symbol = 'BBB'", [])
            .unwrap();
        c.execute(
            "INSERT INTO series (kind, symbol, timeframe, timeframe_ms, price_scale, volume_scale, \
             value_type) VALUES ('kline', 'ZZZ', '1m', 60000, 100, 1, 'i64')",
            [],
        )
        .unwrap();
    }
    assert_eq!(digests(), 0, "the triggers delete the digest");
    let e = engine(dir.path());
    assert_eq!(
        keys(&e),
        ["kline/AAA/1m", "kline/BBB/1m", "kline/CCC/1m"],
        "a hand edit is undone"
    );
    drop(e);
    assert_eq!(digests(), 1);
}

#[test]
fn concurrent_expected_version_writers_exactly_one_wins_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = kline(&e);
    let threads = 6;
    let attempts = 40;
    let wins: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (e, key) = (&e, &key);
                s.spawn(move || {
                    let mut won = Vec::new();
                    for a in 0..attempts {
                        let v = e.series(key).unwrap().version();
                        let rows = bars(JAN_2024 + (t * attempts + a) as i64 * MINUTE, 1, t as i64);
                        match e.write_kline(key, &rows, Some(v)) {
                            Ok(r) => {
                                assert_eq!(r.version, v + 1);
                                won.push(r.version);
                            }
                            Err(err) => assert_eq!(
                                err.kind,
                                ErrorKind::PreconditionFailed,
                                "{}",
                                err.message
                            ),
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<u64> = wins.into_iter().flatten().collect();
    all.sort();
    let n = all.len() as u64;
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "each version has exactly one winner, no gaps"
    );
    assert_eq!(e.series(&key).unwrap().version(), n);
    assert_eq!(
        stored(&e, &key).len() as u64,
        n,
        "every winning write is stored, no lost update"
    );
}

/// Writes `path` until the disk has no byte left.
fn fill_disk(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let block = vec![7u8; 64 << 10];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected, got {e}");
                break;
            }
        }
    }
    // The last partial block may have left a few bytes; single ones take them too.
    while f.write(&[7u8]).is_ok_and(|n| n == 1) {}
}

fn dataset(name: &str) -> Dataset {
    Dataset {
        name: name.into(),
        version: "1".into(),
        source: String::new(),
        market: String::new(),
        start_ts: None,
        end_ts: None,
        checksum: String::new(),
        status: "active".into(),
        description: String::new(),
    }
}

/// A real server on `root` (low-disk warnings off, so only the full disk shows).
fn serve(root: &Path) -> common::ServerProcess {
    common::spawn_server(root, &[("FASTK__STORAGE__LOW_DISK_BYTES", "0")])
}

/// One HTTP/1.1 request over a plain socket; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The story (issue defect 6): a disk filled up; writes rightly got 503 and nothing
/// was written. But the server then refused to start: SQLite could not open the
/// registry ("database or disk is full": in WAL mode even a read needs a `-shm` file
/// sized on disk), and `Engine::open` failed (a generic SQLite error there was even
/// taken for corruption, quarantining a healthy registry). Now the server starts with
/// the registry read-only, serves every committed series, says why it is degraded,
/// refuses registry writes with 503 (not 500), and recovers by itself once space
/// returns.
#[test]
#[ignore = "mounts a tmpfs (root only): scripts/test.sh runs it with --ignored, or reports it skipped"]
fn a_full_disk_at_start_serves_every_series_read_only_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (mnt, _guard) = small_disk(dir.path(), "6m");
    let root = mnt.join("data");
    let filler = mnt.join("filler");
    let e = engine(&root);
    let key = kline(&e);
    e.write_kline(&key, &bars(JAN_2024 - 2000 * MINUTE, 4000, 1), None)
        .unwrap();
    assert!(e.put_dataset(&dataset("d1")).unwrap());
    let model = stored(&e, &key);
    assert_eq!(model.len(), 4000);
    // A clean shutdown: SQLite checkpoints its WAL and removes the -wal and -shm files,
    // so the next open has to create and size them.
    drop(e);
    fill_disk(&filler);

    // A real server starts on the full disk and serves.
    {
        let s = serve(&root);
        let (status, body) = http(&s.http, "GET", "/health", "");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"degraded\""), "{body}");
        assert!(body.contains("disk full: writes refused"), "{body}");
        let (status, body) = http(
            &s.http,
            "GET",
            "/v1/kline/ETHUSDT/1m/records?limit=5000",
            "",
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.matches("\"ts\"").count(), 4000);
        let (status, body) = http(
            &s.http,
            "POST",
            "/v1/datasets",
            r#"{"name": "d2", "version": "1"}"#,
        );
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"unavailable\""), "{body}");
    }

    // The engine, in process: the same, checked in detail.
    let e = engine(&root);
    assert_eq!(e.registry.access(), Access::ReadOnly);
    assert_eq!(stored(&e, &key), model, "every committed row is readable");
    let h = e.health();
    assert_eq!(h.status, "degraded");
    assert!(
        h.details
            .iter()
            .any(|d| d.starts_with("registry read-only: disk full: writes refused")),
        "{:?}",
        h.details
    );
    assert_eq!(e.list_datasets(None).unwrap(), vec![dataset("d1")]);
    assert!(
        !e.put_dataset(&dataset("d1")).unwrap(),
        "an identical entry needs no write"
    );
    let err = e.put_dataset(&dataset("d2")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
    assert!(err.message.contains("read-only"), "{}", err.message);
    let more = bars(JAN_2024 + 2000 * MINUTE, 20_000, 2);
    let err = e.write_kline(&key, &more, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);

    // Space returns: the registry becomes writable again without a restart.
    fs::remove_file(&filler).unwrap();
    assert!(e.put_dataset(&dataset("d2")).unwrap());
    assert_eq!(e.registry.access(), Access::ReadWrite);
    assert_eq!(e.health().status, "ok", "{:?}", e.health().details);
    e.write_kline(&key, &more, None).unwrap();

    // The disk fills while the registry is writable: SQLITE_FULL is a 503 too.
    fill_disk(&filler);
    let err = e.put_dataset(&dataset("d3")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
    assert!(err.message.contains("disk is full"), "{}", err.message);
    fs::remove_file(&filler).unwrap();
    drop(e);

    let e = engine(&root);
    assert_eq!(e.registry.access(), Access::ReadWrite);
    assert_eq!(stored(&e, &key).len(), 4000 + 20_000);
    let names: Vec<String> = e
        .list_datasets(None)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["d1", "d2"]);
    assert_eq!(e.health().status, "ok");
}

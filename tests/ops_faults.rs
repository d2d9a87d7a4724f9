//! Operational faults at the engine level: a full disk, truncated files, a corrupt
//! registry, and concurrent expected-version writers.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use fastk::admin::AdminAction;
use fastk::config::Config;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::types::{AdminRequest, RegisterKline};
use fastk::record::{KlineRecord, SeriesKey, TsRange};
use fastk::registry::Dataset;

const MINUTE: i64 = 60_000;
const JAN_2024: i64 = 1_704_067_200_000;

fn engine(root: &Path) -> Arc<Engine> {
    let mut c = Config::default();
    c.storage.root = root.to_path_buf();
    c.storage.low_disk_bytes = 0;
    Engine::open(c).unwrap()
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
    let r = RegisterKline {
        symbol: "ETHUSDT".into(),
        timeframe: "1m".into(),
        timeframe_ms: None,
        price_scale: 100,
        volume_scale: 1,
    };
    e.register_kline(&r).unwrap();
    SeriesKey::kline("ETHUSDT", "1m").unwrap()
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

#[test]
fn full_disk_fails_the_write_cleanly_and_writes_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!(
            "SKIPPED full_disk test: cannot mount a small tmpfs here (needs root and mount permission)"
        );
        return;
    }
    let _guard = Mount(mnt.clone());
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
    let v = e
        .admin(
            AdminAction::Validate,
            &AdminRequest {
                deep: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
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
    let d = Dataset {
        name: "d".into(),
        version: "1".into(),
        source: String::new(),
        market: String::new(),
        start_ts: None,
        end_ts: None,
        checksum: String::new(),
        status: "active".into(),
        description: String::new(),
    };
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

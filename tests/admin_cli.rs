//! `fastk admin ... --root DIR`: exit codes, the readable table, JSON, dry runs, and
//! the polite refusal while another process holds the store.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::cli::text;
use common::{HOUR, JAN_2024, engine_with, kline_registration};
use fastk::config::Config;
use fastk::query::Engine;
use fastk::record::{KlineRecord, SeriesKey};

fn fastk(args: &[&str], root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastk"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

fn seed(root: &Path) -> std::path::PathBuf {
    // A file per month (no packed write): the test damages one chunk file.
    // The engine's close folds the logged rows into chunk files.
    let e = engine_with(root, |c| {
        c.storage.pack_target_bytes = 0;
        c.storage.fold_on_stop = true;
    });
    let r = kline_registration("SOLUSDT", "1h");
    e.register_kline(&r).unwrap();
    let key = SeriesKey::kline("SOLUSDT", "1h").unwrap();
    let rows: Vec<KlineRecord> = (0..2000)
        .map(|i| KlineRecord {
            ts: JAN_2024 + i * HOUR,
            open: 10,
            high: 12,
            low: 9,
            close: 11,
            volume: i,
        })
        .collect();
    e.write_kline(&key, &rows, None).unwrap();
    e.series(&key).unwrap().dir().to_path_buf()
}

#[test]
fn admin_cli_reports_repairs_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = seed(dir.path());
    let ok = fastk(&["admin", "validate", "--deep"], dir.path());
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("0 findings"), "{}", text(&ok));

    let chunk = std::fs::read_dir(&sdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "chunk"))
        .unwrap();
    let mut b = std::fs::read(&chunk).unwrap();
    b[600] ^= 1;
    std::fs::write(&chunk, b).unwrap();

    let bad = fastk(&["admin", "validate", "--deep"], dir.path());
    assert_eq!(bad.status.code(), Some(1), "findings remain: exit 1");
    assert!(text(&bad).contains("chunk_corrupt"), "{}", text(&bad));
    let json = fastk(&["admin", "scrub", "--json"], dir.path());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["findings"][0]["kind"], "chunk_corrupt");
    assert!(
        report["findings"][0]["file"]
            .as_str()
            .unwrap()
            .starts_with("series/kline/SOLUSDT/1h/"),
        "paths are relative to the root"
    );

    let dry = fastk(&["admin", "repair"], dir.path());
    assert_eq!(dry.status.code(), Some(1));
    assert!(
        text(&dry).contains("WOULD DO") && text(&dry).contains("dry run"),
        "{}",
        text(&dry)
    );
    assert!(chunk.exists(), "a dry run moves nothing");
    let fixed = fastk(&["admin", "repair", "--apply"], dir.path());
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed));
    assert!(!chunk.exists() && dir.path().join("quarantine").is_dir());

    let inv = fastk(&["admin", "inventory"], dir.path());
    let inv: serde_json::Value = serde_json::from_slice(&inv.stdout).unwrap();
    assert_eq!(inv["series"][0]["symbol"], "SOLUSDT");
}

#[test]
fn admin_cli_refuses_while_the_store_is_held() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let mut c = Config::default();
    c.storage.root = dir.path().to_path_buf();
    // `seed` dropped its engine a moment ago while the other test of this binary may be
    // spawning `fastk`; the open waits out a child's copy of the lock
    // (`fastk::storage::LOCK_WAIT`).
    let _held = Engine::open(c).expect("the store's lock is released once seed's engine is gone");
    let out = fastk(&["admin", "validate"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("locked by another process"),
        "{}",
        text(&out)
    );
}

//! Admin maintenance through storage operations: a repaired sidecar comes with a new
//! generation (never a rename over a published file) and a version bump by storage;
//! a repair on a full disk is `unavailable` and changes nothing; an unknown action
//! name, however long, is `invalid_argument` with a short message on both front ends;
//! `admin compact` runs over many series at once and a failed series loses nothing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_flight::Action;
use arrow_flight::error::FlightError;
use common::{JAN_2024, MINUTE, engine_with, scalar_registration, validate_deep};
use fastk::admin::{AdminAction, AdminRequest, SeriesSelector};
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::record::{SeriesKey, TsRange};
use fastk::storage::WriteBatch;
use futures::TryStreamExt;

fn engine(root: &Path) -> Arc<Engine> {
    engine_with(root, |c| c.storage.low_disk_bytes = 0)
}

fn scalar(e: &Engine) -> SeriesKey {
    let r = scalar_registration("BTCUSDT", "1m", "indicator", "rsi", None);
    e.register_scalar(&r).unwrap();
    SeriesKey::scalar("BTCUSDT", "1m", "indicator", "rsi").unwrap()
}

/// `n` rows of one month (January 2024), written in one write: one chunk, a zone map
/// and a value index.
fn write_month(e: &Engine, key: &SeriesKey, n: i64) {
    let mut b = WriteBatch::with_capacity(2, n as usize);
    for i in 0..n {
        b.cols[0].push(JAN_2024 + i * MINUTE);
        b.cols[1].push((i * 37) % 1000);
    }
    e.write(key, b, None).unwrap();
}

fn stored(e: &Engine, key: &SeriesKey) -> BTreeMap<i64, i64> {
    let page = e.read(key, TsRange::all(), usize::MAX).unwrap();
    page.slices
        .iter()
        .flat_map(|s| s.ts().iter().copied().zip(s.col(1).iter().copied()))
        .collect()
}

/// Flips one byte in place (same file, same size: no new blocks needed).
fn flip(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
    f.sync_all().unwrap();
}

/// Repair used to rebuild a damaged sidecar by writing a temp file and renaming it
/// over the sidecar's published name, while readers could still hold the old file
/// (the mmap module's first invariant: a published file is never modified, only
/// unlinked), and it committed the manifest by hand without a version bump. Now the
/// month is rewritten by storage under a new generation: the old sidecar stays as it
/// was (same inode, same bytes) for as long as a snapshot refers to it, is unlinked
/// after, and the version moves on by one.
#[test]
fn sidecar_repair_writes_a_new_generation_and_leaves_the_published_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let key = scalar(&e);
    write_month(&e, &key, 20_000);
    let want = stored(&e, &key);
    let series = e.series(&key).unwrap();
    let sdir = series.dir().to_path_buf();
    let zmap = common::files_with(&sdir, "zmap").remove(0);
    flip(&zmap, fs::metadata(&zmap).unwrap().len() / 2);
    let damaged = fs::read(&zmap).unwrap();
    let inode = fs::metadata(&zmap).unwrap().ino();
    let old_files: Vec<PathBuf> = ["chunk", "zmap", "vidx"]
        .iter()
        .flat_map(|x| common::files_with(&sdir, x))
        .collect();
    let version = series.version();
    let found = validate_deep(&e);
    assert!(
        found.findings.iter().any(|f| f.kind == "sidecar_corrupt"),
        "{:#?}",
        found.findings
    );

    let held = series.snapshot();
    let r = e
        .admin(AdminAction::Repair, &AdminRequest::default())
        .unwrap();
    assert!(r.clean, "{:#?}", r.findings);
    assert!(
        r.actions.iter().any(|a| a.action == "rebuild_sidecar"),
        "{:#?}",
        r.actions
    );
    assert_eq!(series.version(), version + 1, "storage bumps the version");
    assert_eq!(
        (fs::read(&zmap).unwrap(), fs::metadata(&zmap).unwrap().ino()),
        (damaged, inode),
        "the published sidecar was modified while a snapshot still refers to it"
    );
    let now = series.snapshot();
    let gens: Vec<u64> = now.chunks().map(|c| c.entry.generation).collect();
    let old_gens: Vec<u64> = held.chunks().map(|c| c.entry.generation).collect();
    assert!(gens.iter().all(|g| !old_gens.contains(g)), "new generation");
    drop(now);
    drop(held);
    for f in &old_files {
        assert!(!f.exists(), "{} outlived its last reader", f.display());
    }
    assert!(validate_deep(&e).clean);
    assert_eq!(stored(&e, &key), want);
    drop(series);
    drop(e);
    let e = engine(dir.path());
    assert_eq!(stored(&e, &key), want, "and after a reopen");
    assert_eq!(e.series(&key).unwrap().version(), version + 1);
    assert!(validate_deep(&e).clean);
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system at `dir`: blocks first, then inodes. Returns the fillers.
fn fill(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.join("filler")];
    let mut f = fs::File::create(&out[0]).unwrap();
    let block = vec![7u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    drop(f);
    for i in 0.. {
        let p = dir.join(format!("inode-{i}"));
        if fs::File::create(&p).is_err() {
            break;
        }
        out.push(p);
    }
    out
}

/// A repair on a full disk answered 500 (`internal`): moving an unopenable series
/// directory to the quarantine creates directories, and that error was mapped to
/// internal by hand. Every maintenance error is now a storage error, so ENOSPC is
/// `unavailable` like a write's, and the store is left as it was.
#[test]
#[ignore = "mounts a tmpfs (root only): scripts/test.sh runs it with --ignored, or reports it skipped"]
fn repair_on_a_full_disk_is_unavailable_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,nr_inodes=400", "tmpfs"])
        .arg(&mnt)
        .status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "cannot mount a small tmpfs here (needs root and mount permission)"
    );
    let _guard = Mount(mnt.clone());
    let root = mnt.join("data");
    let key = {
        let e = engine(&root);
        let key = scalar(&e);
        write_month(&e, &key, 20_000);
        key
    };
    // A series directory whose manifest is garbage and that has no chunk to rebuild
    // it from: the store opens without it and repair quarantines it.
    let bad = root.join("series/kline/BROKEN/1m");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("MANIFEST"), b"not a manifest").unwrap();
    let e = engine(&root);
    let want = stored(&e, &key);
    let series = e.series(&key).unwrap();
    let sdir = series.dir().to_path_buf();
    let zmap = common::files_with(&sdir, "zmap").remove(0);
    flip(&zmap, fs::metadata(&zmap).unwrap().len() / 2);
    let version = series.version();
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let before = listing(&sdir);
    let fillers = fill(&mnt);

    let only_scalar = AdminRequest {
        series: Some(SeriesSelector {
            symbol: Some("BTCUSDT".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    for req in [AdminRequest::default(), only_scalar] {
        let err = e.admin(AdminAction::Repair, &req).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
        assert!(err.message.contains("disk is full"), "{}", err.message);
        assert_eq!(series.version(), version, "nothing committed");
        assert_eq!(listing(&sdir), before, "no file left behind");
        assert!(bad.join("MANIFEST").exists(), "nothing moved");
        assert_eq!(stored(&e, &key), want);
    }

    for f in fillers {
        fs::remove_file(f).unwrap();
    }
    let r = e
        .admin(AdminAction::Repair, &AdminRequest::default())
        .unwrap();
    assert!(r.clean, "{:#?}", r.findings);
    assert!(!bad.exists(), "the unopenable directory is quarantined");
    assert_eq!(series.version(), version + 1);
    assert_eq!(stored(&e, &key), want);
}

/// An unknown action name was echoed whole: over Flight a 100 KB name put 100 KB into
/// the `grpc-message` trailer, past the client's metadata limit, so the client saw a
/// transport error instead of `InvalidArgument`; over HTTP it was a 404 as if the
/// route did not exist. Both now answer `invalid_argument`, naming the actions and
/// repeating only a short prefix of the name.
#[tokio::test]
async fn unknown_action_names_are_invalid_argument_with_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let running = fastk::server::start(common::server_config(dir.path(), |_| {}))
        .await
        .unwrap();
    let long = "a".repeat(100 << 10);

    let mut client = {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", running.flight_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        arrow_flight::FlightClient::new(channel)
    };
    for name in [long.as_str(), "Validate"] {
        let r = client.do_action(Action::new(name, "")).await;
        let status = match r {
            Err(FlightError::Tonic(s)) => s,
            Err(other) => panic!("expected a gRPC status, got {other}"),
            Ok(s) => panic!("unknown action ran: {:?}", s.try_collect::<Vec<_>>().await),
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(status.message().len() < 400, "{}", status.message().len());
        assert!(status.message().contains("rebuild-manifest"), "{status}");
    }

    // An HTTP client cannot even send a 100 KB path (URIs stop at 64 KB); 32 KB can.
    let http = reqwest::Client::new();
    let long = "a".repeat(32 << 10);
    for name in [long.as_str(), "Validate"] {
        let url = format!("http://{}/v1/admin/{name}", running.http_addr);
        let r = http.post(url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.len() < 400 && msg.contains("rebuild-manifest"), "{msg}");
    }
    let ok = http
        .post(format!("http://{}/v1/admin/validate", running.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    drop(client);
    running.shutdown().await;
}

/// Story: after folds that failed on a full disk, an offline `validate --deep` said
/// nothing about the rows still only in the write-ahead log. The report now counts
/// them (`log_unfolded_rows`, `log_unfolded_series`), and the command line says so.
/// (An admin action folds first, so rows stay in the log only when that fold fails.)
#[test]
fn validate_reports_the_rows_still_only_in_the_log() {
    use fastk::storage::fsio::failpoints::{self, Op};
    let dir = tempfile::tempdir().unwrap();
    // The fold into files is what fails here: five rows would fold into the catalog.
    let e = engine_with(dir.path(), |c| {
        c.storage.low_disk_bytes = 0;
        c.storage.resident_rows_max = 0;
    });
    let key = scalar(&e);
    write_month(&e, &key, 5);
    let series_dir = e.series(&key).unwrap().dir().to_path_buf();
    let armed = failpoints::arm(&series_dir, Op::Fsync, 1);
    let r = validate_deep(&e);
    assert!(armed.fired(), "the fold before the validation failed");
    drop(armed);
    assert_eq!(
        (r.log_unfolded_rows, r.log_unfolded_series),
        (5, 1),
        "{r:?}"
    );
    assert!(r.clean, "rows in the log are durable, not a finding: {r:?}");
    let r = validate_deep(&e);
    assert_eq!(
        (r.log_unfolded_rows, r.log_unfolded_series),
        (0, 0),
        "{r:?}"
    );
    drop(e);
    let out = Command::new(env!("CARGO_BIN_EXE_fastk"))
        .args(["admin", "validate", "--deep", "--json", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["log_unfolded_rows"], 0, "{report}");
}

/// `admin compact` over many series on several threads
/// (`storage.maintenance_threads`): every month of several chunks becomes one, every
/// row stays, and the report lists the series in their order. A series whose rewrite
/// fails (an fsync under its directory) makes the run fail with its error, keeps its
/// data, and a second run finishes the work.
#[test]
fn compact_runs_over_many_series_at_once_and_a_failure_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |c| {
        c.storage.low_disk_bytes = 0;
        c.storage.maintenance_threads = 3;
        // Every write below goes to its own chunk file (no log, no fold merging them).
        c.storage.wal_direct_rows = 0;
        c.storage.direct_write_min_bytes = 0;
    });
    let mut keys = Vec::new();
    for i in 0..12 {
        let name = format!("f{i:02}");
        let r = scalar_registration("BTCUSDT", "1m", "factor", &name, None);
        e.register_scalar(&r).unwrap();
        let key = SeriesKey::scalar("BTCUSDT", "1m", "factor", &name).unwrap();
        // Three appends to one month: three chunks.
        for w in 0..3_i64 {
            let mut b = WriteBatch::with_capacity(2, 50);
            for j in 0..50 {
                b.cols[0].push(JAN_2024 + (w * 50 + j) * MINUTE);
                b.cols[1].push(i * 1000 + w * 50 + j);
            }
            e.write(&key, b, None).unwrap();
        }
        keys.push(key);
    }
    let chunks = |k: &SeriesKey| e.store.get(k).unwrap().snapshot().chunks().count();
    assert!(
        keys.iter().all(|k| chunks(k) == 3),
        "three chunks each to start"
    );
    let before: Vec<_> = keys.iter().map(|k| stored(&e, k)).collect();

    // The 5th series' rewrite fails at its first fsync.
    let victim = e.store.get(&keys[4]).unwrap().dir().to_path_buf();
    let armed = fastk::storage::fsio::failpoints::arm(
        &victim,
        fastk::storage::fsio::failpoints::Op::Fsync,
        1,
    );
    let err = e
        .admin(AdminAction::Compact, &AdminRequest::default())
        .unwrap_err();
    assert!(armed.fired(), "the failpoint struck");
    drop(armed);
    assert!(!err.message.is_empty());
    assert_eq!(chunks(&keys[4]), 3, "the failed series is as it was");
    for (k, want) in keys.iter().zip(&before) {
        assert_eq!(&stored(&e, k), want, "{k}: every row kept");
    }

    let report = e
        .admin(AdminAction::Compact, &AdminRequest::default())
        .unwrap();
    assert!(
        keys.iter().all(|k| chunks(k) == 1),
        "one chunk per month after"
    );
    for (k, want) in keys.iter().zip(&before) {
        assert_eq!(&stored(&e, k), want, "{k}: every row kept");
    }
    let merged: Vec<&str> = report
        .actions
        .iter()
        .filter(|a| a.action == "compact_month")
        .filter_map(|a| a.series.as_deref())
        .collect();
    let mut sorted = merged.clone();
    sorted.sort();
    assert_eq!(merged, sorted, "actions in series order");
    assert!(!merged.is_empty() && merged.len() <= keys.len());
    validate_deep(&e);
    // The store reopens with the compacted series.
    drop(e);
    let e = engine(dir.path());
    for (k, want) in keys.iter().zip(&before) {
        assert_eq!(&stored(&e, k), want, "{k}: after a reopen");
    }
}

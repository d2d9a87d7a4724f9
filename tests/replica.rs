//! Read replicas through object storage (src/replica, docs/scale-out.md section 2), on
//! real files: a primary publishes to a `file://` bucket (object_store's
//! LocalFileSystem) and a replica engine follows it into its own root.
//!
//! - every series (direct and logged-then-folded writes, several months, compressed
//!   sealed months, a scalar with zone maps and value indexes) reads identically on
//!   the replica; later writes, a range delete, a series delete and a delete plus
//!   re-registration are caught up exactly;
//! - a publication cut after its data objects (no new manifest) changes nothing, and
//!   a corrupt data object or manifest is refused, the old state still served, then
//!   applied once the object is good;
//! - trade and quote series (nanosecond keys, `seq`, day and hour partitions) replicate
//!   through writes, a replacement by `seq`, a range delete and a series delete;
//! - the replica refuses every change with `precondition_failed`;
//! - (ignored, run by hand) publish and catch-up times of 100 series x a month.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    DAY, JAN_2024, MINUTE, engine_with, kline_registration, register_kline, scalar_registration,
};
use fastk::admin::AdminAction;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::types::AdminRequest;
use fastk::record::{KlineRecord, SeriesKey, TsRange, ValueType};
use fastk::replica::{Bucket, Follower, Publisher};
use fastk::storage::WriteBatch;
use fastk::storage::follow::live_files;

struct Pair {
    _tmp: tempfile::TempDir,
    bucket_dir: PathBuf,
    primary: Arc<Engine>,
    replica: Arc<Engine>,
    publisher: Publisher,
    follower: Follower,
}

fn pair() -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    let bucket_dir = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    let url = format!("file://{}", bucket_dir.display());
    let primary = engine_with(&tmp.path().join("primary"), |c| {
        c.replica.publish_to = url.clone();
    });
    let replica = engine_with(&tmp.path().join("replica"), |c| {
        c.replica.follow_from = url.clone();
    });
    Pair {
        publisher: Publisher::new(Bucket::open(&url).unwrap(), Duration::ZERO, 4),
        follower: Follower::new(Bucket::open(&url).unwrap(), 4),
        _tmp: tmp,
        bucket_dir,
        primary,
        replica,
    }
}

impl Pair {
    async fn publish(&self) -> fastk::replica::PublishReport {
        let r = self.publisher.publish_once(&self.primary).await.unwrap();
        assert_eq!(r.failed, 0, "{r:?}");
        r
    }

    async fn follow(&self) -> fastk::replica::FollowReport {
        let r = self.follower.poll_once(&self.replica).await.unwrap();
        if r.changed_catalog() {
            self.replica.reconcile_catalog().unwrap();
        }
        r
    }

    /// The file under the bucket directory that holds `object`.
    fn object_file(&self, object: &object_store::path::Path) -> PathBuf {
        Path::new("/").join(object.as_ref())
    }
}

fn bars(from: i64, n: i64, seed: i64) -> Vec<KlineRecord> {
    (0..n)
        .map(|i| {
            let p = 10_000 + (i * 7 + seed) % 500;
            KlineRecord {
                ts: from + i * MINUTE,
                open: p,
                high: p + 5,
                low: p - 5,
                close: p + 1,
                volume: i + seed,
            }
        })
        .collect()
}

fn scalar_key() -> SeriesKey {
    SeriesKey::scalar("BTCUSDT", "1m", "feature", "x").unwrap()
}

fn scalar_batch(from: i64, n: i64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(2, n as usize);
    for i in 0..n {
        b.cols[0].push(from + i * MINUTE);
        b.cols[1].push(((i % 977) as f64 * 0.25 - 40.0).to_bits() as i64);
    }
    b
}

/// Loads the primary: BTCUSDT written directly (3 months, then compressed as sealed),
/// ETHUSDT through the log in small writes (folded), and an f64 scalar with sidecars.
fn load(p: &Engine) {
    let btc = register_kline(p, "BTCUSDT");
    let eth = register_kline(p, "ETHUSDT");
    p.register_scalar(&scalar_registration(
        "BTCUSDT",
        "1m",
        "feature",
        "x",
        Some(ValueType::F64),
    ))
    .unwrap();
    p.write_kline(&btc, &bars(JAN_2024, 90 * 1440, 1), None)
        .unwrap();
    // Sealed months are written compressed (the pass has nothing left to do).
    p.compress_sealed(fastk::query::now_ms());
    let compressed = p
        .store
        .get(&btc)
        .unwrap()
        .snapshot()
        .chunks()
        .filter(|c| c.entry.flags & fastk::storage::format::FLAG_COMPRESSED != 0)
        .count();
    assert!(compressed >= 3, "sealed months compressed: {compressed}");
    for i in 0..10 {
        let from = JAN_2024 + 40 * DAY + i * 200 * MINUTE;
        p.write_kline(&eth, &bars(from, 200, i), None).unwrap();
    }
    p.write(&scalar_key(), scalar_batch(JAN_2024, 50_000), None)
        .unwrap();
    p.store.fold_all();
}

/// Every column of every row of `key`, and the last 7 rows.
fn rows(e: &Engine, key: &SeriesKey) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let collect = |slices: &[fastk::storage::ChunkSlice]| {
        let ncols = key.kind().ncols();
        let mut cols = vec![Vec::new(); ncols];
        for s in slices {
            for (i, c) in cols.iter_mut().enumerate() {
                c.extend_from_slice(s.col(i));
            }
        }
        cols
    };
    let all = e.read(key, TsRange::all(), usize::MAX).unwrap();
    assert!(all.next_start_ts.is_none());
    let last = e.latest(key, TsRange::all(), 7).unwrap();
    (collect(&all.slices), collect(&last.slices))
}

/// The replica serves exactly what the primary's manifests hold.
fn assert_same(p: &Engine, r: &Engine) {
    let keys: Vec<SeriesKey> = p.store.list().iter().map(|s| s.meta.key.clone()).collect();
    let theirs: Vec<SeriesKey> = r.store.list().iter().map(|s| s.meta.key.clone()).collect();
    assert_eq!(keys, theirs, "the same series");
    for k in &keys {
        assert_eq!(rows(p, k), rows(r, k), "rows of {k}");
        assert_eq!(
            p.series_info(k).unwrap(),
            r.series_info(k).unwrap(),
            "info of {k}"
        );
    }
    assert_eq!(p.inventory().series, r.inventory().series, "inventory rows");
    let listed = |e: &Engine| {
        use fastk::record::SeriesKind;
        let mut v: Vec<String> = [
            SeriesKind::Kline,
            SeriesKind::Scalar,
            SeriesKind::Trade,
            SeriesKind::Quote,
        ]
        .into_iter()
        .flat_map(|k| e.list_series(k))
        .map(|s| format!("{}/{}/{:?}", s.symbol, s.timeframe, s.name))
        .collect();
        v.sort();
        v
    };
    assert_eq!(listed(p), listed(r));
    let report = common::validate_deep(r);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_writes_deletes_and_reregistrations_exactly() {
    let t = pair();
    // Nothing published yet: the replica does nothing (no marker).
    let r = t.follow().await;
    assert!(!r.marker);
    load(&t.primary);
    let first = t.publish().await;
    assert_eq!(first.published, 3);
    // Each series' data (a pack or chunk files) and its manifest.
    assert!(first.objects_put >= 2 * first.published, "{first:?}");
    let r = t.follow().await;
    assert_eq!((r.applied, r.created, r.failed), (3, 3, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);

    // Nothing changed: no object put, nothing fetched.
    let again = t.publish().await;
    assert_eq!(
        (again.published, again.unchanged, again.objects_put),
        (0, 3, 0)
    );
    let r = t.follow().await;
    assert_eq!((r.applied, r.objects), (0, 0));

    // Rows still only in the log are not published; folded, they are.
    let btc = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    let eth = SeriesKey::kline("ETHUSDT", "1m").unwrap();
    let before = rows(&t.replica, &eth);
    t.primary
        .write_kline(&eth, &bars(JAN_2024 + 80 * DAY, 30, 9), None)
        .unwrap();
    t.publish().await;
    t.follow().await;
    assert_eq!(
        rows(&t.replica, &eth),
        before,
        "unfolded rows are not published"
    );
    t.primary.store.fold_all();
    // A new month on BTCUSDT (a delta past its compressed months), a range delete
    // inside a compressed month, a series deleted.
    t.primary
        .write_kline(&btc, &bars(JAN_2024 + 95 * DAY, 500, 3), None)
        .unwrap();
    t.primary
        .delete_range(
            &btc,
            Some(JAN_2024 + 10 * DAY),
            Some(JAN_2024 + 12 * DAY),
            None,
        )
        .unwrap();
    t.primary.delete_series(&scalar_key()).unwrap();
    let second = t.publish().await;
    assert_eq!((second.published, second.deleted), (2, 1), "{second:?}");
    let r = t.follow().await;
    assert_eq!((r.applied, r.deleted, r.failed), (2, 1, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);

    // Deleted and registered again under the same key: generations restart, the
    // replica replaces its copy.
    t.primary.delete_series(&eth).unwrap();
    register_kline(&t.primary, "ETHUSDT");
    t.primary
        .write_kline(&eth, &bars(JAN_2024, 20_000, 5), None)
        .unwrap();
    t.publish().await;
    let r = t.follow().await;
    assert_eq!((r.applied, r.created, r.failed), (1, 1, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);

    // Superseded objects went after the (zero) grace period: what is left in the
    // bucket is exactly what the published manifests name.
    t.publish().await;
    let mut named = std::collections::BTreeSet::new();
    let bucket = Bucket::open(&format!("file://{}", t.bucket_dir.display())).unwrap();
    for s in t.primary.store.list() {
        let (m, _pin) = s.published().unwrap();
        for f in live_files(&m) {
            named.insert(t.object_file(&bucket.data(&s.meta.key, &f)));
        }
    }
    let on_disk: std::collections::BTreeSet<PathBuf> = walk(&t.bucket_dir.join("data"));
    assert_eq!(on_disk, named, "the bucket holds the live objects only");

    // A restarted replica serves the same (its manifests and files are its own).
    drop(t.follower);
    let reopened = reopen(t.replica, "file:///unused");
    assert_same(&t.primary, &reopened);
}

/// Closes the replica engine (the last handle on it) and opens its root again, following
/// `url`.
fn reopen(replica: Arc<Engine>, url: &str) -> Arc<Engine> {
    let root = replica.config.storage.root.clone();
    let Ok(replica) = Arc::try_unwrap(replica) else {
        panic!("the replica engine is still shared")
    };
    drop(replica);
    engine_with(&root, |c| c.replica.follow_from = url.to_string())
}

fn walk(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.insert(p);
        }
    }
    out
}

/// The replica's lag is measured from the primary's publication passes: a follower
/// that applied a complete pass whole reports that pass's start (the primary's clock)
/// as `published_ts`; nothing before a complete pass; a failed apply does not move it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_is_measured_from_the_primarys_last_complete_pass() {
    let t = pair();
    load(&t.primary);
    let r = t.follow().await;
    assert_eq!(r.published_ms, None, "nothing published: no pass record");
    let before = fastk::query::now_ms();
    t.publish().await;
    let after = fastk::query::now_ms();
    let r = t.follow().await;
    let started = r.published_ms.expect("a complete pass left its record");
    assert!(
        (before..=after).contains(&started),
        "{before} <= {started} <= {after}"
    );
    assert_eq!(r.failed, 0);
    t.replica.note_replica_published(started);
    let h = t.replica.health().replica.unwrap();
    assert_eq!(h.published_ts, Some(started));
    assert!(h.lag_s.unwrap() <= 5, "{h:?}");
    // The metric reports it.
    let metrics = t.replica.metrics_text();
    assert!(
        metrics.contains("fastk_replica_lag_seconds "),
        "{}",
        &metrics[..metrics.len().min(400)]
    );
    // A later pass moves it forward; an older record never moves it back.
    tokio::time::sleep(Duration::from_millis(5)).await;
    t.publish().await;
    let r = t.follow().await;
    let second = r.published_ms.unwrap();
    assert!(second > started);
    t.replica.note_replica_published(second);
    t.replica.note_replica_published(started);
    assert_eq!(
        t.replica.health().replica.unwrap().published_ts,
        Some(second)
    );
    // The record is the pass object, written after the manifests of its pass.
    let pass = t.bucket_dir.join(fastk::replica::PASS);
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(pass).unwrap()).unwrap();
    assert_eq!(body["started_ms"].as_i64(), Some(second));
    // A damaged record costs the measurement, not the poll.
    std::fs::write(t.bucket_dir.join(fastk::replica::PASS), b"not json").unwrap();
    let r = t.follow().await;
    assert_eq!((r.marker, r.failed, r.published_ms), (true, 0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_publication_or_a_corrupt_object_keeps_the_old_state() {
    let t = pair();
    load(&t.primary);
    t.publish().await;
    t.follow().await;
    assert_same(&t.primary, &t.replica);
    let btc = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    let served = rows(&t.replica, &btc);
    let series = t.primary.series(&btc).unwrap();
    let (old, _) = series.published().unwrap();

    // New rows: a rewrite of March and a new month.
    t.primary
        .write_kline(&btc, &bars(JAN_2024 + 70 * DAY, 40 * 1440, 8), None)
        .unwrap();
    let (new, _pin) = series.published().unwrap();
    let bucket = Bucket::open(&format!("file://{}", t.bucket_dir.display())).unwrap();
    // Files of new names only: a pack of the old state that still holds live months
    // is listed again (with fewer entries) but not fetched again.
    let fresh: Vec<_> = live_files(&new)
        .into_iter()
        .filter(|f| !live_files(&old).iter().any(|o| o.name == f.name))
        .collect();
    assert!(!fresh.is_empty());

    // 1. Interrupted: the data objects are in the bucket, the manifest is not.
    for f in &fresh {
        let to = t.object_file(&bucket.data(&btc, f));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(series.dir().join(&f.name), &to).unwrap();
    }
    let r = t.follow().await;
    assert_eq!((r.applied, r.failed), (0, 0), "{r:?}");
    assert_eq!(rows(&t.replica, &btc), served);

    // 2. The manifest published, one of its new data objects corrupt: refused, the
    //    old state still served, and again on the next poll.
    t.publish().await;
    let victim = t.object_file(&bucket.data(&btc, &fresh[0]));
    let mut bytes = std::fs::read(&victim).unwrap();
    // A byte under a checksum whatever the object is: a chunk's header or a pack's
    // index (the padding between a pack's parts and after its last is not data).
    let at = 16;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    for _ in 0..2 {
        let r = t.follow().await;
        assert_eq!((r.applied, r.failed), (0, 1), "{r:?}");
        assert_eq!(rows(&t.replica, &btc), served);
        assert_eq!(t.replica.series(&btc).unwrap().version(), old.version);
    }

    // 3. A corrupt manifest object: refused too.
    bytes[at] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let manifest = t.object_file(&bucket.manifest(&btc));
    let good = std::fs::read(&manifest).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 1;
    std::fs::write(&manifest, &bad).unwrap();
    let r = t.follow().await;
    assert_eq!((r.applied, r.failed), (0, 1), "{r:?}");
    assert_eq!(rows(&t.replica, &btc), served);

    // Repaired: caught up exactly.
    std::fs::write(&manifest, &good).unwrap();
    let r = t.follow().await;
    assert_eq!((r.applied, r.failed), (1, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_refuses_every_change() {
    let t = pair();
    load(&t.primary);
    t.publish().await;
    t.follow().await;
    let r = &t.replica;
    let btc = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    let refused = |e: fastk::error::Error| {
        assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e:?}");
        assert!(e.message.contains("read-only replica"), "{}", e.message);
    };
    refused(
        r.write_kline(&btc, &bars(JAN_2024, 1, 0), None)
            .unwrap_err(),
    );
    refused(
        r.write(&scalar_key(), scalar_batch(JAN_2024, 1), None)
            .unwrap_err(),
    );
    refused(r.delete_range(&btc, None, None, None).unwrap_err());
    refused(r.delete_series(&btc).unwrap_err());
    refused(
        r.register_kline(&kline_registration("NEWUSDT", "1m"))
            .unwrap_err(),
    );
    for action in [
        AdminAction::Compact,
        AdminAction::Repair,
        AdminAction::RebuildManifest,
    ] {
        refused(r.admin(action, &AdminRequest::default()).unwrap_err());
    }
    assert!(
        r.admin(AdminAction::Validate, &AdminRequest::default())
            .is_ok()
    );
    assert_eq!(r.enforce_retention(i64::MAX / 2).series, 0);
    assert_same(&t.primary, r);
}

/// Publish and catch-up times on this machine (docs/scale-out.md quotes them):
/// `cargo test --test replica measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_publish_and_catch_up() {
    let series: i64 = std::env::var("FASTK_REPLICA_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let t = pair();
    let month = 31 * 1440;
    for i in 0..series {
        let k = register_kline(&t.primary, &format!("S{i:04}USDT"));
        t.primary
            .write_kline(&k, &bars(JAN_2024, month, i), None)
            .unwrap();
    }
    let compressed = t.primary.compress_sealed(fastk::query::now_ms());
    let bytes = t.primary.store.bytes();
    let clock = std::time::Instant::now();
    let p = t.publish().await;
    let publish = clock.elapsed();
    let clock = std::time::Instant::now();
    let f = t.follow().await;
    let follow = clock.elapsed();
    let clock = std::time::Instant::now();
    let idle_p = t.publish().await;
    let idle_publish = clock.elapsed();
    let clock = std::time::Instant::now();
    let idle_f = t.follow().await;
    let idle_follow = clock.elapsed();
    // One more day on every series (a delta each), published and followed.
    for i in 0..series {
        let k = SeriesKey::kline(&format!("S{i:04}USDT"), "1m").unwrap();
        t.primary
            .write_kline(&k, &bars(JAN_2024 + 31 * DAY, 1440, i), None)
            .unwrap();
    }
    // Small writes go through the log: published once folded.
    t.primary.store.fold_all();
    let clock = std::time::Instant::now();
    let dp = t.publish().await;
    let delta_publish = clock.elapsed();
    let clock = std::time::Instant::now();
    let df = t.follow().await;
    let delta_follow = clock.elapsed();
    assert_eq!(f.applied as i64, series);
    assert_eq!(df.applied as i64, series);
    assert_same(&t.primary, &t.replica);
    println!(
        "series={series} rows/series={month} compressed_months={compressed} stored_bytes={bytes}\n\
         full publish: {publish:?} ({} objects, {} bytes)\n\
         full catch-up: {follow:?} ({} objects, {} bytes)\n\
         idle publish: {idle_publish:?} (unchanged {}); idle poll: {idle_follow:?} (listed {})\n\
         one-day delta publish: {delta_publish:?} ({} objects, {} bytes); catch-up: {delta_follow:?} ({} objects, {} bytes)",
        p.objects_put,
        p.bytes_put,
        f.objects,
        f.bytes,
        idle_p.unchanged,
        idle_f.listed,
        dp.objects_put,
        dp.bytes_put,
        df.objects,
        df.bytes
    );
}

/// `/health` of a replicating node: no section before the first pass; a completed
/// pass is "ok"; series that failed in a pass, or three failed passes in a row, make
/// it degraded and say why; the next completed pass clears both.
#[test]
fn health_reports_replication_passes_and_degrades_on_failures() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    assert!(e.health().replica.is_none());
    let t0 = 1_800_000_000_000;
    e.note_replica_pass("follower", t0, Ok((0, None)));
    let h = e.health();
    let r = h.replica.clone().unwrap();
    assert_eq!(
        (r.role.as_str(), r.passes, r.last_ok_ts),
        ("follower", 1, Some(t0))
    );
    assert_eq!(h.status, "ok", "{:?}", h.details);

    e.note_replica_pass(
        "follower",
        t0 + 1000,
        Ok((
            2,
            Some("kline BTC/1m: the manifest object does not decode".into()),
        )),
    );
    let h = e.health();
    assert_eq!(h.status, "degraded");
    assert_eq!(
        h.replica.as_ref().and_then(|r| r.last_error.as_deref()),
        Some("kline BTC/1m: the manifest object does not decode"),
        "the failed series' reason is shown"
    );
    assert!(
        h.details.iter().any(|d| d.contains("2 series failed")),
        "{:?}",
        h.details
    );

    for n in 1..=3 {
        e.note_replica_pass(
            "follower",
            t0 + 2000,
            Err("listing: connection refused".into()),
        );
        let h = e.health();
        let r = h.replica.clone().unwrap();
        assert_eq!(r.failed_passes, n);
        assert_eq!(
            r.last_ok_ts,
            Some(t0 + 1000),
            "a failed pass keeps the last success"
        );
        assert_eq!(
            h.details.iter().any(|d| d.contains("connection refused")),
            n >= fastk::query::REPLICA_FAILED_PASSES_DEGRADED,
            "{n}: {:?}",
            h.details
        );
    }
    e.note_replica_pass("follower", t0 + 3000, Ok((0, None)));
    let h = e.health();
    let r = h.replica.unwrap();
    assert_eq!((r.failed_passes, r.last_error, r.passes), (0, None, 6));
    assert_eq!(h.status, "ok", "{:?}", h.details);
}

/// Every column of every row of `key` as snapshot `name` holds it.
fn snapshot_rows(e: &Engine, name: &str, key: &SeriesKey) -> Vec<Vec<i64>> {
    let at = fastk::query::snapshots::At::Snapshot(name.to_string());
    let view = e.series_at(key, &at).unwrap();
    let mut cols = vec![Vec::new(); key.kind().ncols()];
    for s in view.snapshot().range(TsRange::all()) {
        let s = s.unwrap();
        for (i, c) in cols.iter_mut().enumerate() {
            c.extend_from_slice(s.col(i));
        }
    }
    cols
}

/// The replica holds the primary's snapshots, each read exactly as on the primary.
fn assert_same_snapshots(p: &Engine, r: &Engine) {
    let (mine, theirs) = (p.list_snapshots(), r.list_snapshots());
    assert_eq!(mine, theirs, "the same snapshots, sizes and creation times");
    for s in &mine {
        let detail = p.snapshot_detail(&s.name).unwrap();
        assert_eq!(detail, r.snapshot_detail(&s.name).unwrap());
        for pinned in &detail.series {
            let key = match pinned.kind.as_str() {
                "kline" => SeriesKey::kline(&pinned.symbol, &pinned.timeframe).unwrap(),
                _ => SeriesKey::scalar(
                    &pinned.symbol,
                    &pinned.timeframe,
                    pinned.category.as_deref().unwrap(),
                    pinned.name.as_deref().unwrap(),
                )
                .unwrap(),
            };
            let rows = snapshot_rows(p, &s.name, &key);
            assert_eq!(rows[0].len() as u64, pinned.rows);
            assert_eq!(
                rows,
                snapshot_rows(r, &s.name, &key),
                "{} of {}",
                key,
                s.name
            );
        }
    }
}

/// Every data file in the series directories under `root`, relative to it.
fn data_files(root: &Path) -> std::collections::BTreeSet<PathBuf> {
    walk(&root.join("series"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "MANIFEST"))
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_named_snapshots_through_rewrites_restarts_and_deletes() {
    use fastk::query::snapshots::SnapshotCreate;
    let t = pair();
    load(&t.primary);
    // A series of this month: its chunk files are raw and unpacked, one per month.
    let sol = register_kline(&t.primary, "SOLUSDT");
    let recent = (fastk::query::now_ms() - 5 * 3_600_000) / MINUTE * MINUTE;
    t.primary
        .write_kline(&sol, &bars(recent, 200, 2), None)
        .unwrap();
    t.primary.store.fold_all();
    t.publish().await;
    t.follow().await;
    let btc = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    let eth = SeriesKey::kline("ETHUSDT", "1m").unwrap();
    let create = |e: &Engine, name: &str| {
        e.create_snapshot(&SnapshotCreate {
            name: name.into(),
            series: None,
            note: Some(format!("note of {name}")),
        })
    };
    // A replica makes none of its own.
    let refused = create(&t.replica, "mine").unwrap_err();
    assert_eq!(refused.kind, ErrorKind::PreconditionFailed);

    // "before": rows only in the log travel inside the snapshot file.
    t.primary
        .write_kline(&eth, &bars(JAN_2024 + 80 * DAY, 30, 9), None)
        .unwrap();
    create(&t.primary, "before").unwrap();
    // Then every file "before" reads on BTCUSDT is rewritten, the scalar loses a
    // range, and everything is folded and compacted.
    t.primary
        .write_kline(&btc, &bars(JAN_2024, 90 * 1440, 4), None)
        .unwrap();
    t.primary
        .write_kline(&sol, &bars(recent, 200, 5), None)
        .unwrap();
    t.primary
        .delete_range(
            &scalar_key(),
            Some(JAN_2024 + DAY),
            Some(JAN_2024 + 2 * DAY),
            None,
        )
        .unwrap();
    t.primary.store.fold_all();
    t.primary
        .admin(AdminAction::Compact, &AdminRequest::default())
        .unwrap();
    let p = t.publish().await;
    assert_eq!(p.snapshots_published, 1, "{p:?}");
    // A reader holds the replica's current BTCUSDT state across the poll that
    // supersedes it: the snapshot shares that reader's handles (no second handle
    // unlinks a file under it when the reader lets go).
    let reader = [&btc, &sol].map(|k| t.replica.store.get(k).unwrap().snapshot());
    assert!(
        reader[1].chunks().any(|c| !c.entry.pack.is_packed()),
        "SOLUSDT has a chunk file of its own"
    );
    let r = t.follow().await;
    assert_eq!((r.snapshots_applied, r.failed), (1, 0), "{r:?}");
    drop(reader);
    assert_same(&t.primary, &t.replica);
    assert_same_snapshots(&t.primary, &t.replica);
    assert_ne!(
        snapshot_rows(&t.replica, "before", &btc),
        rows(&t.replica, &btc).0,
        "the snapshot reads the rewritten rows' predecessors"
    );
    assert_ne!(
        snapshot_rows(&t.replica, "before", &sol),
        rows(&t.replica, &sol).0
    );
    // Nothing changed: nothing is put or fetched again.
    let again = t.publish().await;
    assert_eq!((again.snapshots_published, again.objects_put), (0, 0));
    let r = t.follow().await;
    assert_eq!((r.snapshots_applied, r.objects), (0, 0), "{r:?}");

    // A second snapshot, a name deleted and made again, and the bucket's garbage.
    create(&t.primary, "after").unwrap();
    t.primary.delete_snapshot("before").unwrap();
    t.primary
        .write_kline(&btc, &bars(JAN_2024 + 20 * DAY, 60, 7), None)
        .unwrap();
    t.primary.store.fold_all();
    create(&t.primary, "before").unwrap();
    t.publish().await;
    let r = t.follow().await;
    assert_eq!((r.snapshots_applied, r.failed), (2, 0), "{r:?}");
    assert_same_snapshots(&t.primary, &t.replica);

    // A restarted replica serves the same snapshots; its open finds nothing to report.
    let root = t.replica.config.storage.root.clone();
    let Pair {
        _tmp,
        bucket_dir,
        primary,
        replica,
        publisher,
        follower,
    } = t;
    drop(follower);
    let url = format!("file://{}", bucket_dir.display());
    let replica = reopen(replica, &url);
    assert!(
        replica
            .store
            .recovery()
            .iter()
            .all(|n| n.unknown_files.is_empty()),
        "{:?}",
        replica.store.recovery()
    );
    assert_same_snapshots(&primary, &replica);
    let follower = Follower::new(Bucket::open(&url).unwrap(), 4);
    let r = follower.poll_once(&replica).await.unwrap();
    assert_eq!(
        (r.snapshots_applied, r.objects, r.failed),
        (0, 0, 0),
        "{r:?}"
    );

    // Deleted on the primary: gone from the replica, and from both disks and the
    // bucket the files only they read.
    primary.delete_snapshot("before").unwrap();
    primary.delete_snapshot("after").unwrap();
    let p = publisher.publish_once(&primary).await.unwrap();
    assert_eq!(p.snapshots_deleted, 2, "{p:?}");
    publisher.publish_once(&primary).await.unwrap();
    let r = follower.poll_once(&replica).await.unwrap();
    assert_eq!((r.snapshots_deleted, r.failed), (2, 0), "{r:?}");
    assert!(replica.list_snapshots().is_empty());
    assert_eq!(
        data_files(&root),
        data_files(&primary.config.storage.root),
        "the replica keeps the files its series serve, as the primary does"
    );
    let bucket = Bucket::open(&url).unwrap();
    let mut named = std::collections::BTreeSet::new();
    for s in primary.store.list() {
        let (m, _pin) = s.published().unwrap();
        for f in live_files(&m) {
            named.insert(Path::new("/").join(bucket.data(&s.meta.key, &f).as_ref()));
        }
    }
    assert_eq!(
        walk(&bucket_dir.join("data")),
        named,
        "the bucket holds live objects only"
    );
    assert!(
        !bucket_dir.join("snapshots").exists() || walk(&bucket_dir.join("snapshots")).is_empty()
    );
}

/// A replica that stops after staging a snapshot's files and before adopting it (as a
/// crash would) opens clean: the staged files are temp files, swept by the open, and
/// none is reported unknown; the next poll fetches and adopts the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_between_staging_and_adopting_a_snapshot_opens_clean() {
    use fastk::query::snapshots::SnapshotCreate;
    use fastk::storage::follow_snapshot::stage_fetched;
    let t = pair();
    load(&t.primary);
    let btc = SeriesKey::kline("BTCUSDT", "1m").unwrap();
    t.primary
        .create_snapshot(&SnapshotCreate {
            name: "s".into(),
            series: None,
            note: None,
        })
        .unwrap();
    t.primary
        .write_kline(&btc, &bars(JAN_2024, 90 * 1440, 8), None)
        .unwrap();
    t.primary.store.fold_all();
    t.publish().await;
    // The series catch up while the snapshot object is out of sight.
    let snaps = t.bucket_dir.join("snapshots");
    let hidden = t.bucket_dir.join("hidden");
    std::fs::rename(&snaps, &hidden).unwrap();
    let r = t.follow().await;
    assert_eq!(
        (r.applied, r.snapshots_applied, r.failed),
        (3, 0, 0),
        "{r:?}"
    );
    std::fs::rename(&hidden, &snaps).unwrap();

    let object = std::fs::read(snaps.join("s.snap")).unwrap();
    let inc = t.replica.store.incoming_snapshot(&object).unwrap().unwrap();
    let bucket = Bucket::open(&format!("file://{}", t.bucket_dir.display())).unwrap();
    let mut staged = 0;
    for n in &inc.needs {
        for f in &n.files {
            let body = std::fs::read(t.object_file(&bucket.data(&n.key, f))).unwrap();
            stage_fetched(&n.meta, &n.dir, f, &body).unwrap();
            staged += 1;
        }
    }
    assert!(
        staged > 0,
        "the snapshot reads files the replica's series left"
    );
    drop(inc);
    let Pair {
        _tmp,
        bucket_dir,
        primary,
        replica,
        ..
    } = t;
    let url = format!("file://{}", bucket_dir.display());
    let replica = reopen(replica, &url);
    let notes = replica.store.recovery();
    assert!(
        notes.iter().all(|n| n.unknown_files.is_empty()),
        "{notes:?}"
    );
    assert_eq!(
        notes.iter().map(|n| n.temp_files_removed).sum::<usize>(),
        staged,
        "{notes:?}"
    );
    assert!(replica.list_snapshots().is_empty());
    let follower = Follower::new(Bucket::open(&url).unwrap(), 4);
    let r = follower.poll_once(&replica).await.unwrap();
    assert_eq!((r.snapshots_applied, r.failed), (1, 0), "{r:?}");
    assert_same_snapshots(&primary, &replica);
}

/// Each tick series of `e` holds exactly its model's rows, every column.
fn assert_models(
    e: &Engine,
    metas: &[fastk::record::SeriesMeta],
    models: &[common::ticks::Model],
    when: &str,
) {
    for (meta, model) in metas.iter().zip(models) {
        let want = common::ticks::model_rows(model, TsRange::all());
        let want: Vec<Vec<i64>> = (0..6)
            .map(|c| want.iter().map(|r| r[c]).collect())
            .collect();
        assert_eq!(rows(e, &meta.key).0, want, "{} {when}", meta.key);
    }
}

/// Trades (day partitions) and quotes (hour partitions) replicate like bars: nanosecond
/// keys with bursts in one nanosecond, assigned and explicit `seq`, sealed days written
/// compressed, a replacement by `seq` inside a sealed day, a new day, a range delete
/// and a deleted series are all caught up exactly, and the replica's SQL tables answer
/// the rows of the contract's model of the writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_trade_and_quote_series() {
    use common::ticks::{DAY_NS, DAY0, HOUR_NS, Model, Row, apply_model, batch, metas};
    use fastk::query::tick::RegisterTick;

    let t = pair();
    let metas = metas();
    let mut models: Vec<Model> = vec![Model::new(), Model::new()];
    for (series, meta) in metas.iter().enumerate() {
        t.primary
            .register_tick(
                meta.key.kind(),
                &RegisterTick {
                    symbol: "BTCUSDT".into(),
                    price_scale: 100,
                    size_scale: 1000,
                    partition: Some(if series == 0 { "day" } else { "hour" }.into()),
                    retention_ms: None,
                },
            )
            .unwrap();
    }
    let write = |models: &mut Vec<Model>, series: usize, rows: &[Row]| {
        t.primary
            .write(&metas[series].key, batch(series, rows), None)
            .unwrap();
        apply_model(series, &mut models[series], rows).unwrap();
    };
    // Three days of trades, every fifth instant a burst of four in one nanosecond;
    // quotes every 7 s over the first day's first 5 hours.
    let trades: Vec<Row> = (0..3 * 300)
        .flat_map(|j: i64| {
            let ts = DAY0 + (j / 300) * DAY_NS + (j % 300) * 97_000_000_013;
            let n = if j % 5 == 0 { 4 } else { 1 };
            (0..n).map(move |k| (ts, None, j * 10 + k))
        })
        .collect();
    write(&mut models, 0, &trades);
    let quotes: Vec<Row> = (0..5 * 3600 / 7)
        .map(|j: i64| (DAY0 + j * 7_000_000_000, None, j))
        .collect();
    write(&mut models, 1, &quotes);
    // Small writes wait in the log; replicas ship what is folded.
    t.primary.store.fold_all();
    let first = t.publish().await;
    assert_eq!(first.published, 2, "{first:?}");
    let r = t.follow().await;
    assert_eq!((r.applied, r.created, r.failed), (2, 2, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);
    assert_models(&t.replica, &metas, &models, "after the first round");

    // A venue-numbered retry replaces a trade of the first (sealed) day, a later day
    // appends, and an hour of quotes loses a range.
    write(&mut models, 0, &[(DAY0, Some(2), 424_242)]);
    let later: Vec<Row> = (0..50)
        .map(|j| (DAY0 + 5 * DAY_NS + j * 1_000, None, j))
        .collect();
    write(&mut models, 0, &later);
    let (lo, hi) = (DAY0 + HOUR_NS + 1, DAY0 + 2 * HOUR_NS + 7_000_000_000);
    t.primary
        .delete_range(&metas[1].key, Some(lo), Some(hi), None)
        .unwrap();
    models[1].retain(|&(ts, _), _| ts < lo || ts > hi);
    // Small writes wait in the log; replicas ship what is folded.
    t.primary.store.fold_all();
    let second = t.publish().await;
    assert_eq!(second.published, 2, "{second:?}");
    let r = t.follow().await;
    assert_eq!((r.applied, r.failed), (2, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);
    assert_models(&t.replica, &metas, &models, "after the second round");
    let count = |table: &str| {
        let replica = t.replica.clone();
        let q = format!("SELECT count(*) FROM {table}");
        async move {
            let a = fastk::query::sql::collect(&replica, &q, Vec::new(), None)
                .await
                .unwrap();
            use arrow_array::cast::AsArray;
            a.batches[0]
                .column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(0)
        }
    };
    assert_eq!(count("trade_raw").await, models[0].len() as i64);
    assert_eq!(count("quote_raw").await, models[1].len() as i64);

    // The quote series deleted: the replica drops it, the trades stay.
    t.primary.delete_series(&metas[1].key).unwrap();
    let third = t.publish().await;
    assert_eq!(third.deleted, 1, "{third:?}");
    let r = t.follow().await;
    assert_eq!((r.deleted, r.failed), (1, 0), "{r:?}");
    assert_same(&t.primary, &t.replica);
    assert!(t.replica.store.get(&metas[1].key).is_err());
    assert_eq!(count("trade_raw").await, models[0].len() as i64);
}

//! Pack files: a series of coarse sealed months is gathered into few files by the
//! sealed-month pass; reads (range, latest, as-of, predicates through the sidecars)
//! are the same before and after packing and after a reopen; a later pass adding
//! months writes a new pack and the old one goes; writes, deletes and retention into
//! packed months; a deep validation is clean; a damaged pack is an error, not a panic;
//! admin's rebuild-manifest finds the packed chunks from the pack's own index.

use std::path::Path;
use std::sync::Arc;

mod common;

use common::{
    HOUR, engine_with, first_read_error, kline_meta, scalar_registration, snapshot_cols,
    store_opts, validate_deep,
};
use fastk::admin::AdminAction;
use fastk::query::Engine;
use fastk::query::types::{AdminRequest, Predicate, QueryRequest, Strategy};
use fastk::record::{SeriesKey, SeriesMeta, TsRange, ValueType};
use fastk::storage::format::FLAG_COMPRESSED;
use fastk::storage::{Store, StoreOptions, WriteBatch};

/// 2022-01-01T00:00:00Z.
const JAN_2022: i64 = 1_640_995_200_000;

/// Every month sealed; writes stay raw for the pass to compress and pack.
fn opts() -> StoreOptions {
    store_opts(|o| {
        o.compress_after_ms = Some(0);
        o.compress_on_write = false;
    })
}

fn kline() -> SeriesMeta {
    kline_meta("BTCUSDT", "1h")
}

/// `hours` 1h bars from `from`: a deterministic walk.
fn klines(from: i64, hours: i64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(6, hours as usize);
    for i in 0..hours {
        let t = from + i * HOUR;
        let open = 4_000_000 + (t / HOUR) % 977;
        let close = open + (t / HOUR) % 13 - 6;
        let row = [
            t,
            open,
            open.max(close) + 3,
            open.min(close) - 2,
            close,
            1 + i % 71,
        ];
        for (c, v) in row.into_iter().enumerate() {
            b.cols[c].push(v);
        }
    }
    b
}

/// Range, sub-range, latest-3 and an as-of of a series, as plain values.
type Reads = (Vec<Vec<i64>>, Vec<Vec<i64>>, Vec<i64>, Vec<Vec<i64>>);

fn reads(store: &Store, key: &SeriesKey) -> Reads {
    let snap = store.get(key).unwrap().snapshot();
    let all = snapshot_cols(&snap, TsRange::all());
    let part = snapshot_cols(
        &snap,
        TsRange::new(Some(JAN_2022 + 1000 * HOUR), Some(JAN_2022 + 9000 * HOUR)),
    );
    let latest = snap
        .latest(TsRange::all(), 3)
        .unwrap()
        .iter()
        .flat_map(|s| s.ts().to_vec())
        .collect();
    let at = snap
        .at(JAN_2022 + 4321 * HOUR)
        .unwrap()
        .map(|s| (0..key.kind().ncols()).map(|c| s.col(c).to_vec()).collect());
    (all, part, latest, at.unwrap_or_default())
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn two_years_of_hourly_bars_pack_into_one_file_and_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    // Two years of 1h bars, one write per month (24 chunk files).
    for m in 0..24 {
        let from = JAN_2022 + m * 730 * HOUR;
        k.write(klines(from, 730), None).unwrap();
    }
    let series_dir = k.dir().to_path_buf();
    let before = reads(&store, &kline().key);
    assert!(files_in(&series_dir).len() > 24);
    let version = k.version();

    // The compression pass packs the months it compresses in the same commit, cut
    // where the pack pass would cut them: that pass finds nothing to do.
    let months = k.compress_sealed(i64::MAX / 2).unwrap();
    assert_eq!(months.len(), 24, "{months:?}");
    assert!(k.pack_sealed(i64::MAX / 2).unwrap().is_empty());
    assert_eq!(k.version(), version, "packing keeps the version");
    let files = files_in(&series_dir);
    assert_eq!(files.len(), 2, "MANIFEST and one pack: {files:?}");
    assert!(files.iter().any(|f| f.ends_with(".pack")), "{files:?}");
    let snap = k.snapshot();
    assert!(
        snap.chunks()
            .all(|c| c.is_packed() && c.entry.flags & FLAG_COMPRESSED != 0)
    );
    drop(snap);
    assert_eq!(reads(&store, &kline().key), before);
    // A second pass has nothing to do.
    assert!(k.pack_sealed(i64::MAX / 2).unwrap().is_empty());

    // Reopen: the same rows, the same files.
    drop(k);
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(
        store.recovery().iter().all(|n| n.is_quiet()),
        "{:?}",
        store.recovery()
    );
    assert_eq!(reads(&store, &kline().key), before);
    assert_eq!(files_in(&series_dir), files);
}

#[test]
fn a_later_month_rewrites_the_pack_and_the_old_one_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(JAN_2022, 3 * 730), None).unwrap();
    k.compress_sealed(i64::MAX / 2).unwrap();
    k.pack_sealed(i64::MAX / 2).unwrap();
    let first: Vec<String> = files_in(k.dir())
        .into_iter()
        .filter(|f| f.ends_with(".pack"))
        .collect();
    assert_eq!(first.len(), 1);

    // A new month, and a write into a packed month (a raw chunk after the packed one).
    k.write(klines(JAN_2022 + 3 * 730 * HOUR, 730), None)
        .unwrap();
    let mut fix = klines(JAN_2022 + 5 * HOUR, 1);
    fix.cols[4][0] += 1;
    fix.cols[2][0] += 1;
    k.write(fix, None).unwrap();
    let want = reads(&store, &kline().key);
    k.compress_sealed(i64::MAX / 2).unwrap();
    k.pack_sealed(i64::MAX / 2).unwrap();
    let files = files_in(k.dir());
    let packs: Vec<&String> = files.iter().filter(|f| f.ends_with(".pack")).collect();
    assert_eq!(packs.len(), 1, "{files:?}");
    assert_ne!(packs[0], &first[0], "copy-on-write: a new pack");
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(reads(&store, &kline().key), want);

    // A range delete of a whole packed month and a cut of another.
    k.delete_range(
        TsRange::new(Some(JAN_2022 + 700 * HOUR), Some(JAN_2022 + 2000 * HOUR)),
        None,
    )
    .unwrap();
    let want = reads(&store, &kline().key);
    assert_eq!(
        want.0[0]
            .iter()
            .filter(|&&t| (JAN_2022 + 700 * HOUR..=JAN_2022 + 2000 * HOUR).contains(&t))
            .count(),
        0
    );
    k.compress_sealed(i64::MAX / 2).unwrap();
    k.pack_sealed(i64::MAX / 2).unwrap();
    assert_eq!(reads(&store, &kline().key), want);
    drop(k);
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(reads(&store, &kline().key), want);
    let k = store.get(&kline().key).unwrap();
    assert!(files_in(k.dir()).len() <= 3, "{:?}", files_in(k.dir()));
}

#[test]
fn a_small_target_makes_several_packs_and_zero_turns_packing_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            pack_target_bytes: 4 << 10,
            ..opts()
        },
    )
    .unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(JAN_2022, 24 * 730), None).unwrap();
    let want = reads(&store, &kline().key);
    k.compress_sealed(i64::MAX / 2).unwrap();
    k.pack_sealed(i64::MAX / 2).unwrap();
    let files = files_in(k.dir());
    let packs = files.iter().filter(|f| f.ends_with(".pack")).count();
    assert!(packs >= 2, "{files:?}");
    for f in files.iter().filter(|f| f.ends_with(".pack")) {
        let len = std::fs::metadata(k.dir().join(f)).unwrap().len();
        assert!(len <= 4 << 10, "{f}: {len} bytes");
    }
    assert_eq!(reads(&store, &kline().key), want);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            pack_target_bytes: 0,
            ..opts()
        },
    )
    .unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(JAN_2022, 3 * 730), None).unwrap();
    k.compress_sealed(i64::MAX / 2).unwrap();
    assert!(k.pack_sealed(i64::MAX / 2).unwrap().is_empty());
    assert!(files_in(k.dir()).iter().all(|f| !f.ends_with(".pack")));
}

fn engine(root: &Path) -> Arc<Engine> {
    engine_with(root, |c| {
        c.storage.compress_after_s = 0;
        c.storage.compress_on_write = false;
        c.storage.zonemap_block_rows = 64;
    })
}

/// Registers [`scalar_key`], an f64 series.
fn register_scalar(e: &Engine) {
    e.register_scalar(&scalar_registration(
        "S",
        "1h",
        "signal",
        "x",
        Some(ValueType::F64),
    ))
    .unwrap();
}

fn scalar_key() -> SeriesKey {
    SeriesKey::scalar("S", "1h", "signal", "x").unwrap()
}

fn predicates(e: &Engine) -> Vec<(Vec<i64>, u64)> {
    let preds = [
        Predicate::Gt {
            value: serde_json::Number::from_f64(40.0).unwrap(),
        },
        Predicate::Eq {
            value: serde_json::Number::from_f64(7.0).unwrap(),
        },
    ];
    let mut out = Vec::new();
    for p in preds {
        for strategy in [Strategy::Scan, Strategy::Zonemap, Strategy::ValueIndex] {
            let req = QueryRequest {
                start_ts: None,
                end_ts: None,
                predicate: p.clone(),
                return_values: Some(true),
                limit: None,
                strategy: Some(strategy),
                snapshot: None,
                version: None,
                as_of_commit: None,
            };
            let r = e.query(&scalar_key(), &req, usize::MAX).unwrap();
            out.push((r.timestamps, r.stats.sidecar_fallbacks));
        }
    }
    out
}

#[test]
fn scalar_predicates_use_the_sidecars_in_the_pack_and_validate_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    register_scalar(&e);
    let n = 12 * 730;
    let mut b = WriteBatch::with_capacity(2, n);
    for i in 0..n as i64 {
        let v = if i % 11 == 0 {
            7.0
        } else {
            ((i as f64) * 0.01).sin() * 50.0
        };
        b.cols[0].push(JAN_2022 + i * HOUR);
        b.cols[1].push(v.to_bits() as i64);
    }
    e.write(&scalar_key(), b, None).unwrap();
    e.store.fold_all();
    let want = predicates(&e);
    assert!(want.iter().all(|(ts, fb)| !ts.is_empty() && *fb == 0));
    assert!(e.compress_sealed(i64::MAX / 2) > 0);
    let s = e.store.get(&scalar_key()).unwrap();
    let files = files_in(s.dir());
    assert_eq!(files.len(), 2, "MANIFEST and one pack: {files:?}");
    for c in s.snapshot().chunks() {
        assert!(c.is_packed());
        assert!(c.zonemap(ValueType::F64).is_ok());
        assert!(c.vindex(ValueType::F64).is_ok());
    }
    assert_eq!(predicates(&e), want, "same answers, no sidecar fallback");
    let inv = e.inventory();
    assert_eq!(inv.series[0].files, 1, "a pack is one file");

    let report = validate_deep(&e);
    assert!(report.clean, "{:#?}", report.findings);
    drop(s);
    drop(e);
    let e = engine(dir.path());
    assert_eq!(predicates(&e), want);

    // rebuild-manifest reads the pack's own index: the same rows come back.
    let report = e
        .admin(AdminAction::RebuildManifest, &AdminRequest::default())
        .unwrap();
    assert!(report.clean || report.findings.is_empty(), "{report:#?}");
    assert_eq!(predicates(&e), want);
    let s = e.store.get(&scalar_key()).unwrap();
    assert!(s.snapshot().chunks().all(|c| c.is_packed()));
}

#[test]
fn a_damaged_pack_is_an_error_and_deep_validate_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(JAN_2022, 4 * 730), None).unwrap();
    k.compress_sealed(i64::MAX / 2).unwrap();
    k.pack_sealed(i64::MAX / 2).unwrap();
    let c = k.snapshot().chunks().next().unwrap().clone();
    let path = c.path(fastk::storage::chunk::FileKind::Chunk);
    let at = (c.entry.pack.offset + c.entry.file_len - 3) as usize;
    drop(c);
    drop(k);
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let k = store.get(&kline().key).unwrap();
    let err = first_read_error(&k);
    assert!(
        matches!(err, fastk::storage::StorageError::Corrupted { .. }),
        "{err}"
    );
}

/// A write of many months at once (a bulk load of history) writes its raw months into
/// pack files within the target instead of three files per scalar month; the packed
/// chunks are mapped from the pack and read zero-copy, equal the rows written, answer
/// predicates through their sidecars, survive a reopen, take later writes and a
/// rewrite, and the pack goes once the sealed-month pass has superseded every month.
#[test]
fn a_bulk_write_of_many_months_is_a_few_raw_packs_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |c| {
        c.storage.zonemap_block_rows = 64;
        // About ten months of 1h scalar rows (730 rows, ~14 KiB with sidecars) per pack.
        c.storage.pack_target_bytes = 160 << 10;
        // Raw packs: sealed months would be written compressed.
        c.storage.compress_on_write = false;
    });
    register_scalar(&e);
    let n = 36 * 730 + 17;
    let mut b = WriteBatch::with_capacity(2, n);
    for i in 0..n as i64 {
        let v = match i % 11 {
            0 => 7.0,
            5 => f64::NAN,
            _ => ((i as f64) * 0.01).sin() * 50.0,
        };
        b.cols[0].push(JAN_2022 + i * HOUR);
        b.cols[1].push(v.to_bits() as i64);
    }
    let rows = b.clone();
    let r = e.write(&scalar_key(), b, None).unwrap();
    assert_eq!(r.written, n as u64);
    let s = e.store.get(&scalar_key()).unwrap();
    let files = files_in(s.dir());
    let packs: Vec<&String> = files.iter().filter(|f| f.ends_with(".pack")).collect();
    assert_eq!(
        files.len(),
        packs.len() + 1,
        "a manifest and packs only: {files:?}"
    );
    assert!((4..=6).contains(&packs.len()), "{files:?}");
    for p in &packs {
        let len = std::fs::metadata(s.dir().join(p)).unwrap().len();
        assert!(len <= 160 << 10, "{p}: {len} bytes over the target");
    }
    let snap = s.snapshot();
    assert_eq!(snap.chunks().count(), 36, "one chunk per month");
    for c in snap.chunks() {
        assert!(c.is_packed());
        let m = c.map().unwrap();
        assert!(!m.header.is_compressed());
        assert!(
            !m.file.is_memory(),
            "a raw packed chunk is a mapping, not a copy"
        );
        assert_eq!(m.file.len() as u64, c.entry.file_len);
    }
    drop(snap);
    let all = snapshot_cols(&s.snapshot(), TsRange::all());
    assert_eq!(
        all,
        rows.to_vecs(),
        "the packs hold exactly the rows written"
    );
    let want = predicates(&e);
    assert!(want.iter().all(|(ts, fb)| !ts.is_empty() && *fb == 0));
    let report = validate_deep(&e);
    assert!(report.clean, "{:#?}", report.findings);
    assert_eq!(e.inventory().series[0].files as usize, packs.len());

    // Reopen: the same rows and answers from the same files.
    drop(s);
    drop(e);
    let e = engine(dir.path());
    let s = e.store.get(&scalar_key()).unwrap();
    assert_eq!(snapshot_cols(&s.snapshot(), TsRange::all()), rows.to_vecs());
    assert_eq!(predicates(&e), want);
    assert_eq!(files_in(s.dir()), files);

    // A replacement inside a packed month and an append after the last: a rewritten
    // month and a delta, two months of one write, so one more (small) pack; the old
    // packs stay for their other months.
    let mut fix = WriteBatch::with_capacity(2, 2);
    for (t, v) in [
        (JAN_2022 + 40 * HOUR, 7.0f64),
        (JAN_2022 + n as i64 * HOUR, 1.5),
    ] {
        fix.cols[0].push(t);
        fix.cols[1].push(v.to_bits() as i64);
    }
    s.write(fix, None).unwrap();
    let after = snapshot_cols(&s.snapshot(), TsRange::all());
    assert_eq!(after[0].len(), n + 1);
    assert_eq!(after[1][40], 7.0f64.to_bits() as i64);
    let now = files_in(s.dir());
    assert!(packs.iter().all(|p| now.contains(p)), "{now:?}");
    assert_eq!(
        now.iter().filter(|f| f.ends_with(".pack")).count(),
        packs.len() + 1,
        "{now:?}"
    );

    // The sealed-month pass compresses and repacks every month: the raw packs go.
    assert!(e.compress_sealed(i64::MAX / 2) > 0);
    assert_eq!(snapshot_cols(&s.snapshot(), TsRange::all()), after);
    let now = files_in(s.dir());
    assert!(
        packs.iter().all(|p| !now.contains(p)),
        "superseded raw packs are unlinked: {now:?}"
    );
    let report = validate_deep(&e);
    assert!(report.clean, "{:#?}", report.findings);
}

/// With packing off, a many-month write keeps a file per month (and sidecar).
#[test]
fn a_bulk_write_with_packing_off_writes_a_file_per_month() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            pack_target_bytes: 0,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(JAN_2022, 3 * 730), None).unwrap();
    let files = files_in(k.dir());
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".chunk")).count(),
        4,
        "{files:?}"
    );
    assert!(files.iter().all(|f| !f.ends_with(".pack")));
}

/// A raw pack cut short after it was written (a bad copy, a full disk elsewhere) is an
/// error for the months past the cut, never a fault of the process: the range a
/// packed chunk maps is checked against the file's length before it is mapped (a
/// mapping past the end would raise SIGBUS when read). The months before the cut
/// still read.
#[test]
fn a_truncated_raw_pack_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(JAN_2022, 6 * 730), None).unwrap();
    let snap = k.snapshot();
    let chunks: Vec<_> = snap.chunks().cloned().collect();
    assert!(
        chunks.iter().all(|c| c.is_packed()),
        "one write of six months: a pack"
    );
    let path = chunks[0].path(fastk::storage::chunk::FileKind::Chunk);
    let last = chunks.last().unwrap();
    // Cut inside the last month's image.
    let cut = last.entry.pack.offset + last.entry.file_len / 2;
    let first_month = snapshot_cols(&snap, TsRange::new(None, Some(chunks[0].entry.last_ts)));
    drop((snap, chunks));
    drop(k);
    drop(store);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut).unwrap();
    drop(f);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let k = store.get(&kline().key).unwrap();
    let snap = k.snapshot();
    let results: Vec<_> = snap.range(TsRange::all()).collect();
    assert!(
        results.iter().any(|r| r.is_err()),
        "the cut month is an error"
    );
    let last = snap.chunks().last().unwrap().clone();
    assert!(last.map().is_err(), "mapping past the end is refused");
    let ts_cut = last.entry.first_ts;
    assert_eq!(
        snapshot_cols(&snap, TsRange::new(None, Some(ts_cut - 1)))[0].len(),
        snap.chunks()
            .filter(|c| c.entry.last_ts < ts_cut)
            .map(|c| c.entry.rows as usize)
            .sum::<usize>(),
        "the months before the cut still read"
    );
    assert_eq!(
        snapshot_cols(
            &snap,
            TsRange::new(None, Some(first_month[0][first_month[0].len() - 1]))
        ),
        first_month
    );
}

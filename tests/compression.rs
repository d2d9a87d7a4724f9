//! Compressed sealed months: rewritten as one pcodec-compressed chunk each, read back
//! bit for bit (through a decompressed image the cache bounds by bytes), with their
//! sidecars still usable, surviving a reopen and a deep validation, taking writes
//! again, and failing cleanly when a compressed body is damaged.

mod common;

use common::{
    JAN_2024, MINUTE, assert_clean, engine_with, first_read_error, kline_meta, read_cols,
    scalar_meta, store_opts,
};
use fastk::record::{MonthPartition, SeriesMeta, TsRange, ValueType};
use fastk::storage::chunk::FileKind;
use fastk::storage::format::FLAG_COMPRESSED;
use fastk::storage::{StorageError, Store, StoreOptions, WriteBatch};

/// Every month sealed at once; writes stay raw, so the tests below drive the
/// compression pass (the last test writes sealed months compressed).
fn opts() -> StoreOptions {
    store_opts(|o| {
        o.compress_after_ms = Some(0);
        o.compress_on_write = false;
    })
}

fn kline() -> SeriesMeta {
    kline_meta("BTCUSDT", "1m")
}

fn scalar() -> SeriesMeta {
    scalar_meta("BTCUSDT", "1m", "feature", "x", ValueType::F64)
}

/// Two months and a bit of 1m bars: a random walk of prices in ticks.
fn klines(n: i64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(6, n as usize);
    let mut p = 4_200_000i64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let open = p;
        let close = open + (x % 41) as i64 - 20;
        let high = open.max(close) + (x >> 8) as i64 % 7;
        let low = open.min(close) - (x >> 16) as i64 % 7;
        for (c, v) in [
            JAN_2024 + i * MINUTE,
            open,
            high,
            low,
            close,
            1000 + (x >> 24) as i64 % 5000,
        ]
        .into_iter()
        .enumerate()
        {
            b.cols[c].push(v);
        }
        p = close;
    }
    b
}

fn scalars(n: i64) -> WriteBatch {
    let v = (0..n)
        .map(|i| {
            if i % 97 == 3 {
                f64::NAN
            } else {
                (i as f64 * 0.37).sin() * 50.0
            }
            .to_bits() as i64
        })
        .collect();
    WriteBatch::from_cols(vec![(0..n).map(|i| JAN_2024 + i * MINUTE).collect(), v])
}

#[test]
fn sealed_months_compress_read_back_and_take_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    let (f, _) = store.register(scalar()).unwrap();
    let n = 70_000;
    k.write(klines(n), None).unwrap();
    f.write(scalars(n), None).unwrap();
    let raw_bytes = k.snapshot().bytes();
    let want_k = read_cols(&store, &kline().key);
    let want_f = read_cols(&store, &scalar().key);
    let version = k.version();

    let months = k.compress_sealed(i64::MAX / 2).unwrap();
    assert_eq!(months, vec!["2024-01", "2024-02"]);
    assert_eq!(f.compress_sealed(i64::MAX / 2).unwrap().len(), 2);
    assert_eq!(k.version(), version, "compression keeps the version");
    assert!(k.sealed_uncompressed(i64::MAX / 2).is_empty());
    let snap = k.snapshot();
    assert!(snap.chunks().all(|c| c.entry.flags & FLAG_COMPRESSED != 0));
    let packed = snap.bytes();
    drop(snap);
    // 48 bytes per bar raw; a random walk of ticks compresses to well under a third.
    assert!(
        packed * 3 < raw_bytes,
        "{packed} bytes compressed, {raw_bytes} raw"
    );
    assert_eq!(read_cols(&store, &kline().key), want_k);
    assert_eq!(
        read_cols(&store, &scalar().key),
        want_f,
        "f64 bits, NaN included"
    );
    // The sidecars of a compressed chunk are there and usable.
    for c in f.snapshot().chunks() {
        assert!(c.zonemap(ValueType::F64).is_ok());
        assert!(c.vindex(ValueType::F64).is_ok());
    }
    let stats = store.options().map_cache.stats();
    assert!(stats.decompressed_bytes > 0, "{stats:?}");

    // An append and a replacement into a compressed month, then compressed again.
    let mut b = WriteBatch::with_capacity(6, 2);
    for (c, v) in [JAN_2024 + 10 * MINUTE, 5, 9, 1, 6, 7]
        .into_iter()
        .enumerate()
    {
        b.cols[c].push(v);
    }
    for (c, v) in [JAN_2024 + n * MINUTE, 5, 9, 1, 6, 7]
        .into_iter()
        .enumerate()
    {
        b.cols[c].push(v);
    }
    k.write(b, None).unwrap();
    let after = read_cols(&store, &kline().key);
    assert_eq!(after[0].len(), want_k[0].len() + 1);
    assert_eq!(after[4][10], 6);
    k.compress_sealed(i64::MAX / 2).unwrap();
    assert_eq!(read_cols(&store, &kline().key), after);
    drop((k, f));
    drop(store);

    // Reopen: same rows; a deep validation is clean.
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(read_cols(&store, &kline().key), after);
    assert_eq!(read_cols(&store, &scalar().key), want_f);
    drop(store);
    let report = common::validate_deep(&engine_with(dir.path(), |_| {}));
    assert!(report.clean, "{:#?}", report.findings);
}

/// A store whose decompressed cache holds `budget` bytes, with six months of 1m bars
/// (each decompressed month about 2 MiB) compressed; and the bars as written.
fn six_compressed_months(
    dir: &std::path::Path,
    budget: usize,
) -> (Store, std::sync::Arc<fastk::storage::Series>, Vec<Vec<i64>>) {
    let store = Store::open(
        dir,
        StoreOptions {
            decompressed_cache_bytes: budget,
            ..opts()
        },
    )
    .unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(6 * 31 * 1440), None).unwrap();
    let want = read_cols(&store, &kline().key);
    k.compress_sealed(i64::MAX / 2).unwrap();
    (store, k, want)
}

#[test]
fn the_decompressed_cache_keeps_to_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 4 << 20;
    let (store, _k, want) = six_compressed_months(dir.path(), budget);
    for _ in 0..2 {
        assert_eq!(read_cols(&store, &kline().key), want);
        let st = store.options().map_cache.stats();
        assert!(st.decompressed_bytes <= budget, "{st:?}");
    }
}

/// Images that reads held past the budget at once stay cached when the reads end (the
/// cache trims when it installs an image, and a held image cannot go); the trim the
/// server runs every second brings the cache back within its budget.
#[test]
fn images_held_past_the_budget_are_trimmed_once_idle() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 4 << 20;
    let (store, k, _) = six_compressed_months(dir.path(), budget);
    let cache = &store.options().map_cache;
    cache.release_decompressed();
    let snap = k.snapshot();
    let held: Vec<_> = snap.chunks().map(|c| c.map().unwrap()).collect();
    assert!(cache.stats().decompressed_bytes > 2 * budget);
    assert_eq!(cache.trim_to_budget(), (0, 0), "held images stay");
    drop(held);
    let over = cache.stats().decompressed_bytes;
    assert!(over > budget, "idle, still cached: {over}");
    let (images, bytes) = cache.trim_to_budget();
    assert!(images >= 3 && bytes > 0, "{images} {bytes}");
    let st = cache.stats();
    assert!(st.decompressed_bytes <= budget, "{st:?}");
    assert_eq!(st.decompressed_bytes, over - bytes);
}

/// Under memory pressure the cache drops every idle image at once, and only those:
/// an image a read still holds stays, and reads decompress the rest again.
#[test]
fn a_release_under_pressure_drops_the_idle_images_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(3 * 31 * 1440), None).unwrap();
    let want = read_cols(&store, &kline().key);
    k.compress_sealed(i64::MAX / 2).unwrap();
    assert_eq!(read_cols(&store, &kline().key), want);
    let cache = &store.options().map_cache;
    let before = cache.stats();
    assert!(before.decompressed_bytes > 4 << 20, "{before:?}");
    // A read in progress holds the first month's image.
    let snap = k.snapshot();
    let held = snap.chunks().next().unwrap().map().unwrap();
    let held_bytes = held.file.len();
    let (images, bytes) = cache.release_decompressed();
    assert_eq!(bytes, before.decompressed_bytes - held_bytes);
    assert!(images >= 2, "{images}");
    let after = cache.stats();
    assert_eq!(after.decompressed_bytes, held_bytes, "{after:?}");
    assert_eq!(
        (after.released_images_total, after.released_bytes_total),
        (images as u64, bytes as u64)
    );
    let months = snap.chunks().count();
    drop((held, snap));
    assert_eq!(read_cols(&store, &kline().key), want);
    assert_eq!(
        cache.release_decompressed().0,
        months,
        "every image idle now"
    );
}

#[test]
fn a_damaged_compressed_body_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(2000), None).unwrap();
    k.compress_sealed(i64::MAX / 2).unwrap();
    let c = k.snapshot().chunks().next().unwrap().clone();
    let path = c.path(fastk::storage::chunk::FileKind::Chunk);
    let month = MonthPartition(c.entry.month).to_string();
    drop(c);
    drop(k);
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let k = store.get(&kline().key).unwrap();
    let err = first_read_error(&k);
    assert!(
        matches!(err, StorageError::Corrupted { .. }),
        "{err} ({month})"
    );
}

/// `/inventory` and the series' metadata report bytes on disk and what they would be
/// raw: equal before compression, the raw figure larger after.
#[test]
fn inventory_reports_raw_and_compressed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(dir.path(), |c| {
        c.storage.compress_after_s = 0;
        c.storage.compress_on_write = false;
    });
    let (k, _) = engine.store.register(kline()).unwrap();
    k.write(klines(50_000), None).unwrap();
    let inv = engine.inventory();
    assert_eq!(inv.total_bytes, inv.total_raw_bytes);
    assert!(engine.compress_sealed(i64::MAX / 2) >= 1);
    let inv = engine.inventory();
    assert!(
        inv.total_bytes * 3 < inv.total_raw_bytes,
        "{} vs {}",
        inv.total_bytes,
        inv.total_raw_bytes
    );
    assert_eq!(inv.series[0].raw_bytes, inv.total_raw_bytes);
    assert!(engine.metrics_text().contains("fastk_store_raw_bytes"));
}

/// An RSI(14)-like f64 series (Wilder smoothing over a random walk of prices): values
/// in 0..100 with full f64 precision, as a feature pipeline would store them.
fn rsi_like(n: usize) -> Vec<i64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut price, mut gain, mut loss) = (100.0f64, 0.0f64, 0.0f64);
    (0..n)
        .map(|_| {
            // Box-Muller: a normal step of 0.1% of the price.
            let (u, v) = (uniform().max(1e-12), uniform());
            let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            let next = price * (1.0 + 0.001 * z);
            let d = next - price;
            price = next;
            gain = (gain * 13.0 + d.max(0.0)) / 14.0;
            loss = (loss * 13.0 + (-d).max(0.0)) / 14.0;
            let rsi = if loss == 0.0 {
                100.0
            } else {
                100.0 - 100.0 / (1.0 + gain / loss)
            };
            rsi.to_bits() as i64
        })
        .collect()
}

/// Uniform i64 values in 0..1e9: the shape of the benchmarks' scalar dataset.
fn uniform_i64(n: usize) -> Vec<i64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1_000_000_000) as i64
        })
        .collect()
}

/// A sealed month of 1m scalar rows (44,640), compressed: the value index is a
/// version 2 one of exactly the layout's size (header, a fence per 64 entries plus
/// the last, a u16 position per row, checksum), about 2.1 bytes per row, and the
/// whole row (chunk, zone map and index) stays near 6 bytes for values that compress
/// like the benchmarks' uniform ones. Prints the figures (`--nocapture`).
#[test]
fn a_compressed_scalar_month_keeps_its_value_index_small() {
    let rows = 31 * 1440;
    for (name, vt, values) in [
        ("rsi-like f64", ValueType::F64, rsi_like(rows)),
        ("uniform i64 0..1e9", ValueType::I64, uniform_i64(rows)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        let meta = SeriesMeta {
            value_type: vt,
            ..scalar()
        };
        let (f, _) = store.register(meta).unwrap();
        let ts = (0..rows as i64).map(|i| JAN_2024 + i * MINUTE).collect();
        f.write(WriteBatch::from_cols(vec![ts, values]), None)
            .unwrap();
        assert_eq!(f.compress_sealed(i64::MAX / 2).unwrap(), vec!["2024-01"]);
        let snap = f.snapshot();
        let chunks: Vec<_> = snap.chunks().collect();
        assert_eq!(chunks.len(), 1);
        let e = &chunks[0].entry;
        assert!(e.flags & FLAG_COMPRESSED != 0 && e.rows == rows as u64);
        let fences = rows.div_ceil(64) + 1;
        assert_eq!(fences, 699);
        assert_eq!(e.vindex.len as usize, 64 + fences * 8 + rows * 2 + 8);
        assert_eq!(e.vindex.len, 94_944);
        let ix = chunks[0].vindex(vt).unwrap();
        assert_eq!(
            (ix.version(), ix.entries, ix.fences().len()),
            (2, rows, fences)
        );
        let per_row = |b: u64| b as f64 / rows as f64;
        let total = e.file_len + e.zonemap.len + e.vindex.len;
        eprintln!(
            "{name}: chunk {:.3} B/row, zone map {:.3}, value index {:.3}, total {:.3} \
             ({} + {} + {} bytes for {rows} rows)",
            per_row(e.file_len),
            per_row(e.zonemap.len),
            per_row(e.vindex.len),
            per_row(total),
            e.file_len,
            e.zonemap.len,
            e.vindex.len,
        );
        assert!(per_row(e.vindex.len) < 2.2);
        if vt == ValueType::I64 {
            // 30 random bits a value: pcodec's ~3.8 B plus the index, under Parquet
            // zstd's 7.2 B per row on the same distribution (docs/benchmarks.md).
            assert!(per_row(total) < 7.0, "{}", per_row(total));
        }
    }
}

/// The live chunks of `s` as (month, compressed, pack generation or 0), in order.
fn layout(s: &fastk::storage::Series) -> Vec<(i32, bool, u64)> {
    let snap = s.snapshot();
    snap.chunks()
        .map(|c| {
            let compressed = c.entry.flags & FLAG_COMPRESSED != 0;
            (c.entry.month, compressed, c.entry.pack.generation)
        })
        .collect()
}

/// A bulk load of finished months is written compressed and packed in the same pass,
/// by the direct write and by the fold of logged rows alike: every sealed month is one
/// compressed chunk, the sealed months of the write share one pack, the rows read back
/// bit for bit (and after a reopen), the compression and pack passes find nothing left
/// to do, and the store holds only the manifest and the pack. A month of the same
/// write that is not sealed yet stays raw, and `storage.compress_on_write = false`
/// writes raw as before.
#[test]
fn a_bulk_load_of_sealed_months_is_written_compressed_and_packed() {
    let jan = MonthPartition::from_ts(JAN_2024).0;
    let dir = tempfile::tempdir().unwrap();
    let on = store_opts(|o| o.compress_after_ms = Some(0));
    let store = Store::open(dir.path(), on.clone()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    let batch = klines(100_000);
    let want = batch.to_vecs();
    k.write(batch, None).unwrap();
    let got = layout(&k);
    assert_eq!(
        got.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
        vec![(jan, true), (jan + 1, true), (jan + 2, true)]
    );
    assert!(
        got[0].2 > 0 && got.iter().all(|l| l.2 == got[0].2),
        "{got:?}"
    );
    assert_eq!(read_cols(&store, &kline().key), want);
    assert!(k.compress_sealed(i64::MAX / 2).unwrap().is_empty());
    assert!(k.pack_sealed(i64::MAX / 2).unwrap().is_empty());
    let mut files: Vec<String> = std::fs::read_dir(k.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0] == "MANIFEST" && files[1].ends_with(".pack"),
        "{files:?}"
    );

    // Logged rows (a few per month, under `wal_direct_rows`) folded: each month new
    // on disk, so each is written compressed.
    let (f, _) = store.register(scalar()).unwrap();
    let mut rows = scalars(70_000);
    for c in &mut rows.cols {
        let keep: Vec<i64> = c.iter().step_by(700).copied().collect();
        *c = keep.into_iter().collect();
    }
    let want_f = rows.to_vecs();
    store.write(&f, rows, None).unwrap();
    assert!(
        f.snapshot().unfolded.is_some(),
        "the rows went through the log"
    );
    store.fold_all();
    assert!(layout(&f).iter().all(|l| l.1), "{:?}", layout(&f));
    assert_eq!(read_cols(&store, &scalar().key), want_f);
    drop((k, f));
    drop(store);
    let store = Store::open(dir.path(), on).unwrap();
    assert_eq!(read_cols(&store, &kline().key), want);
    assert_eq!(read_cols(&store, &scalar().key), want_f);
    assert_clean(&store);
    drop(store);

    // Sealed up to the end of February: March stays raw, outside the pack.
    let feb_end = MonthPartition(jan + 1).end_ts();
    let after = fastk::storage::now_ms() - feb_end;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        store_opts(|o| o.compress_after_ms = Some(after)),
    )
    .unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(100_000), None).unwrap();
    let got = layout(&k);
    assert_eq!(
        got.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
        vec![(jan, true), (jan + 1, true), (jan + 2, false)]
    );
    assert!(
        got[0].2 > 0 && got[1].2 == got[0].2 && got[2].2 == 0,
        "{got:?}"
    );
    drop((k, store));

    // Off: raw, as the pass expects to find them.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    k.write(klines(100_000), None).unwrap();
    assert!(layout(&k).iter().all(|l| !l.1));
    assert_eq!(k.compress_sealed(i64::MAX / 2).unwrap().len(), 3);
}

/// `n` trades of one day from 01:00: runs of trades in one nanosecond, then irregular
/// gaps of up to `max_gap_ns` (an LCG from `seed`; a gap after one trade in `every`).
fn bursty_trades(n: i64, seed: u64, every: u64, max_gap_ns: u64) -> Vec<common::ticks::Row> {
    let mut x = seed;
    let mut ts = common::ticks::DAY0 + 3_600_000_000_000;
    (0..n)
        .map(|j| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            if (x >> 33).is_multiple_of(every) {
                ts += ((x >> 40) % max_gap_ns) as i64;
            }
            (ts, None, j)
        })
        .collect()
}

/// An engine on `dir` that compresses any sealed month (`compress_on_write` as given)
/// with trade series `AAA` registered.
fn engine_with_trades(
    dir: &std::path::Path,
    on_write: bool,
) -> std::sync::Arc<fastk::query::Engine> {
    use fastk::query::tick::RegisterTick;
    let engine = engine_with(dir, |c| {
        c.storage.compress_after_s = 0;
        c.storage.compress_on_write = on_write;
    });
    let reg = RegisterTick {
        symbol: "AAA".into(),
        price_scale: 100,
        size_scale: 1,
        partition: None,
        retention_ms: None,
    };
    engine
        .register_tick(fastk::record::SeriesKind::Trade, &reg)
        .unwrap();
    engine
}

/// A sealed day of trades written compressed (one write, `compress_on_write`) is as
/// small as the background pass makes the same day written raw: ticks take pco's full
/// search on write, since irregular timestamps and repeating sizes are what the fast
/// setting codes worst (codec::Effort, docs/ticks.md).
#[test]
fn a_sealed_tick_day_is_written_as_small_as_the_pass_makes_it() {
    use common::ticks::batch;
    use fastk::record::{SeriesKey, TsRange};

    let rows = bursty_trades(200_000, 0x9e37_79b9_7f4a_7c15, 2, 5_000_000);
    let bytes = |on_write: bool| {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with_trades(dir.path(), on_write);
        let key = SeriesKey::trade("AAA").unwrap();
        engine.write(&key, batch(0, &rows), None).unwrap();
        if !on_write {
            assert!(engine.compress_sealed(i64::MAX / 2) >= 1);
        }
        let read = engine.read(&key, TsRange::all(), usize::MAX).unwrap();
        let n: usize = read.slices.iter().map(|s| s.len()).sum();
        assert_eq!(n, rows.len(), "every trade reads back");
        let inv = engine.inventory();
        assert!(inv.total_bytes < inv.total_raw_bytes / 4, "{inv:?}");
        inv.total_bytes
    };
    let (written, passed) = (bytes(true), bytes(false));
    assert!(
        written * 100 <= passed * 102,
        "compressed on write: {written} bytes; by the background pass: {passed}"
    );
}

/// A range that ends inside a sealed, compressed day of ticks reads exactly the rows the
/// whole day gives: decompressed in part while the whole image is not cached, the prefix
/// cached and reused by reads that end no later, extended by one that ends later, and
/// replaced by the whole image once a whole read makes it. Ends inside runs of equal
/// `ts`, before the first row and past the last.
#[test]
fn a_range_ending_inside_a_compressed_day_reads_what_the_whole_day_gives() {
    use common::ticks::{DAY0, batch};
    use fastk::record::{SeriesKey, TsRange};

    let rows = bursty_trades(150_000, 0x2545_f491_4f6c_dd1d, 3, 2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_trades(dir.path(), true);
    let key = SeriesKey::trade("AAA").unwrap();
    engine.write(&key, batch(0, &rows), None).unwrap();
    let series = engine.series(&key).unwrap();
    let chunk = series.snapshot().chunks().next().unwrap().clone();
    assert!(
        chunk.entry.flags & FLAG_COMPRESSED != 0,
        "the day is sealed compressed"
    );
    assert!(chunk.entry.rows >= fastk::storage::chunk::PREFIX_MIN_ROWS);
    let whole_bytes = chunk.entry.raw_len(6) as usize;
    let cols = |hi: i64| -> Vec<Vec<i64>> {
        let read = engine
            .read(&key, TsRange::new(Some(DAY0), Some(hi)), usize::MAX)
            .unwrap();
        (0..6)
            .map(|i| read.slices.iter().flat_map(|s| s.col(i).to_vec()).collect())
            .collect()
    };
    let cache = || engine.store.options().map_cache.clone();
    let cached = || cache().stats().decompressed_bytes;
    // The model: the rows written, as the whole day reads them back.
    let whole = cols(i64::MAX - 1);
    assert_eq!(whole[0].len(), rows.len());
    assert_eq!(cached(), whole_bytes, "a whole read caches the whole image");
    let want = |hi: i64| -> Vec<Vec<i64>> {
        let keep = rows.partition_point(|r| r.0 <= hi);
        whole.iter().map(|c| c[..keep].to_vec()).collect()
    };
    let his: Vec<i64> = [0usize, 1, 777, 40_000, 40_001, 99_999]
        .iter()
        .map(|&i| rows[i].0)
        .collect();
    // From the whole image.
    for &hi in &his {
        assert_eq!(cols(hi), want(hi), "through {hi}, from the whole image");
    }
    // No image cached: each read ascending extends the cached prefix.
    cache().release_decompressed();
    assert_eq!(cached(), 0);
    for &hi in &his {
        assert_eq!(cols(hi), want(hi), "through {hi}, a prefix");
        let keep = rows.partition_point(|r| r.0 <= hi) as u64;
        assert!(
            cached() < whole_bytes && cached() as u64 >= keep * 6 * 8,
            "only the prefix through {hi} is cached: {} bytes",
            cached()
        );
    }
    // Reads that end no later are served by the longest prefix, unchanged.
    let longest = cached();
    for &hi in his.iter().rev() {
        assert_eq!(cols(hi), want(hi), "through {hi}, the cached prefix");
        assert_eq!(cached(), longest);
    }
    // Before the first row: nothing.
    assert!(cols(DAY0).iter().all(Vec::is_empty));
    // The whole read replaces the prefix with the whole image.
    assert_eq!(cols(i64::MAX - 1), whole);
    assert_eq!(cached(), whole_bytes);
}

/// The first cross section after a start reads each series' last row from its chunk
/// header (one read of 512 bytes): no mapping, no pass over the body and no month
/// decompressed. A damaged header is still reported, by the mapping the read then
/// falls back to.
#[test]
fn a_cross_section_reads_the_last_row_from_the_chunk_header() {
    let dir = tempfile::tempdir().unwrap();
    let n = 70_000;
    let (want, path, at) = {
        let store = Store::open(dir.path(), opts()).unwrap();
        let (k, _) = store.register(kline()).unwrap();
        let (f, _) = store.register(scalar()).unwrap();
        k.write(klines(n), None).unwrap();
        f.write(scalars(n), None).unwrap();
        assert_eq!(k.compress_sealed(i64::MAX / 2).unwrap().len(), 2);
        assert_eq!(f.compress_sealed(i64::MAX / 2).unwrap().len(), 2);
        let cols = read_cols(&store, &kline().key);
        let want: Vec<i64> = cols.iter().map(|c| *c.last().unwrap()).collect();
        let snap = k.snapshot();
        let last = snap.chunks().last().unwrap();
        assert!(last.entry.flags & FLAG_COMPRESSED != 0);
        let at = if last.is_packed() {
            last.entry.pack.offset
        } else {
            0
        };
        (want, last.path(FileKind::Chunk), at)
    };
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    let (f, _) = store.register(scalar()).unwrap();
    let row = |s: &fastk::storage::Series| {
        s.snapshot()
            .with_last_row(TsRange::all(), |r| r.to_vec())
            .map(|r| r.expect("the series has rows"))
    };
    assert_eq!(row(&k).unwrap(), want);
    let scalar_row = row(&f).unwrap();
    assert_eq!(scalar_row.len(), 2);
    assert_eq!(scalar_row[0], JAN_2024 + (n - 1) * MINUTE);
    let st = store.options().map_cache.stats();
    assert_eq!((st.live, st.decompressed_bytes), (0, 0), "{st:?}");
    drop((k, f));
    drop(store);

    // One byte of the last chunk's header flipped: the header read is refused, the
    // mapping it falls back to names the damage.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at as usize + 200] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (k, _) = store.register(kline()).unwrap();
    match row(&k) {
        Err(StorageError::Corrupted { .. }) => {}
        other => panic!("a damaged header must be reported, got {other:?}"),
    }
}

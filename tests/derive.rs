//! Derived series (docs/derived.md): a read of a derived series always equals the
//! resample on read of its base, while writers append, backfill, replace and delete
//! ranges of the base and the materialization pass runs beside them; rules survive a
//! restart and apply to series registered later; bad rules and writes to a derived
//! series are refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::{Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use common::{DAY, JAN_2024, MINUTE, Rng, engine_with, register_kline};
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::derive::DeriveRule;
use fastk::query::market::spec::{Resample, Symbols};
use fastk::query::market::{ReadArgs, ReadSpec, Selection};
use fastk::query::snapshots::At;
use fastk::record::KlineRecord;
use fastk::record::{SeriesKey, SeriesKind, TsRange};

/// (timeframe, offset_ms) of the rules under test.
const RULES: [(&str, i64); 4] = [("5m", 0), ("1h", 0), ("1d", -7_200_000), ("1w", 0)];

fn rule(tf: &str, offset: i64) -> DeriveRule {
    DeriveRule {
        from_timeframe: "1m".into(),
        timeframe: tf.into(),
        symbols: Symbols::All("*".into()),
        offset_ms: (offset != 0).then_some(offset),
    }
}

/// `n` bars from a random minute of 50 days from 2024-01-01, one price each.
fn bars(rng: &mut Rng, n: u64) -> Vec<KlineRecord> {
    let start = JAN_2024 + rng.below(50 * 24 * 60) as i64 * MINUTE;
    (0..n as i64)
        .map(|i| {
            let p = 1000 + rng.below(100_000) as i64;
            KlineRecord {
                ts: start + i * MINUTE,
                open: p,
                high: p + 7,
                low: p - 3,
                close: p + 1,
                volume: 1 + rng.below(50) as i64,
            }
        })
        .collect()
}

fn rows_of_batches(batches: &[RecordBatch]) -> Vec<[i64; 6]> {
    let mut out = Vec::new();
    for b in batches {
        let ts = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let cols: Vec<&Int64Array> = (1..6)
            .map(|i| b.column(i).as_any().downcast_ref::<Int64Array>().unwrap())
            .collect();
        for j in 0..b.num_rows() {
            out.push([
                ts.value(j),
                cols[0].value(j),
                cols[1].value(j),
                cols[2].value(j),
                cols[3].value(j),
                cols[4].value(j),
            ]);
        }
    }
    out
}

/// The resample on read of the base.
fn resample_of_base(e: &Engine, base: &SeriesKey, tf: &str, offset: i64) -> Vec<[i64; 6]> {
    let spec = ReadSpec::new(ReadArgs {
        resample: Some(Resample {
            timeframe: tf.into(),
            offset_ms: (offset != 0).then_some(offset),
            fill: None,
            agg: None,
        }),
        ..ReadArgs::default()
    })
    .unwrap();
    let series = e.series(base).unwrap();
    let (batches, next) = e.read_page(&series, &spec, usize::MAX).unwrap();
    assert!(next.is_none());
    rows_of_batches(&batches)
}

/// Every bar of the derived series, read as any client reads it.
fn derived_rows(e: &Engine, key: &SeriesKey) -> Vec<[i64; 6]> {
    let page = e
        .read_at(key, &At::Now, TsRange::all(), usize::MAX)
        .unwrap();
    let mut out = Vec::new();
    for s in &page.slices {
        for j in 0..s.len() {
            out.push([
                s.ts()[j],
                s.col(1)[j],
                s.col(2)[j],
                s.col(3)[j],
                s.col(4)[j],
                s.col(5)[j],
            ]);
        }
    }
    out
}

/// Checks every derived series of `base` against the resample of the base, when the
/// base did not change during the two reads (its version is the same before and
/// after). Returns how many comparisons were made.
fn check(e: &Engine, base: &SeriesKey, tag: &str) -> usize {
    let mut made = 0;
    for (tf, offset) in RULES {
        let key = SeriesKey::kline(base.symbol(), tf).unwrap();
        let before = e.series(base).unwrap().version();
        let derived = derived_rows(e, &key);
        let want = resample_of_base(e, base, tf, offset);
        if e.series(base).unwrap().version() == before {
            assert_eq!(derived.len(), want.len(), "{tag}: {key} bars");
            assert_eq!(derived, want, "{tag}: {key}");
            made += 1;
        }
    }
    made
}

fn long() -> bool {
    std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1")
}

#[test]
fn a_derived_series_always_equals_the_resample_of_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let btc = register_kline(&e, "BTCUSDT");
    for (tf, offset) in RULES {
        let info = e.derive_create(rule(tf, offset)).unwrap();
        assert_eq!(info.series, 1, "{tf}");
    }
    // Before any bar and any pass: empty, and equal.
    assert_eq!(check(&e, &btc, "empty"), RULES.len());
    let (writers, steps) = if long() { (3, 400) } else { (2, 60) };
    let stop = Arc::new(AtomicBool::new(false));
    // A failed check ends the pass thread too (the scope would wait for it forever).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
        let pass = {
            let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    e.derive_pass();
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }
            })
        };
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let e = Arc::clone(&e);
                let btc = btc.clone();
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9 + w as u64);
                    for _ in 0..steps {
                        match rng.below(10) {
                            // Appends, backfills and replacements alike: a random
                            // start lands on written minutes as often as not.
                            0..=6 => {
                                let most = if rng.below(4) == 0 { 3000 } else { 40 };
                                let n = 1 + rng.below(most);
                                e.write_kline(&btc, &bars(&mut rng, n), None).unwrap();
                            }
                            7 => {
                                let lo = JAN_2024 + rng.below(50 * 24 * 60) as i64 * MINUTE;
                                let hi = lo + rng.below(2 * 24 * 60) as i64 * MINUTE;
                                e.delete_range(&btc, Some(lo), Some(hi), None).unwrap();
                            }
                            _ => {
                                e.derive_pass();
                            }
                        }
                    }
                })
            })
            .collect();
        // Checks while the writers and the pass run.
        let mut made = 0;
        while handles.iter().any(|h| !h.is_finished()) {
            made += check(&e, &btc, "under writes");
        }
        for h in handles {
            h.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        pass.join().unwrap();
        assert!(made > 0, "no check ran while the base stood still");
    });
    // Quiet: before and after a pass, exactly equal; the pass materialized the
    // buckets before the last one.
    assert_eq!(check(&e, &btc, "quiet"), RULES.len());
    e.derive_pass();
    assert_eq!(check(&e, &btc, "materialized"), RULES.len());
    let hour = SeriesKey::kline("BTCUSDT", "1h").unwrap();
    let info = e.series_info(&hour).unwrap();
    assert_eq!(info.derived_from.as_deref(), Some("kline/BTCUSDT/1m"));
    let last = e.series(&btc).unwrap().snapshot().last_ts().unwrap();
    assert_eq!(info.materialized_through_ts, Some(last - last % 3_600_000));
    assert!(info.rows > 0, "bars are stored, not only computed");

    // A restart: the rules and the derived series are back, still equal.
    drop(info);
    drop(e);
    let e = engine_with(dir.path(), |_| {});
    assert_eq!(e.derive_list().rules.len(), RULES.len());
    assert_eq!(check(&e, &btc, "after a restart"), RULES.len());
    // A write after the restart, read before any pass.
    e.write_kline(&btc, &bars(&mut Rng(7), 500), None).unwrap();
    assert_eq!(check(&e, &btc, "after a restart and a write"), RULES.len());
    e.derive_pass();
    assert_eq!(check(&e, &btc, "after a restart and a pass"), RULES.len());

    // A series registered later gets its derived series.
    let eth = register_kline(&e, "ETHUSDT");
    e.write_kline(&eth, &bars(&mut Rng(11), 2000), None)
        .unwrap();
    assert_eq!(check(&e, &eth, "a later series"), RULES.len());
    e.derive_pass();
    assert_eq!(check(&e, &eth, "a later series, materialized"), RULES.len());

    // A many-series read (`"*"`) answers each derived series as a single read does,
    // with its unmaterialized tail.
    e.write_kline(&eth, &bars(&mut Rng(13), 50), None).unwrap();
    let sel = Selection {
        kind: SeriesKind::Kline,
        timeframe: "1h".into(),
        scalar: None,
        symbols: Symbols::All("*".into()),
    };
    let all = e.select(&sel, 100).unwrap();
    assert_eq!(all.len(), 2);
    for s in all {
        let base = SeriesKey::kline(s.meta.key.symbol(), "1m").unwrap();
        assert_eq!(
            s.snapshot().rows() as usize,
            resample_of_base(&e, &base, "1h", 0).len(),
            "{} in a many-series read",
            s.meta.key
        );
    }
}

#[test]
fn bad_rules_and_writes_to_a_derived_series_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let btc = register_kline(&e, "BTCUSDT");
    e.write_kline(&btc, &bars(&mut Rng(3), 100), None).unwrap();
    let kind = |r: DeriveRule| e.derive_create(r).unwrap_err();
    // Not a whole multiple, not standard, an offset too long, a bad symbols string.
    assert_eq!(
        kind(DeriveRule {
            from_timeframe: "3m".into(),
            ..rule("5m", 0)
        })
        .kind,
        ErrorKind::InvalidArgument
    );
    let bad = kind(rule("7m", 0));
    assert_eq!(bad.kind, ErrorKind::InvalidArgument);
    assert!(bad.message.contains("standard"), "{}", bad.message);
    assert_eq!(kind(rule("1h", 3_600_000)).kind, ErrorKind::InvalidArgument);
    assert_eq!(
        kind(DeriveRule {
            symbols: Symbols::All("everything".into()),
            ..rule("1h", 0)
        })
        .kind,
        ErrorKind::InvalidArgument
    );
    // A target that holds bars of its own.
    e.register_kline(&common::kline_registration("BTCUSDT", "4h"))
        .unwrap();
    let own = SeriesKey::kline("BTCUSDT", "4h").unwrap();
    e.write_kline(
        &own,
        &[KlineRecord {
            ts: JAN_2024,
            open: 1,
            high: 1,
            low: 1,
            close: 1,
            volume: 1,
        }],
        None,
    )
    .unwrap();
    let c = kind(rule("4h", 0));
    assert_eq!(c.kind, ErrorKind::Conflict);
    assert!(c.message.contains("holds bars of its own"), "{}", c.message);

    e.derive_create(rule("1h", 0)).unwrap();
    // The same target twice; a chain.
    assert_eq!(kind(rule("1h", 0)).kind, ErrorKind::Conflict);
    assert_eq!(
        kind(DeriveRule {
            from_timeframe: "1h".into(),
            ..rule("1d", 0)
        })
        .kind,
        ErrorKind::InvalidArgument
    );
    // Writes, range deletes and deletes of a derived series.
    let hour = SeriesKey::kline("BTCUSDT", "1h").unwrap();
    let w = e
        .write_kline(
            &hour,
            &[KlineRecord {
                ts: JAN_2024,
                open: 1,
                high: 1,
                low: 1,
                close: 1,
                volume: 1,
            }],
            None,
        )
        .unwrap_err();
    assert_eq!(w.kind, ErrorKind::Conflict);
    assert!(
        w.message.contains("derived from kline/BTCUSDT/1m"),
        "{}",
        w.message
    );
    assert_eq!(
        e.delete_range(&hour, Some(JAN_2024), None, None)
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );
    assert_eq!(
        e.delete_series(&hour).unwrap_err().kind,
        ErrorKind::Conflict
    );
    // Deleting the rule keeps the series (no longer maintained) unless drop.
    assert_eq!(
        e.derive_delete("1h", "5m", false).unwrap_err().kind,
        ErrorKind::NotFound
    );
    e.derive_pass();
    e.derive_delete("1h", "1m", false).unwrap();
    assert!(e.series(&hour).is_ok());
    e.write_kline(
        &hour,
        &[KlineRecord {
            ts: JAN_2024 + 100 * DAY,
            open: 1,
            high: 1,
            low: 1,
            close: 1,
            volume: 1,
        }],
        None,
    )
    .unwrap();
    e.delete_series(&hour).unwrap();
    e.derive_create(rule("1h", 0)).unwrap();
    e.derive_delete("1h", "1m", true).unwrap();
    assert_eq!(e.series(&hour).unwrap_err().kind, ErrorKind::NotFound);
    // Deleting a base deletes what is derived from it.
    e.derive_create(rule("1d", 0)).unwrap();
    e.delete_series(&btc).unwrap();
    assert_eq!(
        e.series(&SeriesKey::kline("BTCUSDT", "1d").unwrap())
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
}

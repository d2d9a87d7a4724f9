//! Retention: months entirely older than `now - retention` are dropped, whole months
//! only, by the series' own `retention_ms` or else `storage.retention_ms`; the
//! setting is kept in the manifest across a reopen and can be changed by registering
//! again; a negative one is refused. Range deletes themselves are tested in
//! `tests/storage_model.rs` and `tests/storage_write_faults.rs`.

mod common;

use common::*;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::types::RegisterKline;
use fastk::record::{KlineRecord, MonthPartition, SeriesKey, TsRange};

fn register(e: &Engine, symbol: &str, retention_ms: Option<i64>) -> SeriesKey {
    e.register_kline(&RegisterKline {
        retention_ms,
        ..kline_registration(symbol, "1h")
    })
    .unwrap();
    SeriesKey::kline(symbol, "1h").unwrap()
}

/// Hourly bars over the last 150 days.
fn bars(now: i64) -> Vec<KlineRecord> {
    let first = (now - 150 * DAY) / HOUR * HOUR;
    (0..150 * 24)
        .map(|i| {
            let p = 10_000 + i % 97;
            KlineRecord {
                ts: first + i * HOUR,
                open: p,
                high: p + 5,
                low: p - 5,
                close: p + 1,
                volume: 1,
            }
        })
        .collect()
}

fn all_ts(e: &Engine, key: &SeriesKey) -> Vec<i64> {
    let page = e.read(key, TsRange::all(), usize::MAX).unwrap();
    page.slices.iter().flat_map(|s| s.ts().to_vec()).collect()
}

#[test]
fn retention_drops_whole_months_by_the_series_or_the_default_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let now = fastk::query::now_ms();
    let written: Vec<i64> = bars(now).iter().map(|b| b.ts).collect();
    {
        let e = engine_with(dir.path(), |_| {});
        let own = register(&e, "OWN", Some(40 * DAY));
        let none = register(&e, "NONE", None);
        for k in [&own, &none] {
            e.write_kline(k, &bars(now), None).unwrap();
        }
        assert_eq!(e.series_info(&own).unwrap().retention_ms, 40 * DAY);
        let before = e.series_info(&own).unwrap().version;
        let r = e.enforce_retention(now);
        let boundary = MonthPartition::from_ts(now - 40 * DAY).start_ts();
        let want: Vec<i64> = written.iter().copied().filter(|&t| t >= boundary).collect();
        assert_eq!(
            all_ts(&e, &own),
            want,
            "whole months older than the cutoff went"
        );
        assert!(
            want.first().is_some_and(|&t| t <= now - 40 * DAY),
            "a month partly inside stays"
        );
        assert_eq!(all_ts(&e, &none), written, "no retention: nothing dropped");
        assert_eq!(r.series, 1);
        assert_eq!(r.rows, (written.len() - want.len()) as u64);
        assert_eq!(
            e.series_info(&own).unwrap().version,
            before + 1,
            "one commit"
        );
        // A second pass finds nothing to drop.
        assert_eq!(e.enforce_retention(now).rows, 0);
        // Refused: a negative retention.
        let err = e
            .register_kline(&RegisterKline {
                retention_ms: Some(-1),
                ..kline_registration("BAD", "1h")
            })
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }
    // After a reopen the series' own retention is still there; the default now applies
    // to the series without one.
    let e = engine_with(dir.path(), |c| c.storage.retention_ms = 100 * DAY as u64);
    let own = SeriesKey::kline("OWN", "1h").unwrap();
    let none = SeriesKey::kline("NONE", "1h").unwrap();
    assert_eq!(e.series_info(&own).unwrap().retention_ms, 40 * DAY);
    assert_eq!(e.series_info(&none).unwrap().retention_ms, 0);
    e.enforce_retention(now);
    let boundary = MonthPartition::from_ts(now - 100 * DAY).start_ts();
    let want: Vec<i64> = written.iter().copied().filter(|&t| t >= boundary).collect();
    assert_eq!(all_ts(&e, &none), want, "the default retention applies");
    // Registering again with retention 0 keeps everything from now on (200, not 409).
    let (info, created) = e
        .register_kline(&RegisterKline {
            retention_ms: Some(0),
            ..kline_registration("OWN", "1h")
        })
        .unwrap();
    assert!(!created);
    assert_eq!(info.retention_ms, 0);
    let kept = all_ts(&e, &own);
    e.enforce_retention(now + 365 * DAY);
    // With retention 0 of its own, the 100-day default applies to OWN now.
    let boundary = MonthPartition::from_ts(now + 365 * DAY - 100 * DAY).start_ts();
    let want: Vec<i64> = kept.iter().copied().filter(|&t| t >= boundary).collect();
    assert_eq!(all_ts(&e, &own), want);
    drop(e);
    let e = engine_with(dir.path(), |_| {});
    assert_eq!(
        validate_deep(&e).findings.len(),
        0,
        "the store validates clean"
    );
}

/// A tick series keeps whole partitions (days here) younger than its retention: the
/// day holding the cutoff stays, older days go, in nanoseconds.
#[test]
fn retention_drops_whole_days_of_a_tick_series() {
    use fastk::query::tick::{RegisterTick, TradeIn, trade_batch};
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let now = fastk::query::now_ms();
    let reg = RegisterTick {
        symbol: "TICKS".into(),
        price_scale: 100,
        size_scale: 1,
        partition: None,
        retention_ms: Some(3 * DAY),
    };
    e.register_tick(fastk::record::SeriesKind::Trade, &reg)
        .unwrap();
    let key = SeriesKey::trade("TICKS").unwrap();
    // Two trades in one nanosecond every 6 hours over the last 10 days.
    let ns = |ms: i64| ms * 1_000_000;
    let trades: Vec<TradeIn> = (0..40)
        .flat_map(|k| {
            let ts = ns(now - 10 * DAY + k * 6 * HOUR);
            (0..2).map(move |j| TradeIn {
                ts,
                seq: None,
                price: 100 + j,
                size: 1,
                side: 0,
                trade_id: 0,
            })
        })
        .collect();
    e.write(&key, trade_batch(&trades).unwrap(), None).unwrap();
    let r = e.enforce_retention(now);
    let day_ns = ns(DAY);
    let boundary = ns(now - 3 * DAY).div_euclid(day_ns) * day_ns;
    let want: Vec<i64> = trades
        .iter()
        .map(|t| t.ts)
        .filter(|&t| t >= boundary)
        .collect();
    assert_eq!(
        all_ts(&e, &key),
        want,
        "days wholly older than the cutoff went"
    );
    assert!(
        want.first().is_some_and(|&t| t <= ns(now - 3 * DAY)),
        "the cut day stays"
    );
    assert_eq!(r.rows, (trades.len() - want.len()) as u64);
}

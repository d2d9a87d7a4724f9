//! Time grids: the buckets of a resample and the weekday calendars of coverage.

use crate::error::{Error, Result};
use crate::record::{civil_from_days, days_from_civil, echo};

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
pub const WEEK_MS: i64 = 7 * DAY_MS;
/// 1970-01-05T00:00Z, the first Monday of the epoch: weeks start from it.
const FIRST_MONDAY_MS: i64 = 4 * DAY_MS;
/// The shortest month: the bound on a month bucket's offset.
const MONTH_MIN_MS: i64 = 28 * DAY_MS;
/// The widest fixed bucket and the most months per bucket a target may name.
const MAX_FIXED_MS: i64 = 366 * 100 * DAY_MS;
const MAX_MONTHS: i64 = 1200;

/// How wide a bucket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// `ms` wide, boundaries at `anchor + k * ms` (epoch, or the first Monday).
    Fixed { ms: i64, anchor: i64 },
    /// Calendar months, grouped from January of year 0.
    Months(i64),
}

/// The buckets of a resample: boundaries of `width` shifted by `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub width: Width,
    pub offset: i64,
}

impl Grid {
    /// Parses `<n><unit>` (unit `s m h d w M`) and checks the offset against it.
    pub fn parse(timeframe: &str, offset: i64) -> Result<Grid> {
        let bad = || {
            Error::invalid(format!(
                "resample timeframe {} is not <number><unit> with unit s, m, h, d, w or M (e.g. 5m, 1h, 1d, 1w, 1M)",
                echo(timeframe)
            ))
        };
        let split = timeframe
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(bad)?;
        let (digits, unit) = timeframe.split_at(split);
        let n: i64 = digits.parse().map_err(|_| bad())?;
        if n <= 0 {
            return Err(bad());
        }
        let width = match unit {
            "M" if n <= MAX_MONTHS => Width::Months(n),
            "M" => return Err(bad()),
            _ => {
                let (unit_ms, anchor) = match unit {
                    "s" => (SECOND_MS, 0),
                    "m" => (MINUTE_MS, 0),
                    "h" => (HOUR_MS, 0),
                    "d" => (DAY_MS, 0),
                    "w" => (WEEK_MS, FIRST_MONDAY_MS),
                    _ => return Err(bad()),
                };
                let ms = n.checked_mul(unit_ms).filter(|&ms| ms <= MAX_FIXED_MS);
                Width::Fixed {
                    ms: ms.ok_or_else(bad)?,
                    anchor,
                }
            }
        };
        let bound = match width {
            Width::Fixed { ms, .. } => ms,
            Width::Months(_) => MONTH_MIN_MS,
        };
        if offset.unsigned_abs() >= bound as u64 {
            return Err(Error::invalid(format!(
                "offset_ms must be smaller than the bucket ({bound} ms for {timeframe}), got {offset}"
            )));
        }
        Ok(Grid { width, offset })
    }

    /// Checks that bars of `stored_ms` fit the buckets: a fixed width must be a whole
    /// multiple of it; weeks and months must be at least as wide.
    pub fn check_stored(&self, target: &str, stored: &str, stored_ms: i64) -> Result<()> {
        let ok = match self.width {
            Width::Fixed { ms, anchor: 0 } => ms % stored_ms == 0,
            Width::Fixed { ms, .. } => ms >= stored_ms,
            Width::Months(_) => stored_ms <= MONTH_MIN_MS,
        };
        if ok {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "cannot resample {stored} bars ({stored_ms} ms) to {target}: the target must be a whole multiple of the stored timeframe (or 1w, 1M)"
        )))
    }

    /// The start of the bucket holding `ts`.
    pub fn bucket(&self, ts: i64) -> i64 {
        match self.width {
            Width::Fixed { ms, anchor } => {
                let base = anchor + self.offset;
                base + (ts - base).div_euclid(ms) * ms
            }
            Width::Months(n) => {
                let m = month_index(ts - self.offset);
                month_start(m - m.rem_euclid(n)) + self.offset
            }
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(&self, start: i64) -> i64 {
        match self.width {
            Width::Fixed { ms, .. } => start + ms,
            Width::Months(n) => month_start(month_index(start - self.offset) + n) + self.offset,
        }
    }

    /// The start of the bucket `k` buckets before the one starting at `start`.
    pub fn back(&self, start: i64, k: i64) -> i64 {
        match self.width {
            Width::Fixed { ms, .. } => start.saturating_sub(k.saturating_mul(ms)),
            Width::Months(n) => {
                let m = month_index(start - self.offset);
                month_start(
                    m.saturating_sub(k.saturating_mul(n))
                        .max(-MAX_MONTHS * 12_000),
                ) + self.offset
            }
        }
    }
}

/// Months since January of year 0.
fn month_index(ts: i64) -> i64 {
    let (y, m, _) = civil_from_days(ts.div_euclid(DAY_MS));
    y * 12 + (m as i64 - 1)
}

/// The first millisecond of month `idx` (months since January of year 0).
fn month_start(idx: i64) -> i64 {
    days_from_civil(idx.div_euclid(12), (idx.rem_euclid(12) + 1) as u32, 1) * DAY_MS
}

/// Which weekdays a calendar expects bars on: bit 0 Monday ... bit 6 Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub mask: u8,
}

impl Calendar {
    pub const ALL: Calendar = Calendar { mask: 0x7f };
    pub const WEEKDAYS: Calendar = Calendar { mask: 0x1f };

    /// `24x7`, `weekdays`, or seven `0`/`1` from Monday to Sunday.
    pub fn parse(s: &str) -> Result<Calendar> {
        match s {
            "24x7" => return Ok(Calendar::ALL),
            "weekdays" => return Ok(Calendar::WEEKDAYS),
            _ => {}
        }
        if s.len() == 7 && s.bytes().all(|b| b == b'0' || b == b'1') {
            let mask = s
                .bytes()
                .enumerate()
                .fold(0u8, |m, (i, b)| m | (u8::from(b == b'1') << i));
            if mask != 0 {
                return Ok(Calendar { mask });
            }
        }
        Err(Error::invalid(format!(
            "unknown calendar {}: expected 24x7, weekdays, or seven 0/1 from Monday to Sunday with at least one 1 (e.g. 1111110)",
            echo(s)
        )))
    }

    pub fn name(&self) -> String {
        match *self {
            Calendar::ALL => "24x7".into(),
            Calendar::WEEKDAYS => "weekdays".into(),
            c => (0..7)
                .map(|i| if c.mask >> i & 1 == 1 { '1' } else { '0' })
                .collect(),
        }
    }

    pub fn is_all(&self) -> bool {
        self.mask == Calendar::ALL.mask
    }

    /// Whether a bar starting at `ts` is expected.
    pub fn includes(&self, ts: i64) -> bool {
        self.mask >> weekday(ts.div_euclid(DAY_MS)) & 1 == 1
    }

    pub fn includes_day(&self, day: i64) -> bool {
        self.mask >> weekday(day) & 1 == 1
    }
}

/// Monday = 0 of the day `day` days after 1970-01-01 (a Thursday).
pub fn weekday(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2024: i64 = 1_704_067_200_000; // a Monday

    #[test]
    fn fixed_weeks_and_months() {
        let h = Grid::parse("4h", 0).unwrap();
        assert_eq!(
            h.bucket(JAN_1_2024 + 5 * HOUR_MS + 7),
            JAN_1_2024 + 4 * HOUR_MS
        );
        assert_eq!(h.next(JAN_1_2024), JAN_1_2024 + 4 * HOUR_MS);
        let w = Grid::parse("1w", 0).unwrap();
        assert_eq!(w.bucket(JAN_1_2024 + 6 * DAY_MS), JAN_1_2024);
        assert_eq!(w.bucket(JAN_1_2024 - 1), JAN_1_2024 - WEEK_MS);
        let m = Grid::parse("1M", 0).unwrap();
        let feb = JAN_1_2024 + 31 * DAY_MS;
        assert_eq!(m.bucket(feb - 1), JAN_1_2024);
        assert_eq!(m.next(JAN_1_2024), feb);
        assert_eq!(m.next(feb), feb + 29 * DAY_MS); // 2024 is a leap year
        assert_eq!(m.back(feb, 1), JAN_1_2024);
        let q = Grid::parse("3M", 0).unwrap();
        assert_eq!(q.bucket(feb), JAN_1_2024);
        // An FX day starting at 22:00 UTC.
        let fx = Grid::parse("1d", -2 * HOUR_MS).unwrap();
        assert_eq!(
            fx.bucket(JAN_1_2024 + 23 * HOUR_MS),
            JAN_1_2024 + 22 * HOUR_MS
        );
        assert_eq!(
            fx.bucket(JAN_1_2024 + 21 * HOUR_MS),
            JAN_1_2024 - 2 * HOUR_MS
        );
        let fxm = Grid::parse("1M", -2 * HOUR_MS).unwrap();
        assert_eq!(fxm.bucket(feb - HOUR_MS), feb - 2 * HOUR_MS);
        assert_eq!(fxm.next(feb - 2 * HOUR_MS), feb + 29 * DAY_MS - 2 * HOUR_MS);
    }

    #[test]
    fn bad_targets_say_what_to_change() {
        for t in ["", "h", "0h", "1y", "-1h", "1.5h", "99999999999999d"] {
            assert!(Grid::parse(t, 0).is_err(), "{t}");
        }
        assert!(Grid::parse("1h", HOUR_MS).is_err());
        let g = Grid::parse("7m", 0).unwrap();
        let e = g.check_stored("7m", "5m", 5 * MINUTE_MS).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        assert!(
            Grid::parse("1w", 0)
                .unwrap()
                .check_stored("1w", "1d", DAY_MS)
                .is_ok()
        );
    }

    #[test]
    fn calendars() {
        assert!(Calendar::WEEKDAYS.includes(JAN_1_2024));
        assert!(!Calendar::WEEKDAYS.includes(JAN_1_2024 + 5 * DAY_MS));
        let c = Calendar::parse("1111110").unwrap();
        assert!(c.includes(JAN_1_2024 + 5 * DAY_MS) && !c.includes(JAN_1_2024 + 6 * DAY_MS));
        assert_eq!(c.name(), "1111110");
        assert_eq!(Calendar::parse("weekdays").unwrap().name(), "weekdays");
        assert!(Calendar::parse("0000000").is_err());
        assert!(Calendar::parse("sometimes").is_err());
    }
}

//! Timestamp text to epoch milliseconds (or nanoseconds for ticks, [`parse_ts_ns`]),
//! hand-rolled for speed: a CSV import parses one
//! timestamp per row, so this runs millions of times a second and never allocates.
//!
//! Accepted forms:
//! - epoch integers in seconds, milliseconds, microseconds or nanoseconds (the unit is
//!   given, or detected once per file from the magnitude of the first value, see
//!   [`TsUnit::detect`]); seconds may carry a fraction (`1704067200.5`);
//! - `YYYY-MM-DD`, optionally followed by `T`, `t` or a space and `HH:MM[:SS[.f…]]`,
//!   optionally followed by a zone: `Z`, `z`, ` UTC`, `+hh:mm`, `+hhmm` or `+hh`.
//!   A missing zone means UTC. `/` is accepted for `-` in the date.
//!
//! Sub-millisecond precision is floored (toward negative infinity), as pandas and Arrow
//! do when casting to milliseconds, so `…00.0009Z` and `…00.000Z` are the same bar.

use crate::record::days_from_civil;

/// The unit of an epoch integer timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TsUnit {
    S,
    Ms,
    Us,
    Ns,
}

impl TsUnit {
    /// Guesses the unit of an epoch integer from its magnitude. Present-day timestamps
    /// have 10 digits in seconds, 13 in milliseconds, 16 in microseconds and 19 in
    /// nanoseconds; the thresholds sit between those, so seconds cover years up to
    /// 5138 and milliseconds cover 1973-03 to 5138. Milliseconds before 1973-03 (or
    /// seconds after 5138) need an explicit `--ts-unit`.
    pub fn detect(v: i64) -> TsUnit {
        match v.unsigned_abs() {
            0..100_000_000_000 => TsUnit::S,
            100_000_000_000..100_000_000_000_000 => TsUnit::Ms,
            100_000_000_000_000..100_000_000_000_000_000 => TsUnit::Us,
            _ => TsUnit::Ns,
        }
    }

    /// Converts an epoch integer in this unit to nanoseconds, or `None` on overflow.
    pub fn to_ns(self, v: i64) -> Option<i64> {
        match self {
            TsUnit::S => v.checked_mul(1_000_000_000),
            TsUnit::Ms => v.checked_mul(1_000_000),
            TsUnit::Us => v.checked_mul(1000),
            TsUnit::Ns => Some(v),
        }
    }

    /// The unit's name as a summary says it.
    pub fn name(self) -> &'static str {
        match self {
            TsUnit::S => "seconds",
            TsUnit::Ms => "milliseconds",
            TsUnit::Us => "microseconds",
            TsUnit::Ns => "nanoseconds",
        }
    }

    /// Converts an epoch integer in this unit to milliseconds (floored), or `None` on
    /// overflow.
    pub fn to_ms(self, v: i64) -> Option<i64> {
        match self {
            TsUnit::S => v.checked_mul(1000),
            TsUnit::Ms => Some(v),
            TsUnit::Us => Some(v.div_euclid(1000)),
            TsUnit::Ns => Some(v.div_euclid(1_000_000)),
        }
    }
}

/// Why a timestamp was refused; the text ends up in the rejects file.
pub type TsError = &'static str;

/// Parses an epoch integer (optionally signed); `None` when `s` is not one.
#[inline]
pub fn parse_epoch_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    if neg {
        (v <= i64::MAX as u64 + 1).then(|| (v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// Parses one timestamp field. `unit` is the epoch unit for integers; `None` means
/// "detect from this value" (the caller fixes the unit per file after the first row).
/// Returns the milliseconds and the unit used for an epoch value (if it was one).
#[inline]
pub fn parse_ts(s: &[u8], unit: Option<TsUnit>) -> Result<(i64, Option<TsUnit>), TsError> {
    parse_ts_in(s, unit, Precision::Ms)
}

/// The unit a parsed timestamp is returned in: milliseconds (bars and scalar series)
/// or nanoseconds (ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Ms,
    Ns,
}

/// [`parse_ts`] to nanoseconds: every digit of a fraction is kept down to the
/// nanosecond (finer digits are floored).
#[inline]
pub fn parse_ts_ns(s: &[u8], unit: Option<TsUnit>) -> Result<(i64, Option<TsUnit>), TsError> {
    parse_ts_in(s, unit, Precision::Ns)
}

/// [`parse_ts`] in `precision`.
#[inline]
pub fn parse_ts_in(
    s: &[u8],
    unit: Option<TsUnit>,
    precision: Precision,
) -> Result<(i64, Option<TsUnit>), TsError> {
    let s = trim(s);
    if precision == Precision::Ns {
        return parse_ns(s, unit);
    }
    if s.is_empty() {
        return Err("empty timestamp");
    }
    if let Some(v) = parse_epoch_int(s) {
        let u = unit.unwrap_or_else(|| TsUnit::detect(v));
        return u
            .to_ms(v)
            .map(|ms| (ms, Some(u)))
            .ok_or("epoch timestamp overflows 64-bit milliseconds");
    }
    if s.len() >= 10 && (s[4] == b'-' || s[4] == b'/') && s[0].is_ascii_digit() {
        return parse_iso(s).map(|ms| (ms, None));
    }
    parse_epoch_fraction(s, unit).map(|ms| (ms, Some(unit.unwrap_or(TsUnit::S))))
}

/// Epoch seconds with a fraction (`1704067200.25`); other units take no fraction.
fn parse_epoch_fraction(s: &[u8], unit: Option<TsUnit>) -> Result<i64, TsError> {
    let Some(dot) = s.iter().position(|&b| b == b'.') else {
        return Err("not a timestamp (expected epoch digits or YYYY-MM-DD[THH:MM:SS])");
    };
    let whole = parse_epoch_int(&s[..dot]).ok_or("not a timestamp")?;
    let unit = unit.unwrap_or_else(|| TsUnit::detect(whole));
    if unit != TsUnit::S {
        return Err("a fractional epoch timestamp must be in seconds");
    }
    let frac = &s[dot + 1..];
    if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return Err("not a timestamp");
    }
    let ms_part = frac_to_ms(frac);
    let neg = s[0] == b'-';
    let secs_ms = whole.checked_mul(1000).ok_or("epoch timestamp overflows")?;
    Ok(if neg {
        // -1.5 s is -1500 ms; flooring sub-millisecond digits moves further down.
        let exact = frac.len() <= 3 || frac[3..].iter().all(|&b| b == b'0');
        secs_ms - ms_part - i64::from(!exact)
    } else {
        secs_ms + ms_part
    })
}

/// The nanosecond forms of [`parse_ts_ns`] (`s` trimmed).
fn parse_ns(s: &[u8], unit: Option<TsUnit>) -> Result<(i64, Option<TsUnit>), TsError> {
    const OVER: TsError = "timestamp overflows 64-bit nanoseconds (past 2262-04-11)";
    if s.is_empty() {
        return Err("empty timestamp");
    }
    if let Some(v) = parse_epoch_int(s) {
        let u = unit.unwrap_or_else(|| TsUnit::detect(v));
        return u.to_ns(v).map(|ns| (ns, Some(u))).ok_or(OVER);
    }
    let (secs, frac_ns, used) =
        if s.len() >= 10 && (s[4] == b'-' || s[4] == b'/') && s[0].is_ascii_digit() {
            let (secs, frac) = parse_iso_parts(s)?;
            (secs, frac, None)
        } else {
            let Some(dot) = s.iter().position(|&b| b == b'.') else {
                return Err("not a timestamp (expected epoch digits or YYYY-MM-DD[THH:MM:SS])");
            };
            let whole = parse_epoch_int(&s[..dot]).ok_or("not a timestamp")?;
            if unit.unwrap_or_else(|| TsUnit::detect(whole)) != TsUnit::S {
                return Err("a fractional epoch timestamp must be in seconds");
            }
            let frac = &s[dot + 1..];
            if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
                return Err("not a timestamp");
            }
            let (mut ns, inexact) = frac_to_ns(frac);
            // -1.5 s is -1.5e9 ns: the fraction counts down from the whole seconds, and
            // digits finer than a nanosecond floor further down.
            let mut whole = whole;
            if s[0] == b'-' && (ns > 0 || inexact) {
                whole -= 1;
                ns = 1_000_000_000 - ns - i64::from(inexact);
            }
            (whole, ns, Some(TsUnit::S))
        };
    secs.checked_mul(1_000_000_000)
        .and_then(|v| v.checked_add(frac_ns))
        .map(|ns| (ns, used))
        .ok_or(OVER)
}

/// The first nine fraction digits as nanoseconds, and whether a nonzero digit
/// followed them.
fn frac_to_ns(frac: &[u8]) -> (i64, bool) {
    let mut ns = 0;
    for i in 0..9 {
        ns = ns * 10 + frac.get(i).map_or(0, |b| (b - b'0') as i64);
    }
    let inexact = frac.len() > 9 && frac[9..].iter().any(|&b| b != b'0');
    (ns, inexact)
}

/// The first three fraction digits as milliseconds (`5` → 500, `25` → 250).
fn frac_to_ms(frac: &[u8]) -> i64 {
    let mut ms = 0;
    for i in 0..3 {
        ms = ms * 10 + frac.get(i).map_or(0, |b| (b - b'0') as i64);
    }
    ms
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.f…]]][zone]` as epoch milliseconds (floored).
fn parse_iso(s: &[u8]) -> Result<i64, TsError> {
    let (secs, frac_ns) = parse_iso_parts(s)?;
    Ok(secs * 1000 + frac_ns / 1_000_000)
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.f…]]][zone]` as whole epoch seconds (UTC) and the
/// fraction in nanoseconds (digits past the ninth are floored away).
fn parse_iso_parts(s: &[u8]) -> Result<(i64, i64), TsError> {
    const BAD: TsError = "not a timestamp (expected YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+hh:mm])";
    let y = digits(s, 0, 4).ok_or(BAD)?;
    let m = digits(s, 5, 2).ok_or(BAD)?;
    let d = digits(s, 8, 2).ok_or(BAD)?;
    if s[7] != s[4] || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err("invalid calendar date");
    }
    let mut secs = days_from_civil(y, m as u32, d as u32) * 86_400;
    let mut frac_ns = 0;
    let mut i = 10;
    if i < s.len()
        && matches!(s[i], b'T' | b't' | b' ')
        && s.get(i + 1).is_some_and(u8::is_ascii_digit)
    {
        let h = digits(s, i + 1, 2).ok_or(BAD)?;
        let mi = (s.get(i + 3) == Some(&b':'))
            .then(|| digits(s, i + 4, 2))
            .flatten()
            .ok_or(BAD)?;
        i += 6;
        let mut sec = 0;
        if s.get(i) == Some(&b':') {
            sec = digits(s, i + 1, 2).ok_or(BAD)?;
            i += 3;
        }
        // 24:00:00 is not accepted; 60 seconds (a leap second) is not representable.
        if h > 23 || mi > 59 || sec > 59 {
            return Err("invalid time of day");
        }
        secs += h * 3600 + mi * 60 + sec;
        if s.get(i) == Some(&b'.') || s.get(i) == Some(&b',') {
            let start = i + 1;
            let mut end = start;
            while end < s.len() && s[end].is_ascii_digit() {
                end += 1;
            }
            if end == start {
                return Err(BAD);
            }
            frac_ns = frac_to_ns(&s[start..end]).0;
            i = end;
        }
    }
    let offset_ms = zone_offset_ms(&s[i..]).ok_or(BAD)?;
    Ok((secs - offset_ms / 1000, frac_ns))
}

/// The zone suffix as an offset from UTC in milliseconds; empty means UTC.
fn zone_offset_ms(z: &[u8]) -> Option<i64> {
    match z {
        [] | [b'Z'] | [b'z'] | b" UTC" | b"UTC" | b" Z" => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, mi) = match rest.len() {
                2 => (digits(rest, 0, 2)?, 0),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return None,
            };
            if h > 23 || mi > 59 {
                return None;
            }
            let off = (h * 60 + mi) * 60_000;
            Some(if *sign == b'-' { -off } else { off })
        }
        _ => None,
    }
}

/// `n` ASCII digits at `at` as a number, or `None`.
#[inline]
fn digits(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = s.get(at..at + n)?;
    let mut v = 0i64;
    for &b in part {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as i64;
    }
    Some(v)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Strips ASCII spaces, tabs and surrounding double quotes.
#[inline]
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        s = &s[1..s.len() - 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        parse_ts(s.as_bytes(), None).unwrap().0
    }

    #[test]
    fn every_form_lands_on_the_same_millisecond() {
        let want = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        for s in [
            "1704067200",
            "1704067200000",
            "1704067200000000",
            "1704067200000000000",
            "1704067200.000",
            "2024-01-01",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T00:00:00.0009Z",
            "2024-01-01T01:00:00+01:00",
            "2023-12-31T19:00:00-0500",
            "2024-01-01T02:00+02",
            "2024/01/01 00:00:00",
            "2024-01-01 00:00:00 UTC",
            " \"2024-01-01T00:00\" ",
        ] {
            assert_eq!(ms(s), want, "{s}");
        }
        assert_eq!(ms("2024-02-29T23:59:59.999"), 1_709_251_199_999);
        assert_eq!(ms("1704067200.5"), want + 500);
        assert_eq!(ms("-1.5"), -1500);
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), -1);
        assert_eq!(parse_ts(b"0", Some(TsUnit::Ms)).unwrap().0, 0);
        assert_eq!(
            parse_ts(b"1704067200123456", None).unwrap(),
            (want + 123, Some(TsUnit::Us))
        );
        assert_eq!(parse_ts(b"-1", Some(TsUnit::Us)).unwrap().0, -1, "floored");
    }

    #[test]
    fn nanosecond_forms_keep_every_digit() {
        let ns = |s: &str| parse_ts_ns(s.as_bytes(), None).unwrap().0;
        let want = 1_704_067_200_123_456_789; // 2024-01-01T00:00:00.123456789Z
        for s in [
            "1704067200123456789",
            "1704067200.123456789",
            "2024-01-01T00:00:00.123456789Z",
            "2024-01-01 01:00:00.1234567891+01:00",
        ] {
            assert_eq!(ns(s), want, "{s}");
        }
        assert_eq!(ns("1704067200123456"), want - 789, "microseconds");
        assert_eq!(ns("1704067200123"), want - 456_789, "milliseconds");
        assert_eq!(ns("2024-01-01"), want - 123_456_789);
        assert_eq!(ns("-1.5"), -1_500_000_000);
        assert_eq!(ns("-0.0000000001"), -1, "floored");
        assert_eq!(
            parse_ts_ns(b"1704067200123456", None).unwrap().1,
            Some(TsUnit::Us)
        );
        assert!(parse_ts_ns(b"2263-01-01", None).is_err(), "past 2262");
        assert!(parse_ts_ns(b"99999999999", Some(TsUnit::S)).is_err());
    }

    #[test]
    fn bad_forms_are_refused_with_a_reason() {
        for s in [
            "",
            "abc",
            "2024-13-01",
            "2023-02-29",
            "2024-01-01T25:00",
            "2024-01-01T00:00:00Q",
            "2024-01-01T00",
            "1704067200000.5",
            "99999999999999999999",
            "2024-01-0",
            "2024-01/01",
        ] {
            assert!(parse_ts(s.as_bytes(), None).is_err(), "{s:?} accepted");
        }
    }
}

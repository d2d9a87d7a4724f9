//! Real numbers to the series' stored integers.
//!
//! The rounding rule: `real × scale` is rounded to the nearest integer, halves away
//! from zero (`0.125` at scale 100 is 13, `-0.125` is -13). Decimal text is converted
//! exactly (no binary floating point in between), so `42000.125` at scale 100 is always
//! 4200013. Floats (Parquet or Arrow float columns) are multiplied in f64 and rounded
//! with `f64::round`, which rounds halves away from zero too.
//!
//! A value is refused when it cannot be represented: NaN or infinity (except in f64
//! scalar series, which store them as they are), a result outside i64, and, with
//! `strict`, any value the rounding would change: decimal text with a nonzero digit
//! finer than the scale, or a float farther than 1e-9 (relative) from an integer after
//! scaling (floats carry binary noise, so an exact test would refuse `0.1 × 10`).

/// How one value column is converted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRule {
    /// Real value times `scale`, rounded (kline prices and volume; i64 scalars use 1).
    /// `exp` is k when `scale` is 10^k (else `u32::MAX`): decimal text with at most k
    /// fraction digits then scales by one multiplication, with no division.
    Scaled { scale: i64, exp: u32, strict: bool },
    /// Already the stored integer; a fraction is refused.
    Raw,
    /// An f64 scalar: stored as the IEEE bits of the parsed value.
    F64Bits,
    /// A trade's `side`: 1 buyer-initiated, -1 seller-initiated, 0 unknown; text as
    /// vendors write it ([`side_of_text`]).
    Side,
    /// A buyer-maker flag (Binance's `is_buyer_maker`) read as a `side`: true (the
    /// buyer was the maker, so the seller initiated) is -1, false is 1.
    BuyerMaker,
    /// A tick's `seq`: an unsigned 64-bit integer below 2^64 - 1 (reserved), stored as
    /// its bits.
    Seq,
}

/// A `side` as text, case-insensitive: `B`, `buy`, `buyer`, `bid` and `1` are 1 (the
/// buyer initiated); `S`, `sell`, `seller`, `A`, `ask`, `offer` and `-1` are -1; `N`,
/// `none`, `unknown`, `0` and an empty field are 0. `A`/`B`/`N` are the aggressor
/// codes of Databento and CME files.
pub fn side_of_text(s: &[u8]) -> Result<i64, ValueError> {
    let s = super::timestamps::trim(s);
    if s.len() > 8 {
        return Err(SIDE);
    }
    let mut low = [0u8; 8];
    for (d, b) in low.iter_mut().zip(s) {
        *d = b.to_ascii_lowercase();
    }
    match &low[..s.len()] {
        b"b" | b"buy" | b"buyer" | b"bid" | b"1" | b"+1" => Ok(1),
        b"s" | b"sell" | b"seller" | b"a" | b"ask" | b"offer" | b"-1" => Ok(-1),
        b"" | b"n" | b"none" | b"unknown" | b"0" => Ok(0),
        _ => Err(SIDE),
    }
}

/// A buyer-maker flag as text: `true`/`false`, `t`/`f`, `1`/`0`, `yes`/`no`.
pub fn buyer_maker_of_text(s: &[u8]) -> Result<i64, ValueError> {
    let s = super::timestamps::trim(s);
    if s.len() > 5 {
        return Err(MAKER);
    }
    let mut low = [0u8; 5];
    for (d, b) in low.iter_mut().zip(s) {
        *d = b.to_ascii_lowercase();
    }
    match &low[..s.len()] {
        b"true" | b"t" | b"1" | b"yes" | b"y" => Ok(-1),
        b"false" | b"f" | b"0" | b"no" | b"n" => Ok(1),
        _ => Err(MAKER),
    }
}

const SIDE: ValueError =
    "side must be B/buy/1 (buyer-initiated), S/sell/A/-1 (seller-initiated) or N/0/empty (unknown)";
const MAKER: ValueError = "a buyer-maker flag must be true or false";
const SEQ: ValueError = "seq must be an integer from 0 to 2^64 - 2";

/// Why a value was refused; ends up in the rejects file.
pub type ValueError = &'static str;

const TOO_BIG: ValueError = "value out of the 64-bit integer range after scaling";
const NOT_NUMBER: ValueError = "not a number";
const INEXACT: ValueError = "value has more precision than the series' scale (--strict-scale)";

impl ValueRule {
    /// The rule for real values at `scale`.
    pub fn scaled(scale: i64, strict: bool) -> ValueRule {
        let exp = (0..19)
            .find(|&k| POW10[k as usize] == scale)
            .unwrap_or(u32::MAX);
        ValueRule::Scaled { scale, exp, strict }
    }

    /// Converts one text field.
    #[inline]
    pub fn parse_text(self, s: &[u8]) -> Result<i64, ValueError> {
        match self {
            ValueRule::Scaled { scale, exp, strict } => match parse_decimal(s) {
                Some(d) if exp < 19 && d.frac_digits <= exp => {
                    d.scale_exact(POW10[(exp - d.frac_digits) as usize])
                }
                Some(d) => d.scale(scale, strict),
                None => self.from_f64(parse_f64(s).ok_or(NOT_NUMBER)?),
            },
            ValueRule::Raw => match parse_decimal(s) {
                Some(d) => d.scale(1, true).map_err(|_| "raw values must be integers"),
                None => Err(NOT_NUMBER),
            },
            ValueRule::F64Bits => Ok(parse_f64(s).ok_or(NOT_NUMBER)?.to_bits() as i64),
            ValueRule::Side => side_of_text(s),
            ValueRule::BuyerMaker => buyer_maker_of_text(s),
            ValueRule::Seq => {
                let s = super::timestamps::trim(s);
                let digits = s.strip_prefix(b"+").unwrap_or(s);
                if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit)
                {
                    return Err(SEQ);
                }
                let v = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or(SEQ)?;
                self.from_u64(v)
            }
        }
    }

    /// Converts one unsigned integer (a `seq` column of type uint64).
    #[inline]
    pub fn from_u64(self, v: u64) -> Result<i64, ValueError> {
        match self {
            ValueRule::Seq if v == u64::MAX => Err(SEQ),
            ValueRule::Seq => Ok(v as i64),
            _ => self.from_i64(i64::try_from(v).map_err(|_| TOO_BIG)?),
        }
    }

    /// Converts a boolean (a buyer-maker flag).
    #[inline]
    pub fn from_bool(self, v: bool) -> Result<i64, ValueError> {
        match self {
            ValueRule::BuyerMaker => Ok(if v { -1 } else { 1 }),
            _ => Err("a boolean column can only be a buyer-maker flag (is_buyer_maker)"),
        }
    }

    /// Converts one float value (from a Parquet or Arrow float column).
    #[inline]
    pub fn from_f64(self, v: f64) -> Result<i64, ValueError> {
        let scale = match self {
            ValueRule::F64Bits => return Ok(v.to_bits() as i64),
            ValueRule::Side | ValueRule::BuyerMaker | ValueRule::Seq => {
                if v.fract() != 0.0 || !(-1e18..1e18).contains(&v) {
                    return Err(NOT_NUMBER);
                }
                return self.from_i64(v as i64);
            }
            ValueRule::Raw => 1,
            ValueRule::Scaled { scale, .. } => scale,
        };
        if !v.is_finite() {
            return Err("NaN or infinite values cannot be stored as fixed-point integers");
        }
        let x = v * scale as f64;
        let r = x.round();
        // `i64::MAX as f64` is exactly 2^63 (the nearest double); anything at or
        // beyond it overflows i64, while -2^63 itself fits.
        if !(i64::MIN as f64..i64::MAX as f64).contains(&r) {
            return Err(TOO_BIG);
        }
        let strict = matches!(
            self,
            ValueRule::Raw | ValueRule::Scaled { strict: true, .. }
        );
        if strict && (x - r).abs() > 1e-9 * x.abs().max(1.0) {
            return Err(if self == ValueRule::Raw {
                "raw values must be integers"
            } else {
                INEXACT
            });
        }
        Ok(r as i64)
    }

    /// Converts one integer value (from a Parquet or Arrow integer column).
    #[inline]
    pub fn from_i64(self, v: i64) -> Result<i64, ValueError> {
        match self {
            ValueRule::Scaled { scale, .. } => v.checked_mul(scale).ok_or(TOO_BIG),
            ValueRule::Raw => Ok(v),
            ValueRule::F64Bits => Ok((v as f64).to_bits() as i64),
            ValueRule::Side if (-1..=1).contains(&v) => Ok(v),
            ValueRule::Side => Err(SIDE),
            ValueRule::BuyerMaker if v == 0 || v == 1 => Ok(if v == 1 { -1 } else { 1 }),
            ValueRule::BuyerMaker => Err(MAKER),
            ValueRule::Seq => u64::try_from(v)
                .map_err(|_| SEQ)
                .and_then(|u| self.from_u64(u)),
        }
    }

    /// Converts an Arrow decimal (`mantissa × 10^-digits`) exactly.
    pub fn from_decimal(self, mantissa: i128, digits: i8) -> Result<i64, ValueError> {
        if self == ValueRule::F64Bits {
            return Ok((mantissa as f64 / 10f64.powi(digits as i32)).to_bits() as i64);
        }
        let d = if digits >= 0 {
            Decimal {
                mantissa,
                frac_digits: digits as u32,
            }
        } else {
            let m = mantissa.checked_mul(10i128.checked_pow(-digits as u32).ok_or(TOO_BIG)?);
            Decimal {
                mantissa: m.ok_or(TOO_BIG)?,
                frac_digits: 0,
            }
        };
        match self {
            ValueRule::Scaled { scale, strict, .. } => d.scale(scale, strict),
            ValueRule::Side | ValueRule::BuyerMaker | ValueRule::Seq => {
                let v = d.scale(1, true).map_err(|_| NOT_NUMBER)?;
                self.from_i64(v)
            }
            _ => d.scale(1, true).map_err(|_| "raw values must be integers"),
        }
    }
}

/// An exact decimal: `mantissa / 10^frac_digits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: i128,
    pub frac_digits: u32,
}

impl Decimal {
    /// `self × factor` when that is an integer by construction (no rounding).
    #[inline]
    pub fn scale_exact(self, factor: i64) -> Result<i64, ValueError> {
        let v = self.mantissa.checked_mul(factor as i128).ok_or(TOO_BIG)?;
        i64::try_from(v).map_err(|_| TOO_BIG)
    }

    /// `self × scale`, rounded half away from zero.
    #[inline]
    pub fn scale(self, scale: i64, strict: bool) -> Result<i64, ValueError> {
        // The common case (a price with a few decimals) fits i64 arithmetic, which is
        // several times faster than the i128 division of the general path.
        if self.frac_digits <= 18
            && let Ok(m) = i64::try_from(self.mantissa)
            && let Some(num) = m.checked_mul(scale)
        {
            return round_div(
                num as i128,
                POW10[self.frac_digits as usize] as i128,
                strict,
            );
        }
        let num = self.mantissa.checked_mul(scale as i128).ok_or(TOO_BIG)?;
        let den = 10i128.checked_pow(self.frac_digits).ok_or(TOO_BIG)?;
        round_div(num, den, strict)
    }
}

/// Powers of ten that fit in i64.
const POW10: [i64; 19] = {
    let mut t = [1i64; 19];
    let mut i = 1;
    while i < 19 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `num / den` rounded half away from zero, as i64.
#[inline]
fn round_div(num: i128, den: i128, strict: bool) -> Result<i64, ValueError> {
    if den == 1 {
        return i64::try_from(num).map_err(|_| TOO_BIG);
    }
    let (q, r) = if let (Ok(n), Ok(d)) = (i64::try_from(num), i64::try_from(den)) {
        ((n / d) as i128, (n % d) as i128)
    } else {
        (num / den, num % den)
    };
    if r != 0 && strict {
        return Err(INEXACT);
    }
    // Round half away from zero: a remainder of at least half a step moves one step
    // away from zero.
    let v = if r.abs() * 2 >= den {
        q + num.signum()
    } else {
        q
    };
    i64::try_from(v).map_err(|_| TOO_BIG)
}

/// Parses `[+-]digits[.digits]` exactly. Returns `None` for anything else (exponents,
/// `nan`, more than 36 significant digits), which callers retry as an f64.
#[inline]
pub fn parse_decimal(s: &[u8]) -> Option<Decimal> {
    let s = super::timestamps::trim(s);
    let (neg, body) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() || body.len() > 36 {
        return None;
    }
    // Up to 19 digits fit u64, which is cheaper to accumulate than u128.
    let mut m: u128 = 0;
    let mut frac_digits = 0u32;
    let mut seen_dot = false;
    let mut any_digit = false;
    if body.len() <= 19 {
        let mut m64: u64 = 0;
        for &b in body {
            let d = b.wrapping_sub(b'0');
            if d <= 9 {
                m64 = m64 * 10 + d as u64;
                frac_digits += u32::from(seen_dot);
                any_digit = true;
            } else if b == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                return None;
            }
        }
        m = m64 as u128;
    } else {
        for &b in body {
            let d = b.wrapping_sub(b'0');
            if d <= 9 {
                m = m * 10 + d as u128;
                frac_digits += u32::from(seen_dot);
                any_digit = true;
            } else if b == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                return None;
            }
        }
    }
    if !any_digit {
        return None;
    }
    let m = m as i128;
    Some(Decimal {
        mantissa: if neg { -m } else { m },
        frac_digits,
    })
}

/// Parses any float text Rust accepts (`1e-3`, `NaN`, `inf`), after trimming.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(super::timestamps::trim(s))
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ValueRule = ValueRule::Scaled {
        scale: 100,
        exp: 2,
        strict: false,
    };
    const STRICT: ValueRule = ValueRule::Scaled {
        scale: 100,
        exp: 2,
        strict: true,
    };

    #[test]
    fn sides_buyer_maker_flags_and_seqs_as_vendors_write_them() {
        for (t, v) in [
            ("B", 1),
            ("buy", 1),
            (" BUY ", 1),
            ("\"b\"", 1),
            ("S", -1),
            ("Sell", -1),
            ("A", -1),
            ("-1", -1),
            ("N", 0),
            ("", 0),
            ("0", 0),
        ] {
            assert_eq!(ValueRule::Side.parse_text(t.as_bytes()), Ok(v), "{t:?}");
        }
        for t in ["2", "x", "buying", "true"] {
            assert!(ValueRule::Side.parse_text(t.as_bytes()).is_err(), "{t:?}");
        }
        assert_eq!(ValueRule::Side.from_i64(-1), Ok(-1));
        assert!(ValueRule::Side.from_i64(2).is_err());
        assert_eq!(ValueRule::BuyerMaker.parse_text(b"True"), Ok(-1));
        assert_eq!(ValueRule::BuyerMaker.parse_text(b"false"), Ok(1));
        assert_eq!(ValueRule::BuyerMaker.from_bool(true), Ok(-1));
        assert!(ValueRule::Side.from_bool(true).is_err());
        assert_eq!(ValueRule::Seq.parse_text(b"18446744073709551614"), Ok(-2));
        assert!(ValueRule::Seq.parse_text(b"18446744073709551615").is_err());
        assert!(ValueRule::Seq.parse_text(b"-3").is_err());
        assert!(ValueRule::Seq.from_i64(-3).is_err());
        assert_eq!(ValueRule::Seq.from_u64(7), Ok(7));
    }

    #[test]
    fn rounding_is_half_away_from_zero_and_exact_for_text() {
        assert_eq!(P.parse_text(b"42000.12"), Ok(4_200_012));
        assert_eq!(P.parse_text(b"42000.125"), Ok(4_200_013));
        assert_eq!(P.parse_text(b"-42000.125"), Ok(-4_200_013));
        assert_eq!(P.parse_text(b"0.124999"), Ok(12));
        assert_eq!(P.parse_text(b"0.005"), Ok(1));
        assert_eq!(P.parse_text(b"7"), Ok(700));
        assert_eq!(P.parse_text(b"1e2"), Ok(10_000), "exponents go through f64");
        assert_eq!(P.parse_text(b" \"1.5\" "), Ok(150));
        assert_eq!(ValueRule::scaled(3, false).parse_text(b"0.5"), Ok(2));
        assert_eq!(ValueRule::scaled(100, false), P);
        assert_eq!(
            ValueRule::scaled(1000, false).parse_text(b"12.3456"),
            Ok(12_346)
        );
        assert_eq!(
            ValueRule::scaled(1000, false).parse_text(b"-12.3"),
            Ok(-12_300)
        );
        assert_eq!(P.parse_text(b"123456789012345678.9"), Err(TOO_BIG));
        // 1.005 is 1.00499999999999989... in binary; text avoids that trap.
        assert_eq!(P.parse_text(b"1.005"), Ok(101));
        assert_eq!(P.from_f64(0.125), Ok(13));
        assert_eq!(P.from_f64(-0.125), Ok(-13));
    }

    #[test]
    fn unrepresentable_values_are_refused() {
        assert!(P.parse_text(b"nan").is_err());
        assert!(P.parse_text(b"inf").is_err());
        assert!(P.parse_text(b"").is_err());
        assert!(P.parse_text(b"1.2.3").is_err());
        assert!(P.parse_text(b"abc").is_err());
        assert!(
            P.parse_text(b"92233720368547758.08").is_err(),
            "overflows after scaling"
        );
        assert!(P.from_f64(1e17).is_err());
        assert!(STRICT.parse_text(b"0.125").is_err());
        assert_eq!(STRICT.parse_text(b"0.120"), Ok(12));
        assert_eq!(
            STRICT.from_f64(0.1 + 0.2),
            Ok(30),
            "binary noise is tolerated"
        );
        assert!(STRICT.from_f64(0.125).is_err());
        assert!(ValueRule::Raw.parse_text(b"1.5").is_err());
        assert_eq!(ValueRule::Raw.parse_text(b"-15"), Ok(-15));
    }

    #[test]
    fn f64_scalars_keep_their_bits() {
        let nan = ValueRule::F64Bits.parse_text(b"NaN").unwrap();
        assert!(f64::from_bits(nan as u64).is_nan());
        assert_eq!(
            ValueRule::F64Bits.parse_text(b"0.1"),
            Ok(0.1f64.to_bits() as i64)
        );
        assert_eq!(
            ValueRule::F64Bits.from_decimal(15, 1),
            Ok(1.5f64.to_bits() as i64)
        );
        assert_eq!(P.from_decimal(12_345, 3), Ok(1235));
        assert_eq!(P.from_i64(3), Ok(300));
    }
}

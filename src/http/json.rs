//! Read responses written straight from the mapped columns.
//!
//! A page is serialized by walking the zero-copy [`ChunkSlice`]s column by column
//! index and appending bytes: no `Vec` of record structs, no `serde_json::Value`.
//! Integers go through serde_json's formatter (itoa), floats through its shortest
//! round-trip formatter; NaN and infinities, which JSON cannot carry, become `null`.
//! The shapes match [`super::types::KlinePage`] and [`super::types::ScalarPage`].

use std::io;

use serde_json::ser::{CompactFormatter, Formatter};

use crate::query::ReadPage;
use crate::record::{SeriesKind, ValueType};
use crate::storage::ChunkSlice;

/// Bytes per kline row with typical 13-digit timestamps and 7-digit prices.
const KLINE_ROW_BYTES: usize = 100;
/// Bytes per scalar row.
const SCALAR_ROW_BYTES: usize = 40;

/// Serializes a page of either kind as `{"records": [...], "next_start_ts": ...}`.
pub fn page(p: &ReadPage) -> io::Result<Vec<u8>> {
    let kind = p.meta.key.kind();
    let row_bytes = match kind {
        SeriesKind::Kline => KLINE_ROW_BYTES,
        SeriesKind::Scalar => SCALAR_ROW_BYTES,
    };
    let mut out = Vec::with_capacity(48 + p.rows * row_bytes);
    out.extend_from_slice(b"{\"records\":[");
    let mut first = true;
    for s in &p.slices {
        match (kind, p.meta.value_type) {
            (SeriesKind::Kline, _) => kline_rows(&mut out, s, &mut first)?,
            (SeriesKind::Scalar, ValueType::I64) => scalar_i64_rows(&mut out, s, &mut first)?,
            (SeriesKind::Scalar, ValueType::F64) => scalar_f64_rows(&mut out, s, &mut first)?,
        }
    }
    out.extend_from_slice(b"],\"next_start_ts\":");
    match p.next_start_ts {
        Some(ts) => CompactFormatter.write_i64(&mut out, ts)?,
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(out)
}

/// Writes the separator before every record but the first.
fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

fn kline_rows(out: &mut Vec<u8>, s: &ChunkSlice, first: &mut bool) -> io::Result<()> {
    let (ts, open, high, low, close, volume) =
        (s.ts(), s.col(1), s.col(2), s.col(3), s.col(4), s.col(5));
    let f = &mut CompactFormatter;
    for i in 0..ts.len() {
        sep(out, first);
        out.extend_from_slice(b"{\"ts\":");
        f.write_i64(out, ts[i])?;
        out.extend_from_slice(b",\"open\":");
        f.write_i64(out, open[i])?;
        out.extend_from_slice(b",\"high\":");
        f.write_i64(out, high[i])?;
        out.extend_from_slice(b",\"low\":");
        f.write_i64(out, low[i])?;
        out.extend_from_slice(b",\"close\":");
        f.write_i64(out, close[i])?;
        out.extend_from_slice(b",\"volume\":");
        f.write_i64(out, volume[i])?;
        out.push(b'}');
    }
    Ok(())
}

fn scalar_i64_rows(out: &mut Vec<u8>, s: &ChunkSlice, first: &mut bool) -> io::Result<()> {
    let (ts, value) = (s.ts(), s.col(1));
    let f = &mut CompactFormatter;
    for i in 0..ts.len() {
        sep(out, first);
        out.extend_from_slice(b"{\"ts\":");
        f.write_i64(out, ts[i])?;
        out.extend_from_slice(b",\"value\":");
        f.write_i64(out, value[i])?;
        out.push(b'}');
    }
    Ok(())
}

fn scalar_f64_rows(out: &mut Vec<u8>, s: &ChunkSlice, first: &mut bool) -> io::Result<()> {
    let (ts, value) = (s.ts(), s.col_f64(1));
    let f = &mut CompactFormatter;
    for i in 0..ts.len() {
        sep(out, first);
        out.extend_from_slice(b"{\"ts\":");
        f.write_i64(out, ts[i])?;
        out.extend_from_slice(b",\"value\":");
        write_f64(out, value[i])?;
        out.push(b'}');
    }
    Ok(())
}

/// A finite float in shortest round-trip form; NaN and infinities as `null`.
pub fn write_f64(out: &mut Vec<u8>, v: f64) -> io::Result<()> {
    if v.is_finite() {
        CompactFormatter.write_f64(out, v)
    } else {
        out.extend_from_slice(b"null");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_and_non_finite_is_null() {
        for v in [0.0, -0.0, 1.5, 1e300, -2.2250738585072014e-308, 71.25] {
            let mut out = Vec::new();
            write_f64(&mut out, v).unwrap();
            let back: f64 = std::str::from_utf8(&out).unwrap().parse().unwrap();
            assert_eq!(
                back.to_bits(),
                v.to_bits(),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut out = Vec::new();
            write_f64(&mut out, v).unwrap();
            assert_eq!(out, b"null");
        }
    }
}

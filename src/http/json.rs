//! Read responses written straight from the mapped columns.
//!
//! A page is serialized by walking the zero-copy [`ChunkSlice`]s column by column
//! index and appending bytes: no `Vec` of record structs, no `serde_json::Value`.
//! Integers go through serde_json's formatter (itoa), floats through its shortest
//! round-trip formatter; NaN and infinities, which JSON cannot carry, become `null`.
//! The shapes match [`super::types::KlinePage`] and [`super::types::ScalarPage`].

use std::io;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use serde_json::ser::{CompactFormatter, Formatter};

use crate::query::ChunkSlice;
use crate::query::ReadPage;
use crate::record::{SeriesKind, ValueType};

/// Bytes per kline row with typical 13-digit timestamps and 7-digit prices.
const KLINE_ROW_BYTES: usize = 100;
/// Bytes per scalar row.
const SCALAR_ROW_BYTES: usize = 40;
/// A tick row as JSON, about: six integers and their names.
const TICK_ROW_BYTES: usize = 120;

/// Serializes a page of either kind as `{"records": [...], "next_start_ts": ...}`.
pub fn page(p: &ReadPage) -> io::Result<Vec<u8>> {
    let kind = p.meta.key.kind();
    let row_bytes = match kind {
        SeriesKind::Kline => KLINE_ROW_BYTES,
        SeriesKind::Scalar => SCALAR_ROW_BYTES,
        SeriesKind::Trade | SeriesKind::Quote => TICK_ROW_BYTES,
    };
    let mut out = Vec::with_capacity(48 + p.rows * row_bytes);
    out.extend_from_slice(b"{\"records\":[");
    let mut first = true;
    for s in &p.slices {
        match (kind, p.meta.value_type) {
            (SeriesKind::Kline, _) => kline_rows(&mut out, s, &mut first)?,
            (SeriesKind::Scalar, ValueType::I64) => scalar_i64_rows(&mut out, s, &mut first)?,
            (SeriesKind::Scalar, ValueType::F64) => scalar_f64_rows(&mut out, s, &mut first)?,
            (SeriesKind::Trade | SeriesKind::Quote, _) => {
                tick_rows(&mut out, kind.layout().columns, s, &mut first)?
            }
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

/// Serializes a page of ticks as `{"records": [...], "next": {"ts", "seq"} | null}`.
pub fn tick_page(p: &crate::query::tick::TickRows) -> io::Result<Vec<u8>> {
    let rows: usize = p.slices.iter().map(ChunkSlice::len).sum();
    let names = p.meta.layout().columns;
    let mut out = Vec::with_capacity(48 + rows * TICK_ROW_BYTES);
    out.extend_from_slice(b"{\"records\":[");
    let mut first = true;
    for s in &p.slices {
        tick_rows(&mut out, names, s, &mut first)?;
    }
    out.extend_from_slice(b"],\"next\":");
    match p.next {
        Some(c) => {
            let f = &mut CompactFormatter;
            out.extend_from_slice(b"{\"ts\":");
            f.write_i64(&mut out, c.ts)?;
            out.extend_from_slice(b",\"seq\":");
            f.write_u64(&mut out, c.seq)?;
            out.push(b'}');
        }
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

/// Rows of a tick series: every stored column by its layout name, `seq` unsigned.
fn tick_rows(
    out: &mut Vec<u8>,
    names: &[&str],
    s: &ChunkSlice,
    first: &mut bool,
) -> io::Result<()> {
    let cols: Vec<&[i64]> = (0..names.len()).map(|c| s.col(c)).collect();
    let f = &mut CompactFormatter;
    for i in 0..s.len() {
        sep(out, first);
        for (c, (name, col)) in names.iter().zip(&cols).enumerate() {
            out.push(if c == 0 { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            if *name == "seq" {
                f.write_u64(out, col[i] as u64)?;
            } else {
                f.write_i64(out, col[i])?;
            }
        }
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

/// Serializes record batches as `{"records": [...], "next_start_ts": ...}` (resampled
/// and aligned reads): one object per row keyed by the column names, int64 and
/// timestamps as integers, floats in shortest form, booleans, and nulls as `null`.
pub fn batches_page(batches: &[RecordBatch], next_start_ts: Option<i64>) -> io::Result<Vec<u8>> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let cols = batches.first().map_or(1, RecordBatch::num_columns);
    let mut out = Vec::with_capacity(48 + rows * cols * 16);
    out.extend_from_slice(b"{\"records\":");
    records(&mut out, batches)?;
    out.extend_from_slice(b",\"next_start_ts\":");
    write_opt_i64(&mut out, next_start_ts)?;
    out.push(b'}');
    Ok(out)
}

/// One series of a batch read.
pub struct SeriesPart {
    pub symbol: String,
    pub batches: Vec<RecordBatch>,
    pub next_start_ts: Option<i64>,
}

/// Serializes a batch read: `{"series": [{"symbol", "records", "next_start_ts"}]}`.
pub fn series_page(parts: &[SeriesPart]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"series\":[");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"symbol\":");
        serde_json::to_writer(&mut out, &p.symbol)?;
        out.extend_from_slice(b",\"records\":");
        records(&mut out, &p.batches)?;
        out.extend_from_slice(b",\"next_start_ts\":");
        write_opt_i64(&mut out, p.next_start_ts)?;
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

fn write_opt_i64(out: &mut Vec<u8>, v: Option<i64>) -> io::Result<()> {
    match v {
        Some(ts) => CompactFormatter.write_i64(out, ts),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// A JSON array with one object per row of `batches`.
fn records(out: &mut Vec<u8>, batches: &[RecordBatch]) -> io::Result<()> {
    out.push(b'[');
    let mut first = true;
    for b in batches {
        // `"name":` of every column, escaped once per batch.
        let keys: Vec<Vec<u8>> = b
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let mut k = serde_json::to_vec(f.name())?;
                k.push(b':');
                Ok(k)
            })
            .collect::<io::Result<_>>()?;
        for row in 0..b.num_rows() {
            sep(out, &mut first);
            out.push(b'{');
            for (c, (key, col)) in keys.iter().zip(b.columns()).enumerate() {
                if c > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                value(out, col.as_ref(), row)?;
            }
            out.push(b'}');
        }
    }
    out.push(b']');
    Ok(())
}

/// One cell as JSON.
fn value(out: &mut Vec<u8>, col: &dyn Array, row: usize) -> io::Result<()> {
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let f = &mut CompactFormatter;
    match col.data_type() {
        DataType::Int64 => f.write_i64(out, col.as_primitive::<Int64Type>().value(row)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => f.write_i64(
            out,
            col.as_primitive::<TimestampMillisecondType>().value(row),
        ),
        DataType::Float64 => write_f64(out, col.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => {
            let v = col.as_boolean().value(row);
            out.extend_from_slice(if v { b"true" } else { b"false" });
            Ok(())
        }
        other => Err(io::Error::other(format!(
            "no JSON form for a {other} column"
        ))),
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

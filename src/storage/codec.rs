//! Compression of sealed months: each column of a chunk compressed on its own with
//! pcodec (`pco`), which finds the delta order (none, delta, delta-of-delta) and the
//! bit widths per page by itself: regular timestamps shrink to almost nothing, prices
//! that move by ticks to a few bits. f64 scalar values are compressed as floats. The
//! sizes it reaches beside Parquet and ArcticDB are measured in `docs/benchmarks.md` (and the runs behind them in `docs/benchmarks/journal/`).
//!
//! ```text
//! compressed body = one record per column, in column order:
//!   codec  u8   0: pco i64, 1: pco f64 (the i64 bits of an f64 column)
//!   len    u32  bytes of the stream
//!   stream len bytes (a standalone pco file)
//! ```
//!
//! A compressed chunk is read by decompressing it once into memory laid out exactly as
//! the raw chunk file (the header's 512 bytes, left zero: the decoded header is kept
//! beside the image; then each column at its stride), so every reader works on it
//! unchanged and zero-copy from there ([`image`]).

use arrow_buffer::{Buffer, MutableBuffer};

use super::format::{CHUNK_HEADER_LEN, ChunkHeader, max_compressed_body};
use crate::record::{SeriesKind, ValueType};

const CODEC_I64: u8 = 0;
const CODEC_F64: u8 = 1;
const CODEC_LEN: usize = 1;
const STREAM_LEN_LEN: usize = 4;

/// Whether column `i` of a chunk of this header holds f64 bits.
fn is_f64(h: &ChunkHeader, i: usize) -> bool {
    h.meta.key.kind() == SeriesKind::Scalar && h.meta.value_type == ValueType::F64 && i == 1
}

/// How hard [`compress`] works: the choice is the writer's, a reader cannot tell (each
/// column is a standalone pco stream that says how it was encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// For a write that compresses while a client waits (`series::sealed`): pco level
    /// 0; integer columns in classic mode with first-order deltas (prices that move by
    /// ticks, regular timestamps), skipping pco's searches for the delta order and for
    /// common multiples, which dominate on small chunks. Measured on a month of 1m
    /// bars: about 3x the speed of `Thorough`, 12% more bytes; on a month of 1h bars
    /// about 19x, 7% more (docs/benchmarks/journal/2026-11-25-sealed-on-write.md).
    /// Not for ticks: see `Thorough`.
    Fast,
    /// For the background compression pass, and for sealed tick partitions written
    /// compressed: pco's defaults (level 8, every mode and delta order considered).
    /// On the `ticks` benchmark's trades, 2.3 bytes per trade against `Fast`'s 6.2, at
    /// about a third of its speed (docs/benchmarks/journal/2026-11-26-ticks.md).
    Thorough,
}

impl Effort {
    fn config(self, float: bool) -> pco::ChunkConfig {
        match (self, float) {
            (Effort::Thorough, _) => pco::ChunkConfig::default(),
            // Floats keep pco's mode search: decimal-like values (FloatMult) are common
            // in features and shrink by half with it.
            (Effort::Fast, true) => pco::ChunkConfig::default().with_compression_level(0),
            (Effort::Fast, false) => pco::ChunkConfig::default()
                .with_compression_level(0)
                .with_mode_spec(pco::ModeSpec::Classic)
                .with_delta_spec(pco::DeltaSpec::TryConsecutive(1)),
        }
    }
}

/// Compresses the columns of a chunk of `h` (rows and meta set).
pub fn compress(h: &ChunkHeader, cols: &[&[i64]], effort: Effort) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, col) in cols.iter().enumerate() {
        let (codec, stream) = if is_f64(h, i) {
            let floats: &[f64] = bytemuck::cast_slice(col);
            let config = effort.config(true);
            (CODEC_F64, pco::standalone::simple_compress(floats, &config))
        } else {
            let config = effort.config(false);
            (CODEC_I64, pco::standalone::simple_compress(col, &config))
        };
        // pco refuses only an invalid config, and these are valid.
        let stream = stream.expect("pco compresses any numbers with a valid config");
        out.push(codec);
        out.extend_from_slice(&(stream.len() as u32).to_le_bytes());
        out.extend_from_slice(&stream);
    }
    assert!(
        (out.len() as u64) <= max_compressed_body(cols.len() as u64, h.rows),
        "codec: a compressed body past its bound"
    );
    out
}

/// The column streams of a compressed body of header `h`, in column order, each with
/// its codec; the body holds exactly `h.ncols` of them and nothing after.
fn column_streams<'a>(h: &ChunkHeader, body: &'a [u8]) -> Result<Vec<(u8, &'a [u8])>, String> {
    let mut streams = Vec::with_capacity(h.ncols);
    let mut at = 0usize;
    for _ in 0..h.ncols {
        let codec = *body.get(at).ok_or("compressed body ends before a column")?;
        at += CODEC_LEN;
        let n = body
            .get(at..at + STREAM_LEN_LEN)
            .ok_or("compressed body ends inside a column header")?;
        let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
        at += STREAM_LEN_LEN;
        let stream = body
            .get(at..at.checked_add(n).ok_or("length overflows")?)
            .ok_or("compressed body ends inside a column")?;
        at += n;
        streams.push((codec, stream));
    }
    if at != body.len() {
        return Err("bytes after the last column".into());
    }
    Ok(streams)
}

/// Decompresses the first `dst.len()` values of column `i` (codec `codec`) into `dst`.
fn column_into(
    h: &ChunkHeader,
    i: usize,
    (codec, stream): (u8, &[u8]),
    dst: &mut [i64],
) -> Result<(), String> {
    let want = dst.len();
    let done = match (codec, is_f64(h, i)) {
        (CODEC_I64, false) => pco::standalone::simple_decompress_into(stream, dst),
        (CODEC_F64, true) => {
            pco::standalone::simple_decompress_into::<f64>(stream, bytemuck::cast_slice_mut(dst))
        }
        _ => return Err(format!("column {i}: unexpected codec {codec}")),
    }
    .map_err(|e| format!("column {i}: {e}"))?;
    // A whole column must end with the stream; a prefix only needs its values.
    if done.n_processed != want || (want == h.rows as usize && !done.finished) {
        return Err(format!(
            "column {i}: {} values where {want} were asked for",
            done.n_processed
        ));
    }
    Ok(())
}

/// Decompresses `body` (a compressed chunk of header `h`) into the raw layout: a
/// 64-byte aligned buffer of `h.raw_len()` bytes, `h`'s columns at their offsets. Any
/// bytes give an image or an error, never a panic (`tests/fuzz_decoders.rs`).
pub fn image(h: &ChunkHeader, body: &[u8]) -> Result<Buffer, String> {
    let rows = h.rows as usize;
    let len = usize::try_from(h.raw_len()).map_err(|_| "chunk too large")?;
    let streams = column_streams(h, body)?;
    let mut buf = MutableBuffer::from_len_zeroed(len);
    {
        let words: &mut [i64] = buf.typed_data_mut();
        for (i, s) in streams.into_iter().enumerate() {
            let start = h.column_offset(i) / 8;
            column_into(h, i, s, &mut words[start..start + rows])?;
        }
    }
    debug_assert_eq!(buf.len(), CHUNK_HEADER_LEN + h.ncols * h.stride as usize);
    Ok(buf.into())
}

/// Values of `ts` decompressed per step while looking for the end of a prefix: a
/// multiple of pco's batch (256), small beside a day of ticks, large beside a call.
const PREFIX_STEP: usize = 64 * 256;

/// The `ts` column of a compressed chunk of `rows` rows, decompressed a step at a time
/// until a value passes `hi` or the column ends: at least every value `<= hi` (the
/// column ascends), and at most one step more.
fn ts_through(stream: &[u8], rows: usize, hi: i64) -> Result<Vec<i64>, String> {
    use pco::standalone::{DecompressorItem, FileDecompressor};
    let err = |e: pco::errors::PcoError| format!("column 0: {e}");
    let (fd, mut src) = FileDecompressor::new(stream).map_err(err)?;
    let mut out: Vec<i64> = Vec::new();
    while let DecompressorItem::Chunk(mut cd) = fd.chunk_decompressor::<i64, _>(src).map_err(err)? {
        let chunk_end = out
            .len()
            .checked_add(cd.n())
            .filter(|&e| e <= rows)
            .ok_or("column 0: more values than the header's rows")?;
        while out.len() < chunk_end {
            let at = out.len();
            // A multiple of the batch, or the rest of the chunk (pco's rule for `read`).
            let step = PREFIX_STEP.min(chunk_end - at);
            out.resize(at + step, 0);
            let got = cd.read(&mut out[at..]).map_err(err)?.n_processed;
            if got == 0 || got > step {
                return Err("column 0: the stream ends before its count".into());
            }
            out.truncate(at + got);
            if out[at + got - 1] > hi {
                return Ok(out);
            }
        }
        src = cd.into_src();
    }
    if out.len() != rows {
        return Err(format!(
            "column 0: {} values where the header says {rows}",
            out.len()
        ));
    }
    Ok(out)
}

/// The rows of a compressed chunk of header `h` whose `ts` is at most `hi`, as an image
/// of a chunk of only those rows, with its header (rows, stride, last `ts` and last
/// row of the prefix; the rest as `h`). The `ts` column is decompressed a step at a
/// time until it passes `hi`, then every other column only that far: a read of the
/// first hour of a day of ticks decompresses that hour and a step, not the day. The
/// cost of a read that ends late in the chunk is that of [`image`]; pco streams cannot
/// be entered in the middle. Any bytes give an image or an error, never a panic.
pub fn prefix_image(
    h: &ChunkHeader,
    body: &[u8],
    hi: i64,
) -> Result<(Buffer, ChunkHeader), String> {
    let rows = h.rows as usize;
    let streams = column_streams(h, body)?;
    let (&ts_stream, rest) = streams.split_first().ok_or("a chunk without columns")?;
    if ts_stream.0 != CODEC_I64 {
        return Err(format!("column 0: unexpected codec {}", ts_stream.0));
    }
    let ts = ts_through(ts_stream.1, rows, hi)?;
    let keep = ts.partition_point(|&t| t <= hi);
    let mut p = h.clone();
    p.rows = keep as u64;
    p.stride = super::format::stride_of(keep as u64);
    let len = usize::try_from(p.raw_len()).map_err(|_| "chunk too large")?;
    let mut buf = MutableBuffer::from_len_zeroed(len);
    {
        let words: &mut [i64] = buf.typed_data_mut();
        let start = p.column_offset(0) / 8;
        words[start..start + keep].copy_from_slice(&ts[..keep]);
        if keep > 0 {
            for (i, &s) in rest.iter().enumerate() {
                let start = p.column_offset(i + 1) / 8;
                column_into(h, i + 1, s, &mut words[start..start + keep])?;
            }
        }
        if let Some(last) = keep.checked_sub(1) {
            p.last_ts = ts[last];
            p.last_row = ChunkHeader::last_row_of(
                (0..p.ncols).map(|i| words[p.column_offset(i) / 8 + last]),
            );
        }
    }
    Ok((buf.into(), p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MonthPartition, SeriesKey, SeriesMeta};

    fn header(kind: SeriesKind, vt: ValueType, rows: u64) -> ChunkHeader {
        let key = match kind {
            SeriesKind::Kline => SeriesKey::kline("T", "1m").unwrap(),
            SeriesKind::Scalar => SeriesKey::scalar("T", "1m", "c", "n").unwrap(),
            SeriesKind::Trade => SeriesKey::trade("T").unwrap(),
            SeriesKind::Quote => SeriesKey::quote("T").unwrap(),
        };
        ChunkHeader {
            meta: std::sync::Arc::new(SeriesMeta {
                key,
                timeframe_ms: 60_000,
                price_scale: 100,
                volume_scale: 1,
                value_type: vt,
            }),
            ncols: kind.ncols(),
            rows,
            first_ts: 0,
            last_ts: 0,
            month: MonthPartition::from_ts(1_704_067_200_000).0,
            flags: 0,
            generation: 1,
            write_version: 1,
            write_chunks: 1,
            body_xxh3: 0,
            stride: super::super::format::align_up(rows as usize * 8) as u64,
            wal_lsn: 0,
            body_len: 0,
            last_row: None,
        }
    }

    #[test]
    fn columns_round_trip_bit_for_bit() {
        let rows = 44_640u64;
        let ts: Vec<i64> = (0..rows as i64)
            .map(|i| 1_704_067_200_000 + i * 60_000)
            .collect();
        let mut p = 4_200_000i64;
        let mut cols = vec![ts];
        for c in 0..5 {
            cols.push(
                (0..rows as i64)
                    .map(|i| {
                        p += (i * 7919 + c) % 11 - 5;
                        p
                    })
                    .collect(),
            );
        }
        let h = header(SeriesKind::Kline, ValueType::I64, rows);
        let refs: Vec<&[i64]> = cols.iter().map(Vec::as_slice).collect();
        let body = compress(&h, &refs, Effort::Thorough);
        assert!(
            body.len() < (rows as usize * 48) / 4,
            "{} bytes",
            body.len()
        );
        let img = image(&h, &body).unwrap();
        let words: &[i64] = img.typed_data();
        for (i, c) in cols.iter().enumerate() {
            let start = h.column_offset(i) / 8;
            assert_eq!(
                &words[start..start + rows as usize],
                c.as_slice(),
                "column {i}"
            );
        }
        // f64 values, NaN payloads included, come back bit for bit.
        let h = header(SeriesKind::Scalar, ValueType::F64, 5);
        let v: Vec<i64> = [1.5, f64::NAN, -0.0, f64::INFINITY, 1e-300]
            .iter()
            .map(|f| f.to_bits() as i64)
            .chain([0x7ff8_0000_0000_1234])
            .take(5)
            .collect();
        let ts: Vec<i64> = (0..5).map(|i| 1_704_067_200_000 + i).collect();
        let body = compress(&h, &[&ts, &v], Effort::Fast);
        let img = image(&h, &body).unwrap();
        let words: &[i64] = img.typed_data();
        let start = h.column_offset(1) / 8;
        assert_eq!(&words[start..start + 5], v.as_slice());
        // Truncations and bad codecs are errors.
        for cut in [0, 1, 5, body.len() / 2, body.len() - 1] {
            assert!(image(&h, &body[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = body.clone();
        bad[0] = 9;
        assert!(image(&h, &bad).is_err());
    }

    /// A prefix read gives exactly the rows of `ts <= hi` of the whole image, with a
    /// header that says so, for `hi` before, inside and past the rows, inside a run of
    /// equal `ts`, across pco's pages, and over float values; cut bodies are errors.
    #[test]
    fn a_prefix_is_the_whole_images_rows_through_hi() {
        let rows = 300_000u64;
        // Ticks: bursts of equal ts (seq breaks ties), irregular gaps.
        let ts: Vec<i64> = (0..rows as i64)
            .map(|i| 1_000_000 + (i / 3) * 7 + (i % 97 == 0) as i64 * 5)
            .collect();
        let ts: Vec<i64> = ts
            .iter()
            .scan(i64::MIN, |m, &t| {
                *m = (*m).max(t);
                Some(*m)
            })
            .collect();
        let seq: Vec<i64> = (0..rows as i64).map(|i| i % 3).collect();
        let price: Vec<i64> = (0..rows as i64).map(|i| 10_000 + (i * 7919) % 13).collect();
        let size: Vec<i64> = (0..rows as i64).map(|i| 1 + i % 5).collect();
        let side: Vec<i64> = (0..rows as i64).map(|i| i % 3 - 1).collect();
        let id: Vec<i64> = (0..rows as i64).collect();
        let cols = [ts, seq, price, size, side, id];
        let mut h = header(SeriesKind::Trade, ValueType::I64, rows);
        h.ncols = cols.len();
        h.first_ts = cols[0][0];
        h.last_ts = cols[0][rows as usize - 1];
        let refs: Vec<&[i64]> = cols.iter().map(Vec::as_slice).collect();
        let body = compress(&h, &refs, Effort::Thorough);
        let ts = &cols[0];
        for hi in [
            i64::MIN,
            ts[0] - 1,
            ts[0],
            ts[1],
            ts[5_000],
            ts[16_384],
            ts[16_385],
            ts[262_150],
            ts[299_998],
            h.last_ts,
            i64::MAX,
        ] {
            let (img, p) = prefix_image(&h, &body, hi).unwrap();
            let keep = ts.partition_point(|&t| t <= hi);
            assert_eq!(p.rows as usize, keep, "hi {hi}");
            assert_eq!(img.len() as u64, p.raw_len(), "hi {hi}");
            let words: &[i64] = img.typed_data();
            for (i, c) in cols.iter().enumerate() {
                let start = p.column_offset(i) / 8;
                assert_eq!(
                    &words[start..start + keep],
                    &c[..keep],
                    "hi {hi} column {i}"
                );
            }
            if keep > 0 {
                assert_eq!(p.last_ts, ts[keep - 1]);
                let last: Vec<i64> = cols.iter().map(|c| c[keep - 1]).collect();
                assert_eq!(p.last_row, ChunkHeader::last_row_of(last.into_iter()));
            }
        }
        // f64 values come back as bits.
        let h = header(SeriesKind::Scalar, ValueType::F64, 70_000);
        let t: Vec<i64> = (0..70_000).collect();
        let v: Vec<i64> = (0..70_000)
            .map(|i| (i as f64 * 0.25).to_bits() as i64)
            .collect();
        let body = compress(&h, &[&t, &v], Effort::Fast);
        let (img, p) = prefix_image(&h, &body, 40_000).unwrap();
        let words: &[i64] = img.typed_data();
        let start = p.column_offset(1) / 8;
        assert_eq!(&words[start..start + 40_001], &v[..40_001]);
        // Cut or retyped bodies are errors, never a panic.
        for cut in [0, 1, 5, body.len() / 2, body.len() - 1] {
            assert!(
                prefix_image(&h, &body[..cut], 40_000).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = body.clone();
        bad[0] = 1;
        assert!(prefix_image(&h, &bad, 40_000).is_err());
    }
}

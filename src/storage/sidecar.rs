//! Zone-map and value-index sidecars of scalar chunks (layouts in `docs/storage-format.md`).
//!
//! Both are derived data: built with the chunk, published with it, listed in the
//! manifest with their checksums, and always rebuildable from the chunk. A missing or
//! corrupt sidecar never changes an answer; queries fall back to scanning.

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::StoreOptions;
use super::format::{
    CHUNK_ROWS_MAX, align_up, checked_align_up, get_u32, get_u64, put_u32, put_u64,
};
use super::mmap::MappedFile;
use crate::record::{SeriesKind, SeriesMeta, ValueType};

pub const ZONEMAP_MAGIC: &[u8; 8] = b"FASTKZMP";
pub const VINDEX_MAGIC: &[u8; 8] = b"FASTKVIX";
const ZONEMAP_HEADER_LEN: usize = 64;
const ZONE_LEN: usize = 40;
const VINDEX_HEADER_LEN: usize = 64;

/// Sidecar bytes built for one chunk.
#[derive(Debug, Default)]
pub struct Sidecars {
    pub zonemap: Option<Vec<u8>>,
    pub vindex: Option<Vec<u8>>,
}

/// Builds the sidecars of a chunk with columns `cols` (scalar series only).
pub fn build(meta: &SeriesMeta, cols: &[&[i64]], opts: &StoreOptions) -> Sidecars {
    if meta.key.kind() != SeriesKind::Scalar {
        return Sidecars::default();
    }
    let (ts, values) = (cols[0], cols[1]);
    Sidecars {
        zonemap: opts
            .zonemap_block_rows
            .map(|b| build_zonemap(meta.value_type, ts, values, b)),
        vindex: opts
            .value_index
            .then(|| build_vindex(meta.value_type, values)),
    }
}

/// Min and max of a block in the series' value order (f64 compares as f64, NaN skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zone {
    pub min: i64,
    pub max: i64,
    pub first_ts: i64,
    pub last_ts: i64,
    /// Count of NaN rows (f64 only); NaN rows never match.
    pub nan_count: u32,
    /// True when the block has no comparable value (all NaN).
    pub empty: bool,
}

fn f64_of(bits: i64) -> f64 {
    f64::from_bits(bits as u64)
}

/// An i64 whose order is `f64::total_cmp` of the f64 with these bits (the same
/// transform `total_cmp` applies), so f64 values sort as plain integers.
fn f64_order_key(bits: i64) -> i64 {
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

pub fn build_zonemap(vt: ValueType, ts: &[i64], values: &[i64], block_rows: usize) -> Vec<u8> {
    // The decoder's rules, asserted where the bytes are made (release builds too).
    assert!(
        values.len() as u64 <= CHUNK_ROWS_MAX && ts.len() == values.len(),
        "sidecar: a zone map covers one chunk's equal-length columns"
    );
    let block_rows = block_rows.clamp(1, u32::MAX as usize);
    let nblocks = values.len().div_ceil(block_rows);
    let mut b = vec![0u8; ZONEMAP_HEADER_LEN + nblocks * ZONE_LEN + 8];
    b[0..8].copy_from_slice(ZONEMAP_MAGIC);
    put_u32(&mut b, 8, 1);
    b[12] = vt.code();
    put_u32(&mut b, 16, block_rows as u32);
    put_u64(&mut b, 24, values.len() as u64);
    put_u64(&mut b, 32, nblocks as u64);
    for k in 0..nblocks {
        let r = k * block_rows..((k + 1) * block_rows).min(values.len());
        let (min, max, nan) = block_min_max(vt, &values[r.clone()]);
        let at = ZONEMAP_HEADER_LEN + k * ZONE_LEN;
        put_u64(&mut b, at, min as u64);
        put_u64(&mut b, at + 8, max as u64);
        put_u64(&mut b, at + 16, ts[r.start] as u64);
        put_u64(&mut b, at + 24, ts[r.end - 1] as u64);
        put_u32(&mut b, at + 32, nan);
    }
    let end = b.len() - 8;
    let sum = xxh3_64(&b[..end]);
    put_u64(&mut b, end, sum);
    b
}

/// (min, max, nan_count) of a block; for f64 the bounds are f64 bits, and an all-NaN
/// block reports min = +inf, max = -inf so no comparison can select it.
fn block_min_max(vt: ValueType, v: &[i64]) -> (i64, i64, u32) {
    match vt {
        ValueType::I64 => (
            *v.iter().min().unwrap_or(&0),
            *v.iter().max().unwrap_or(&0),
            0,
        ),
        ValueType::F64 => {
            let (mut lo, mut hi, mut nan) = (f64::INFINITY, f64::NEG_INFINITY, 0u32);
            for &x in v {
                let x = f64_of(x);
                if x.is_nan() {
                    nan += 1;
                } else {
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
            (lo.to_bits() as i64, hi.to_bits() as i64, nan)
        }
    }
}

/// A verified zone map.
#[derive(Debug)]
pub struct ZoneMap {
    pub block_rows: usize,
    pub rows: usize,
    pub zones: Vec<Zone>,
}

impl ZoneMap {
    /// Verifies and decodes a zone map. Any bytes give a zone map whose sizes agree
    /// (`zones.len() == ceil(rows / block_rows)`, rows within a chunk's limit) or an
    /// error, never a panic: every length read from the file is checked before it is
    /// used in arithmetic (`tests/fuzz_decoders.rs`).
    pub fn parse(b: &[u8], vt: ValueType, expected_xxh3: u64) -> Result<ZoneMap, String> {
        if b.len() < ZONEMAP_HEADER_LEN + 8 || &b[0..8] != ZONEMAP_MAGIC {
            return Err("not a zone map".into());
        }
        if xxh3_64(b) != expected_xxh3 || get_u64(b, b.len() - 8) != xxh3_64(&b[..b.len() - 8]) {
            return Err("zone map checksum mismatch".into());
        }
        if b[12] != vt.code() {
            return Err("zone map value type disagrees with the series".into());
        }
        let block_rows = get_u32(b, 16) as usize;
        let rows = get_u64(b, 24);
        let nblocks = get_u64(b, 32);
        if block_rows == 0 || rows > CHUNK_ROWS_MAX || nblocks != rows.div_ceil(block_rows as u64) {
            return Err("zone map size is inconsistent".into());
        }
        // rows <= u32::MAX bounds nblocks, so the length arithmetic cannot overflow.
        let (rows, nblocks) = (rows as usize, nblocks as usize);
        if b.len() != ZONEMAP_HEADER_LEN + nblocks * ZONE_LEN + 8 {
            return Err("zone map size is inconsistent".into());
        }
        let zones = (0..nblocks)
            .map(|k| {
                let at = ZONEMAP_HEADER_LEN + k * ZONE_LEN;
                let (min, max) = (get_u64(b, at) as i64, get_u64(b, at + 8) as i64);
                let empty = vt == ValueType::F64 && f64_of(min) > f64_of(max);
                Zone {
                    min,
                    max,
                    first_ts: get_u64(b, at + 16) as i64,
                    last_ts: get_u64(b, at + 24) as i64,
                    nan_count: get_u32(b, at + 32),
                    empty,
                }
            })
            .collect();
        Ok(ZoneMap {
            block_rows,
            rows,
            zones,
        })
    }
}

pub fn build_vindex(vt: ValueType, values: &[i64]) -> Vec<u8> {
    // Row positions are u32: a chunk never holds more rows (asserted in release too).
    assert!(
        values.len() as u64 <= CHUNK_ROWS_MAX,
        "sidecar: {} rows do not fit a value index",
        values.len()
    );
    // (key, row) pairs in row order, radix-sorted by key: the sort is stable, so equal
    // values keep row order, as the format requires.
    let pairs: Vec<(u64, u32)> = match vt {
        ValueType::I64 => values
            .iter()
            .enumerate()
            .map(|(i, &v)| (unsigned_order_key(v), i as u32))
            .collect(),
        ValueType::F64 => values
            .iter()
            .enumerate()
            .filter(|&(_, &v)| !f64_of(v).is_nan())
            .map(|(i, &v)| (unsigned_order_key(f64_order_key(v)), i as u32))
            .collect(),
    };
    let pairs = radix_sort(pairs);
    let n = pairs.len();
    let values_at = VINDEX_HEADER_LEN;
    let pos_at = values_at + align_up(n * 8);
    let len = pos_at + align_up(n * 4) + 64;
    let mut b = vec![0u8; len];
    b[0..8].copy_from_slice(VINDEX_MAGIC);
    put_u32(&mut b, 8, 1);
    b[12] = vt.code();
    put_u64(&mut b, 16, n as u64);
    put_u64(&mut b, 24, values.len() as u64);
    put_u64(&mut b, 32, values_at as u64);
    put_u64(&mut b, 40, pos_at as u64);
    for (k, &(_, i)) in pairs.iter().enumerate() {
        put_u64(&mut b, values_at + 8 * k, values[i as usize] as u64);
        put_u32(&mut b, pos_at + 4 * k, i);
    }
    let end = len - 8;
    let sum = xxh3_64(&b[..end]);
    put_u64(&mut b, end, sum);
    b
}

/// The u64 whose unsigned order is the signed order of `v`.
fn unsigned_order_key(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Stable LSD radix sort of `(key, row)` pairs by key, one byte per pass; a pass whose
/// byte is the same for every key (the high bytes of small values) is skipped.
fn radix_sort(mut pairs: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
    let mut counts = [[0usize; 256]; 8];
    for &(k, _) in &pairs {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((k >> (8 * d)) & 0xff) as usize] += 1;
        }
    }
    let mut scratch = vec![(0u64, 0u32); pairs.len()];
    for (d, count) in counts.iter().enumerate() {
        if count.contains(&pairs.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut at = 0;
        for (b, &c) in count.iter().enumerate() {
            next[b] = at;
            at += c;
        }
        for &p in &pairs {
            let b = ((p.0 >> (8 * d)) & 0xff) as usize;
            scratch[next[b]] = p;
            next[b] += 1;
        }
        std::mem::swap(&mut pairs, &mut scratch);
    }
    pairs
}

/// A verified value index over a mapped sidecar: values sorted ascending (NaN left
/// out) with the chunk row of each.
#[derive(Debug)]
pub struct ValueIndex {
    file: Arc<MappedFile>,
    pub entries: usize,
    pub chunk_rows: usize,
    values_at: usize,
    pos_at: usize,
}

impl ValueIndex {
    /// Verifies a mapped value index. Any bytes give an index whose sizes agree and
    /// whose every row position lies inside the chunk, or an error, never a panic
    /// (`tests/fuzz_decoders.rs`): a position past the chunk would index out of
    /// bounds in the predicate scan.
    pub fn open(
        file: Arc<MappedFile>,
        vt: ValueType,
        expected_xxh3: u64,
    ) -> Result<ValueIndex, String> {
        let b = file.bytes();
        if b.len() < VINDEX_HEADER_LEN + 64 || &b[0..8] != VINDEX_MAGIC {
            return Err("not a value index".into());
        }
        if xxh3_64(b) != expected_xxh3 || get_u64(b, b.len() - 8) != xxh3_64(&b[..b.len() - 8]) {
            return Err("value index checksum mismatch".into());
        }
        if b[12] != vt.code() {
            return Err("value index value type disagrees with the series".into());
        }
        let entries = get_u64(b, 16);
        let chunk_rows = get_u64(b, 24);
        let values_at = get_u64(b, 32);
        let pos_at = get_u64(b, 40);
        if chunk_rows > CHUNK_ROWS_MAX
            || entries > chunk_rows
            || values_at != VINDEX_HEADER_LEN as u64
        {
            return Err("value index size is inconsistent".into());
        }
        // entries <= u32::MAX: the products below fit in usize on 64-bit targets, and
        // the checked forms keep that true elsewhere.
        let (entries, chunk_rows, values_at) =
            (entries as usize, chunk_rows as usize, values_at as usize);
        let values_end = entries
            .checked_mul(8)
            .and_then(checked_align_up)
            .and_then(|n| n.checked_add(values_at));
        let file_len = entries
            .checked_mul(4)
            .and_then(checked_align_up)
            .zip(values_end)
            .and_then(|(p, v)| p.checked_add(v))
            .and_then(|n| n.checked_add(64));
        if values_end != Some(pos_at as usize) || file_len != Some(b.len()) {
            return Err("value index size is inconsistent".into());
        }
        let pos_at = pos_at as usize;
        if (0..entries).any(|k| get_u32(b, pos_at + 4 * k) as usize >= chunk_rows) {
            return Err("value index names a row outside its chunk".into());
        }
        Ok(ValueIndex {
            file,
            entries,
            chunk_rows,
            values_at,
            pos_at,
        })
    }

    /// Sorted values as raw i64 (f64 bits for f64 series).
    pub fn values(&self) -> &[i64] {
        self.file.i64s(self.values_at, self.entries)
    }

    pub fn position(&self, k: usize) -> u32 {
        get_u32(self.file.bytes(), self.pos_at + 4 * k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index order the format defines: a stable sort of rows by value
    /// (`f64::total_cmp` for f64, NaN rows left out).
    fn reference(vt: ValueType, values: &[i64]) -> Vec<u32> {
        let mut pos: Vec<u32> = (0..values.len() as u32).collect();
        match vt {
            ValueType::I64 => pos.sort_by_key(|&i| values[i as usize]),
            ValueType::F64 => {
                pos.retain(|&i| !f64_of(values[i as usize]).is_nan());
                pos.sort_by(|&a, &b| {
                    f64_of(values[a as usize]).total_cmp(&f64_of(values[b as usize]))
                });
            }
        }
        pos
    }

    fn index_positions(vt: ValueType, values: &[i64]) -> Vec<u32> {
        let b = build_vindex(vt, values);
        let n = get_u64(&b, 16) as usize;
        let pos_at = get_u64(&b, 40) as usize;
        (0..n).map(|k| get_u32(&b, pos_at + 4 * k)).collect()
    }

    #[test]
    fn radix_order_equals_a_stable_sort_for_i64() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values: Vec<i64> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 97) as i64 - 48
            })
            .collect();
        values.extend([i64::MIN, i64::MAX, 0, -1, 1, i64::MIN, 1 << 40, -(1 << 40)]);
        assert_eq!(
            index_positions(ValueType::I64, &values),
            reference(ValueType::I64, &values)
        );
        let constant = vec![7i64; 100];
        assert_eq!(
            index_positions(ValueType::I64, &constant),
            (0..100).collect::<Vec<u32>>()
        );
        assert!(index_positions(ValueType::I64, &[]).is_empty());
    }

    #[test]
    fn radix_order_equals_total_cmp_for_f64_and_drops_nan() {
        let floats = [
            1.5,
            -0.0,
            0.0,
            f64::NAN,
            -1.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.5,
            -f64::NAN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            1e300,
            -1e300,
            0.0,
        ];
        let values: Vec<i64> = floats.iter().map(|f| f.to_bits() as i64).collect();
        let got = index_positions(ValueType::F64, &values);
        assert_eq!(got, reference(ValueType::F64, &values));
        assert_eq!(got.len(), floats.len() - 2, "both NaNs are left out");
    }
}

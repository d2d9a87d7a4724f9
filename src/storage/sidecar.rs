//! Zone-map and value-index sidecars of scalar chunks (layouts in `docs/storage-format.md`).
//!
//! Both are derived data: built with the chunk, published with it, listed in the
//! manifest with their checksums, and always rebuildable from the chunk. A missing or
//! corrupt sidecar never changes an answer; queries fall back to scanning.

use xxhash_rust::xxh3::xxh3_64;

use super::StoreOptions;
use super::format::{CHUNK_ROWS_MAX, get_u32, get_u64, put_u32, put_u64};
use crate::record::{SeriesKind, SeriesMeta, ValueType};

mod vindex;
pub use vindex::{
    Lookup, VINDEX_FENCE_EVERY, VINDEX_MAGIC, VINDEX_U16_ROWS_MAX, VINDEX_V1, VINDEX_VERSION,
    ValueIndex, build_vindex, build_vindex_v1, fence_count, position_width, sorted_rows,
    v2_file_len,
};

pub const ZONEMAP_MAGIC: &[u8; 8] = b"FASTKZMP";
const ZONEMAP_HEADER_LEN: usize = 64;
const ZONE_LEN: usize = 40;

/// Sidecar bytes built for one chunk.
#[derive(Debug, Default, Clone)]
pub struct Sidecars {
    pub zonemap: Option<Vec<u8>>,
    pub vindex: Option<Vec<u8>>,
}

/// Builds the sidecars of a chunk with columns `cols` (scalar series only).
pub fn build(meta: &SeriesMeta, cols: &[&[i64]], opts: &StoreOptions) -> Sidecars {
    let (want_zonemap, want_vindex) = wanted(meta, cols[0].len() as u64, opts);
    if !want_zonemap && !want_vindex {
        return Sidecars::default();
    }
    let (ts, values) = (cols[0], cols[1]);
    Sidecars {
        zonemap: opts
            .zonemap_block_rows
            .filter(|_| want_zonemap)
            .map(|b| build_zonemap(meta.value_type, ts, values, b)),
        vindex: want_vindex.then(|| build_vindex(meta.value_type, values)),
    }
}

/// Which sidecars (zone map, value index) a chunk of `rows` rows of this series gets
/// under `opts`: scalar chunks of at least `sidecar_min_rows` rows, each kind when
/// enabled. What the write builds and what `admin validate` and `repair` expect.
pub fn wanted(meta: &SeriesMeta, rows: u64, opts: &StoreOptions) -> (bool, bool) {
    if meta.key.kind() != SeriesKind::Scalar || rows < opts.sidecar_min_rows as u64 {
        return (false, false);
    }
    (opts.zonemap_block_rows.is_some(), opts.value_index)
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

/// Bytes of the zone map of a chunk of `rows` rows in blocks of `block_rows`.
pub fn zonemap_len(rows: usize, block_rows: usize) -> usize {
    let nblocks = rows.div_ceil(block_rows.clamp(1, u32::MAX as usize));
    ZONEMAP_HEADER_LEN + nblocks * ZONE_LEN + 8
}

/// At most how many sidecar bytes [`build`] makes for a chunk of `rows` rows (exact
/// for i64 values; f64 NaN rows make the value index smaller): what a write reserves
/// for them when it sizes its packs.
pub fn max_len(meta: &SeriesMeta, rows: usize, opts: &StoreOptions) -> u64 {
    if meta.key.kind() != SeriesKind::Scalar {
        return 0;
    }
    let zonemap = opts.zonemap_block_rows.map_or(0, |b| zonemap_len(rows, b));
    let vindex = if opts.value_index {
        v2_file_len(rows, rows)
    } else {
        0
    };
    (zonemap + vindex) as u64
}

pub fn build_zonemap(vt: ValueType, ts: &[i64], values: &[i64], block_rows: usize) -> Vec<u8> {
    // The decoder's rules, asserted where the bytes are made (release builds too).
    assert!(
        values.len() as u64 <= CHUNK_ROWS_MAX && ts.len() == values.len(),
        "sidecar: a zone map covers one chunk's equal-length columns"
    );
    let block_rows = block_rows.clamp(1, u32::MAX as usize);
    let nblocks = values.len().div_ceil(block_rows);
    let mut b = vec![0u8; zonemap_len(values.len(), block_rows)];
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

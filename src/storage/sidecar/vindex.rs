//! The value index (`*.vidx`): a chunk's rows in value order (layouts in
//! `docs/storage-format.md`, "Value index").
//!
//! Version 2 (written) keeps the row positions sorted by value, as u16 when the chunk
//! has at most 65,536 rows and as u32 otherwise, and only every `K`-th sorted value
//! (the fences) instead of all of them: about 2.1 bytes per row for a month of 1m
//! rows, against 12 for version 1, which stored every value again beside a u32
//! position. A lookup binary-searches the fences, which bounds each answer to one
//! block of `K` entries, and finishes with a binary search inside that block that
//! reads the values at the block's positions from the chunk's own value column
//! ([`Lookup`]). Version 1 files still open and answer the same (they need no column).

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::super::format::{
    CHUNK_ROWS_MAX, MAGIC_LEN, align_up, checked_align_up, get_u32, get_u64, put_u32, put_u64,
};
use super::super::mmap::MappedFile;
use super::{f64_of, f64_order_key};
use crate::record::ValueType;

pub const VINDEX_MAGIC: &[u8; MAGIC_LEN] = b"FASTKVIX";
/// Format version of the value indexes this code writes.
pub const VINDEX_VERSION: u32 = 2;
/// The first format (every sorted value stored, u32 positions), still read.
pub const VINDEX_V1: u32 = 1;
/// Sorted entries per fence: one 8-byte fence per `K` entries (0.125 B per row), and a
/// lookup reads at most `log2(K) + 1` values per bound from the chunk's column.
pub const VINDEX_FENCE_EVERY: usize = 64;
/// Largest fence interval a reader accepts (a bound on the in-block search).
const VINDEX_FENCE_EVERY_MAX: u64 = 1 << 16;
/// Chunks of at most this many rows store positions as u16.
pub const VINDEX_U16_ROWS_MAX: u64 = 1 << 16;

const VERSION_OFFSET: usize = MAGIC_LEN;
const VT_OFFSET: usize = VERSION_OFFSET + 4;
const V2_WIDTH_OFFSET: usize = VT_OFFSET + 1;
const ENTRIES_OFFSET: usize = 16;
const ROWS_OFFSET: usize = ENTRIES_OFFSET + 8;
// Version 1: two offsets after the counts; values from byte 64, the file ends 64
// bytes after the padded positions (the last 8 are the checksum).
const V1_VALUES_AT_OFFSET: usize = ROWS_OFFSET + 8;
const V1_POS_AT_OFFSET: usize = V1_VALUES_AT_OFFSET + 8;
const V1_TRAILER_LEN: usize = 64;
// Version 2: fence interval, fence count, positions offset; fences from byte 64,
// the checksum right after the positions padded to 8 bytes.
const V2_FENCE_EVERY_OFFSET: usize = ROWS_OFFSET + 8;
const V2_FENCES_OFFSET: usize = V2_FENCE_EVERY_OFFSET + 8;
const V2_POS_AT_OFFSET: usize = V2_FENCES_OFFSET + 8;
const HEADER_LEN: usize = 64;
const CHECKSUM_LEN: usize = 8;

const _: () = {
    assert!(V2_FENCE_EVERY_OFFSET == 32 && V2_FENCES_OFFSET == 40 && V2_POS_AT_OFFSET == 48);
    assert!(V1_VALUES_AT_OFFSET == 32 && V1_POS_AT_OFFSET == 40);
    assert!(V2_POS_AT_OFFSET + 8 <= HEADER_LEN);
};

/// Bytes of a row position in a version 2 index of a chunk with `rows` rows.
pub fn position_width(rows: u64) -> usize {
    if rows <= VINDEX_U16_ROWS_MAX { 2 } else { 4 }
}

/// Fences of a version 2 index: one per `k` entries, plus the last entry's value.
pub fn fence_count(entries: u64, k: u64) -> u64 {
    if entries == 0 {
        0
    } else {
        entries.div_ceil(k) + 1
    }
}

/// Length of a version 2 index file (the formula `tests/compression.rs` checks).
pub fn v2_file_len(entries: usize, rows: usize) -> usize {
    let fences = fence_count(entries as u64, VINDEX_FENCE_EVERY as u64) as usize;
    HEADER_LEN
        + fences * 8
        + (entries * position_width(rows as u64)).next_multiple_of(8)
        + CHECKSUM_LEN
}

/// Chunk rows in value order: a stable sort of the rows by value (`f64::total_cmp`
/// for f64, NaN rows left out), so equal values keep row order as the format requires.
pub fn sorted_rows(vt: ValueType, values: &[i64]) -> Vec<u32> {
    // Row positions are u32: a chunk never holds more rows (asserted in release too).
    assert!(
        values.len() as u64 <= CHUNK_ROWS_MAX,
        "sidecar: {} rows do not fit a value index",
        values.len()
    );
    match vt {
        ValueType::I64 => sorted_by_key(values, |v| Some(unsigned_order_key(v))),
        ValueType::F64 => sorted_by_key(values, |v| {
            (!f64_of(v).is_nan()).then(|| unsigned_order_key(f64_order_key(v)))
        }),
    }
}

/// [`sorted_rows`] by `key` (`None`: the row is left out), one copy per value type.
fn sorted_by_key(values: &[i64], key: impl Fn(i64) -> Option<u64>) -> Vec<u32> {
    let (mut lo, mut hi, mut n) = (u64::MAX, 0u64, 0usize);
    for k in values.iter().filter_map(|&v| key(v)) {
        (lo, hi, n) = (lo.min(k), hi.max(k), n + 1);
    }
    if n == 0 || hi - lo > u64::from(u32::MAX) {
        let pairs = values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| key(v).map(|k| (k, i as u32)))
            .collect();
        return radix_sort(pairs).into_iter().map(|(_, i)| i).collect();
    }
    // Values spanning less than 2^32 (prices, counts, most features of one month):
    // each row is one u64, its key's offset from the smallest above its row, built
    // straight from the values and sorted by the key bits only, in as few 11-bit
    // passes as the span needs.
    let mut packed = Vec::with_capacity(n);
    packed.extend(
        values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| key(v).map(|k| ((k - lo) << 32) | i as u64)),
    );
    debug_assert_eq!(packed.len(), n, "one entry per row kept");
    let span_bits = u64::BITS - (hi - lo).leading_zeros();
    radix_sort_packed(packed, span_bits)
        .into_iter()
        .map(|p| p as u32)
        .collect()
}

/// Bits per pass of [`radix_sort_packed`].
const PACKED_DIGIT_BITS: u32 = 11;

/// Stable LSD radix sort of `key << 32 | row` values by the key's low `key_bits`
/// bits (the rest are zero), [`PACKED_DIGIT_BITS`] per pass.
fn radix_sort_packed(mut items: Vec<u64>, key_bits: u32) -> Vec<u64> {
    const BUCKETS: usize = 1 << PACKED_DIGIT_BITS;
    const MASK: u64 = BUCKETS as u64 - 1;
    debug_assert!(key_bits <= 32);
    let passes = key_bits.div_ceil(PACKED_DIGIT_BITS) as usize;
    let shift = |d: usize| 32 + d as u32 * PACKED_DIGIT_BITS;
    let mut counts = vec![[0usize; BUCKETS]; passes];
    for &p in &items {
        for (d, c) in counts.iter_mut().enumerate() {
            c[((p >> shift(d)) & MASK) as usize] += 1;
        }
    }
    let mut scratch = vec![0u64; items.len()];
    for (d, count) in counts.iter().enumerate() {
        let mut next = [0usize; BUCKETS];
        let mut at = 0;
        for (b, &c) in count.iter().enumerate() {
            next[b] = at;
            at += c;
        }
        for &p in &items {
            let b = ((p >> shift(d)) & MASK) as usize;
            scratch[next[b]] = p;
            next[b] += 1;
        }
        std::mem::swap(&mut items, &mut scratch);
    }
    items
}

/// Builds a version 2 value index of a chunk's value column.
pub fn build_vindex(vt: ValueType, values: &[i64]) -> Vec<u8> {
    let order = sorted_rows(vt, values);
    let (n, k) = (order.len(), VINDEX_FENCE_EVERY);
    let width = position_width(values.len() as u64);
    let fences = fence_count(n as u64, k as u64) as usize;
    let pos_at = HEADER_LEN + fences * 8;
    let len = v2_file_len(n, values.len());
    let mut b = vec![0u8; len];
    b[..MAGIC_LEN].copy_from_slice(VINDEX_MAGIC);
    put_u32(&mut b, VERSION_OFFSET, VINDEX_VERSION);
    b[VT_OFFSET] = vt.code();
    b[V2_WIDTH_OFFSET] = width as u8;
    put_u64(&mut b, ENTRIES_OFFSET, n as u64);
    put_u64(&mut b, ROWS_OFFSET, values.len() as u64);
    put_u64(&mut b, V2_FENCE_EVERY_OFFSET, k as u64);
    put_u64(&mut b, V2_FENCES_OFFSET, fences as u64);
    put_u64(&mut b, V2_POS_AT_OFFSET, pos_at as u64);
    for j in 0..fences {
        let row = order[(j * k).min(n - 1)] as usize;
        put_u64(&mut b, HEADER_LEN + 8 * j, values[row] as u64);
    }
    for (e, &row) in order.iter().enumerate() {
        let at = pos_at + e * width;
        b[at..at + width].copy_from_slice(&row.to_le_bytes()[..width]);
    }
    let end = len - CHECKSUM_LEN;
    let sum = xxh3_64(&b[..end]);
    put_u64(&mut b, end, sum);
    b
}

/// Builds a version 1 value index (every sorted value, then u32 positions). FastK
/// writes version 2; this stays for the tests that prove version 1 files still read.
pub fn build_vindex_v1(vt: ValueType, values: &[i64]) -> Vec<u8> {
    let order = sorted_rows(vt, values);
    let n = order.len();
    let values_at = HEADER_LEN;
    let pos_at = values_at + align_up(n * 8);
    let len = pos_at + align_up(n * 4) + V1_TRAILER_LEN;
    let mut b = vec![0u8; len];
    b[..MAGIC_LEN].copy_from_slice(VINDEX_MAGIC);
    put_u32(&mut b, VERSION_OFFSET, VINDEX_V1);
    b[VT_OFFSET] = vt.code();
    put_u64(&mut b, ENTRIES_OFFSET, n as u64);
    put_u64(&mut b, ROWS_OFFSET, values.len() as u64);
    put_u64(&mut b, V1_VALUES_AT_OFFSET, values_at as u64);
    put_u64(&mut b, V1_POS_AT_OFFSET, pos_at as u64);
    for (e, &i) in order.iter().enumerate() {
        put_u64(&mut b, values_at + 8 * e, values[i as usize] as u64);
        put_u32(&mut b, pos_at + 4 * e, i);
    }
    let end = len - CHECKSUM_LEN;
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

#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Every sorted value at `values_at`, u32 positions at `pos_at`.
    V1 { values_at: usize, pos_at: usize },
    /// `fences` values at byte 64 (fence `j` = entry `min(j * every, E - 1)`),
    /// positions of `width` bytes at `pos_at`.
    V2 {
        every: usize,
        fences: usize,
        pos_at: usize,
        width: usize,
    },
}

/// A verified value index over a mapped sidecar: the chunk's rows sorted by value
/// (NaN left out).
#[derive(Debug)]
pub struct ValueIndex {
    file: Arc<MappedFile>,
    pub entries: usize,
    pub chunk_rows: usize,
    layout: Layout,
}

impl ValueIndex {
    /// Verifies a mapped value index of either version. Any bytes give an index whose
    /// sizes agree, whose every row position lies inside the chunk and (version 2)
    /// whose fences are as many as the entries need and ascend, or an error, never a
    /// panic (`tests/fuzz_decoders.rs`): a position past the chunk would index out of
    /// bounds in the predicate scan.
    pub fn open(
        file: Arc<MappedFile>,
        vt: ValueType,
        expected_xxh3: u64,
    ) -> Result<ValueIndex, String> {
        let b = file.bytes();
        if b.len() < HEADER_LEN + CHECKSUM_LEN || &b[..MAGIC_LEN] != VINDEX_MAGIC {
            return Err("not a value index".into());
        }
        let end = b.len() - CHECKSUM_LEN;
        if xxh3_64(b) != expected_xxh3 || get_u64(b, end) != xxh3_64(&b[..end]) {
            return Err("value index checksum mismatch".into());
        }
        if b[VT_OFFSET] != vt.code() {
            return Err("value index value type disagrees with the series".into());
        }
        let entries = get_u64(b, ENTRIES_OFFSET);
        let chunk_rows = get_u64(b, ROWS_OFFSET);
        if chunk_rows > CHUNK_ROWS_MAX || entries > chunk_rows {
            return Err("value index size is inconsistent".into());
        }
        // entries <= rows <= u32::MAX: the products below fit in usize on 64-bit
        // targets, and the checked forms keep that true elsewhere.
        let (entries, chunk_rows) = (entries as usize, chunk_rows as usize);
        let layout = match get_u32(b, VERSION_OFFSET) {
            VINDEX_V1 => v1_layout(b, entries)?,
            VINDEX_VERSION => v2_layout(b, vt, entries, chunk_rows)?,
            v => return Err(format!("value index version {v} is not supported")),
        };
        let ix = ValueIndex {
            file,
            entries,
            chunk_rows,
            layout,
        };
        if (0..entries).any(|k| ix.position(k) as usize >= chunk_rows) {
            return Err("value index names a row outside its chunk".into());
        }
        Ok(ix)
    }

    /// The format version of the file (1 or 2).
    pub fn version(&self) -> u32 {
        match self.layout {
            Layout::V1 { .. } => VINDEX_V1,
            Layout::V2 { .. } => VINDEX_VERSION,
        }
    }

    /// The chunk row of sorted entry `k` (`k < entries`).
    pub fn position(&self, k: usize) -> u32 {
        let b = self.file.bytes();
        match self.layout {
            Layout::V1 { pos_at, .. } => get_u32(b, pos_at + 4 * k),
            Layout::V2 { pos_at, width, .. } => {
                let at = pos_at + width * k;
                let mut w = [0u8; 4];
                w[..width].copy_from_slice(&b[at..at + width]);
                u32::from_le_bytes(w)
            }
        }
    }

    /// Appends to `out` the rows of sorted entries `lo..hi` that lie in `a..b`.
    pub fn positions_into(&self, lo: usize, hi: usize, a: usize, b: usize, out: &mut Vec<u32>) {
        let keep = |p: &u32| (*p as usize) >= a && (*p as usize) < b;
        let bytes = self.file.bytes();
        match self.layout {
            Layout::V2 {
                pos_at, width: 2, ..
            } => out.extend(
                bytes[pos_at + 2 * lo..pos_at + 2 * hi]
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .filter(keep),
            ),
            Layout::V1 { pos_at, .. } | Layout::V2 { pos_at, .. } => out.extend(
                bytes[pos_at + 4 * lo..pos_at + 4 * hi]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .filter(keep),
            ),
        }
    }

    /// Sorted entries per fence (version 1 stores every value: 1).
    pub fn fence_every(&self) -> usize {
        match self.layout {
            Layout::V1 { .. } => 1,
            Layout::V2 { every, .. } => every,
        }
    }

    /// The stored fence values (version 2; version 1 stores every value, so it
    /// returns them all).
    pub fn fences(&self) -> &[i64] {
        match self.layout {
            Layout::V1 { values_at, .. } => self.file.i64s(values_at, self.entries),
            Layout::V2 { fences, .. } => self.file.i64s(HEADER_LEN, fences),
        }
    }

    /// Bounds on the count of entries for which `below` holds (a predicate true for a
    /// prefix of the sorted values, such as `x < v`), from the index alone: the count
    /// lies in `lo..=hi`. Exact for version 1; for version 2 `hi - lo < K`, and exact
    /// when every entry or none is below.
    pub fn bounds(&self, below: impl Fn(i64) -> bool) -> (usize, usize) {
        let n = self.entries;
        let f = self.fences();
        let every = match self.layout {
            Layout::V1 { .. } => {
                let p = f.partition_point(|&x| below(x));
                return (p, p);
            }
            Layout::V2 { every, .. } => every,
        };
        let Some((&last, blocks)) = f.split_last() else {
            return (0, 0);
        };
        if !below(f[0]) {
            return (0, 0);
        }
        if below(last) {
            return (n, n);
        }
        // Entry `(p - 1) * K` is below and entry `p * K` (or the last) is not.
        let p = blocks.partition_point(|&x| below(x));
        ((p - 1) * every + 1, (p * every).min(n - 1))
    }

    /// The lookup of this index against the chunk's value column `values` (every row,
    /// as stored: i64 or f64 bits), or `None` when the column is not the chunk's.
    pub fn lookup<'a>(&'a self, values: &'a [i64]) -> Option<Lookup<'a>> {
        (values.len() == self.chunk_rows).then_some(Lookup { ix: self, values })
    }
}

/// A value index with the chunk's value column, which version 2 reads to place a bound
/// inside the block its fences leave open.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    ix: &'a ValueIndex,
    values: &'a [i64],
}

impl Lookup<'_> {
    /// Sorted entries of the index (chunk rows minus NaN rows).
    pub fn entries(&self) -> usize {
        self.ix.entries
    }

    /// The count of entries for which `below` holds (a predicate true for a prefix of
    /// the sorted values): `partition_point` over the sorted values.
    pub fn partition_point(&self, below: impl Fn(i64) -> bool) -> usize {
        let (mut lo, mut hi) = self.ix.bounds(&below);
        // Entries before `lo` are below, entries from `hi` on are not (at most
        // log2(K) + 1 reads of the column, each at a position validated on open).
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if below(self.values[self.ix.position(mid) as usize]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

fn v1_layout(b: &[u8], entries: usize) -> Result<Layout, String> {
    let values_at = get_u64(b, V1_VALUES_AT_OFFSET);
    let pos_at = get_u64(b, V1_POS_AT_OFFSET);
    if values_at != HEADER_LEN as u64 {
        return Err("value index size is inconsistent".into());
    }
    let values_end = entries
        .checked_mul(8)
        .and_then(checked_align_up)
        .and_then(|n| n.checked_add(HEADER_LEN));
    let file_len = entries
        .checked_mul(4)
        .and_then(checked_align_up)
        .zip(values_end)
        .and_then(|(p, v)| p.checked_add(v))
        .and_then(|n| n.checked_add(V1_TRAILER_LEN));
    if values_end.map(|v| v as u64) != Some(pos_at) || file_len != Some(b.len()) {
        return Err("value index size is inconsistent".into());
    }
    Ok(Layout::V1 {
        values_at: HEADER_LEN,
        pos_at: pos_at as usize,
    })
}

fn v2_layout(b: &[u8], vt: ValueType, entries: usize, rows: usize) -> Result<Layout, String> {
    let width = b[V2_WIDTH_OFFSET] as usize;
    let every = get_u64(b, V2_FENCE_EVERY_OFFSET);
    let fences = get_u64(b, V2_FENCES_OFFSET);
    let pos_at = get_u64(b, V2_POS_AT_OFFSET);
    if width != position_width(rows as u64) {
        return Err("value index position width disagrees with its row count".into());
    }
    if every == 0 || every > VINDEX_FENCE_EVERY_MAX || fences != fence_count(entries as u64, every)
    {
        return Err("value index fences disagree with its entry count".into());
    }
    // fences <= entries + 1 <= 2^32 and width <= 4: no product below overflows u64.
    let want_pos_at = HEADER_LEN as u64 + fences * 8;
    let want_len = want_pos_at + (entries as u64 * width as u64).next_multiple_of(8) + 8;
    if pos_at != want_pos_at || want_len != b.len() as u64 {
        return Err("value index size is inconsistent".into());
    }
    let (every, fences, pos_at) = (every as usize, fences as usize, pos_at as usize);
    // Fences ascend in the series' order (f64: total order, never NaN), so a binary
    // search over them is sound.
    let key = |x: i64| match vt {
        ValueType::I64 => Some(x),
        ValueType::F64 => (!f64_of(x).is_nan()).then(|| f64_order_key(x)),
    };
    let keys: Option<Vec<i64>> = (0..fences)
        .map(|j| key(get_u64(b, HEADER_LEN + 8 * j) as i64))
        .collect();
    if !keys.is_some_and(|k| k.is_sorted()) {
        return Err("value index fences are not ascending values".into());
    }
    Ok(Layout::V2 {
        every,
        fences,
        pos_at,
        width,
    })
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
        let ix = ValueIndex::open(MappedFile::from_parts(&[&b]), vt, xxh3_64(&b)).unwrap();
        let got: Vec<u32> = (0..ix.entries).map(|k| ix.position(k)).collect();
        assert_eq!(got, sorted_rows(vt, values));
        got
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

    /// Values spanning just under and just over 2^32 take the packed and the wide
    /// sort: both equal a stable sort, ties in row order.
    #[test]
    fn packed_and_wide_radix_orders_equal_a_stable_sort() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for span in [
            1u64,
            2047,
            2048,
            1 << 22,
            u64::from(u32::MAX),
            1 << 32,
            1 << 40,
        ] {
            let base = -1_000_000_007i64;
            let mut values: Vec<i64> = (0..3000)
                .map(|_| base + (next() % span.max(1)) as i64)
                .collect();
            // Both ends of the span, and ties.
            let tie = values[17];
            values.extend([base, base + span as i64 - 1, base, tie]);
            assert_eq!(
                index_positions(ValueType::I64, &values),
                reference(ValueType::I64, &values),
                "span {span}"
            );
        }
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

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Every bound a version 2 lookup finds equals `partition_point` over the sorted
    /// values (what version 1 stores), and the fence-only bounds contain it.
    fn check_lookups(vt: ValueType, values: &[i64], probes: &[i64]) {
        let order = sorted_rows(vt, values);
        let sorted: Vec<i64> = order.iter().map(|&i| values[i as usize]).collect();
        for b in [build_vindex(vt, values), build_vindex_v1(vt, values)] {
            let ix = ValueIndex::open(MappedFile::from_parts(&[&b]), vt, xxh3_64(&b)).unwrap();
            assert!(
                ix.lookup(&[1]).is_none() || values.len() == 1,
                "another column"
            );
            let look = ix.lookup(values).unwrap();
            for &v in probes {
                for le in [false, true] {
                    let below = |x: i64| match vt {
                        ValueType::I64 if le => x <= v,
                        ValueType::I64 => x < v,
                        ValueType::F64 if le => f64_of(x) <= f64_of(v),
                        ValueType::F64 => f64_of(x) < f64_of(v),
                    };
                    let want = sorted.partition_point(|&x| below(x));
                    assert_eq!(
                        look.partition_point(below),
                        want,
                        "v{} {v} {le}",
                        ix.version()
                    );
                    let (lo, hi) = ix.bounds(below);
                    assert!(lo <= want && want <= hi && hi - lo < VINDEX_FENCE_EVERY);
                }
            }
        }
    }

    #[test]
    fn lookups_equal_a_search_of_the_sorted_values_for_both_widths() {
        for rows in [0usize, 1, 63, 64, 65, 1000, 65_536, 70_001] {
            let mut r = xorshift(rows as u64 + 1);
            let values: Vec<i64> = (0..rows).map(|_| (r() % 3000) as i64 - 1500).collect();
            let probes: Vec<i64> = (-1502..1502)
                .step_by(7)
                .chain([i64::MIN, i64::MAX])
                .collect();
            check_lookups(ValueType::I64, &values, &probes);
            let b = build_vindex(ValueType::I64, &values);
            assert_eq!(b.len(), v2_file_len(rows, rows));
            assert_eq!(b[13] as usize, if rows <= 65_536 { 2 } else { 4 });
        }
        let constant = vec![5i64; 300];
        check_lookups(ValueType::I64, &constant, &[4, 5, 6]);
    }

    #[test]
    fn f64_lookups_handle_nan_zeros_and_infinities() {
        let mut r = xorshift(7);
        let special = [
            f64::NAN,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.5,
            -1.5,
        ];
        let values: Vec<i64> = (0..5000)
            .map(|i| {
                let x = if i % 5 == 0 {
                    special[(r() % 7) as usize]
                } else {
                    (r() % 200) as f64 / 8.0 - 12.0
                };
                x.to_bits() as i64
            })
            .collect();
        let probes: Vec<i64> = [
            -0.0,
            0.0,
            1.5,
            -13.0,
            13.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]
        .into_iter()
        .chain((0..200).map(|i| i as f64 / 8.0 - 12.0))
        .map(|f| f.to_bits() as i64)
        .collect();
        check_lookups(ValueType::F64, &values, &probes);
        let all_nan = vec![f64::NAN.to_bits() as i64; 100];
        let b = build_vindex(ValueType::F64, &all_nan);
        let ix =
            ValueIndex::open(MappedFile::from_parts(&[&b]), ValueType::F64, xxh3_64(&b)).unwrap();
        assert_eq!((ix.entries, ix.fences().len(), ix.chunk_rows), (0, 0, 100));
    }
}

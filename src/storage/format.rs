//! Byte layouts of chunk files and manifests (documented in `docs/storage-format.md`).
//!
//! Every integer is little-endian. Both layouts end their fixed part with an xxh3-64
//! checksum so a torn or flipped header is detected before any field is trusted.

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::record::{Partitioning, SeriesKey, SeriesKind, SeriesMeta, ValueType};

/// Magic of a chunk file.
pub const CHUNK_MAGIC: &[u8; MAGIC_LEN] = b"FASTKCHK";
/// Magic of a manifest.
pub const MANIFEST_MAGIC: &[u8; MAGIC_LEN] = b"FASTKMAN";
/// Length of every magic (chunk, manifest, sidecars).
pub const MAGIC_LEN: usize = 8;
/// On-disk format version of chunk files (unchanged since version 1).
pub const FORMAT_VERSION: u16 = 1;
/// Format version of the manifests this code writes. Version 2 adds the write-ahead
/// log position (`wal_lsn`) after the fixed part of version 1; version 1 manifests
/// still decode (as `wal_lsn` 0) and are rewritten as version 2 on their next commit.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;
/// The first manifest format, still read.
pub const MANIFEST_FORMAT_V1: u32 = 1;
/// Version 2's layout, with the pack location of packed entries (`storage::pack`) in
/// what were reserved entry bytes. Written only by a manifest that lists a packed
/// entry, so a store without packs stays readable by binaries that know version 2;
/// a binary before packs refuses a version 3 manifest rather than miss its packs.
pub const MANIFEST_FORMAT_V3: u32 = 3;
/// Chunk header size; the first column starts here.
pub const CHUNK_HEADER_LEN: usize = 512;
/// Every column starts on this boundary (relative to the file, hence to the mapping).
pub const COLUMN_ALIGN: usize = 64;
/// Chunk flag: this chunk holds the whole month and supersedes every older-generation
/// chunk of the same month.
pub const FLAG_FULL: u32 = 1;
/// Chunk flag: the body is compressed (`storage::codec`): `body_len` bytes of
/// per-column pcodec streams instead of `ncols * stride` raw bytes. Readers decompress
/// it once into memory laid out as the raw body. Binaries before it refuse the file
/// (an unknown flag), so they never misread one.
pub const FLAG_COMPRESSED: u32 = 2;
/// Every flag bit defined; any other bit set means the bytes are not ours.
const FLAGS_KNOWN: u32 = FLAG_FULL | FLAG_COMPRESSED;
/// Most rows of one chunk: a value index stores row positions as `u32`.
pub const CHUNK_ROWS_MAX: u64 = u32::MAX as u64;

const U8_LEN: usize = 1;
const U16_LEN: usize = 2;
const U32_LEN: usize = 4;
const U64_LEN: usize = 8;

// Series key block: four length-prefixed strings, each in a fixed-size field (a u8
// length, then `cap` bytes, zero padded). The caps are the name limits of
// `record.rs`, so every valid key fits by construction.
const SYMBOL_CAP: usize = 64;
const TIMEFRAME_CAP: usize = 16;
const CATEGORY_CAP: usize = 64;
const NAME_CAP: usize = 64;
/// Bytes used by the series key block (symbol 1+64, timeframe 1+16, category 1+64, name 1+64).
pub const KEY_BLOCK_LEN: usize = (U8_LEN + SYMBOL_CAP)
    + (U8_LEN + TIMEFRAME_CAP)
    + (U8_LEN + CATEGORY_CAP)
    + (U8_LEN + NAME_CAP);

// Chunk header layout (docs/storage-format.md, "Chunk file"). Each offset is the
// previous field's offset plus that field's length, so a size is written once; the
// assertions after the list pin every offset to the documented table, which format
// version 1 may never move.
const CHUNK_MAGIC_OFFSET: usize = 0;
const CHUNK_VERSION_OFFSET: usize = CHUNK_MAGIC_OFFSET + MAGIC_LEN;
const CHUNK_KIND_OFFSET: usize = CHUNK_VERSION_OFFSET + U16_LEN;
const CHUNK_VALUE_TYPE_OFFSET: usize = CHUNK_KIND_OFFSET + U8_LEN;
const CHUNK_NCOLS_OFFSET: usize = CHUNK_VALUE_TYPE_OFFSET + U8_LEN;
const CHUNK_RESERVED_A_LEN: usize = 2;
const CHUNK_ROWS_OFFSET: usize = CHUNK_NCOLS_OFFSET + U16_LEN + CHUNK_RESERVED_A_LEN;
const CHUNK_FIRST_TS_OFFSET: usize = CHUNK_ROWS_OFFSET + U64_LEN;
const CHUNK_LAST_TS_OFFSET: usize = CHUNK_FIRST_TS_OFFSET + U64_LEN;
const CHUNK_MONTH_OFFSET: usize = CHUNK_LAST_TS_OFFSET + U64_LEN;
const CHUNK_FLAGS_OFFSET: usize = CHUNK_MONTH_OFFSET + U32_LEN;
const CHUNK_GENERATION_OFFSET: usize = CHUNK_FLAGS_OFFSET + U32_LEN;
const CHUNK_WRITE_VERSION_OFFSET: usize = CHUNK_GENERATION_OFFSET + U64_LEN;
const CHUNK_WRITE_CHUNKS_OFFSET: usize = CHUNK_WRITE_VERSION_OFFSET + U64_LEN;
const CHUNK_RESERVED_B_LEN: usize = 4;
const CHUNK_TIMEFRAME_MS_OFFSET: usize = CHUNK_WRITE_CHUNKS_OFFSET + U32_LEN + CHUNK_RESERVED_B_LEN;
const CHUNK_PRICE_SCALE_OFFSET: usize = CHUNK_TIMEFRAME_MS_OFFSET + U64_LEN;
const CHUNK_VOLUME_SCALE_OFFSET: usize = CHUNK_PRICE_SCALE_OFFSET + U64_LEN;
const CHUNK_BODY_XXH3_OFFSET: usize = CHUNK_VOLUME_SCALE_OFFSET + U64_LEN;
const CHUNK_STRIDE_OFFSET: usize = CHUNK_BODY_XXH3_OFFSET + U64_LEN;
const CHUNK_KEY_OFFSET: usize = CHUNK_STRIDE_OFFSET + U64_LEN;
/// The series' write-ahead log position when the chunk was written (every record up to
/// it is in the series' chunks): lets a manifest rebuilt from chunk headers know where
/// replay starts. Reserved and zero in the first chunks (no log then).
const CHUNK_WAL_LSN_OFFSET: usize = CHUNK_KEY_OFFSET + KEY_BLOCK_LEN;
/// Bytes of a compressed body (0 for a raw one). Reserved and zero before.
const CHUNK_BODY_LEN_OFFSET: usize = CHUNK_WAL_LSN_OFFSET + U64_LEN;
/// How many values the last-row field holds: 0 (absent: every chunk written before
/// it) or the chunk's `ncols`. Reserved and zero before.
const CHUNK_LAST_ROW_COLS_OFFSET: usize = CHUNK_BODY_LEN_OFFSET + U64_LEN;
/// The chunk's last row, every column (`ts` first), so that a cross section reads a
/// header, not a body (a compressed month is never decompressed for it).
const CHUNK_LAST_ROW_OFFSET: usize = CHUNK_LAST_ROW_COLS_OFFSET + U32_LEN;
/// Most columns a kind has (kline, trade, quote), the length of the last-row field.
pub const LAST_ROW_MAX_COLS: usize = 6;
/// The header checksum is the last field; everything before it is covered.
const CHUNK_HEADER_XXH3_OFFSET: usize = CHUNK_HEADER_LEN - U64_LEN;

const _: () = {
    assert!(CHUNK_VERSION_OFFSET == 8);
    assert!(CHUNK_KIND_OFFSET == 10 && CHUNK_VALUE_TYPE_OFFSET == 11);
    assert!(CHUNK_NCOLS_OFFSET == 12 && CHUNK_ROWS_OFFSET == 16);
    assert!(CHUNK_FIRST_TS_OFFSET == 24 && CHUNK_LAST_TS_OFFSET == 32);
    assert!(CHUNK_MONTH_OFFSET == 40 && CHUNK_FLAGS_OFFSET == 44);
    assert!(CHUNK_GENERATION_OFFSET == 48 && CHUNK_WRITE_VERSION_OFFSET == 56);
    assert!(CHUNK_WRITE_CHUNKS_OFFSET == 64 && CHUNK_TIMEFRAME_MS_OFFSET == 72);
    assert!(CHUNK_PRICE_SCALE_OFFSET == 80 && CHUNK_VOLUME_SCALE_OFFSET == 88);
    assert!(CHUNK_BODY_XXH3_OFFSET == 96 && CHUNK_STRIDE_OFFSET == 104);
    assert!(CHUNK_KEY_OFFSET == 112 && KEY_BLOCK_LEN == 212);
    assert!(CHUNK_WAL_LSN_OFFSET == 324 && CHUNK_BODY_LEN_OFFSET == 332);
    assert!(CHUNK_LAST_ROW_COLS_OFFSET == 340 && CHUNK_LAST_ROW_OFFSET == 344);
    assert!(CHUNK_LAST_ROW_OFFSET + LAST_ROW_MAX_COLS * U64_LEN <= CHUNK_HEADER_XXH3_OFFSET);
    assert!(CHUNK_HEADER_XXH3_OFFSET == 504);
    assert!(CHUNK_HEADER_LEN.is_multiple_of(COLUMN_ALIGN));
};

// Manifest layout (docs/storage-format.md, "Manifest"): a fixed part, N entries, and
// a trailing checksum of everything before it.
const MANIFEST_MAGIC_OFFSET: usize = 0;
const MANIFEST_VERSION_OFFSET: usize = MANIFEST_MAGIC_OFFSET + MAGIC_LEN;
const MANIFEST_COUNT_OFFSET: usize = MANIFEST_VERSION_OFFSET + U32_LEN;
const MANIFEST_SERIES_VERSION_OFFSET: usize = MANIFEST_COUNT_OFFSET + U32_LEN;
const MANIFEST_NEXT_GENERATION_OFFSET: usize = MANIFEST_SERIES_VERSION_OFFSET + U64_LEN;
const MANIFEST_TIMEFRAME_MS_OFFSET: usize = MANIFEST_NEXT_GENERATION_OFFSET + U64_LEN;
const MANIFEST_PRICE_SCALE_OFFSET: usize = MANIFEST_TIMEFRAME_MS_OFFSET + U64_LEN;
const MANIFEST_VOLUME_SCALE_OFFSET: usize = MANIFEST_PRICE_SCALE_OFFSET + U64_LEN;
const MANIFEST_KIND_OFFSET: usize = MANIFEST_VOLUME_SCALE_OFFSET + U64_LEN;
const MANIFEST_VALUE_TYPE_OFFSET: usize = MANIFEST_KIND_OFFSET + U8_LEN;
const MANIFEST_RESERVED_A_LEN: usize = 6;
const MANIFEST_KEY_OFFSET: usize = MANIFEST_VALUE_TYPE_OFFSET + U8_LEN + MANIFEST_RESERVED_A_LEN;
/// The series' retention in ms (0: keep forever). Version 1 stores hold zeros here
/// (these bytes were reserved), so they read as "keep forever".
const MANIFEST_RETENTION_MS_OFFSET: usize = MANIFEST_KEY_OFFSET + KEY_BLOCK_LEN;
/// The series' settings flags ([`SERIES_IRREGULAR`]). Reserved and zero before, so
/// older stores read as "no flag set".
const MANIFEST_SERIES_FLAGS_OFFSET: usize = MANIFEST_RETENTION_MS_OFFSET + U64_LEN;
/// Fixed-part length of a version 1 manifest (the entries follow).
pub const MANIFEST_HEADER_LEN_V1: usize = MANIFEST_SERIES_FLAGS_OFFSET + U32_LEN;
/// Series flag: a kline series whose bars may sit at any `ts`, off the grid of its
/// timeframe (registered with `"irregular": true`).
pub const SERIES_IRREGULAR: u32 = 1;
/// Version 2: the last write-ahead log record folded into this manifest (0: none).
const MANIFEST_WAL_LSN_OFFSET: usize = MANIFEST_HEADER_LEN_V1;
const MANIFEST_RESERVED_C_LEN: usize = 8;
/// Fixed-part length of a version 2 manifest (the entries follow).
pub const MANIFEST_HEADER_LEN: usize = MANIFEST_WAL_LSN_OFFSET + U64_LEN + MANIFEST_RESERVED_C_LEN;
/// Bytes of the trailing checksum.
const MANIFEST_TRAILER_LEN: usize = U64_LEN;

// Manifest entry layout, relative to the entry's start.
const ENTRY_MONTH_OFFSET: usize = 0;
const ENTRY_FLAGS_OFFSET: usize = ENTRY_MONTH_OFFSET + U32_LEN;
const ENTRY_GENERATION_OFFSET: usize = ENTRY_FLAGS_OFFSET + U32_LEN;
const ENTRY_ROWS_OFFSET: usize = ENTRY_GENERATION_OFFSET + U64_LEN;
const ENTRY_FIRST_TS_OFFSET: usize = ENTRY_ROWS_OFFSET + U64_LEN;
const ENTRY_LAST_TS_OFFSET: usize = ENTRY_FIRST_TS_OFFSET + U64_LEN;
const ENTRY_FILE_LEN_OFFSET: usize = ENTRY_LAST_TS_OFFSET + U64_LEN;
const ENTRY_CHECKSUM_OFFSET: usize = ENTRY_FILE_LEN_OFFSET + U64_LEN;
const ENTRY_WRITE_VERSION_OFFSET: usize = ENTRY_CHECKSUM_OFFSET + U64_LEN;
const ENTRY_ZONEMAP_XXH3_OFFSET: usize = ENTRY_WRITE_VERSION_OFFSET + U64_LEN;
const ENTRY_ZONEMAP_LEN_OFFSET: usize = ENTRY_ZONEMAP_XXH3_OFFSET + U64_LEN;
const ENTRY_VINDEX_XXH3_OFFSET: usize = ENTRY_ZONEMAP_LEN_OFFSET + U64_LEN;
const ENTRY_VINDEX_LEN_OFFSET: usize = ENTRY_VINDEX_XXH3_OFFSET + U64_LEN;
const ENTRY_STATE_OFFSET: usize = ENTRY_VINDEX_LEN_OFFSET + U64_LEN;
/// Version 3: generation of the pack holding this chunk (0: its own file).
const ENTRY_PACK_GENERATION_OFFSET: usize = ENTRY_STATE_OFFSET + U8_LEN;
/// Version 3: offset of the chunk's image inside its pack.
const ENTRY_PACK_OFFSET_OFFSET: usize = ENTRY_PACK_GENERATION_OFFSET + U64_LEN;
/// Version 3: length of the whole pack file (what a backup or a check expects).
const ENTRY_PACK_LEN_OFFSET: usize = ENTRY_PACK_OFFSET_OFFSET + U64_LEN;
const ENTRY_RESERVED_LEN: usize = 7;
/// Bytes per manifest entry.
pub const MANIFEST_ENTRY_LEN: usize = ENTRY_PACK_LEN_OFFSET + U64_LEN + ENTRY_RESERVED_LEN;

const _: () = {
    assert!(MANIFEST_VERSION_OFFSET == 8 && MANIFEST_COUNT_OFFSET == 12);
    assert!(MANIFEST_SERIES_VERSION_OFFSET == 16 && MANIFEST_NEXT_GENERATION_OFFSET == 24);
    assert!(MANIFEST_TIMEFRAME_MS_OFFSET == 32 && MANIFEST_PRICE_SCALE_OFFSET == 40);
    assert!(MANIFEST_VOLUME_SCALE_OFFSET == 48 && MANIFEST_KIND_OFFSET == 56);
    assert!(MANIFEST_VALUE_TYPE_OFFSET == 57 && MANIFEST_KEY_OFFSET == 64);
    assert!(MANIFEST_RETENTION_MS_OFFSET == 276 && MANIFEST_HEADER_LEN_V1 == 288);
    assert!(MANIFEST_WAL_LSN_OFFSET == 288 && MANIFEST_HEADER_LEN == 304);
    assert!(ENTRY_ROWS_OFFSET == 16 && ENTRY_FILE_LEN_OFFSET == 40);
    assert!(ENTRY_ZONEMAP_XXH3_OFFSET == 64 && ENTRY_VINDEX_LEN_OFFSET == 88);
    assert!(ENTRY_STATE_OFFSET == 96 && MANIFEST_ENTRY_LEN == 128);
    assert!(ENTRY_PACK_GENERATION_OFFSET == 97 && ENTRY_PACK_OFFSET_OFFSET == 105);
    assert!(ENTRY_PACK_LEN_OFFSET == 113);
};

/// Rounds `n` up to a multiple of [`COLUMN_ALIGN`].
pub fn align_up(n: usize) -> usize {
    n.div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN
}

/// [`align_up`] for lengths read from disk: `None` instead of an overflow.
pub(crate) fn checked_align_up(n: usize) -> Option<usize> {
    n.div_ceil(COLUMN_ALIGN).checked_mul(COLUMN_ALIGN)
}

pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
pub(crate) fn get_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Writes `s` as a u8 length and `cap` bytes at `at`; returns the offset after the
/// field. Checked in release builds too: a string longer than its field would either
/// be cut short or spill into the next field, and both would corrupt the key.
fn put_str(b: &mut [u8], at: usize, cap: usize, s: &str) -> usize {
    assert!(
        cap <= u8::MAX as usize && s.len() <= cap,
        "format: a {}-byte string does not fit its {cap}-byte key field \
         (names are validated to fit before they reach storage)",
        s.len()
    );
    assert!(
        at + U8_LEN + cap <= b.len(),
        "format: a key field at {at} overruns its {}-byte block",
        b.len()
    );
    b[at] = s.len() as u8;
    b[at + U8_LEN..at + U8_LEN + s.len()].copy_from_slice(s.as_bytes());
    at + U8_LEN + cap
}

fn get_str(b: &[u8], at: usize, cap: usize) -> Result<(String, usize), String> {
    if at + U8_LEN + cap > b.len() {
        return Err("key block is truncated".into());
    }
    let len = b[at] as usize;
    if len > cap {
        return Err(format!("string length {len} exceeds {cap}"));
    }
    let s = std::str::from_utf8(&b[at + U8_LEN..at + U8_LEN + len])
        .map_err(|_| "string is not UTF-8".to_string())?;
    Ok((s.to_string(), at + U8_LEN + cap))
}

/// Writes the key block (kind and value type are stored elsewhere).
pub fn encode_key(b: &mut [u8], key: &SeriesKey) {
    let at = put_str(b, 0, SYMBOL_CAP, key.symbol());
    let at = put_str(b, at, TIMEFRAME_CAP, key.timeframe());
    let at = put_str(b, at, CATEGORY_CAP, key.category().unwrap_or(""));
    let end = put_str(b, at, NAME_CAP, key.name().unwrap_or(""));
    debug_assert_eq!(end, KEY_BLOCK_LEN);
}

/// Reads and re-validates the key block.
pub fn decode_key(b: &[u8], kind: SeriesKind) -> Result<SeriesKey, String> {
    let (symbol, at) = get_str(b, 0, SYMBOL_CAP)?;
    let (timeframe, at) = get_str(b, at, TIMEFRAME_CAP)?;
    let (category, at) = get_str(b, at, CATEGORY_CAP)?;
    let (name, _) = get_str(b, at, NAME_CAP)?;
    let key = match kind {
        SeriesKind::Kline => SeriesKey::kline(&symbol, &timeframe),
        SeriesKind::Scalar => SeriesKey::scalar(&symbol, &timeframe, &category, &name),
        SeriesKind::Trade => SeriesKey::trade(&symbol),
        SeriesKind::Quote => SeriesKey::quote(&symbol),
    };
    key.map_err(|e| e.to_string())
}

/// Writes kind, value type, timeframe and scales at fixed offsets of `b`.
fn encode_meta_fields(b: &mut [u8], meta: &SeriesMeta, at: MetaOffsets) {
    b[at.kind] = meta.key.kind().code();
    b[at.value_type] = meta.value_type.code();
    put_i64(b, at.timeframe_ms, meta.timeframe_ms);
    put_i64(b, at.price_scale, meta.price_scale);
    put_i64(b, at.volume_scale, meta.volume_scale);
    encode_key(&mut b[at.key..at.key + KEY_BLOCK_LEN], &meta.key);
}

fn decode_meta_fields(b: &[u8], at: MetaOffsets) -> Result<SeriesMeta, String> {
    let kind = SeriesKind::from_code(b[at.kind]).ok_or("unknown series kind")?;
    let value_type = ValueType::from_code(b[at.value_type]).ok_or("unknown value type")?;
    let key = decode_key(&b[at.key..at.key + KEY_BLOCK_LEN], kind)?;
    let meta = SeriesMeta {
        key,
        timeframe_ms: get_i64(b, at.timeframe_ms),
        price_scale: get_i64(b, at.price_scale),
        volume_scale: get_i64(b, at.volume_scale),
        value_type,
    };
    check_meta(&meta)?;
    Ok(meta)
}

/// What registration guarantees of any stored series' metadata.
fn check_meta(meta: &SeriesMeta) -> Result<(), String> {
    if meta.timeframe_ms <= 0 || meta.price_scale <= 0 || meta.volume_scale <= 0 {
        return Err("timeframe_ms and scales must be positive".into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct MetaOffsets {
    kind: usize,
    value_type: usize,
    timeframe_ms: usize,
    price_scale: usize,
    volume_scale: usize,
    key: usize,
}

const CHUNK_META: MetaOffsets = MetaOffsets {
    kind: CHUNK_KIND_OFFSET,
    value_type: CHUNK_VALUE_TYPE_OFFSET,
    timeframe_ms: CHUNK_TIMEFRAME_MS_OFFSET,
    price_scale: CHUNK_PRICE_SCALE_OFFSET,
    volume_scale: CHUNK_VOLUME_SCALE_OFFSET,
    key: CHUNK_KEY_OFFSET,
};
const MANIFEST_META: MetaOffsets = MetaOffsets {
    kind: MANIFEST_KIND_OFFSET,
    value_type: MANIFEST_VALUE_TYPE_OFFSET,
    timeframe_ms: MANIFEST_TIMEFRAME_MS_OFFSET,
    price_scale: MANIFEST_PRICE_SCALE_OFFSET,
    volume_scale: MANIFEST_VOLUME_SCALE_OFFSET,
    key: MANIFEST_KEY_OFFSET,
};

/// Checks what every chunk (and every manifest entry of one) satisfies: rows in
/// `1..=CHUNK_ROWS_MAX`, ts bounds ordered, inside the supported range and inside
/// `month`, and only known flag bits.
fn check_chunk_fields(
    part: Partitioning,
    rows: u64,
    first_ts: i64,
    last_ts: i64,
    month: i32,
    flags: u32,
) -> Result<(), String> {
    if rows == 0 || rows > CHUNK_ROWS_MAX {
        return Err(format!("row count {rows} is outside 1..={CHUNK_ROWS_MAX}"));
    }
    let (ts_min, ts_max) = part.ts_bounds();
    if first_ts > last_ts || first_ts < ts_min || last_ts > ts_max {
        return Err(format!(
            "ts bounds {first_ts}..={last_ts} are out of order or range"
        ));
    }
    if part.of(first_ts) != month || part.of(last_ts) != month {
        return Err(format!(
            "ts bounds {first_ts}..={last_ts} are not inside month {month}"
        ));
    }
    if flags & !FLAGS_KNOWN != 0 {
        return Err(format!("unknown chunk flags {flags:#x}"));
    }
    Ok(())
}

/// The largest compressed body a chunk may declare: twice the raw body plus a page per
/// column (pcodec's overhead on incompressible data is far below it), so a corrupt
/// length cannot make a reader allocate or read without bound.
pub fn max_compressed_body(ncols: u64, rows: u64) -> u64 {
    2 * ncols * stride_of(rows.min(CHUNK_ROWS_MAX)) + ncols * 4096
}

/// Bytes between column starts for `rows` rows (`rows` already checked against
/// [`CHUNK_ROWS_MAX`], so the product cannot overflow).
pub fn stride_of(rows: u64) -> u64 {
    align_up(rows as usize * U64_LEN) as u64
}

/// The decoded fixed header of a chunk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Shared with the series (`Arc`): the log builds a header for every series of a
    /// many-series write, and a copy of the key's strings per chunk costs allocations.
    pub meta: Arc<SeriesMeta>,
    pub ncols: usize,
    pub rows: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub month: i32,
    pub flags: u32,
    pub generation: u64,
    /// Series version of the write that produced this chunk.
    pub write_version: u64,
    /// How many chunks that write published (for rebuilds: an incomplete last write is dropped).
    pub write_chunks: u32,
    /// xxh3-64 of every byte after the header.
    pub body_xxh3: u64,
    /// Bytes between the starts of consecutive columns.
    pub stride: u64,
    /// The series' write-ahead log position when this chunk was written (0: none).
    pub wal_lsn: u64,
    /// Bytes of the compressed body ([`FLAG_COMPRESSED`]); 0 for a raw body.
    pub body_len: u64,
    /// The last row, every column (`ts` first; `ncols` values used, the rest zero),
    /// when the header carries it: set by [`ChunkParts::new`] from the columns it
    /// checksums, so every chunk written since holds it; `None` in older chunks.
    pub last_row: Option<[i64; LAST_ROW_MAX_COLS]>,
}

impl ChunkHeader {
    /// Total file length implied by the header.
    pub fn file_len(&self) -> u64 {
        if self.is_compressed() {
            CHUNK_HEADER_LEN as u64 + self.body_len
        } else {
            self.raw_len()
        }
    }
    /// Length of the raw layout (the file of a raw chunk; the in-memory image of a
    /// compressed one).
    pub fn raw_len(&self) -> u64 {
        CHUNK_HEADER_LEN as u64 + self.ncols as u64 * self.stride
    }
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
    /// Byte offset of column `i`.
    pub fn column_offset(&self, i: usize) -> usize {
        CHUNK_HEADER_LEN + i * self.stride as usize
    }

    /// The last-row field for a row's values, column by column (`None` past
    /// [`LAST_ROW_MAX_COLS`] columns, which no kind has).
    pub fn last_row_of(
        values: impl ExactSizeIterator<Item = i64>,
    ) -> Option<[i64; LAST_ROW_MAX_COLS]> {
        if values.len() > LAST_ROW_MAX_COLS {
            return None;
        }
        let mut row = [0i64; LAST_ROW_MAX_COLS];
        for (slot, v) in row.iter_mut().zip(values) {
            *slot = v;
        }
        Some(row)
    }

    /// What every header satisfies, on both sides of the disk: `encode` refuses to
    /// write a header that fails it and `decode` refuses to return one.
    pub fn validate(&self) -> Result<(), String> {
        check_meta(&self.meta)?;
        if self.ncols != self.meta.key.kind().ncols() {
            return Err(format!(
                "{} columns for a {} series",
                self.ncols,
                self.meta.key.kind().as_str()
            ));
        }
        check_chunk_fields(
            self.meta.partitioning(),
            self.rows,
            self.first_ts,
            self.last_ts,
            self.month,
            self.flags,
        )?;
        if self.stride != stride_of(self.rows) {
            return Err("inconsistent row count, stride or ts bounds".into());
        }
        if let Some(row) = &self.last_row
            && (row[0] != self.last_ts
                || row[self.ncols.min(LAST_ROW_MAX_COLS)..]
                    .iter()
                    .any(|&v| v != 0))
        {
            return Err("the last row disagrees with last_ts or the column count".into());
        }
        match (self.is_compressed(), self.body_len) {
            (false, 0) => {}
            (false, _) => return Err("a raw chunk with a compressed body length".into()),
            (true, n) if n == 0 || n > max_compressed_body(self.ncols as u64, self.rows) => {
                return Err(format!("compressed body length {n} out of range"));
            }
            (true, _) => {}
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        if let Err(why) = self.validate() {
            panic!("format: refusing to encode an invalid chunk header: {why}");
        }
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[CHUNK_MAGIC_OFFSET..CHUNK_MAGIC_OFFSET + MAGIC_LEN].copy_from_slice(CHUNK_MAGIC);
        put_u16(&mut b, CHUNK_VERSION_OFFSET, FORMAT_VERSION);
        put_u16(&mut b, CHUNK_NCOLS_OFFSET, self.ncols as u16);
        put_u64(&mut b, CHUNK_ROWS_OFFSET, self.rows);
        put_i64(&mut b, CHUNK_FIRST_TS_OFFSET, self.first_ts);
        put_i64(&mut b, CHUNK_LAST_TS_OFFSET, self.last_ts);
        put_u32(&mut b, CHUNK_MONTH_OFFSET, self.month as u32);
        put_u32(&mut b, CHUNK_FLAGS_OFFSET, self.flags);
        put_u64(&mut b, CHUNK_GENERATION_OFFSET, self.generation);
        put_u64(&mut b, CHUNK_WRITE_VERSION_OFFSET, self.write_version);
        put_u32(&mut b, CHUNK_WRITE_CHUNKS_OFFSET, self.write_chunks);
        put_u64(&mut b, CHUNK_BODY_XXH3_OFFSET, self.body_xxh3);
        put_u64(&mut b, CHUNK_STRIDE_OFFSET, self.stride);
        put_u64(&mut b, CHUNK_WAL_LSN_OFFSET, self.wal_lsn);
        put_u64(&mut b, CHUNK_BODY_LEN_OFFSET, self.body_len);
        if let Some(row) = &self.last_row {
            put_u32(&mut b, CHUNK_LAST_ROW_COLS_OFFSET, self.ncols as u32);
            for (i, v) in row[..self.ncols].iter().enumerate() {
                put_i64(&mut b, CHUNK_LAST_ROW_OFFSET + i * U64_LEN, *v);
            }
        }
        encode_meta_fields(&mut b, &self.meta, CHUNK_META);
        let sum = xxh3_64(&b[..CHUNK_HEADER_XXH3_OFFSET]);
        put_u64(&mut b, CHUNK_HEADER_XXH3_OFFSET, sum);
        b
    }

    /// Decodes and checks a header; the body checksum is checked separately. Any
    /// bytes give a header that passes [`ChunkHeader::validate`] or an error, never a
    /// panic (`tests/fuzz_decoders.rs`).
    pub fn decode(b: &[u8]) -> Result<ChunkHeader, String> {
        if b.len() < CHUNK_HEADER_LEN {
            return Err(format!(
                "file is {} bytes, shorter than a chunk header",
                b.len()
            ));
        }
        if &b[CHUNK_MAGIC_OFFSET..CHUNK_MAGIC_OFFSET + MAGIC_LEN] != CHUNK_MAGIC {
            return Err("bad magic".into());
        }
        if get_u64(b, CHUNK_HEADER_XXH3_OFFSET) != xxh3_64(&b[..CHUNK_HEADER_XXH3_OFFSET]) {
            return Err("header checksum mismatch".into());
        }
        let version = get_u16(b, CHUNK_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported chunk format version {version}"));
        }
        let meta = Arc::new(decode_meta_fields(b, CHUNK_META)?);
        let ncols = get_u16(b, CHUNK_NCOLS_OFFSET) as usize;
        let last_row = match get_u32(b, CHUNK_LAST_ROW_COLS_OFFSET) as usize {
            0 => None,
            n if n == ncols && n <= LAST_ROW_MAX_COLS => {
                let mut row = [0i64; LAST_ROW_MAX_COLS];
                for (i, v) in row[..n].iter_mut().enumerate() {
                    *v = get_i64(b, CHUNK_LAST_ROW_OFFSET + i * U64_LEN);
                }
                Some(row)
            }
            n => return Err(format!("last row of {n} columns in a chunk of {ncols}")),
        };
        let h = ChunkHeader {
            ncols,
            rows: get_u64(b, CHUNK_ROWS_OFFSET),
            first_ts: get_i64(b, CHUNK_FIRST_TS_OFFSET),
            last_ts: get_i64(b, CHUNK_LAST_TS_OFFSET),
            month: get_u32(b, CHUNK_MONTH_OFFSET) as i32,
            flags: get_u32(b, CHUNK_FLAGS_OFFSET),
            generation: get_u64(b, CHUNK_GENERATION_OFFSET),
            write_version: get_u64(b, CHUNK_WRITE_VERSION_OFFSET),
            write_chunks: get_u32(b, CHUNK_WRITE_CHUNKS_OFFSET),
            body_xxh3: get_u64(b, CHUNK_BODY_XXH3_OFFSET),
            stride: get_u64(b, CHUNK_STRIDE_OFFSET),
            wal_lsn: get_u64(b, CHUNK_WAL_LSN_OFFSET),
            body_len: get_u64(b, CHUNK_BODY_LEN_OFFSET),
            last_row,
            meta,
        };
        h.validate()?;
        Ok(h)
    }
}

/// Builds a complete chunk file (header + column-major body) from columns of equal length.
pub fn build_chunk(header: ChunkHeader, cols: &[&[i64]]) -> Vec<u8> {
    let parts = ChunkParts::new(header, cols);
    parts.slices().concat()
}

/// Zero bytes that pad a column up to [`COLUMN_ALIGN`].
static PADDING: [u8; COLUMN_ALIGN] = [0; COLUMN_ALIGN];

/// A chunk file as a list of borrowed byte runs (header, then each column and its
/// padding), so the write path can hand the caller's columns to `write(2)` without
/// assembling the file in memory first. The body checksum is computed over the same
/// runs in order, which gives the same xxh3 as hashing the assembled body.
pub struct ChunkParts<'a> {
    pub header: ChunkHeader,
    header_bytes: [u8; CHUNK_HEADER_LEN],
    cols: &'a [&'a [i64]],
    pad: usize,
}

impl<'a> ChunkParts<'a> {
    /// Fills in the header's rows, stride, ts bounds and body checksum from `cols`
    /// (at least one row, every column the same length).
    pub fn new(mut header: ChunkHeader, cols: &'a [&'a [i64]]) -> ChunkParts<'a> {
        let rows = cols[0].len();
        // Checked in release too: a short column would be padded with the next
        // column's bytes under a checksum that matches them. (`encode` below checks
        // the rest: row count, ts order and month, column count for the kind.)
        assert!(
            cols.iter().all(|c| c.len() == rows),
            "format: the columns of a chunk differ in length"
        );
        assert!(
            rows > 0 && rows as u64 <= CHUNK_ROWS_MAX,
            "format: a chunk holds 1..={CHUNK_ROWS_MAX} rows, not {rows}"
        );
        let stride = align_up(rows * U64_LEN);
        header.rows = rows as u64;
        header.ncols = cols.len();
        header.stride = stride as u64;
        header.first_ts = cols[0][0];
        header.last_ts = cols[0][rows - 1];
        header.last_row = ChunkHeader::last_row_of(cols.iter().map(|c| c[rows - 1]));
        let pad = stride - rows * U64_LEN;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for col in cols {
            hasher.update(bytemuck::cast_slice(col));
            hasher.update(&PADDING[..pad]);
        }
        header.body_xxh3 = hasher.digest();
        let header_bytes = header.encode();
        ChunkParts {
            header,
            header_bytes,
            cols,
            pad,
        }
    }

    /// Length of the whole file.
    pub fn len(&self) -> usize {
        CHUNK_HEADER_LEN + self.cols.len() * self.header.stride as usize
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The byte runs of the file, in order.
    pub fn slices(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(1 + 2 * self.cols.len());
        out.push(&self.header_bytes[..]);
        for col in self.cols {
            out.push(bytemuck::cast_slice(col));
            if self.pad > 0 {
                out.push(&PADDING[..self.pad]);
            }
        }
        out
    }
}

/// Entry state: the chunk is part of the series.
pub const STATE_LIVE: u8 = 0;
/// Entry state: superseded; the file is deleted once no reader holds it, and on open.
pub const STATE_OBSOLETE: u8 = 1;

/// Sidecar checksum and length, as recorded in a manifest entry (0/0 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SidecarRef {
    pub len: u64,
    pub xxh3: u64,
}

impl SidecarRef {
    pub fn present(&self) -> bool {
        self.len > 0
    }
}

/// Where a packed chunk lives: the pack's generation, the offset of the chunk's image
/// in it (its sidecars follow it, see `storage::pack`) and the pack's whole length.
/// Generation 0: the chunk is its own file (every entry before version 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackLoc {
    pub generation: u64,
    pub offset: u64,
    pub len: u64,
}

impl PackLoc {
    /// An ordinary chunk file.
    pub const NONE: PackLoc = PackLoc {
        generation: 0,
        offset: 0,
        len: 0,
    };
    pub fn is_packed(&self) -> bool {
        self.generation != 0
    }
}

/// One chunk as the manifest records it (its encoding is [`Manifest::encode`]'s; the
/// order of the fields here is only their place in memory).
///
/// The fields an append reads from every chunk of a month's tail come first, in
/// declaration order (`repr(C)`), so that with [`super::chunk::ChunkRef`]'s own first
/// field and its reference count they share one cache line: a many-series write walks
/// the tails of thousands of series, and each line it misses is paid per series.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(C)]
pub struct ChunkEntry {
    pub rows: u64,
    pub last_ts: i64,
    pub file_len: u64,
    pub first_ts: i64,
    pub month: i32,
    pub flags: u32,
    pub generation: u64,
    /// xxh3-64 of the chunk body, equal to the header's `body_xxh3`.
    pub checksum: u64,
    pub write_version: u64,
    pub zonemap: SidecarRef,
    pub vindex: SidecarRef,
    pub state: u8,
    /// Set when the chunk lives in a pack rather than its own files.
    pub pack: PackLoc,
}

impl ChunkEntry {
    /// Whether the chunk header `h` is the one this entry records: every field both
    /// hold agrees (checked on every mapping, and on every header read alone).
    pub fn agrees_with(&self, h: &ChunkHeader) -> bool {
        self.checksum == h.body_xxh3
            && self.file_len == h.file_len()
            && self.flags == h.flags
            && self.rows == h.rows
            && self.first_ts == h.first_ts
            && self.last_ts == h.last_ts
            && self.generation == h.generation
            && self.month == h.month
    }

    /// The live entry of the chunk whose header is `h`, with its sidecars, stored at
    /// `pack` ([`PackLoc::NONE`]: its own file): every field the header has is taken
    /// from it, so the two agree by construction.
    pub fn live(h: &ChunkHeader, zonemap: SidecarRef, vindex: SidecarRef, pack: PackLoc) -> Self {
        ChunkEntry {
            month: h.month,
            flags: h.flags,
            generation: h.generation,
            rows: h.rows,
            first_ts: h.first_ts,
            last_ts: h.last_ts,
            file_len: h.file_len(),
            checksum: h.body_xxh3,
            write_version: h.write_version,
            zonemap,
            vindex,
            state: STATE_LIVE,
            pack,
        }
    }

    /// Bytes of the chunk in the raw layout (its file if raw; its decompressed image if
    /// compressed): what it would cost on disk uncompressed.
    pub fn raw_len(&self, ncols: usize) -> u64 {
        CHUNK_HEADER_LEN as u64 + ncols as u64 * stride_of(self.rows.min(CHUNK_ROWS_MAX))
    }
}

/// One past the last byte of a packed entry's data in its pack (image, then each
/// sidecar at the next [`COLUMN_ALIGN`] boundary; `storage::pack`), or `None` on
/// overflow (a corrupt entry).
pub fn packed_end(e: &ChunkEntry) -> Option<u64> {
    let align = |n: u64| n.checked_next_multiple_of(COLUMN_ALIGN as u64);
    let z = align(e.pack.offset.checked_add(e.file_len)?)?;
    let v = align(z.checked_add(e.zonemap.len)?)?;
    v.checked_add(e.vindex.len)
}

/// A decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub meta: SeriesMeta,
    pub version: u64,
    pub next_generation: u64,
    /// Months entirely older than `now - retention_ms` are dropped (0: keep forever).
    pub retention_ms: i64,
    /// Kline bars may sit off the timeframe's grid ([`SERIES_IRREGULAR`]).
    pub irregular: bool,
    /// Every write-ahead log record up to this one is in the chunks listed here; replay
    /// on open applies only later records (0: none, and every version 1 manifest).
    pub wal_lsn: u64,
    pub entries: Vec<ChunkEntry>,
}

impl Manifest {
    /// What every manifest satisfies, on both sides of the disk: each entry obeys the
    /// chunk rules, names a file of the length its rows imply, has a known state and a
    /// generation below `next_generation` (recovery deletes files at or past it).
    pub fn validate(&self) -> Result<(), String> {
        check_meta(&self.meta)?;
        if self.retention_ms < 0 {
            return Err(format!("negative retention_ms {}", self.retention_ms));
        }
        if self.entries.len() > u32::MAX as usize {
            return Err("more entries than the count field holds".into());
        }
        let ncols = self.meta.key.kind().ncols() as u64;
        let part = self.meta.partitioning();
        for (i, e) in self.entries.iter().enumerate() {
            let bad = |why: String| Err(format!("entry {i} (generation {}): {why}", e.generation));
            if let Err(why) =
                check_chunk_fields(part, e.rows, e.first_ts, e.last_ts, e.month, e.flags)
            {
                return bad(why);
            }
            let compressed = e.flags & FLAG_COMPRESSED != 0;
            let body = e.file_len.saturating_sub(CHUNK_HEADER_LEN as u64);
            if compressed && (body == 0 || body > max_compressed_body(ncols, e.rows)) {
                return bad(format!("compressed file_len {} out of range", e.file_len));
            }
            if !compressed && e.file_len != CHUNK_HEADER_LEN as u64 + ncols * stride_of(e.rows) {
                return bad(format!(
                    "file_len {} disagrees with {} rows",
                    e.file_len, e.rows
                ));
            }
            if e.state != STATE_LIVE && e.state != STATE_OBSOLETE {
                return bad(format!("unknown state {}", e.state));
            }
            if e.generation >= self.next_generation {
                return bad(format!(
                    "not below next_generation {}",
                    self.next_generation
                ));
            }
            if e.pack.is_packed() {
                if e.pack.generation >= self.next_generation || e.pack.generation == e.generation {
                    return bad(format!("bad pack generation {}", e.pack.generation));
                }
                if !(e.pack.offset as usize).is_multiple_of(COLUMN_ALIGN) || e.pack.offset == 0 {
                    return bad(format!("bad pack offset {}", e.pack.offset));
                }
                if packed_end(e).is_none_or(|end| end > e.pack.len) {
                    return bad(format!("does not fit its {}-byte pack", e.pack.len));
                }
            } else if e.pack != PackLoc::NONE {
                return bad("a pack offset without a pack".into());
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        if let Err(why) = self.validate() {
            panic!("format: refusing to encode an invalid manifest: {why}");
        }
        let n = self.entries.len();
        let mut b = vec![0u8; MANIFEST_HEADER_LEN + n * MANIFEST_ENTRY_LEN + MANIFEST_TRAILER_LEN];
        b[MANIFEST_MAGIC_OFFSET..MANIFEST_MAGIC_OFFSET + MAGIC_LEN].copy_from_slice(MANIFEST_MAGIC);
        let packed = self.entries.iter().any(|e| e.pack.is_packed());
        let version = if packed {
            MANIFEST_FORMAT_V3
        } else {
            MANIFEST_FORMAT_VERSION
        };
        put_u32(&mut b, MANIFEST_VERSION_OFFSET, version);
        put_u32(&mut b, MANIFEST_COUNT_OFFSET, n as u32);
        put_u64(&mut b, MANIFEST_SERIES_VERSION_OFFSET, self.version);
        put_u64(
            &mut b,
            MANIFEST_NEXT_GENERATION_OFFSET,
            self.next_generation,
        );
        encode_meta_fields(&mut b, &self.meta, MANIFEST_META);
        put_i64(&mut b, MANIFEST_RETENTION_MS_OFFSET, self.retention_ms);
        let flags = if self.irregular { SERIES_IRREGULAR } else { 0 };
        put_u32(&mut b, MANIFEST_SERIES_FLAGS_OFFSET, flags);
        put_u64(&mut b, MANIFEST_WAL_LSN_OFFSET, self.wal_lsn);
        for (i, e) in self.entries.iter().enumerate() {
            let at = MANIFEST_HEADER_LEN + i * MANIFEST_ENTRY_LEN;
            put_u32(&mut b, at + ENTRY_MONTH_OFFSET, e.month as u32);
            put_u32(&mut b, at + ENTRY_FLAGS_OFFSET, e.flags);
            put_u64(&mut b, at + ENTRY_GENERATION_OFFSET, e.generation);
            put_u64(&mut b, at + ENTRY_ROWS_OFFSET, e.rows);
            put_i64(&mut b, at + ENTRY_FIRST_TS_OFFSET, e.first_ts);
            put_i64(&mut b, at + ENTRY_LAST_TS_OFFSET, e.last_ts);
            put_u64(&mut b, at + ENTRY_FILE_LEN_OFFSET, e.file_len);
            put_u64(&mut b, at + ENTRY_CHECKSUM_OFFSET, e.checksum);
            put_u64(&mut b, at + ENTRY_WRITE_VERSION_OFFSET, e.write_version);
            put_u64(&mut b, at + ENTRY_ZONEMAP_XXH3_OFFSET, e.zonemap.xxh3);
            put_u64(&mut b, at + ENTRY_ZONEMAP_LEN_OFFSET, e.zonemap.len);
            put_u64(&mut b, at + ENTRY_VINDEX_XXH3_OFFSET, e.vindex.xxh3);
            put_u64(&mut b, at + ENTRY_VINDEX_LEN_OFFSET, e.vindex.len);
            b[at + ENTRY_STATE_OFFSET] = e.state;
            put_u64(&mut b, at + ENTRY_PACK_GENERATION_OFFSET, e.pack.generation);
            put_u64(&mut b, at + ENTRY_PACK_OFFSET_OFFSET, e.pack.offset);
            put_u64(&mut b, at + ENTRY_PACK_LEN_OFFSET, e.pack.len);
        }
        let body_end = b.len() - MANIFEST_TRAILER_LEN;
        let sum = xxh3_64(&b[..body_end]);
        put_u64(&mut b, body_end, sum);
        b
    }

    /// Decodes and checks a manifest. Any bytes give a manifest that passes
    /// [`Manifest::validate`] or an error, never a panic (`tests/fuzz_decoders.rs`).
    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        if b.len() < MANIFEST_HEADER_LEN_V1 + MANIFEST_TRAILER_LEN {
            return Err(format!("manifest is {} bytes, too short", b.len()));
        }
        if &b[MANIFEST_MAGIC_OFFSET..MANIFEST_MAGIC_OFFSET + MAGIC_LEN] != MANIFEST_MAGIC {
            return Err("bad manifest magic".into());
        }
        let body_end = b.len() - MANIFEST_TRAILER_LEN;
        if get_u64(b, body_end) != xxh3_64(&b[..body_end]) {
            return Err("manifest checksum mismatch".into());
        }
        let version = get_u32(b, MANIFEST_VERSION_OFFSET);
        let header_len = match version {
            MANIFEST_FORMAT_V1 => MANIFEST_HEADER_LEN_V1,
            MANIFEST_FORMAT_VERSION | MANIFEST_FORMAT_V3 => MANIFEST_HEADER_LEN,
            _ => return Err(format!("unsupported manifest format version {version}")),
        };
        // A u32 count times 128 fits in a 64-bit usize: no overflow before the check.
        let n = get_u32(b, MANIFEST_COUNT_OFFSET) as usize;
        if b.len() as u64
            != (header_len + MANIFEST_TRAILER_LEN) as u64 + n as u64 * MANIFEST_ENTRY_LEN as u64
        {
            return Err("manifest length disagrees with its entry count".into());
        }
        let meta = decode_meta_fields(b, MANIFEST_META)?;
        let entries = (0..n)
            .map(|i| {
                let at = header_len + i * MANIFEST_ENTRY_LEN;
                ChunkEntry {
                    month: get_u32(b, at + ENTRY_MONTH_OFFSET) as i32,
                    flags: get_u32(b, at + ENTRY_FLAGS_OFFSET),
                    generation: get_u64(b, at + ENTRY_GENERATION_OFFSET),
                    rows: get_u64(b, at + ENTRY_ROWS_OFFSET),
                    first_ts: get_i64(b, at + ENTRY_FIRST_TS_OFFSET),
                    last_ts: get_i64(b, at + ENTRY_LAST_TS_OFFSET),
                    file_len: get_u64(b, at + ENTRY_FILE_LEN_OFFSET),
                    checksum: get_u64(b, at + ENTRY_CHECKSUM_OFFSET),
                    write_version: get_u64(b, at + ENTRY_WRITE_VERSION_OFFSET),
                    zonemap: SidecarRef {
                        xxh3: get_u64(b, at + ENTRY_ZONEMAP_XXH3_OFFSET),
                        len: get_u64(b, at + ENTRY_ZONEMAP_LEN_OFFSET),
                    },
                    vindex: SidecarRef {
                        xxh3: get_u64(b, at + ENTRY_VINDEX_XXH3_OFFSET),
                        len: get_u64(b, at + ENTRY_VINDEX_LEN_OFFSET),
                    },
                    state: b[at + ENTRY_STATE_OFFSET],
                    // Reserved (zero) before version 3; not trusted there.
                    pack: if version == MANIFEST_FORMAT_V3 {
                        PackLoc {
                            generation: get_u64(b, at + ENTRY_PACK_GENERATION_OFFSET),
                            offset: get_u64(b, at + ENTRY_PACK_OFFSET_OFFSET),
                            len: get_u64(b, at + ENTRY_PACK_LEN_OFFSET),
                        }
                    } else {
                        PackLoc::NONE
                    },
                }
            })
            .collect();
        let m = Manifest {
            meta,
            version: get_u64(b, MANIFEST_SERIES_VERSION_OFFSET),
            retention_ms: get_i64(b, MANIFEST_RETENTION_MS_OFFSET),
            irregular: get_u32(b, MANIFEST_SERIES_FLAGS_OFFSET) & SERIES_IRREGULAR != 0,
            next_generation: get_u64(b, MANIFEST_NEXT_GENERATION_OFFSET),
            wal_lsn: if version == MANIFEST_FORMAT_V1 {
                0
            } else {
                get_u64(b, MANIFEST_WAL_LSN_OFFSET)
            },
            entries,
        };
        m.validate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MonthPartition;

    fn meta() -> SeriesMeta {
        SeriesMeta {
            key: SeriesKey::scalar("BTCUSDT", "1m", "indicator", "rsi_14").unwrap(),
            timeframe_ms: 60_000,
            price_scale: 1,
            volume_scale: 1,
            value_type: ValueType::F64,
        }
    }

    const JAN_2024: i64 = 1_704_067_200_000;

    #[test]
    fn chunk_header_round_trips_and_detects_flips() {
        let ts = [JAN_2024 + 10, JAN_2024 + 20, JAN_2024 + 30];
        let v = [1i64, 2, 3];
        let h = ChunkHeader {
            meta: Arc::new(meta()),
            ncols: 2,
            rows: 0,
            first_ts: 0,
            last_ts: 0,
            month: MonthPartition::from_ts(JAN_2024).0,
            flags: FLAG_FULL,
            generation: 7,
            write_version: 3,
            write_chunks: 1,
            body_xxh3: 0,
            stride: 0,
            wal_lsn: 0,
            body_len: 0,
            last_row: None,
        };
        let file = build_chunk(h, &[&ts, &v]);
        assert_eq!(file.len(), CHUNK_HEADER_LEN + 2 * 64);
        let back = ChunkHeader::decode(&file).unwrap();
        assert_eq!(
            (back.rows, back.first_ts, back.last_ts, back.generation),
            (3, JAN_2024 + 10, JAN_2024 + 30, 7)
        );
        assert_eq!(*back.meta, meta());
        assert_eq!(back.body_xxh3, xxh3_64(&file[CHUNK_HEADER_LEN..]));
        let mut bad = file.clone();
        bad[20] ^= 1;
        assert!(ChunkHeader::decode(&bad).is_err());
    }

    #[test]
    fn manifest_round_trips_and_detects_flips() {
        let m = Manifest {
            meta: meta(),
            version: 9,
            next_generation: 12,
            retention_ms: 0,
            irregular: false,
            wal_lsn: 77,
            entries: vec![ChunkEntry {
                month: MonthPartition::from_ts(JAN_2024).0,
                flags: FLAG_FULL,
                generation: 11,
                rows: 3,
                first_ts: JAN_2024 + 1,
                last_ts: JAN_2024 + 3,
                file_len: 640,
                checksum: 42,
                write_version: 9,
                zonemap: SidecarRef { len: 10, xxh3: 5 },
                vindex: SidecarRef::default(),
                state: STATE_LIVE,
                pack: PackLoc::NONE,
            }],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        for i in [0, 17, 300, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    #[should_panic(expected = "does not fit its 16-byte key field")]
    fn put_str_refuses_a_string_longer_than_its_field_in_release_too() {
        // The story: `put_str` only debug-asserted the length, so a release build would
        // have written a length byte the field cannot hold and spilled the string's
        // bytes into the next field. Keys are validated long before they get here; the
        // assertion makes the format code not depend on that.
        let mut b = [0u8; KEY_BLOCK_LEN];
        put_str(&mut b, 65, TIMEFRAME_CAP, "this-is-longer-than-16");
    }

    #[test]
    #[should_panic(expected = "refusing to encode an invalid manifest")]
    fn manifest_encoder_asserts_generation_below_next() {
        let m = Manifest {
            meta: meta(),
            version: 1,
            next_generation: 3,
            retention_ms: 0,
            irregular: false,
            wal_lsn: 0,
            entries: vec![ChunkEntry {
                month: MonthPartition::from_ts(JAN_2024).0,
                flags: 0,
                generation: 3,
                rows: 1,
                first_ts: JAN_2024,
                last_ts: JAN_2024,
                file_len: 512 + 2 * 64,
                checksum: 0,
                write_version: 1,
                zonemap: SidecarRef::default(),
                vindex: SidecarRef::default(),
                state: STATE_LIVE,
                pack: PackLoc::NONE,
            }],
        };
        m.encode();
    }
}

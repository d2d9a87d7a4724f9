//! Byte layouts of chunk files and manifests (documented in `docs/storage-format.md`).
//!
//! Every integer is little-endian. Both layouts end their fixed part with an xxh3-64
//! checksum so a torn or flipped header is detected before any field is trusted.

use xxhash_rust::xxh3::xxh3_64;

use crate::record::{SeriesKey, SeriesKind, SeriesMeta, ValueType};

/// Magic of a chunk file.
pub const CHUNK_MAGIC: &[u8; 8] = b"FASTKCHK";
/// Magic of a manifest.
pub const MANIFEST_MAGIC: &[u8; 8] = b"FASTKMAN";
/// Current on-disk format version of both.
pub const FORMAT_VERSION: u16 = 1;
/// Chunk header size; the first column starts here.
pub const CHUNK_HEADER_LEN: usize = 512;
/// Every column starts on this boundary (relative to the file, hence to the mapping).
pub const COLUMN_ALIGN: usize = 64;
/// Chunk flag: this chunk holds the whole month and supersedes every older-generation
/// chunk of the same month.
pub const FLAG_FULL: u32 = 1;

/// Bytes used by the series key block (symbol 1+64, timeframe 1+16, category 1+64, name 1+64).
pub const KEY_BLOCK_LEN: usize = 212;

/// Rounds `n` up to a multiple of [`COLUMN_ALIGN`].
pub fn align_up(n: usize) -> usize {
    n.div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN
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

fn put_str(b: &mut [u8], at: usize, cap: usize, s: &str) -> usize {
    debug_assert!(s.len() <= cap);
    b[at] = s.len() as u8;
    b[at + 1..at + 1 + s.len()].copy_from_slice(s.as_bytes());
    at + 1 + cap
}

fn get_str(b: &[u8], at: usize, cap: usize) -> Result<(String, usize), String> {
    let len = b[at] as usize;
    if len > cap {
        return Err(format!("string length {len} exceeds {cap}"));
    }
    let s = std::str::from_utf8(&b[at + 1..at + 1 + len])
        .map_err(|_| "string is not UTF-8".to_string())?;
    Ok((s.to_string(), at + 1 + cap))
}

/// Writes the key block (kind and value type are stored elsewhere).
pub fn encode_key(b: &mut [u8], key: &SeriesKey) {
    let at = put_str(b, 0, 64, key.symbol());
    let at = put_str(b, at, 16, key.timeframe());
    let at = put_str(b, at, 64, key.category().unwrap_or(""));
    put_str(b, at, 64, key.name().unwrap_or(""));
}

/// Reads and re-validates the key block.
pub fn decode_key(b: &[u8], kind: SeriesKind) -> Result<SeriesKey, String> {
    let (symbol, at) = get_str(b, 0, 64)?;
    let (timeframe, at) = get_str(b, at, 16)?;
    let (category, at) = get_str(b, at, 64)?;
    let (name, _) = get_str(b, at, 64)?;
    let key = match kind {
        SeriesKind::Kline => SeriesKey::kline(&symbol, &timeframe),
        SeriesKind::Scalar => SeriesKey::scalar(&symbol, &timeframe, &category, &name),
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
    Ok(SeriesMeta {
        key,
        timeframe_ms: get_i64(b, at.timeframe_ms),
        price_scale: get_i64(b, at.price_scale),
        volume_scale: get_i64(b, at.volume_scale),
        value_type,
    })
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
    kind: 10,
    value_type: 11,
    timeframe_ms: 72,
    price_scale: 80,
    volume_scale: 88,
    key: 112,
};
const MANIFEST_META: MetaOffsets = MetaOffsets {
    kind: 56,
    value_type: 57,
    timeframe_ms: 32,
    price_scale: 40,
    volume_scale: 48,
    key: 64,
};

/// The decoded fixed header of a chunk file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkHeader {
    pub meta: SeriesMeta,
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
}

impl ChunkHeader {
    /// Total file length implied by the header.
    pub fn file_len(&self) -> u64 {
        CHUNK_HEADER_LEN as u64 + self.ncols as u64 * self.stride
    }
    /// Byte offset of column `i`.
    pub fn column_offset(&self, i: usize) -> usize {
        CHUNK_HEADER_LEN + i * self.stride as usize
    }

    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[0..8].copy_from_slice(CHUNK_MAGIC);
        put_u16(&mut b, 8, FORMAT_VERSION);
        put_u16(&mut b, 12, self.ncols as u16);
        put_u64(&mut b, 16, self.rows);
        put_i64(&mut b, 24, self.first_ts);
        put_i64(&mut b, 32, self.last_ts);
        put_u32(&mut b, 40, self.month as u32);
        put_u32(&mut b, 44, self.flags);
        put_u64(&mut b, 48, self.generation);
        put_u64(&mut b, 56, self.write_version);
        put_u32(&mut b, 64, self.write_chunks);
        put_u64(&mut b, 96, self.body_xxh3);
        put_u64(&mut b, 104, self.stride);
        encode_meta_fields(&mut b, &self.meta, CHUNK_META);
        let sum = xxh3_64(&b[..CHUNK_HEADER_LEN - 8]);
        put_u64(&mut b, CHUNK_HEADER_LEN - 8, sum);
        b
    }

    /// Decodes and checks a header; the body checksum is checked separately.
    pub fn decode(b: &[u8]) -> Result<ChunkHeader, String> {
        if b.len() < CHUNK_HEADER_LEN {
            return Err(format!(
                "file is {} bytes, shorter than a chunk header",
                b.len()
            ));
        }
        if &b[0..8] != CHUNK_MAGIC {
            return Err("bad magic".into());
        }
        if get_u64(b, CHUNK_HEADER_LEN - 8) != xxh3_64(&b[..CHUNK_HEADER_LEN - 8]) {
            return Err("header checksum mismatch".into());
        }
        let version = get_u16(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported chunk format version {version}"));
        }
        let meta = decode_meta_fields(b, CHUNK_META)?;
        let h = ChunkHeader {
            ncols: get_u16(b, 12) as usize,
            rows: get_u64(b, 16),
            first_ts: get_i64(b, 24),
            last_ts: get_i64(b, 32),
            month: get_u32(b, 40) as i32,
            flags: get_u32(b, 44),
            generation: get_u64(b, 48),
            write_version: get_u64(b, 56),
            write_chunks: get_u32(b, 64),
            body_xxh3: get_u64(b, 96),
            stride: get_u64(b, 104),
            meta,
        };
        if h.ncols != h.meta.key.kind().ncols() {
            return Err(format!(
                "{} columns for a {} series",
                h.ncols,
                h.meta.key.kind().as_str()
            ));
        }
        if h.rows == 0 || h.stride != align_up(h.rows as usize * 8) as u64 || h.first_ts > h.last_ts
        {
            return Err("inconsistent row count, stride or ts bounds".into());
        }
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
        debug_assert!(cols.iter().all(|c| c.len() == rows));
        let stride = align_up(rows * 8);
        header.rows = rows as u64;
        header.ncols = cols.len();
        header.stride = stride as u64;
        header.first_ts = cols[0][0];
        header.last_ts = cols[0][rows - 1];
        let pad = stride - rows * 8;
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

/// Manifest fixed-part length (the entries follow).
pub const MANIFEST_HEADER_LEN: usize = 288;
/// Bytes per manifest entry.
pub const MANIFEST_ENTRY_LEN: usize = 128;

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

/// One chunk as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    pub month: i32,
    pub flags: u32,
    pub generation: u64,
    pub rows: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub file_len: u64,
    /// xxh3-64 of the chunk body, equal to the header's `body_xxh3`.
    pub checksum: u64,
    pub write_version: u64,
    pub zonemap: SidecarRef,
    pub vindex: SidecarRef,
    pub state: u8,
}

/// A decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub meta: SeriesMeta,
    pub version: u64,
    pub next_generation: u64,
    pub entries: Vec<ChunkEntry>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len();
        let mut b = vec![0u8; MANIFEST_HEADER_LEN + n * MANIFEST_ENTRY_LEN + 8];
        b[0..8].copy_from_slice(MANIFEST_MAGIC);
        put_u32(&mut b, 8, FORMAT_VERSION as u32);
        put_u32(&mut b, 12, n as u32);
        put_u64(&mut b, 16, self.version);
        put_u64(&mut b, 24, self.next_generation);
        encode_meta_fields(&mut b, &self.meta, MANIFEST_META);
        for (i, e) in self.entries.iter().enumerate() {
            let at = MANIFEST_HEADER_LEN + i * MANIFEST_ENTRY_LEN;
            put_u32(&mut b, at, e.month as u32);
            put_u32(&mut b, at + 4, e.flags);
            put_u64(&mut b, at + 8, e.generation);
            put_u64(&mut b, at + 16, e.rows);
            put_i64(&mut b, at + 24, e.first_ts);
            put_i64(&mut b, at + 32, e.last_ts);
            put_u64(&mut b, at + 40, e.file_len);
            put_u64(&mut b, at + 48, e.checksum);
            put_u64(&mut b, at + 56, e.write_version);
            put_u64(&mut b, at + 64, e.zonemap.xxh3);
            put_u64(&mut b, at + 72, e.zonemap.len);
            put_u64(&mut b, at + 80, e.vindex.xxh3);
            put_u64(&mut b, at + 88, e.vindex.len);
            b[at + 96] = e.state;
        }
        let body_end = b.len() - 8;
        let sum = xxh3_64(&b[..body_end]);
        put_u64(&mut b, body_end, sum);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        if b.len() < MANIFEST_HEADER_LEN + 8 {
            return Err(format!("manifest is {} bytes, too short", b.len()));
        }
        if &b[0..8] != MANIFEST_MAGIC {
            return Err("bad manifest magic".into());
        }
        let body_end = b.len() - 8;
        if get_u64(b, body_end) != xxh3_64(&b[..body_end]) {
            return Err("manifest checksum mismatch".into());
        }
        let version = get_u32(b, 8);
        if version != FORMAT_VERSION as u32 {
            return Err(format!("unsupported manifest format version {version}"));
        }
        let n = get_u32(b, 12) as usize;
        if b.len() != MANIFEST_HEADER_LEN + n * MANIFEST_ENTRY_LEN + 8 {
            return Err("manifest length disagrees with its entry count".into());
        }
        let meta = decode_meta_fields(b, MANIFEST_META)?;
        let entries = (0..n)
            .map(|i| {
                let at = MANIFEST_HEADER_LEN + i * MANIFEST_ENTRY_LEN;
                ChunkEntry {
                    month: get_u32(b, at) as i32,
                    flags: get_u32(b, at + 4),
                    generation: get_u64(b, at + 8),
                    rows: get_u64(b, at + 16),
                    first_ts: get_i64(b, at + 24),
                    last_ts: get_i64(b, at + 32),
                    file_len: get_u64(b, at + 40),
                    checksum: get_u64(b, at + 48),
                    write_version: get_u64(b, at + 56),
                    zonemap: SidecarRef {
                        xxh3: get_u64(b, at + 64),
                        len: get_u64(b, at + 72),
                    },
                    vindex: SidecarRef {
                        xxh3: get_u64(b, at + 80),
                        len: get_u64(b, at + 88),
                    },
                    state: b[at + 96],
                }
            })
            .collect();
        Ok(Manifest {
            meta,
            version: get_u64(b, 16),
            next_generation: get_u64(b, 24),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SeriesMeta {
        SeriesMeta {
            key: SeriesKey::scalar("BTCUSDT", "1m", "indicator", "rsi_14").unwrap(),
            timeframe_ms: 60_000,
            price_scale: 1,
            volume_scale: 1,
            value_type: ValueType::F64,
        }
    }

    #[test]
    fn chunk_header_round_trips_and_detects_flips() {
        let ts = [10i64, 20, 30];
        let v = [1i64, 2, 3];
        let h = ChunkHeader {
            meta: meta(),
            ncols: 2,
            rows: 0,
            first_ts: 0,
            last_ts: 0,
            month: 5,
            flags: FLAG_FULL,
            generation: 7,
            write_version: 3,
            write_chunks: 1,
            body_xxh3: 0,
            stride: 0,
        };
        let file = build_chunk(h, &[&ts, &v]);
        assert_eq!(file.len(), CHUNK_HEADER_LEN + 2 * 64);
        let back = ChunkHeader::decode(&file).unwrap();
        assert_eq!(
            (back.rows, back.first_ts, back.last_ts, back.generation),
            (3, 10, 30, 7)
        );
        assert_eq!(back.meta, meta());
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
            entries: vec![ChunkEntry {
                month: 600,
                flags: FLAG_FULL,
                generation: 11,
                rows: 3,
                first_ts: 1,
                last_ts: 3,
                file_len: 640,
                checksum: 42,
                write_version: 9,
                zonemap: SidecarRef { len: 10, xxh3: 5 },
                vindex: SidecarRef::default(),
                state: STATE_LIVE,
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
}

//! Pack files: the chunks of several sealed months of one series in one file.
//!
//! A month of coarse bars is a small chunk (a month of 1h bars is 720 rows), and one
//! file per series-month costs a directory entry, an inode and a descriptor per open
//! for a few kilobytes. The sealed-month pass (`storage::packer`) copies the images
//! of small sealed chunks (each byte for byte as its chunk file, header re-encoded
//! with a fresh generation) and their sidecars into one `pack.g<gen>.pack`; the
//! manifest entry of a packed chunk names the pack and the image's offset
//! (`format::PackLoc`). Layout (docs/storage-format.md, "Pack file"):
//!
//! ```text
//! 0   magic "FASTKPAK" | version u32 | count u32 | generation u64      (24 bytes)
//! 24  count index entries of 64 bytes (below)
//! ..  xxh3-64 of every byte before it                                    (8 bytes)
//! ..  zero padding to COLUMN_ALIGN, then per entry: the chunk image, padding, the
//!     zone map (if any), padding, the value index (if any), padding
//! ```
//!
//! Every image and sidecar starts on a [`COLUMN_ALIGN`] boundary, so a slice of the
//! pack has its columns aligned exactly as its own file would. A reader never trusts
//! the index alone: the chunk image carries its own header and body checksum and the
//! sidecars their manifest checksums, all verified on every read from the pack.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use xxhash_rust::xxh3::xxh3_64;

use super::format::{
    COLUMN_ALIGN, ChunkEntry, MAGIC_LEN, SidecarRef, checked_align_up, get_u32, get_u64, put_u32,
    put_u64,
};
use super::mapped::{FileKind, Incarnation};

/// Default of `storage.pack_target_bytes`: a pack is rewritten whole when a month
/// joins it, so this bounds that copy, and it holds years of coarse months (a year
/// of 1h bars compresses to well under a megabyte).
pub const DEFAULT_PACK_TARGET_BYTES: u64 = 32 << 20;
/// Largest `storage.pack_target_bytes` accepted: the pass builds a pack in memory.
pub const MAX_PACK_TARGET_BYTES: u64 = 1 << 30;

/// Magic of a pack file.
pub const PACK_MAGIC: &[u8; MAGIC_LEN] = b"FASTKPAK";
/// Format version of pack files.
pub const PACK_FORMAT_VERSION: u32 = 1;
/// Most chunks one pack may list: far above what a size target gathers (a pack of
/// a 1 GiB target holds at most 16,384 months of 64 KiB), and a bound for a decoder
/// fed a corrupt count.
pub const PACK_MAX_CHUNKS: usize = 1 << 16;

const U32_LEN: usize = 4;
const U64_LEN: usize = 8;

const PACK_MAGIC_OFFSET: usize = 0;
const PACK_VERSION_OFFSET: usize = PACK_MAGIC_OFFSET + MAGIC_LEN;
const PACK_COUNT_OFFSET: usize = PACK_VERSION_OFFSET + U32_LEN;
const PACK_GENERATION_OFFSET: usize = PACK_COUNT_OFFSET + U32_LEN;
/// Fixed part of a pack; the index follows.
pub const PACK_HEADER_LEN: usize = PACK_GENERATION_OFFSET + U64_LEN;

// Index entry layout, relative to the entry's start.
const IDX_MONTH_OFFSET: usize = 0;
const IDX_RESERVED_LEN: usize = 4;
const IDX_GENERATION_OFFSET: usize = IDX_MONTH_OFFSET + U32_LEN + IDX_RESERVED_LEN;
const IDX_OFFSET_OFFSET: usize = IDX_GENERATION_OFFSET + U64_LEN;
const IDX_CHUNK_LEN_OFFSET: usize = IDX_OFFSET_OFFSET + U64_LEN;
const IDX_ZONEMAP_LEN_OFFSET: usize = IDX_CHUNK_LEN_OFFSET + U64_LEN;
const IDX_ZONEMAP_XXH3_OFFSET: usize = IDX_ZONEMAP_LEN_OFFSET + U64_LEN;
const IDX_VINDEX_LEN_OFFSET: usize = IDX_ZONEMAP_XXH3_OFFSET + U64_LEN;
const IDX_VINDEX_XXH3_OFFSET: usize = IDX_VINDEX_LEN_OFFSET + U64_LEN;
/// Bytes per index entry.
pub const PACK_INDEX_ENTRY_LEN: usize = IDX_VINDEX_XXH3_OFFSET + U64_LEN;
const PACK_CHECKSUM_LEN: usize = U64_LEN;

const _: () = {
    assert!(PACK_VERSION_OFFSET == 8 && PACK_COUNT_OFFSET == 12);
    assert!(PACK_GENERATION_OFFSET == 16 && PACK_HEADER_LEN == 24);
    assert!(IDX_GENERATION_OFFSET == 8 && IDX_OFFSET_OFFSET == 16);
    assert!(IDX_CHUNK_LEN_OFFSET == 24 && IDX_ZONEMAP_LEN_OFFSET == 32);
    assert!(IDX_VINDEX_LEN_OFFSET == 48 && PACK_INDEX_ENTRY_LEN == 64);
};

/// `pack.g000000000000002a.pack`.
pub fn pack_file_name(generation: u64) -> String {
    format!("pack.g{generation:016x}.pack")
}

/// Parses a name made by [`pack_file_name`].
pub fn parse_pack_file_name(name: &str) -> Option<u64> {
    let g = name.strip_prefix("pack.g")?.strip_suffix(".pack")?;
    if g.len() != 16 {
        return None;
    }
    u64::from_str_radix(g, 16).ok()
}

/// Where the sidecars of an image at `offset` of `chunk_len` bytes lie: the zone map
/// at the next aligned offset after the image, the value index after the zone map.
/// The manifest entry stores only the image's offset; both sides derive the rest here.
pub fn sidecar_offsets(offset: u64, chunk_len: u64, zonemap_len: u64) -> (u64, u64) {
    let align = |n: u64| n.div_ceil(COLUMN_ALIGN as u64) * COLUMN_ALIGN as u64;
    let z = align(offset + chunk_len);
    (z, align(z + zonemap_len))
}

/// One chunk of a pack as its index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub month: i32,
    /// The chunk's generation (equal to its image's header).
    pub generation: u64,
    pub offset: u64,
    pub chunk_len: u64,
    pub zonemap: SidecarRef,
    pub vindex: SidecarRef,
}

impl PackEntry {
    /// One past the last byte of this entry's data (image and sidecars).
    pub fn end(&self) -> u64 {
        let (_, v) = sidecar_offsets(self.offset, self.chunk_len, self.zonemap.len);
        v + self.vindex.len
    }
}

/// The decoded header and index of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    pub generation: u64,
    pub entries: Vec<PackEntry>,
}

impl PackIndex {
    /// Bytes of the header, index and checksum of a pack of `count` chunks.
    pub fn encoded_len(count: usize) -> usize {
        PACK_HEADER_LEN + count * PACK_INDEX_ENTRY_LEN + PACK_CHECKSUM_LEN
    }

    /// The first data offset of a pack of `count` chunks.
    pub fn data_start(count: usize) -> u64 {
        (Self::encoded_len(count).div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN) as u64
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len();
        assert!(
            n > 0 && n <= PACK_MAX_CHUNKS,
            "format: a pack lists 1..={PACK_MAX_CHUNKS} chunks"
        );
        let mut b = vec![0u8; Self::encoded_len(n)];
        b[..MAGIC_LEN].copy_from_slice(PACK_MAGIC);
        put_u32(&mut b, PACK_VERSION_OFFSET, PACK_FORMAT_VERSION);
        put_u32(&mut b, PACK_COUNT_OFFSET, n as u32);
        put_u64(&mut b, PACK_GENERATION_OFFSET, self.generation);
        for (i, e) in self.entries.iter().enumerate() {
            let at = PACK_HEADER_LEN + i * PACK_INDEX_ENTRY_LEN;
            put_u32(&mut b, at + IDX_MONTH_OFFSET, e.month as u32);
            put_u64(&mut b, at + IDX_GENERATION_OFFSET, e.generation);
            put_u64(&mut b, at + IDX_OFFSET_OFFSET, e.offset);
            put_u64(&mut b, at + IDX_CHUNK_LEN_OFFSET, e.chunk_len);
            put_u64(&mut b, at + IDX_ZONEMAP_LEN_OFFSET, e.zonemap.len);
            put_u64(&mut b, at + IDX_ZONEMAP_XXH3_OFFSET, e.zonemap.xxh3);
            put_u64(&mut b, at + IDX_VINDEX_LEN_OFFSET, e.vindex.len);
            put_u64(&mut b, at + IDX_VINDEX_XXH3_OFFSET, e.vindex.xxh3);
        }
        let end = b.len() - PACK_CHECKSUM_LEN;
        let sum = xxh3_64(&b[..end]);
        put_u64(&mut b, end, sum);
        b
    }

    /// Decodes the index at the start of `b` (the whole pack or a prefix holding the
    /// index) of a pack `file_len` bytes long. Any bytes give an index whose entries
    /// are aligned, ascending, non-overlapping and inside the file, or an error, never
    /// a panic (`tests/fuzz_decoders.rs`).
    pub fn decode(b: &[u8], file_len: u64) -> Result<PackIndex, String> {
        if b.len() < PACK_HEADER_LEN {
            return Err(format!(
                "pack is {} bytes, shorter than its header",
                b.len()
            ));
        }
        if &b[..MAGIC_LEN] != PACK_MAGIC {
            return Err("bad pack magic".into());
        }
        let n = get_u32(b, PACK_COUNT_OFFSET) as usize;
        if n == 0 || n > PACK_MAX_CHUNKS {
            return Err(format!(
                "pack lists {n} chunks, outside 1..={PACK_MAX_CHUNKS}"
            ));
        }
        let len = Self::encoded_len(n);
        if b.len() < len {
            return Err("pack index is truncated".into());
        }
        let end = len - PACK_CHECKSUM_LEN;
        if get_u64(b, end) != xxh3_64(&b[..end]) {
            return Err("pack index checksum mismatch".into());
        }
        let version = get_u32(b, PACK_VERSION_OFFSET);
        if version != PACK_FORMAT_VERSION {
            return Err(format!("unsupported pack format version {version}"));
        }
        // Lengths are bounded by the file, and the file by this, so no sum overflows.
        if file_len > 1 << 62 {
            return Err(format!("pack length {file_len} out of range"));
        }
        let mut entries = Vec::with_capacity(n);
        let mut next_free = Self::data_start(n);
        for i in 0..n {
            let at = PACK_HEADER_LEN + i * PACK_INDEX_ENTRY_LEN;
            let e = PackEntry {
                month: get_u32(b, at + IDX_MONTH_OFFSET) as i32,
                generation: get_u64(b, at + IDX_GENERATION_OFFSET),
                offset: get_u64(b, at + IDX_OFFSET_OFFSET),
                chunk_len: get_u64(b, at + IDX_CHUNK_LEN_OFFSET),
                zonemap: SidecarRef {
                    len: get_u64(b, at + IDX_ZONEMAP_LEN_OFFSET),
                    xxh3: get_u64(b, at + IDX_ZONEMAP_XXH3_OFFSET),
                },
                vindex: SidecarRef {
                    len: get_u64(b, at + IDX_VINDEX_LEN_OFFSET),
                    xxh3: get_u64(b, at + IDX_VINDEX_XXH3_OFFSET),
                },
            };
            let within = |n: u64| n <= file_len;
            let aligned = (e.offset as usize).is_multiple_of(COLUMN_ALIGN)
                && checked_align_up(e.offset as usize).is_some();
            if !aligned
                || e.offset < next_free
                || !within(e.offset)
                || !within(e.chunk_len)
                || !within(e.zonemap.len)
                || !within(e.vindex.len)
                || e.chunk_len == 0
                || e.end() > file_len
            {
                return Err(format!("pack entry {i} lies outside the file or overlaps"));
            }
            next_free = e.end();
            entries.push(e);
        }
        Ok(PackIndex {
            generation: get_u64(b, PACK_GENERATION_OFFSET),
            entries,
        })
    }
}

/// The bytes of `kind` (chunk image or sidecar) of the packed `entry`, at its place
/// in `pack` (the pack file's path). A short read is an error.
pub fn read_packed(pack: &Path, entry: &ChunkEntry, kind: FileKind) -> io::Result<Vec<u8>> {
    let (at, len) = packed_range(entry, kind);
    read_at(pack, at, len)
}

/// Offset and length of `kind` of a packed entry.
pub fn packed_range(entry: &ChunkEntry, kind: FileKind) -> (u64, u64) {
    let (z, v) = sidecar_offsets(entry.pack.offset, entry.file_len, entry.zonemap.len);
    match kind {
        FileKind::Chunk => (entry.pack.offset, entry.file_len),
        FileKind::ZoneMap => (z, entry.zonemap.len),
        FileKind::ValueIndex => (v, entry.vindex.len),
    }
}

/// `len` bytes of `path` at `at` (a short file is `UnexpectedEof`).
pub fn read_at(path: &Path, at: u64, len: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let len = usize::try_from(len).map_err(|_| io::Error::other("length out of range"))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// Reads and decodes the index of the pack at `path`.
pub fn read_index(path: &Path) -> Result<PackIndex, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let file_len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = vec![0u8; PACK_HEADER_LEN.min(file_len as usize)];
    f.read_exact_at(&mut head, 0).map_err(|e| e.to_string())?;
    if head.len() < PACK_HEADER_LEN {
        return PackIndex::decode(&head, file_len);
    }
    let n = (get_u32(&head, PACK_COUNT_OFFSET) as usize).min(PACK_MAX_CHUNKS);
    let want = (PackIndex::encoded_len(n) as u64).min(file_len) as usize;
    let mut b = vec![0u8; want];
    f.read_exact_at(&mut b, 0).map_err(|e| e.to_string())?;
    PackIndex::decode(&b, file_len)
}

/// A pack file as the chunk handles of one series share it: the pack is unlinked
/// when the last handle lets go, if every chunk of it that this process served was
/// superseded (marked obsolete) first. A handle dropped while its chunk was still
/// live (the store closing, a series reinstalled by maintenance) pins the pack, and
/// the next open's sweep decides from the manifest instead.
#[derive(Debug)]
pub struct PackFile {
    pub generation: u64,
    pub path: PathBuf,
    pinned: AtomicBool,
    /// The series incarnation whose directory holds the pack: an unused pack is
    /// unlinked only while it is current (see `mapped::Incarnation`).
    incarnation: Option<Arc<Incarnation>>,
}

impl PackFile {
    pub fn new(generation: u64, path: PathBuf) -> PackFile {
        PackFile {
            generation,
            path,
            pinned: AtomicBool::new(false),
            incarnation: None,
        }
    }

    /// This pack belongs to `incarnation`.
    pub(crate) fn of_incarnation(mut self, incarnation: Arc<Incarnation>) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// A live chunk's handle went away: keep the file.
    pub fn pin(&self) {
        self.pinned.store(true, Ordering::Release);
    }
}

impl Drop for PackFile {
    fn drop(&mut self) {
        if !self.pinned.load(Ordering::Acquire) {
            Incarnation::unlink(self.incarnation.as_deref(), [self.path.clone()]);
        }
    }
}

/// Bytes a chunk takes in a pack: its image and sidecars, each aligned.
pub fn packed_size(e: &ChunkEntry) -> u64 {
    [e.file_len, e.zonemap.len, e.vindex.len]
        .iter()
        .map(|&n| super::format::align_up(n as usize) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> PackIndex {
        let start = PackIndex::data_start(2);
        let first = PackEntry {
            month: 648,
            generation: 5,
            offset: start,
            chunk_len: 700,
            zonemap: SidecarRef { len: 40, xxh3: 1 },
            vindex: SidecarRef { len: 90, xxh3: 2 },
        };
        let second = PackEntry {
            month: 649,
            generation: 6,
            offset: first.end().div_ceil(64) * 64,
            chunk_len: 640,
            zonemap: SidecarRef::default(),
            vindex: SidecarRef::default(),
        };
        PackIndex {
            generation: 7,
            entries: vec![first, second],
        }
    }

    #[test]
    fn index_round_trips_and_refuses_flips_and_overlaps() {
        let ix = index();
        let b = ix.encode();
        let file_len = ix.entries[1].end();
        assert_eq!(PackIndex::decode(&b, file_len).unwrap(), ix);
        assert!(PackIndex::decode(&b, file_len - 1).is_err(), "past the end");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert!(PackIndex::decode(&bad, file_len).is_err(), "flip at {i}");
        }
        let mut overlap = ix.clone();
        overlap.entries[1].offset = overlap.entries[0].offset;
        assert!(PackIndex::decode(&overlap.encode(), file_len).is_err());
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(pack_file_name(42), "pack.g000000000000002a.pack");
        assert_eq!(parse_pack_file_name(&pack_file_name(42)), Some(42));
        assert_eq!(
            parse_pack_file_name("2024-01.g000000000000002a.chunk"),
            None
        );
    }
}

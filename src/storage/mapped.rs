//! Verified mappings of data files and what names them: a file's kind and name, a
//! mapped chunk whose checksum was checked, and the incarnation of the directory that
//! may unlink it. The map cache and pack files hold these; [`super::chunk`] builds the
//! manifest's handles on top of them.

use crate::sync::RwLockExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_buffer::Buffer;
use xxhash_rust::xxh3::xxh3_64;

use super::error::{Result, StorageError};
use super::format::{ChunkEntry, ChunkHeader};
use super::mmap::{FileIdentity, MappedFile};
#[cfg(test)]
use crate::record::ValueType;
use crate::record::{keys_increase, parse_partition_label, partition_label};

/// What a file in a series directory is, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Chunk,
    ZoneMap,
    ValueIndex,
}

impl FileKind {
    pub fn ext(self) -> &'static str {
        match self {
            FileKind::Chunk => "chunk",
            FileKind::ZoneMap => "zmap",
            FileKind::ValueIndex => "vidx",
        }
    }
}

/// `2024-01.g000000000000002a.chunk` and its sidecars `.zmap`, `.vidx` (a tick
/// series' day or hour partition: `2024-01-15.g….chunk`, `2024-01-15T09.g….chunk`).
pub fn data_file_name(month: i32, generation: u64, kind: FileKind) -> String {
    format!(
        "{}.g{generation:016x}.{}",
        partition_label(month),
        kind.ext()
    )
}

/// Parses a name made by [`data_file_name`].
pub fn parse_data_file_name(name: &str) -> Option<(i32, u64, FileKind)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let kind = match ext {
        "chunk" => FileKind::Chunk,
        "zmap" => FileKind::ZoneMap,
        "vidx" => FileKind::ValueIndex,
        _ => return None,
    };
    let (month, generation) = stem.split_once(".g")?;
    if generation.len() != 16 {
        return None;
    }
    let month = parse_partition_label(month)?;
    let generation = u64::from_str_radix(generation, 16).ok()?;
    Some((month, generation, kind))
}

/// At most one cached run per this many rows of a chunk ([`ChunkRef::runs`](super::chunk::ChunkRef::runs)).
pub const RUNS_PER_ROWS: usize = 64;

/// Rows of a chunk whose `ts` are `first_ts + k * step`, `k < rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first_ts: i64,
    pub rows: u64,
}

/// A chunk file mapped into memory whose checksum has been verified.
#[derive(Debug)]
pub struct MappedChunk {
    pub file: Arc<MappedFile>,
    pub header: ChunkHeader,
}

impl MappedChunk {
    /// Maps `path`, checks the header, the length and the body checksum, and (when
    /// given) that the header agrees with the manifest entry. `rel` names the file in
    /// errors. The mapping counts against no budget: for admin's one-off checks.
    pub fn open_verified(
        path: &Path,
        rel: &str,
        entry: Option<&ChunkEntry>,
    ) -> Result<MappedChunk> {
        let file = MappedFile::open(path).map_err(|e| StorageError::io(rel, e))?;
        MappedChunk::verify(file, rel, entry, None)
    }

    /// Checks a mapped chunk: header, length, agreement with `entry`, and the body
    /// checksum, unless `verified` is the identity of this very file when its checksum
    /// was last verified in this process (see [`ChunkRef::map`] for why that is sound).
    pub fn verify(
        file: Arc<MappedFile>,
        rel: &str,
        entry: Option<&ChunkEntry>,
        verified: Option<FileIdentity>,
    ) -> Result<MappedChunk> {
        MappedChunk::verify_through(file, rel, entry, verified, None)
    }

    /// As [`MappedChunk::verify`]; with `through`, a compressed chunk is decompressed
    /// only as far as its rows of `ts <= through` ([`super::codec::prefix_image`]) and
    /// the chunk returned holds those rows alone (its header says so). The whole body's
    /// checksum is still verified.
    pub fn verify_through(
        file: Arc<MappedFile>,
        rel: &str,
        entry: Option<&ChunkEntry>,
        verified: Option<FileIdentity>,
        through: Option<i64>,
    ) -> Result<MappedChunk> {
        let header =
            ChunkHeader::decode(file.bytes()).map_err(|d| StorageError::corrupted(rel, d))?;
        if file.len() as u64 != header.file_len() {
            return Err(StorageError::corrupted(
                rel,
                format!(
                    "file is {} bytes, header implies {}",
                    file.len(),
                    header.file_len()
                ),
            ));
        }
        let known = verified.is_some() && verified == file.identity();
        if !known && xxh3_64(&file.bytes()[super::format::CHUNK_HEADER_LEN..]) != header.body_xxh3 {
            return Err(StorageError::corrupted(rel, "body checksum mismatch"));
        }
        if entry.is_some_and(|e| !e.agrees_with(&header)) {
            return Err(StorageError::corrupted(
                rel,
                "chunk header disagrees with the manifest entry",
            ));
        }
        if header.is_compressed() {
            let body = &file.bytes()[super::format::CHUNK_HEADER_LEN..];
            let bad = |d: String| StorageError::corrupted(rel, format!("compressed body: {d}"));
            let (image, header) = match through {
                Some(hi) => super::codec::prefix_image(&header, body, hi).map_err(bad)?,
                None => (super::codec::image(&header, body).map_err(bad)?, header),
            };
            return Ok(MappedChunk {
                file: file.replaced_by(image),
                header,
            });
        }
        Ok(MappedChunk { file, header })
    }

    pub fn rows(&self) -> usize {
        self.header.rows as usize
    }

    /// Column `i` as i64 (0 is `ts`).
    pub fn col(&self, i: usize) -> &[i64] {
        self.file.i64s(self.header.column_offset(i), self.rows())
    }

    /// Column `i` reinterpreted as f64 (scalar `value` of f64 series).
    pub fn col_f64(&self, i: usize) -> &[f64] {
        self.file.f64s(self.header.column_offset(i), self.rows())
    }

    /// Whether the rows' keys increase strictly: `ts`, or `(ts, seq)` for a tick
    /// layout (what a write makes and a check verifies).
    pub fn keys_ascend(&self) -> bool {
        let key = self.header.meta.layout().key;
        let cols: Vec<&[i64]> = (0..self.header.ncols.min(2)).map(|c| self.col(c)).collect();
        keys_increase(key, &cols)
    }

    pub fn ts(&self) -> &[i64] {
        self.col(0)
    }

    /// Zero-copy Arrow buffer over rows `start..end` of column `i`.
    pub fn buffer(&self, i: usize, start: usize, end: usize) -> Buffer {
        self.file
            .buffer(self.header.column_offset(i) + start * 8, (end - start) * 8)
    }

    /// A chunk held in memory, laid out byte for byte as its file would be: rows the
    /// write-ahead log made durable and no chunk file holds yet. `header`'s rows,
    /// bounds and checksum are filled in from `cols` (at least one row).
    pub fn in_memory(header: ChunkHeader, cols: &[&[i64]]) -> MappedChunk {
        MappedChunk::in_memory_joined(header, &[cols])
    }

    /// As [`MappedChunk::in_memory`], column `i` being the concatenation of column
    /// `i` of every piece, in order (each piece one slice per column): in-memory
    /// chunks merged with an append's rows are built in one buffer, with one
    /// allocation, one copy of each value and one checksum pass (a many-series write
    /// does this for thousands of series). The bytes are those
    /// [`super::format::ChunkParts`] would write for the concatenated columns.
    pub fn in_memory_joined(mut header: ChunkHeader, pieces: &[&[&[i64]]]) -> MappedChunk {
        use super::format::{CHUNK_HEADER_LEN, CHUNK_ROWS_MAX, stride_of};
        let ncols = pieces.first().map_or(0, |p| p.len());
        // Checked in release too: a short column would shift the next one under a
        // checksum that matches it.
        assert!(
            ncols > 0
                && pieces
                    .iter()
                    .all(|p| p.len() == ncols && p.iter().all(|c| c.len() == p[0].len())),
            "chunk: the columns of a chunk differ in length"
        );
        let rows: usize = pieces.iter().map(|p| p[0].len()).sum();
        assert!(
            rows > 0 && rows as u64 <= CHUNK_ROWS_MAX,
            "chunk: a chunk holds 1..={CHUNK_ROWS_MAX} rows, not {rows}"
        );
        let stride = stride_of(rows as u64) as usize;
        let pad = stride - rows * std::mem::size_of::<i64>();
        let len = CHUNK_HEADER_LEN + ncols * stride;
        let mut buf = arrow_buffer::MutableBuffer::new(len);
        buf.extend_zeros(CHUNK_HEADER_LEN);
        for i in 0..ncols {
            for p in pieces {
                buf.extend_from_slice(p[i]);
            }
            buf.extend_zeros(pad);
        }
        assert_eq!(buf.len(), len, "chunk: image length");
        let mut ts = pieces.iter().map(|p| p[0]).filter(|c| !c.is_empty());
        header.rows = rows as u64;
        header.ncols = ncols;
        header.stride = stride as u64;
        header.first_ts = ts.clone().next().map_or(0, |c| c[0]);
        header.last_ts = ts.next_back().map_or(0, |c| c[c.len() - 1]);
        let last = pieces.iter().rev().find(|p| !p[0].is_empty());
        header.last_row =
            last.and_then(|p| ChunkHeader::last_row_of(p.iter().map(|c| c[c.len() - 1])));
        header.body_xxh3 = xxh3_64(&buf.as_slice()[CHUNK_HEADER_LEN..]);
        // Validates the header (row count, ts bounds, month, columns for the kind).
        let encoded = header.encode();
        buf.as_slice_mut()[..CHUNK_HEADER_LEN].copy_from_slice(&encoded);
        MappedChunk {
            file: MappedFile::from_memory(buf),
            header,
        }
    }

    /// A chunk over any file, with a made-up empty header (the cache's unit tests).
    #[cfg(test)]
    pub(crate) fn unchecked_for_tests(file: Arc<MappedFile>) -> MappedChunk {
        let key = crate::record::SeriesKey::kline("T", "1h").expect("valid key");
        MappedChunk {
            file,
            header: ChunkHeader {
                meta: Arc::new(crate::record::SeriesMeta {
                    key,
                    timeframe_ms: 3_600_000,
                    price_scale: 1,
                    volume_scale: 1,
                    value_type: ValueType::I64,
                }),
                ncols: 6,
                rows: 0,
                first_ts: 0,
                last_ts: 0,
                month: 0,
                flags: 0,
                generation: 1,
                write_version: 1,
                write_chunks: 1,
                body_xxh3: 0,
                stride: 0,
                wal_lsn: 0,
                body_len: 0,
                last_row: None,
            },
        }
    }
}

/// One incarnation of a series directory. Once [`Store::delete`](super::Store::delete)
/// ends it, the directory's path may belong to a newer series of the same key, whose
/// generations start again at 1: a handle that unlinks a file by path (a superseded
/// chunk, an unused pack) does so only while its incarnation is current, and holds
/// the read side across the unlink, so ending it (the write side) never interleaves.
#[derive(Debug, Default)]
pub struct Incarnation(std::sync::RwLock<bool>);

impl Incarnation {
    /// Ends this incarnation (its directory was moved away): no handle of it unlinks
    /// anything from now on.
    pub fn end(&self) {
        *self.0.write_now() = true;
    }

    /// Removes `paths` (errors ignored: a missing file is already gone) unless
    /// `incarnation` ended; with no incarnation (a handle made outside a series),
    /// always.
    pub fn unlink(incarnation: Option<&Incarnation>, paths: impl IntoIterator<Item = PathBuf>) {
        let ended = incarnation.map(|i| i.0.read_now());
        if ended.as_deref() == Some(&true) {
            return;
        }
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

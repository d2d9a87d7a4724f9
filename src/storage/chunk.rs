//! Chunk files on disk: names, verified mappings, and the manifest's handle on each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arrow_buffer::Buffer;
use xxhash_rust::xxh3::xxh3_64;

use super::error::{Result, StorageError};
use super::format::{ChunkEntry, ChunkHeader};
use super::mmap::MappedFile;
use crate::record::MonthPartition;

/// What a file in a series directory is, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// `2024-01.g000000000000002a.chunk` and its sidecars `.zmap`, `.vidx`.
pub fn data_file_name(month: i32, generation: u64, kind: FileKind) -> String {
    format!(
        "{}.g{generation:016x}.{}",
        MonthPartition(month),
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
    let month = MonthPartition::parse(month)?;
    let generation = u64::from_str_radix(generation, 16).ok()?;
    Some((month.0, generation, kind))
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
    /// errors.
    pub fn open_verified(
        path: &Path,
        rel: &str,
        entry: Option<&ChunkEntry>,
    ) -> Result<MappedChunk> {
        let file = MappedFile::open(path).map_err(|e| StorageError::io(rel, e))?;
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
        if xxh3_64(&file.bytes()[super::format::CHUNK_HEADER_LEN..]) != header.body_xxh3 {
            return Err(StorageError::corrupted(rel, "body checksum mismatch"));
        }
        if let Some(e) = entry {
            let agrees = e.checksum == header.body_xxh3
                && e.rows == header.rows
                && e.first_ts == header.first_ts
                && e.last_ts == header.last_ts
                && e.generation == header.generation
                && e.month == header.month;
            if !agrees {
                return Err(StorageError::corrupted(
                    rel,
                    "chunk header disagrees with the manifest entry",
                ));
            }
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

    pub fn ts(&self) -> &[i64] {
        self.col(0)
    }

    /// Zero-copy Arrow buffer over rows `start..end` of column `i`.
    pub fn buffer(&self, i: usize, start: usize, end: usize) -> Buffer {
        self.file
            .buffer(self.header.column_offset(i) + start * 8, (end - start) * 8)
    }
}

/// The manifest's handle on one chunk: its entry, and a lazily verified mapping that
/// is shared by every reader in the process.
#[derive(Debug)]
pub struct ChunkRef {
    pub entry: ChunkEntry,
    dir: Arc<PathBuf>,
    rel_dir: Arc<str>,
    mapped: OnceLock<Arc<MappedChunk>>,
    sidecars: SidecarCache,
    obsolete: AtomicBool,
}

impl ChunkRef {
    pub fn new(entry: ChunkEntry, dir: Arc<PathBuf>, rel_dir: Arc<str>) -> ChunkRef {
        ChunkRef {
            entry,
            dir,
            rel_dir,
            mapped: OnceLock::new(),
            sidecars: SidecarCache::default(),
            obsolete: AtomicBool::new(false),
        }
    }

    pub fn file_name(&self, kind: FileKind) -> String {
        data_file_name(self.entry.month, self.entry.generation, kind)
    }

    pub fn path(&self, kind: FileKind) -> PathBuf {
        self.dir.join(self.file_name(kind))
    }

    /// Path relative to the store root, for reports and errors.
    pub fn rel_path(&self, kind: FileKind) -> String {
        format!("{}/{}", self.rel_dir, self.file_name(kind))
    }

    /// The verified mapping; the first call in the process maps and checks the file.
    pub fn map(&self) -> Result<Arc<MappedChunk>> {
        if let Some(m) = self.mapped.get() {
            return Ok(Arc::clone(m));
        }
        let m = MappedChunk::open_verified(
            &self.path(FileKind::Chunk),
            &self.rel_path(FileKind::Chunk),
            Some(&self.entry),
        )?;
        // Two readers may race to verify; either result is the same file.
        Ok(Arc::clone(self.mapped.get_or_init(|| Arc::new(m))))
    }

    /// The chunk was superseded: its files go when the last reader lets go of it.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for ChunkRef {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            for kind in [FileKind::Chunk, FileKind::ZoneMap, FileKind::ValueIndex] {
                let _ = std::fs::remove_file(self.path(kind));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let n = data_file_name(648, 42, FileKind::ZoneMap);
        assert_eq!(n, "2024-01.g000000000000002a.zmap");
        assert_eq!(parse_data_file_name(&n), Some((648, 42, FileKind::ZoneMap)));
        assert_eq!(parse_data_file_name("MANIFEST"), None);
        assert_eq!(
            parse_data_file_name("2024-13.g000000000000002a.chunk"),
            None
        );
    }
}

/// Sidecars of a chunk, verified against the manifest's checksums on first use.
#[derive(Debug, Default)]
pub struct SidecarCache {
    zonemap: OnceLock<Arc<super::sidecar::ZoneMap>>,
    vindex: OnceLock<Arc<super::sidecar::ValueIndex>>,
}

impl ChunkRef {
    /// The chunk's zone map, or why it cannot be used (absent, unreadable, corrupt).
    pub fn zonemap(
        &self,
        vt: crate::record::ValueType,
    ) -> Result<Arc<super::sidecar::ZoneMap>, String> {
        if let Some(z) = self.sidecars.zonemap.get() {
            return Ok(Arc::clone(z));
        }
        if !self.entry.zonemap.present() {
            return Err("no zone map".into());
        }
        let bytes = std::fs::read(self.path(FileKind::ZoneMap)).map_err(|e| e.to_string())?;
        let z = super::sidecar::ZoneMap::parse(&bytes, vt, self.entry.zonemap.xxh3)?;
        if z.rows as u64 != self.entry.rows {
            return Err("zone map row count disagrees with the chunk".into());
        }
        Ok(Arc::clone(
            self.sidecars.zonemap.get_or_init(|| Arc::new(z)),
        ))
    }

    /// The chunk's value index, or why it cannot be used.
    pub fn vindex(
        &self,
        vt: crate::record::ValueType,
    ) -> Result<Arc<super::sidecar::ValueIndex>, String> {
        if let Some(v) = self.sidecars.vindex.get() {
            return Ok(Arc::clone(v));
        }
        if !self.entry.vindex.present() {
            return Err("no value index".into());
        }
        let file = MappedFile::open(&self.path(FileKind::ValueIndex)).map_err(|e| e.to_string())?;
        let v = super::sidecar::ValueIndex::open(file, vt, self.entry.vindex.xxh3)?;
        if v.chunk_rows as u64 != self.entry.rows {
            return Err("value index row count disagrees with the chunk".into());
        }
        Ok(Arc::clone(self.sidecars.vindex.get_or_init(|| Arc::new(v))))
    }
}

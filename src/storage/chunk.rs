//! Chunk files on disk: names, verified mappings, and the manifest's handle on each.

use crate::sync::LockExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{Result, StorageError};
use super::format::ChunkEntry;
use super::mapcache::MapCache;
use super::mmap::{FileIdentity, MappedFile};
use super::pack::{PackFile, pack_file_name, read_packed};
use super::sidecar::{ValueIndex, ZoneMap};

/// Fewest rows of a compressed chunk that [`ChunkRef::map_through`] decompresses only
/// in part: below it (a month of 1m bars is 44,640 rows) the whole image is cached and
/// shared by later reads; at and above it (a day of one symbol's ticks) a read of an
/// early range decompresses that range.
pub const PREFIX_MIN_ROWS: u64 = 1 << 16;
use crate::record::ValueType;

pub use super::mapped::{
    FileKind, Incarnation, MappedChunk, RUNS_PER_ROWS, Run, data_file_name, parse_data_file_name,
};

/// The manifest's handle on one chunk: its entry, and access to its verified mapping
/// and sidecars through the store's bounded [`MapCache`].
///
/// `repr(C)`, `memory` then `entry`: what an append reads of each chunk of a month's
/// tail (whether it is in memory, its rows, last `ts` and length) sits next to the
/// reference count it takes, in one cache line (see [`ChunkEntry`]).
#[derive(Debug)]
#[repr(C)]
pub struct ChunkRef {
    /// Set for a chunk that lives in memory only (rows of the write-ahead log not yet
    /// folded into a file): reads take it from here, and it has no file, no sidecars
    /// and no place in any manifest.
    memory: Option<Arc<MappedChunk>>,
    pub entry: ChunkEntry,
    dir: Arc<PathBuf>,
    rel_dir: Arc<str>,
    /// Key of this chunk in `cache`.
    id: u64,
    /// The store's mapping cache, for a file chunk; none for a chunk in memory, which
    /// is never cached. The cache is one for the whole store: a many-series write
    /// builds thousands of in-memory chunks on two threads and the reaper drops them
    /// on a third, and a reference count on one shared line per chunk made every core
    /// wait for the others.
    cache: Option<Arc<MapCache>>,
    /// Identity of the chunk file when its checksum was last verified in this process.
    verified: Mutex<Option<FileIdentity>>,
    obsolete: AtomicBool,
    /// The series incarnation whose directory holds the file: an obsolete chunk's
    /// files are unlinked only while it is current (`None`: unlinked by path, for
    /// handles made outside a series).
    incarnation: Option<Arc<Incarnation>>,
    /// The chunk's gapless runs for one step (see [`ChunkRef::runs`]): found on first
    /// use and kept, the chunk being immutable.
    runs: std::sync::OnceLock<(i64, Option<Arc<[Run]>>)>,
    /// The chunk's last row, every column (see [`ChunkRef::last_row`]): read on first
    /// use and kept, the chunk being immutable; `ncols` values.
    last: std::sync::OnceLock<Box<[i64]>>,
    /// The pack holding this chunk (`entry.pack` is set), shared by every handle of
    /// the series on the same pack: it decides when the pack file goes.
    pack: Option<Arc<PackFile>>,
}

impl ChunkRef {
    /// A handle on a file chunk; `pack` is the shared handle of its pack when
    /// `entry.pack` is set (and must be given then).
    pub fn new(
        entry: ChunkEntry,
        dir: Arc<PathBuf>,
        rel_dir: Arc<str>,
        cache: Arc<MapCache>,
        pack: Option<Arc<PackFile>>,
    ) -> ChunkRef {
        assert_eq!(
            entry.pack.is_packed(),
            pack.as_ref()
                .is_some_and(|p| p.generation == entry.pack.generation),
            "a packed chunk's handle holds its pack"
        );
        let id = cache.next_id();
        ChunkRef::with_id(entry, dir, rel_dir, Some(cache), pack, id)
    }

    fn with_id(
        entry: ChunkEntry,
        dir: Arc<PathBuf>,
        rel_dir: Arc<str>,
        cache: Option<Arc<MapCache>>,
        pack: Option<Arc<PackFile>>,
        id: u64,
    ) -> ChunkRef {
        ChunkRef {
            entry,
            dir,
            rel_dir,
            id,
            cache,
            verified: Mutex::new(None),
            obsolete: AtomicBool::new(false),
            incarnation: None,
            runs: std::sync::OnceLock::new(),
            last: std::sync::OnceLock::new(),
            memory: None,
            pack,
        }
    }

    /// This handle's files belong to `incarnation` (see [`Incarnation`]).
    pub(crate) fn of_incarnation(mut self, incarnation: Arc<Incarnation>) -> ChunkRef {
        self.incarnation = Some(incarnation);
        self
    }

    /// A chunk held in memory (see [`MappedChunk::in_memory`]); its entry describes it
    /// as its file would be, with no sidecars.
    pub fn in_memory(chunk: MappedChunk, dir: Arc<PathBuf>, rel_dir: Arc<str>) -> ChunkRef {
        let h = &chunk.header;
        let entry = ChunkEntry::live(
            h,
            super::format::SidecarRef::default(),
            super::format::SidecarRef::default(),
            super::format::PackLoc::NONE,
        );
        // Not `ChunkRef::new`: a chunk in memory is never in the cache (`map` returns
        // it, it has no sidecars, its drop skips `forget`), so it takes no cache id;
        // the apply helper and the committer build thousands at once and would
        // contend on the cache's id counter (and on its reference count).
        let mut c = ChunkRef::with_id(entry, dir, rel_dir, None, None, 0);
        c.memory = Some(Arc::new(chunk));
        c
    }

    /// The chunk's last row, every column (`ts` first): read once and kept, so a cross
    /// section of many series (`latest: 1`, `as_of`) maps no file once warm. The cache
    /// costs `ncols` values per chunk asked, a fraction of the chunk's own entry.
    pub fn last_row(&self) -> Result<&[i64]> {
        if let Some(row) = self.last.get() {
            return Ok(row);
        }
        if self.memory.is_none()
            && let Some(row) = self.header_last_row()
        {
            return Ok(self.last.get_or_init(|| row));
        }
        let m = self.map()?;
        let n = m.rows();
        // The format allows no empty chunk; the decoder checked it.
        assert!(n > 0, "a chunk holds at least one row");
        let row: Box<[i64]> = (0..m.header.ncols).map(|i| m.col(i)[n - 1]).collect();
        assert_eq!(
            row[0], self.entry.last_ts,
            "a chunk ends at its entry's last_ts"
        );
        Ok(self.last.get_or_init(|| row))
    }

    /// The last row as the chunk's header records it: one read of the header's bytes
    /// (no mapping, no pass over the body, no decompression), checked by the header's
    /// own checksum and against the manifest entry. So the first cross section after a
    /// start reads a header per series, not a month. `None` when the header predates
    /// the field or cannot be read or checked: the caller then maps the chunk, which
    /// verifies everything and reports any damage.
    fn header_last_row(&self) -> Option<Box<[i64]>> {
        let at = if self.is_packed() {
            self.entry.pack.offset
        } else {
            0
        };
        let len = super::format::CHUNK_HEADER_LEN as u64;
        let bytes = super::pack::read_at(&self.path(FileKind::Chunk), at, len).ok()?;
        let h = super::format::ChunkHeader::decode(&bytes).ok()?;
        if !self.entry.agrees_with(&h) {
            return None;
        }
        let row = h.last_row?;
        // `decode` validated the field: `ncols` values, the first of them `last_ts`.
        assert_eq!(
            row[0], self.entry.last_ts,
            "a chunk ends at its entry's last_ts"
        );
        Some(row[..h.ncols].into())
    }

    /// Whether this chunk lives in memory only (not yet folded into a file).
    pub fn is_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// The maximal runs of rows whose `ts` go up by exactly `step` (a run of one row
    /// is a row whose neighbours are not `step` away), in order. Kept only when there
    /// are at most `rows / RUNS_PER_ROWS + 1` of them, so the cache costs a fraction of
    /// the chunk; `None` for a chunk more broken than that. Maps (and verifies) the
    /// chunk the first time only.
    pub fn runs(&self, step: i64) -> Result<Option<Arc<[Run]>>> {
        if let Some((s, r)) = self.runs.get()
            && *s == step
        {
            return Ok(r.clone());
        }
        let m = self.map()?;
        let ts = m.ts();
        let max = ts.len() / RUNS_PER_ROWS + 1;
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=ts.len() {
            if i == ts.len() || ts[i] - ts[i - 1] != step {
                out.push(Run {
                    first_ts: ts[start],
                    rows: (i - start) as u64,
                });
                if out.len() > max {
                    break;
                }
                start = i;
            }
        }
        let runs: Option<Arc<[Run]>> = (out.len() <= max).then(|| out.into());
        debug_assert!(
            runs.as_ref()
                .is_none_or(|r| r.iter().map(|x| x.rows).sum::<u64>() == ts.len() as u64)
        );
        // A racing reader may have set it first; either answer is the same.
        let _ = self.runs.set((step, runs.clone()));
        Ok(runs)
    }

    /// The name of the file holding `kind` of this chunk: its own file, or its pack.
    pub fn file_name(&self, kind: FileKind) -> String {
        entry_file_name(&self.entry, kind)
    }

    /// Whether the chunk lives in a pack.
    pub fn is_packed(&self) -> bool {
        self.entry.pack.is_packed()
    }

    /// The stored bytes of `kind` (the chunk as written, compressed or not, or a
    /// sidecar), from its own file or its place in the pack. Not verified.
    pub fn read_stored(&self, kind: FileKind) -> std::io::Result<Vec<u8>> {
        read_stored(&self.dir, &self.entry, kind)
    }

    pub fn path(&self, kind: FileKind) -> PathBuf {
        self.dir.join(self.file_name(kind))
    }

    /// Path relative to the store root, for reports and errors.
    pub fn rel_path(&self, kind: FileKind) -> String {
        format!("{}/{}", self.rel_dir, self.file_name(kind))
    }

    /// The verified mapping, from the store's cache or mapped now (at the budget, the
    /// least recently used idle mapping is released first; when every mapping is held
    /// by a read in progress this is `Unavailable`).
    ///
    /// The first mapping in the process verifies the body checksum. A later one, after
    /// the cache released the file, skips that pass when the file's identity (device,
    /// inode, length, mtime, ctime) equals the one recorded at verification, and still
    /// checks the header, the length and the manifest entry. That is sound because a
    /// published file is never modified, only unlinked, and its name carries a
    /// generation that the manifest issues once; a file replaced by rename is another
    /// inode, and a write or truncation in place moves the ctime, which no process can
    /// set back; either way the identity differs and the checksum is verified again.
    /// `admin validate --deep` always re-reads every checksum from disk.
    pub fn map(&self) -> Result<Arc<MappedChunk>> {
        if let Some(m) = &self.memory {
            return Ok(Arc::clone(m));
        }
        self.cache()
            .chunk(self.id, |slot| self.map_verified(slot, None))
    }

    /// As [`ChunkRef::map`], for a read that wants no row past `ts = hi`: a compressed
    /// chunk of at least [`PREFIX_MIN_ROWS`] rows that runs past `hi`, and whose whole
    /// image is not cached, is decompressed only as far as `hi`, and that prefix is
    /// cached ([`MapCache::chunk_through`]). A tape of the first hours of a day of
    /// ticks then decompresses and keeps those hours, not every symbol's day. The
    /// chunk returned may hold fewer rows than the entry; it holds every row of
    /// `ts <= hi`.
    pub fn map_through(&self, hi: i64) -> Result<Arc<MappedChunk>> {
        let partial = self.memory.is_none()
            && self.entry.flags & super::format::FLAG_COMPRESSED != 0
            && self.entry.rows >= PREFIX_MIN_ROWS
            && hi < self.entry.last_ts;
        if !partial {
            return self.map();
        }
        self.cache()
            .chunk_through(self.id, hi, |slot| self.map_verified(slot, Some(hi)))
    }

    /// Maps the chunk's file (or its range of a pack) in `slot` and verifies it
    /// ([`MappedChunk::verify_through`]).
    fn map_verified(&self, slot: super::mmap::Slot, through: Option<i64>) -> Result<MappedChunk> {
        let rel = self.rel_path(FileKind::Chunk);
        // A packed chunk maps its image's range of the pack (the months a bulk write
        // packed are raw and read zero-copy like files); the pack's identity stands for
        // the range, which is as immutable as the pack.
        let file = if self.is_packed() {
            let (at, len) = super::pack::packed_range(&self.entry, FileKind::Chunk);
            MappedFile::open_range_in(&self.path(FileKind::Chunk), at, len, slot)
        } else {
            MappedFile::open_in(&self.path(FileKind::Chunk), slot)
        }
        .map_err(|e| StorageError::map_failed(rel.as_str(), e))?;
        let known = *self.verified.locked();
        let identity = file.identity();
        let m = MappedChunk::verify_through(file, &rel, Some(&self.entry), known, through)?;
        *self.verified.locked() = identity;
        Ok(m)
    }

    /// The mapping cache of a file chunk (a chunk in memory returns before it needs
    /// one: it has no file and no sidecars).
    fn cache(&self) -> &MapCache {
        self.cache
            .as_deref()
            .expect("a chunk with a file has the store's mapping cache")
    }

    /// The chunk's zone map, or why it cannot be used (absent, unreadable, corrupt).
    pub fn zonemap(&self, vt: ValueType) -> Result<Arc<ZoneMap>, String> {
        if !self.entry.zonemap.present() {
            return Err("no zone map".into());
        }
        self.cache().zonemap(self.id, || {
            let bytes = self
                .read_stored(FileKind::ZoneMap)
                .map_err(|e| e.to_string())?;
            let z = ZoneMap::parse(&bytes, vt, self.entry.zonemap.xxh3)?;
            if z.rows as u64 != self.entry.rows {
                return Err("zone map row count disagrees with the chunk".into());
            }
            Ok(z)
        })
    }

    /// The chunk's value index, or why it cannot be used. A value index is a mapping
    /// and counts against the budget like a chunk; its checksum is verified on every
    /// mapping (the decoder owns that check).
    pub fn vindex(&self, vt: ValueType) -> Result<Arc<ValueIndex>, String> {
        if !self.entry.vindex.present() {
            return Err("no value index".into());
        }
        self.cache().vindex(self.id, |slot| {
            let rel = self.rel_path(FileKind::ValueIndex);
            let file = if self.is_packed() {
                let bytes = self
                    .read_stored(FileKind::ValueIndex)
                    .map_err(|e| StorageError::map_failed(rel.as_str(), e))?;
                MappedFile::from_parts_in(&[&bytes], slot)
            } else {
                MappedFile::open_in(&self.path(FileKind::ValueIndex), slot)
                    .map_err(|e| StorageError::map_failed(rel.as_str(), e))?
            };
            let v = ValueIndex::open(file, vt, self.entry.vindex.xxh3)
                .map_err(|d| StorageError::corrupted(rel.as_str(), d))?;
            if v.chunk_rows as u64 != self.entry.rows {
                return Err(StorageError::corrupted(
                    rel,
                    "value index row count disagrees with the chunk",
                ));
            }
            Ok(v)
        })
    }

    /// The store is closing while a named snapshot still needs this chunk: its files
    /// stay when the handle goes (a pack's handle pins it), as a live chunk's do.
    pub fn keep_files(&self) {
        self.obsolete.store(false, Ordering::Release);
    }

    /// The chunk was superseded: its files go when the last reader lets go of it.
    pub fn mark_obsolete(&self) {
        assert!(
            !self.is_memory(),
            "a chunk in memory has no files to remove"
        );
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for ChunkRef {
    fn drop(&mut self) {
        // No snapshot lists this chunk any more: its cached mappings go now, so an
        // unlinked file's space is not held until it ages out of the cache. A chunk
        // in memory was never cached (`map` returns it; it has no sidecars), and a
        // many-series write drops thousands of them: it skips the cache's locks.
        if self.memory.is_some() {
            return;
        }
        self.cache().forget(self.id);
        let obsolete = self.obsolete.load(Ordering::Acquire);
        if let Some(pack) = &self.pack {
            // The pack goes with its last handle, only if every chunk of it was
            // superseded (see `PackFile`).
            if !obsolete {
                pack.pin();
            }
            return;
        }
        if obsolete {
            let paths = [FileKind::Chunk, FileKind::ZoneMap, FileKind::ValueIndex]
                .map(|kind| self.path(kind));
            Incarnation::unlink(self.incarnation.as_deref(), paths);
        }
    }
}

/// The stored bytes of `kind` of `entry` in the series directory `dir`: its own file,
/// or its range of the pack. Not verified.
pub fn read_stored(dir: &Path, entry: &ChunkEntry, kind: FileKind) -> std::io::Result<Vec<u8>> {
    if entry.pack.is_packed() {
        return read_packed(
            &dir.join(pack_file_name(entry.pack.generation)),
            entry,
            kind,
        );
    }
    std::fs::read(dir.join(data_file_name(entry.month, entry.generation, kind)))
}

/// Opens and verifies the chunk of `entry` in `dir` (file or pack) outside any budget
/// (admin's one-off checks). `rel_dir` names the series in errors.
pub fn open_entry_verified(dir: &Path, rel_dir: &str, entry: &ChunkEntry) -> Result<MappedChunk> {
    if entry.pack.is_packed() {
        let rel = format!("{rel_dir}/{}", pack_file_name(entry.pack.generation));
        let bytes = read_stored(dir, entry, FileKind::Chunk)
            .map_err(|e| StorageError::io(rel.as_str(), e))?;
        return MappedChunk::verify(MappedFile::from_parts(&[&bytes]), &rel, Some(entry), None);
    }
    let name = data_file_name(entry.month, entry.generation, FileKind::Chunk);
    MappedChunk::open_verified(&dir.join(&name), &format!("{rel_dir}/{name}"), Some(entry))
}

/// The name of the file holding `kind` of `entry`: its own file, or its pack.
pub fn entry_file_name(entry: &ChunkEntry, kind: FileKind) -> String {
    if entry.pack.is_packed() {
        pack_file_name(entry.pack.generation)
    } else {
        data_file_name(entry.month, entry.generation, kind)
    }
}

/// Whether the file holding `entry` (its chunk file, or its pack) exists.
pub fn entry_file_exists(dir: &Path, entry: &ChunkEntry) -> bool {
    dir.join(entry_file_name(entry, FileKind::Chunk)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MonthPartition;
    use crate::storage::format::ChunkHeader;

    /// An in-memory chunk joined from pieces is byte for byte the file
    /// `ChunkParts` writes for the concatenated columns, and verifies as one.
    #[test]
    fn a_joined_memory_chunk_is_the_file_of_its_columns() {
        let meta = crate::record::SeriesMeta {
            key: crate::record::SeriesKey::scalar("T", "1m", "c", "n").expect("valid key"),
            timeframe_ms: 60_000,
            price_scale: 1,
            volume_scale: 1,
            value_type: ValueType::I64,
        };
        let t0 = 1_704_067_200_000_i64;
        let ts: Vec<i64> = (0..13).map(|i| t0 + i * 60_000).collect();
        let v: Vec<i64> = (0..13).map(|i| i * i - 7).collect();
        let header = ChunkHeader {
            meta: Arc::new(meta),
            ncols: 2,
            rows: 0,
            first_ts: 0,
            last_ts: 0,
            month: MonthPartition::from_ts(t0).0,
            flags: super::super::format::FLAG_FULL,
            generation: 0,
            write_version: 3,
            write_chunks: 1,
            body_xxh3: 0,
            stride: 0,
            wal_lsn: 9,
            body_len: 0,
            last_row: None,
        };
        let cols: [&[i64]; 2] = [&ts, &v];
        let whole = super::super::format::ChunkParts::new(header.clone(), &cols);
        let want: Vec<u8> = whole.slices().concat();
        for cuts in [vec![13], vec![1, 12], vec![8, 4, 1], vec![1, 1, 1, 10]] {
            let (mut at, mut pieces) = (0, Vec::new());
            for n in cuts {
                pieces.push([&ts[at..at + n], &v[at..at + n]]);
                at += n;
            }
            let refs: Vec<&[&[i64]]> = pieces.iter().map(|p| &p[..]).collect();
            let m = MappedChunk::in_memory_joined(header.clone(), &refs);
            assert_eq!(m.file.bytes(), &want[..]);
            assert_eq!(m.header.body_xxh3, whole.header.body_xxh3);
            assert_eq!((m.col(0), m.col(1)), (&ts[..], &v[..]));
            let again = MappedChunk::verify(Arc::clone(&m.file), "t", None, None)
                .expect("verifies as a file");
            assert_eq!(again.header.rows, 13);
        }
    }

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

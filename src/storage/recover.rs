//! Opening a series directory: recovery after a crash, and rebuilding a manifest
//! from chunk headers.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use super::StoreOptions;
use super::chunk::{FileKind, MappedChunk, data_file_name, parse_data_file_name};
use super::error::{Result, StorageError};
use super::format::{
    ChunkEntry, ChunkHeader, FLAG_FULL, Manifest, PackLoc, STATE_LIVE, STATE_OBSOLETE, SidecarRef,
};
use super::fsio::{self, TEMP_PREFIX};
use super::pack::{self, parse_pack_file_name};
use super::series::{MANIFEST_NAME, Series, live_map};
use super::snapshot::Snapshot;
use crate::record::SeriesMeta;

/// What recovery did or found in one series directory.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RecoveryNotes {
    /// Series directory relative to the store root.
    pub series: String,
    pub temp_files_removed: usize,
    /// Files of writes that never committed (generation at or past the manifest's next).
    pub uncommitted_removed: usize,
    /// Superseded files the manifest marked obsolete.
    pub obsolete_removed: usize,
    /// Why the manifest was rebuilt from chunk headers, if it was.
    pub manifest_rebuilt: Option<String>,
    /// Files the manifest does not account for, left alone for an operator (relative paths).
    pub unknown_files: Vec<String>,
    /// Chunk files that failed verification during a rebuild (relative paths).
    pub corrupt_files: Vec<String>,
}

impl RecoveryNotes {
    pub fn is_quiet(&self) -> bool {
        self.temp_files_removed == 0
            && self.uncommitted_removed == 0
            && self.obsolete_removed == 0
            && self.manifest_rebuilt.is_none()
            && self.unknown_files.is_empty()
            && self.corrupt_files.is_empty()
    }
}

/// Opens the series in `dir`, recovering from any crash left-overs.
pub(crate) fn open_series(
    dir: PathBuf,
    rel: String,
    opts: &Arc<StoreOptions>,
    pinned: Option<&super::named::Pinned>,
) -> Result<(Series, RecoveryNotes)> {
    let mut notes = RecoveryNotes {
        series: rel.clone(),
        ..Default::default()
    };
    // Temp files (unpublished writes) are removed by the sweep below, in the one
    // listing of the directory an open makes: neither the manifest nor a rebuild
    // reads them.
    let manifest = match read_manifest(&dir, &rel) {
        Ok(m) => m,
        Err(reason) => {
            let (m, corrupt) = rebuild_manifest(&dir, &rel, opts, None)?;
            fsio::write_atomic(&dir, MANIFEST_NAME, &[&m.encode()])
                .map_err(|e| StorageError::io(format!("{rel}/{MANIFEST_NAME}"), e))?;
            notes.manifest_rebuilt = Some(reason);
            notes.corrupt_files = corrupt;
            m
        }
    };
    sweep(&dir, &rel, &manifest, pinned, &mut notes)
        .map_err(|e| StorageError::io(rel.clone(), e))?;
    let series = series_from_manifest(dir, rel, opts, manifest);
    Ok((series, notes))
}

pub(crate) fn series_from_manifest(
    dir: PathBuf,
    rel: String,
    opts: &Arc<StoreOptions>,
    m: Manifest,
) -> Series {
    let meta = Arc::new(m.meta.clone());
    let series = Series::new(
        Arc::clone(&meta),
        dir,
        rel,
        Arc::clone(opts),
        Snapshot::empty(Arc::clone(&meta)),
    );
    series.install(snapshot_from_manifest(&series, m));
    series
}

pub fn snapshot_from_manifest(series: &Series, m: Manifest) -> Snapshot {
    let live = live_map(series, &m.entries);
    let obsolete = m
        .entries
        .into_iter()
        .filter(|e| e.state == STATE_OBSOLETE)
        .collect::<Vec<_>>()
        .into();
    Snapshot {
        meta: Arc::clone(&series.meta),
        version: m.version,
        next_generation: m.next_generation,
        retention_ms: m.retention_ms,
        irregular: m.irregular,
        live,
        obsolete,
        wal_lsn: m.wal_lsn,
        unfolded: None,
        superseded: Vec::new(),
    }
}

/// Reads and checks `MANIFEST`; the error is a reason for a rebuild.
pub fn read_manifest(dir: &Path, rel: &str) -> Result<Manifest, String> {
    let bytes =
        fs::read(dir.join(MANIFEST_NAME)).map_err(|e| format!("{rel}/{MANIFEST_NAME}: {e}"))?;
    Manifest::decode(&bytes).map_err(|e| format!("{rel}/{MANIFEST_NAME}: {e}"))
}

/// Removes temp files and the files the manifest proves are garbage, but those a
/// snapshot still needs (`pinned`); reports the ones it cannot place.
fn sweep(
    dir: &Path,
    rel: &str,
    m: &Manifest,
    pinned: Option<&super::named::Pinned>,
    notes: &mut RecoveryNotes,
) -> std::io::Result<()> {
    let pinned_file = |month: i32, g: u64| pinned.is_some_and(|p| p.files.contains(&(month, g)));
    let pinned_pack = |g: u64| pinned.is_some_and(|p| p.packs.contains(&g));
    // A packed entry names its pack, not a chunk file.
    let files = |state: u8| -> HashSet<(i32, u64)> {
        m.entries
            .iter()
            .filter(|e| e.state == state && !e.pack.is_packed())
            .map(|e| (e.month, e.generation))
            .collect()
    };
    let (live, obsolete) = (files(STATE_LIVE), files(STATE_OBSOLETE));
    let live_packs: HashSet<u64> = m
        .entries
        .iter()
        .filter(|e| e.state == STATE_LIVE && e.pack.is_packed())
        .map(|e| e.pack.generation)
        .collect();
    let mut removed_any = false;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name == MANIFEST_NAME {
            continue;
        }
        if name.starts_with(TEMP_PREFIX) {
            fs::remove_file(entry.path())?;
            notes.temp_files_removed += 1;
            removed_any = true;
            continue;
        }
        if let Some(g) = parse_pack_file_name(&name) {
            // A pack no live entry references is garbage whatever its generation: an
            // uncommitted pack (at or past next_generation) or one whose chunks were
            // all superseded.
            if !live_packs.contains(&g) && !pinned_pack(g) {
                fs::remove_file(entry.path())?;
                if g >= m.next_generation {
                    notes.uncommitted_removed += 1;
                } else {
                    notes.obsolete_removed += 1;
                }
                removed_any = true;
            }
            continue;
        }
        match parse_data_file_name(&name) {
            Some((_, g, _)) if g >= m.next_generation => {
                fs::remove_file(entry.path())?;
                notes.uncommitted_removed += 1;
                removed_any = true;
            }
            Some((month, g, _)) if pinned_file(month, g) => {}
            Some((month, g, _)) if obsolete.contains(&(month, g)) => {
                fs::remove_file(entry.path())?;
                notes.obsolete_removed += 1;
                removed_any = true;
            }
            Some((month, g, _)) if live.contains(&(month, g)) => {}
            _ if entry.file_type()?.is_dir() => {}
            _ => notes.unknown_files.push(format!("{rel}/{name}")),
        }
    }
    if removed_any {
        fsio::fsync_dir(dir)?;
    }
    notes.unknown_files.sort();
    Ok(())
}

/// Rebuilds a manifest from the chunk headers in `dir`. Returns it with the chunk
/// files that failed verification (left out). Per month the newest full chunk and the
/// deltas after it are live.
///
/// Long on purpose: one pass over the directory verifies every chunk and pack file
/// once, then the same list decides the live chunks per month.
pub fn rebuild_manifest(
    dir: &Path,
    rel: &str,
    opts: &StoreOptions,
    meta_hint: Option<&SeriesMeta>,
) -> Result<(Manifest, Vec<String>)> {
    let mut chunks: Vec<Found> = Vec::new();
    let mut corrupt = Vec::new();
    let mut max_gen = 0;
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(rel, e))? {
        let entry = entry.map_err(|e| StorageError::io(rel, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(g) = parse_pack_file_name(&name) {
            max_gen = max_gen.max(g);
            let found = packed_headers(&entry.path(), g, &format!("{rel}/{name}"));
            if let Ok(f) = &found {
                max_gen = f
                    .iter()
                    .map(|f| f.header.generation)
                    .fold(max_gen, u64::max);
            }
            match found {
                Ok(f) => chunks.extend(f),
                Err(why) => {
                    tracing::warn!(pack = %format!("{rel}/{name}"), %why, "rebuild: pack left out");
                    corrupt.push(format!("{rel}/{name}"));
                }
            }
            continue;
        }
        let Some((month, g, FileKind::Chunk)) = parse_data_file_name(&name) else {
            continue;
        };
        max_gen = max_gen.max(g);
        let file_rel = format!("{rel}/{name}");
        match MappedChunk::open_verified(&entry.path(), &file_rel, None) {
            Ok(c) if c.header.month == month && c.header.generation == g => chunks.push(Found {
                header: c.header,
                packed: None,
            }),
            _ => corrupt.push(file_rel),
        }
    }
    let meta = match (chunks.iter().max_by_key(|f| f.header.generation), meta_hint) {
        (_, Some(m)) => m.clone(),
        (Some(f), None) => (*f.header.meta).clone(),
        (None, None) => {
            return Err(StorageError::corrupted(
                format!("{rel}/{MANIFEST_NAME}"),
                "the manifest is unreadable and no chunk is left to rebuild it from",
            ));
        }
    };
    chunks.retain(|f| *f.header.meta == meta);
    let packed: std::collections::HashMap<u64, (PackLoc, SidecarRef, SidecarRef)> = chunks
        .iter()
        .filter_map(|f| f.packed.map(|p| (f.header.generation, p)))
        .collect();
    let chunks: Vec<ChunkHeader> = chunks.into_iter().map(|f| f.header).collect();
    // A write records how many chunks it published. Writes are serialized, so only the
    // newest one can have lost its commit; but chunks also go missing later (repair
    // quarantines them), so a short count is logged, not acted on: a rebuild keeps every
    // verified chunk rather than drop acknowledged rows.
    if let Some(w) = chunks.iter().map(|h| h.write_version).max() {
        let present = chunks.iter().filter(|h| h.write_version == w).count() as u32;
        let expected = chunks
            .iter()
            .find(|h| h.write_version == w)
            .map_or(0, |h| h.write_chunks);
        if present < expected {
            tracing::warn!(
                series = rel,
                write_version = w,
                present,
                expected,
                "rebuild: newest write has missing chunks"
            );
        }
    }
    // Every chunk records how far the series had folded the log when it was written:
    // replay resumes after the furthest any of them reached.
    let wal_lsn = chunks.iter().map(|h| h.wal_lsn).max().unwrap_or(0);
    let mut by_month: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    for h in chunks {
        by_month.entry(h.month).or_default().push(h);
    }
    let mut entries = Vec::new();
    let mut version = 0;
    for (_, mut hs) in by_month {
        hs.sort_by_key(|h| h.generation);
        let base = hs
            .iter()
            .rposition(|h| h.flags & FLAG_FULL != 0)
            .unwrap_or(0);
        let mut last_ts = i64::MIN;
        for h in &hs[base..] {
            if h.first_ts <= last_ts {
                continue;
            }
            last_ts = h.last_ts;
            version = version.max(h.write_version);
            let side = |kind| sidecar_ref(dir, h.month, h.generation, kind);
            // A packed chunk's sidecars are the ones its pack lists; a chunk file's are
            // the files beside it, when the store keeps them.
            let (pack, zonemap, vindex) = match packed.get(&h.generation) {
                Some(&found) => found,
                None => (
                    PackLoc::NONE,
                    if opts.zonemap_block_rows.is_some() {
                        side(FileKind::ZoneMap)
                    } else {
                        SidecarRef::default()
                    },
                    if opts.value_index {
                        side(FileKind::ValueIndex)
                    } else {
                        SidecarRef::default()
                    },
                ),
            };
            entries.push(ChunkEntry::live(h, zonemap, vindex, pack));
        }
    }
    // A rebuilt manifest cannot know the retention; the caller keeps the one it had.
    let manifest = Manifest {
        meta,
        version,
        next_generation: max_gen + 1,
        retention_ms: 0,
        irregular: false,
        wal_lsn,
        entries,
    };
    Ok((manifest, corrupt))
}

/// A verified chunk found on disk by a rebuild; `packed` when it lives in a pack
/// (its location and the sidecars the pack's index lists).
struct Found {
    header: ChunkHeader,
    packed: Option<(PackLoc, SidecarRef, SidecarRef)>,
}

/// The verified chunks of the pack at `path` (generation `g`), from its own index:
/// a pack whose index or any chunk fails its checks is left out whole (its months
/// fall back to the chunk files they were packed from, if those still exist).
fn packed_headers(path: &Path, g: u64, rel: &str) -> Result<Vec<Found>, String> {
    let index = pack::read_index(path)?;
    let pack_len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if index.generation != g {
        return Err("pack generation disagrees with its name".into());
    }
    let mut out = Vec::with_capacity(index.entries.len());
    for e in &index.entries {
        let bytes = pack::read_at(path, e.offset, e.chunk_len).map_err(|e| e.to_string())?;
        let file = super::mmap::MappedFile::from_parts(&[&bytes]);
        let c = MappedChunk::verify(file, rel, None, None).map_err(|e| e.to_string())?;
        if c.header.month != e.month || c.header.generation != e.generation {
            return Err("pack index disagrees with a chunk header".into());
        }
        for (sref, at) in [
            (
                e.zonemap,
                pack::sidecar_offsets(e.offset, e.chunk_len, e.zonemap.len).0,
            ),
            (
                e.vindex,
                pack::sidecar_offsets(e.offset, e.chunk_len, e.zonemap.len).1,
            ),
        ] {
            let b = pack::read_at(path, at, sref.len).map_err(|e| e.to_string())?;
            if sref.present() && xxh3_64(&b) != sref.xxh3 {
                return Err("a sidecar in the pack fails its checksum".into());
            }
        }
        let loc = PackLoc {
            generation: g,
            offset: e.offset,
            len: pack_len,
        };
        out.push(Found {
            header: c.header,
            packed: Some((loc, e.zonemap, e.vindex)),
        });
    }
    Ok(out)
}

/// Checksum and length of a sidecar file as it is now (absent: zero).
fn sidecar_ref(dir: &Path, month: i32, generation: u64, kind: FileKind) -> SidecarRef {
    match fs::read(dir.join(data_file_name(month, generation, kind))) {
        Ok(b) if !b.is_empty() => SidecarRef {
            len: b.len() as u64,
            xxh3: xxh3_64(&b),
        },
        _ => SidecarRef::default(),
    }
}

/// True when `name` is a temp file left by an interrupted publish.
pub fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

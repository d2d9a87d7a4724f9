//! A read replica's side of storage: installing manifests of another store (the
//! primary) whose data files a follower copied in (docs/scale-out.md, section 2).
//!
//! Storage knows only files: the follower (`crate::replica`) fetches objects, checks
//! each one with [`check_file`] against the manifest, writes it where
//! [`Store::follow_target`] says (temp, fsync, rename, then one directory fsync) and
//! calls [`Store::commit_followed`]. Until that commit nothing the follower wrote is
//! visible: files of an existing series carry generations at or past its
//! `next_generation` (recovery deletes them after a crash), and a new series is built
//! under `trash/` (emptied on open) and renamed into place whole, as `register` does.

use crate::sync::RwLockExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use xxhash_rust::xxh3::xxh3_64;

use super::chunk::{FileKind, data_file_name};
use super::error::{Result, StorageError};
use super::format::{CHUNK_HEADER_LEN, ChunkEntry, ChunkHeader, Manifest, STATE_LIVE};
use super::pack::{PackIndex, pack_file_name, packed_range};
use super::series::MANIFEST_NAME;
use super::snapshot::Snapshot;
use super::{Store, TRASH_COUNTER, fsio, recover};
use crate::record::{SeriesKey, SeriesMeta};

/// One data file a manifest lists as live: its name in the series directory, its
/// kind, the entry that describes it and the checksum that names its object. A pack
/// file is one data file for all the entries it holds (`packed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub name: String,
    pub kind: FileKind,
    /// The entry of a chunk or sidecar file; a pack's first entry.
    pub entry: ChunkEntry,
    /// The chunk's body xxh3, or the sidecar's xxh3 (as the manifest records them); for
    /// a pack, the xxh3 of the checksums of everything it holds, so the object's name
    /// still changes with its content.
    pub xxh3: u64,
    pub len: u64,
    /// The live entries a pack holds, in the manifest's order (empty: not a pack).
    pub packed: Vec<ChunkEntry>,
}

/// Every file the live entries of `m` name: the chunk, then its zone map and value
/// index when the entry records them; each pack once, for all its entries.
pub fn live_files(m: &Manifest) -> Vec<DataFile> {
    let mut out = Vec::new();
    let mut packs: std::collections::BTreeMap<u64, Vec<ChunkEntry>> = Default::default();
    for e in m.entries.iter().filter(|e| e.state == STATE_LIVE) {
        if e.pack.is_packed() {
            packs.entry(e.pack.generation).or_default().push(e.clone());
            continue;
        }
        let file = |kind, xxh3, len| DataFile {
            name: data_file_name(e.month, e.generation, kind),
            kind,
            entry: e.clone(),
            xxh3,
            len,
            packed: Vec::new(),
        };
        out.push(file(FileKind::Chunk, e.checksum, e.file_len));
        if e.zonemap.present() {
            out.push(file(FileKind::ZoneMap, e.zonemap.xxh3, e.zonemap.len));
        }
        if e.vindex.present() {
            out.push(file(FileKind::ValueIndex, e.vindex.xxh3, e.vindex.len));
        }
    }
    for (generation, packed) in packs {
        let sums: Vec<u8> = packed
            .iter()
            .flat_map(|e| [e.checksum, e.zonemap.xxh3, e.vindex.xxh3])
            .flat_map(u64::to_le_bytes)
            .collect();
        out.push(DataFile {
            name: pack_file_name(generation),
            kind: FileKind::Chunk,
            entry: packed[0].clone(),
            xxh3: xxh3_64(&sums),
            len: packed[0].pack.len,
            packed,
        });
    }
    out
}

/// Writes one fetched data file into `dir` once it checks against the manifest's
/// entry ([`check_file`]), synced. The directory is synced once for all of them by
/// [`sync_fetched`], before the manifest that names them is committed.
pub fn store_fetched(
    meta: &SeriesMeta,
    dir: &std::path::Path,
    f: &DataFile,
    body: &[u8],
) -> Result<(), String> {
    check_file(meta, f, body).map_err(|why| format!("object refused: {why}"))?;
    fsio::write_file_synced(dir, &f.name, &[body]).map_err(|e| e.to_string())
}

/// Makes the names of the files fetched into `dir` durable.
pub fn sync_fetched(dir: &std::path::Path) -> Result<(), String> {
    fsio::fsync_dir(dir).map_err(|e| e.to_string())
}

/// Checks the bytes of a fetched file against the manifest that lists it: a chunk's
/// header (its own checksum), length, body checksum, series and every field of its
/// entry; a sidecar's length and xxh3; a pack's length and index, then each chunk and
/// sidecar it holds for the manifest as if it were its own file. A file that fails is
/// never written.
pub fn check_file(meta: &SeriesMeta, f: &DataFile, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() as u64 != f.len {
        return Err(format!(
            "{}: {} bytes, the manifest says {}",
            f.name,
            bytes.len(),
            f.len
        ));
    }
    if !f.packed.is_empty() {
        PackIndex::decode(bytes, f.len).map_err(|why| format!("{}: {why}", f.name))?;
        for e in &f.packed {
            let slice = |kind| {
                let (at, len) = packed_range(e, kind);
                usize::try_from(at)
                    .ok()
                    .zip(usize::try_from(len).ok())
                    .and_then(|(at, len)| bytes.get(at..at.checked_add(len)?))
                    .ok_or_else(|| format!("{}: an entry lies outside the pack", f.name))
            };
            check_chunk(meta, &f.name, e, slice(FileKind::Chunk)?)?;
            for (kind, side) in [
                (FileKind::ZoneMap, e.zonemap),
                (FileKind::ValueIndex, e.vindex),
            ] {
                if side.present() && xxh3_64(slice(kind)?) != side.xxh3 {
                    return Err(format!("{}: sidecar checksum mismatch", f.name));
                }
            }
        }
        return Ok(());
    }
    if f.kind != FileKind::Chunk {
        return match xxh3_64(bytes) == f.xxh3 {
            true => Ok(()),
            false => Err(format!("{}: checksum mismatch", f.name)),
        };
    }
    check_chunk(meta, &f.name, &f.entry, bytes)
}

/// A chunk image (its own file, or its range of a pack) against its manifest entry.
fn check_chunk(meta: &SeriesMeta, name: &str, e: &ChunkEntry, bytes: &[u8]) -> Result<(), String> {
    let h = ChunkHeader::decode(bytes).map_err(|why| format!("{name}: {why}"))?;
    if h.file_len() != bytes.len() as u64 || xxh3_64(&bytes[CHUNK_HEADER_LEN..]) != h.body_xxh3 {
        return Err(format!("{name}: body checksum mismatch"));
    }
    let agrees = *h.meta == *meta && e.agrees_with(&h);
    match agrees {
        true => Ok(()),
        false => Err(format!("{name}: header disagrees with the manifest")),
    }
}

/// Whether `next` describes exactly the state of `snap` (nothing to apply).
fn same_state(snap: &Snapshot, next: &Manifest) -> bool {
    let live: Vec<&ChunkEntry> = next
        .entries
        .iter()
        .filter(|e| e.state == STATE_LIVE)
        .collect();
    *snap.meta == next.meta
        && snap.version == next.version
        && snap.next_generation == next.next_generation
        && snap.retention_ms == next.retention_ms
        && snap.irregular == next.irregular
        && snap.chunks().count() == live.len()
        && snap.continued_by(next)
}

/// What applying a followed manifest takes.
#[derive(Debug)]
pub enum FollowTarget {
    /// The local series is at this state already.
    Current,
    /// Write `needed` into `dir` (the series' own directory), then commit.
    Update {
        key: SeriesKey,
        dir: PathBuf,
        needed: Vec<DataFile>,
    },
    /// A series new here (or a new incarnation, `replaces`): write every live file
    /// into `dir`, a staging directory under `trash/`, then commit.
    Create {
        key: SeriesKey,
        dir: PathBuf,
        needed: Vec<DataFile>,
        replaces: bool,
    },
}

impl FollowTarget {
    /// The directory to write into and the files to write there.
    pub fn work(&self) -> Option<(&PathBuf, &[DataFile])> {
        match self {
            FollowTarget::Current => None,
            FollowTarget::Update { dir, needed, .. } | FollowTarget::Create { dir, needed, .. } => {
                Some((dir, needed))
            }
        }
    }

    /// Removes a staging directory after a failed apply (an update's files are left
    /// to recovery and to the next attempt, which overwrites them).
    pub fn abandon(&self) {
        if let FollowTarget::Create { dir, .. } = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Store {
    /// Decides how the manifest `m` of a primary applies here (see [`FollowTarget`]).
    pub fn follow_target(&self, m: &Manifest) -> Result<FollowTarget> {
        m.validate().map_err(StorageError::InvalidArgument)?;
        let key = m.meta.key.clone();
        let files = live_files(m);
        if let Ok(series) = self.get(&key) {
            let snap = series.snapshot();
            if same_state(&snap, m) {
                return Ok(FollowTarget::Current);
            }
            if snap.continued_by(m) {
                let have: std::collections::HashSet<(i32, u64)> = snap
                    .chunks()
                    .map(|c| (c.entry.month, c.entry.generation))
                    .collect();
                let needed = files
                    .into_iter()
                    .filter(|f| !have.contains(&(f.entry.month, f.entry.generation)))
                    .collect();
                return Ok(FollowTarget::Update {
                    key,
                    dir: series.dir().to_path_buf(),
                    needed,
                });
            }
        }
        let replaces = self.get(&key).is_ok();
        let trash = self.root.join("trash");
        fsio::create_dir_durable(&trash).map_err(|e| StorageError::io("trash", e))?;
        let n = TRASH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = trash.join(format!("follow-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| StorageError::io("trash", e))?;
        Ok(FollowTarget::Create {
            key,
            dir,
            needed: files,
            replaces,
        })
    }

    /// Commits a followed manifest once every file of `target` is written and the
    /// directory fsynced: the local `MANIFEST` (this store's `wal_lsn`, obsolete
    /// entries of its own) is the replica's commit point, as on the primary.
    pub fn commit_followed(&self, target: FollowTarget, m: Manifest) -> Result<()> {
        let lsn = self.wal.committed_lsn();
        match target {
            FollowTarget::Current => Ok(()),
            FollowTarget::Update { key, .. } => self.get(&key)?.apply_followed(m, lsn),
            FollowTarget::Create {
                key, dir, replaces, ..
            } => {
                let r = self.place_followed(&key, &dir, m, lsn, replaces);
                if r.is_err() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                r
            }
        }
    }

    /// Writes the manifest into the staging directory, moves it into place (deleting
    /// an older incarnation first) and opens it as a series.
    fn place_followed(
        &self,
        key: &SeriesKey,
        staging: &std::path::Path,
        mut m: Manifest,
        lsn: u64,
        replaces: bool,
    ) -> Result<()> {
        let rel = format!("series/{}", key.rel_dir().display());
        m.entries.retain(|e| e.state == STATE_LIVE);
        m.wal_lsn = lsn;
        fsio::write_atomic(staging, MANIFEST_NAME, &[&m.encode()])
            .map_err(|e| StorageError::io(format!("{rel}/{MANIFEST_NAME}"), e))?;
        fsio::fsync_dir(staging).map_err(|e| StorageError::io(rel.clone(), e))?;
        if replaces {
            match self.delete(key) {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let dir = self.root.join(&rel);
        let parent = dir.parent().unwrap_or(&self.root).to_path_buf();
        fsio::create_dir_durable(&parent).map_err(|e| StorageError::io(rel.clone(), e))?;
        fsio::rename(staging, &dir).map_err(|e| StorageError::io(rel.clone(), e))?;
        fsio::fsync_dir(&parent).map_err(|e| StorageError::io(rel.clone(), e))?;
        let (series, _notes) = recover::open_series(dir, rel, &self.opts, None)?;
        let mut map = self.series.write_now();
        map.insert(key.clone(), Arc::new(series));
        Ok(())
    }
}

//! Maintenance of series directories, for `admin`: repair, manifest rebuild and the
//! quarantine. Together with the write path in `series.rs` this is every change to a
//! manifest, chunk or sidecar; `admin` decides what to run and reports, storage does it
//! (checked by `tests/architecture.rs`).
//!
//! The rules are the write path's: new files are written under a generation no
//! manifest has committed, never over a published name (a rebuilt sidecar comes with a
//! rewrite of its month, and the old files are unlinked once no reader maps them);
//! commits put the previous manifest back when the directory fsync fails; and the
//! version is bumped by storage exactly when the set of served chunks changes, and
//! never goes backwards.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;

use super::chunk::{
    FileKind, MappedChunk, data_file_name, entry_file_exists, entry_file_name, open_entry_verified,
    parse_data_file_name, read_stored,
};
use super::error::{Result, StorageError};
use super::format::{ChunkEntry, Manifest, STATE_LIVE};
use super::mmap::MappedFile;
use super::pack::parse_pack_file_name;
use super::recover::{read_manifest, rebuild_manifest, snapshot_from_manifest};
use super::series::{MANIFEST_NAME, MonthPlan, OnDisk, Series};
use super::sidecar::{ValueIndex, ZoneMap};
use super::snapshot::Snapshot;
use super::{Store, fsio};
use crate::record::{Partitioning, SeriesKind, partition_label};

/// True for a temp file of an interrupted publish (read-only checks report them).
pub use super::recover::is_temp;

/// Where a repair moves what it takes out of the store: `<root>/quarantine/<ms>/`,
/// keeping each file's path relative to the root. Nothing an operator may want back
/// is deleted.
#[derive(Debug, Clone)]
pub struct Quarantine {
    root: PathBuf,
    stamp: i64,
}

/// One change a maintenance operation made (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The file concerned, relative to the store root.
    pub file: Option<String>,
    /// Machine-readable action (`quarantine_chunk`, `rebuild_sidecar`, ...).
    pub action: &'static str,
    pub detail: String,
}

/// What [`Series::rebuild_manifest`] built (or, in a dry run, would commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub chunks: usize,
    pub rows: u64,
    pub version: u64,
    /// Chunk files that failed verification and were left out (relative paths).
    pub corrupt: Vec<String>,
}

/// The verdict of a repair's verification pass.
#[derive(Default)]
struct Verdict {
    /// Live entries that cannot be served (corrupt, missing, misplaced).
    dropped: Vec<ChunkEntry>,
    /// Months with a verified chunk whose sidecar is missing or corrupt.
    stale_sidecars: BTreeSet<i32>,
}

impl Change {
    fn new(file: Option<String>, action: &'static str, detail: impl Into<String>) -> Change {
        Change {
            file,
            action,
            detail: detail.into(),
        }
    }
}

impl Quarantine {
    /// A quarantine folder for one repair run, named by the current time.
    pub fn new(store: &Store) -> Quarantine {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Quarantine {
            root: store.root().to_path_buf(),
            stamp,
        }
    }

    /// Moves `rel` (relative to the root) into the quarantine, keeping its path.
    fn take(&self, rel: &str) -> Result<()> {
        let io = |e| StorageError::io(rel, e);
        let target = self
            .root
            .join("quarantine")
            .join(self.stamp.to_string())
            .join(rel);
        if let Some(parent) = target.parent() {
            fsio::create_dir_durable(parent).map_err(io)?;
        }
        let source = self.root.join(rel);
        fs::rename(&source, &target).map_err(io)?;
        if let Some(parent) = source.parent() {
            fsio::fsync_dir(parent).map_err(io)?;
        }
        Ok(())
    }
}

impl Store {
    /// Moves a series directory that could not be opened into the quarantine. Only a
    /// directory [`Store::unopenable`] lists can be moved.
    pub fn quarantine_unopenable(&self, q: &Quarantine, rel: &str) -> Result<()> {
        if !self.unopenable().iter().any(|(dir, _)| dir == rel) {
            return Err(StorageError::InvalidArgument(format!(
                "{rel} is not an unopenable series directory"
            )));
        }
        q.take(rel)
    }
}

impl Series {
    /// The manifest as it is on disk, or why it cannot be read (validate compares it
    /// with the served state).
    pub fn manifest_on_disk(&self) -> std::result::Result<Manifest, String> {
        if !self.is_materialized() {
            // Its record in the store's catalog is its manifest.
            return Ok(self.on_disk_manifest());
        }
        read_manifest(&self.dir, &self.rel_dir)
    }

    /// Repairs the series: an unreadable manifest is rebuilt from chunk headers;
    /// chunks that cannot be served are dropped and quarantined; months whose sidecars
    /// are missing or corrupt are rewritten (new chunk and sidecars under a new
    /// generation); temp files are deleted and files the manifest does not know are
    /// quarantined. A dry run reports the same changes and makes none.
    pub fn repair(&self, q: &Quarantine, dry_run: bool) -> Result<Vec<Change>> {
        self.with_write_lock(|| self.repair_locked(q, dry_run))
    }

    fn repair_locked(&self, q: &Quarantine, dry_run: bool) -> Result<Vec<Change>> {
        if !self.is_materialized() {
            // No directory: nothing on disk to check (the catalog is checked on open).
            return Ok(Vec::new());
        }
        let rel = self.rel_dir.to_string();
        let mut changes = Vec::new();
        let (mut manifest, rebuilt) = match read_manifest(&self.dir, &rel) {
            Ok(m) => (m, false),
            Err(why) => {
                let (m, _) = rebuild_manifest(&self.dir, &rel, &self.opts, Some(&self.meta))?;
                let file = Some(format!("{rel}/{MANIFEST_NAME}"));
                changes.push(Change::new(file, "rebuild_manifest", why));
                (m, true)
            }
        };
        let verdict = self.verify_entries(&mut manifest, &mut changes);
        let dropped: HashSet<(i32, u64)> = verdict
            .dropped
            .iter()
            .map(|e| (e.month, e.generation))
            .collect();
        if dry_run {
            self.sweep(&manifest, &dropped, q, true, &mut changes)?;
            return Ok(changes);
        }
        if rebuilt || !verdict.dropped.is_empty() {
            self.commit_maintenance(manifest)?;
        }
        // The dropped chunks are out of the committed manifest, so a crash from here on
        // leaves them as unknown files, which the next open reports and repair moves.
        // A pack is shared: it is quarantined by the sweep below once no entry of the
        // committed manifest references it.
        for e in verdict.dropped.iter().filter(|e| !e.pack.is_packed()) {
            for kind in [FileKind::Chunk, FileKind::ZoneMap, FileKind::ValueIndex] {
                let name = data_file_name(e.month, e.generation, kind);
                if self.dir.join(&name).exists() {
                    q.take(&format!("{rel}/{name}"))?;
                }
            }
        }
        self.rewrite_months(&verdict.stale_sidecars)?;
        let current = self.snapshot().to_manifest();
        self.sweep(&current, &dropped, q, false, &mut changes)?;
        Ok(changes)
    }

    /// Verifies every live entry of `m` and removes those that cannot be served.
    fn verify_entries(&self, m: &mut Manifest, changes: &mut Vec<Change>) -> Verdict {
        let mut verdict = Verdict::default();
        let mut prev_last: std::collections::HashMap<i32, i64> = Default::default();
        let part = self.meta.partitioning();
        m.entries.sort_by_key(|e| (e.month, e.generation));
        let mut kept = Vec::with_capacity(m.entries.len());
        for e in std::mem::take(&mut m.entries) {
            if e.state != STATE_LIVE {
                kept.push(e);
                continue;
            }
            let file_rel = format!("{}/{}", self.rel_dir, entry_file_name(&e, FileKind::Chunk));
            let verified = open_entry_verified(&self.dir, &self.rel_dir, &e).and_then(|c| {
                match misplaced(part, &c, e.month, prev_last.get(&e.month).copied()) {
                    Some(why) => Err(StorageError::corrupted(file_rel.clone(), why)),
                    None => Ok(c),
                }
            });
            match verified {
                Ok(_) => {
                    prev_last.insert(e.month, e.last_ts);
                    for kind in self.bad_sidecars(&e) {
                        verdict.stale_sidecars.insert(e.month);
                        changes.push(Change::new(
                            Some(format!("{}/{}", self.rel_dir, entry_file_name(&e, kind))),
                            "rebuild_sidecar",
                            format!(
                                "rebuilt from the verified chunk: {} is rewritten under a new generation",
                                partition_label(e.month)
                            ),
                        ));
                    }
                    kept.push(e);
                }
                Err(err) => {
                    let what = if entry_file_exists(&self.dir, &e) {
                        "quarantine_chunk"
                    } else {
                        "drop_missing_chunk"
                    };
                    changes.push(Change::new(
                        Some(file_rel),
                        what,
                        format!("{err}; {} rows of this month are no longer served", e.rows),
                    ));
                    verdict.dropped.push(e);
                }
            }
        }
        m.entries = kept;
        verdict
    }

    /// The sidecar kinds of a scalar chunk that should exist but are missing or fail
    /// their checks.
    fn bad_sidecars(&self, e: &ChunkEntry) -> Vec<FileKind> {
        if self.meta.key.kind() != SeriesKind::Scalar {
            return Vec::new();
        }
        let vt = self.meta.value_type;
        let read = |kind| read_stored(&self.dir, e, kind);
        let (want_zonemap, want_vindex) = super::sidecar::wanted(&self.meta, e.rows, &self.opts);
        let z_ok = !want_zonemap
            || (e.zonemap.present()
                && read(FileKind::ZoneMap)
                    .is_ok_and(|b| ZoneMap::parse(&b, vt, e.zonemap.xxh3).is_ok()));
        let v_ok = !want_vindex
            || (e.vindex.present()
                && read(FileKind::ValueIndex).is_ok_and(|b| {
                    ValueIndex::open(MappedFile::from_parts(&[&b]), vt, e.vindex.xxh3).is_ok()
                }));
        [(z_ok, FileKind::ZoneMap), (v_ok, FileKind::ValueIndex)]
            .into_iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, kind)| kind)
            .collect()
    }

    /// Rewrites each of `months` into one new chunk with fresh sidecars, through the
    /// write path's commit (rollback on failure, version bump). The superseded files
    /// are unlinked when the last snapshot that maps them goes away.
    fn rewrite_months(&self, months: &BTreeSet<i32>) -> Result<()> {
        let snap = self.snapshot();
        let none: Vec<&[i64]> = vec![&[]; self.meta.key.kind().ncols()];
        let mut next_gen = snap.next_generation;
        let mut plans: Vec<MonthPlan> = Vec::new();
        for &month in months {
            if snap.live.contains_key(&month) {
                plans.push(self.merge_month(&snap, month, &none, next_gen)?);
                next_gen += 1;
            }
        }
        if plans.is_empty() {
            return Ok(());
        }
        self.commit_inner(&snap, plans, next_gen, true)
    }

    /// Temp files are deleted; files `m` does not know (nor `skip`, the chunks a
    /// repair drops and moves itself) are quarantined.
    fn sweep(
        &self,
        m: &Manifest,
        skip: &HashSet<(i32, u64)>,
        q: &Quarantine,
        dry_run: bool,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let known: HashSet<(i32, u64)> = m
            .entries
            .iter()
            .filter(|e| !e.pack.is_packed())
            .map(|e| (e.month, e.generation))
            .collect();
        let packs: HashSet<u64> = m.entries.iter().map(|e| e.pack.generation).collect();
        let Ok(entries) = fs::read_dir(self.dir.as_path()) else {
            return Ok(());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for name in names {
            let rel = format!("{}/{name}", self.rel_dir);
            if name == MANIFEST_NAME {
                continue;
            }
            if is_temp(&name) {
                if !dry_run {
                    fs::remove_file(self.dir.join(&name))
                        .map_err(|e| StorageError::io(rel.clone(), e))?;
                }
                changes.push(Change::new(
                    Some(rel),
                    "delete_temp_file",
                    "left-over of an interrupted write",
                ));
                continue;
            }
            let placed = parse_data_file_name(&name)
                .is_some_and(|(mo, g, _)| known.contains(&(mo, g)) || skip.contains(&(mo, g)))
                || parse_pack_file_name(&name).is_some_and(|g| packs.contains(&g));
            if !placed {
                if !dry_run {
                    q.take(&rel)?;
                }
                changes.push(Change::new(
                    Some(rel),
                    "quarantine",
                    "file not listed in the manifest",
                ));
            }
        }
        if !dry_run {
            fsio::fsync_dir(&self.dir)
                .map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
        }
        Ok(())
    }

    /// Rebuilds the manifest from the chunk headers on disk and commits it (a dry run
    /// only reports what would be committed).
    pub fn rebuild_manifest(&self, dry_run: bool) -> Result<Rebuilt> {
        self.with_write_lock(|| {
            if !self.is_materialized() {
                let snap = self.snapshot();
                return Ok(Rebuilt {
                    chunks: 0,
                    rows: 0,
                    version: snap.version,
                    corrupt: Vec::new(),
                });
            }
            let (m, corrupt) =
                rebuild_manifest(&self.dir, &self.rel_dir, &self.opts, Some(&self.meta))?;
            let chunks = m.entries.len();
            let rows = m.entries.iter().map(|e| e.rows).sum();
            let version = if dry_run {
                self.successor(&self.snapshot(), m).version
            } else {
                self.commit_maintenance(m)?
            };
            Ok(Rebuilt {
                chunks,
                rows,
                version,
                corrupt,
            })
        })
    }

    /// `m` made into the successor of `base`: the version is `base`'s (or `m`'s, if
    /// higher) plus one when the served chunks differ; the next generation never goes
    /// back (a generation is never reused); `base`'s obsolete entries whose files are
    /// still mapped somewhere stay listed, so they are unlinked rather than reported
    /// as unknown files.
    fn successor(&self, base: &Snapshot, mut m: Manifest) -> Manifest {
        let live = |entries: &[ChunkEntry]| -> BTreeSet<(i32, u64)> {
            entries
                .iter()
                .filter(|e| e.state == STATE_LIVE)
                .map(|e| (e.month, e.generation))
                .collect()
        };
        let changed = live(&m.entries) != live(&base.to_manifest().entries);
        m.version = base.version.max(m.version) + u64::from(changed);
        m.next_generation = base.next_generation.max(m.next_generation);
        m.retention_ms = base.retention_ms;
        m.irregular = base.irregular;
        m.wal_lsn = base.wal_lsn.max(m.wal_lsn);
        let listed: HashSet<(i32, u64)> =
            m.entries.iter().map(|e| (e.month, e.generation)).collect();
        for e in base.obsolete.iter() {
            let exists = entry_file_exists(&self.dir, e);
            if exists && !listed.contains(&(e.month, e.generation)) {
                m.entries.push(e.clone());
            }
        }
        m
    }

    /// Commits `m` (made the successor of the current state) as the series' manifest
    /// and installs it. Like the write path: temp, fsync, rename, then the directory
    /// fsync; if that fails the previous manifest is put back, so the error returned
    /// stays true. The caller holds the writer lock. Returns the committed version.
    fn commit_maintenance(&self, m: Manifest) -> Result<u64> {
        let base = self.snapshot();
        let manifest = self.successor(&base, m);
        let version = manifest.version;
        match self.publish_manifest(&manifest) {
            Ok(()) => {
                self.install(snapshot_from_manifest(self, manifest));
                Ok(version)
            }
            Err((e, OnDisk::Next)) => {
                self.install(snapshot_from_manifest(self, manifest));
                Err(e)
            }
            Err((e, OnDisk::Previous { .. })) => Err(e),
        }
    }
}

/// Why a verified chunk still cannot be served: rows outside its month, ts not
/// strictly ascending, or overlapping the previous chunk of the month.
fn misplaced(
    part: Partitioning,
    c: &MappedChunk,
    month: i32,
    prev_last: Option<i64>,
) -> Option<String> {
    if c.header.first_ts < part.start_ts(month) || c.header.last_ts > part.end_ts(month) {
        return Some("rows fall outside the chunk's month".into());
    }
    if !c.keys_ascend() {
        return Some("keys (ts, and seq for ticks) are not strictly ascending".into());
    }
    if prev_last.is_some_and(|p| c.header.first_ts <= p) {
        return Some("overlaps the previous chunk of its month".into());
    }
    None
}

//! Named snapshots: the states of chosen series kept together under one name, so a
//! backtest can read again exactly what it read before (docs/research.md).
//!
//! A series state ([`Snapshot`]) is already immutable: it lists the chunk handles it
//! reads, and a superseded chunk's files go only when the last state listing it is
//! dropped. A named snapshot is a set of such states held by the store, plus a file
//! `<root>/snapshots/<name>.snap` that makes them durable:
//!
//! * the states are taken under the log's install gate (`Wal::gate`), so a
//!   many-series write is in all of them or in none;
//! * the file lists each series' live chunk files (manifest entries) and carries the
//!   rows the log holds in memory as in-memory chunk images, checksummed as a whole;
//!   it is written to a temp file, fsynced and renamed (directory fsynced) before the
//!   create is acknowledged;
//! * on open, the files a snapshot names are pinned: the recovery sweep keeps them
//!   although the series' manifest lists them obsolete, and the snapshot's states are
//!   rebuilt (sharing the handles of the chunks still live) before the log is replayed.
//!
//! Deleting a snapshot removes its file, then drops its states: the files only it held
//! are unlinked when the last reader lets go, as after any rewrite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::chunk::{ChunkRef, MappedChunk};
use super::error::{Result, StorageError};
use super::format::{ChunkEntry, Manifest, STATE_LIVE};
use super::fsio;
use super::mmap::MappedFile;
use super::series::Series;
use super::snapshot::{Snapshot, Unfolded, month_lists};
use crate::record::{Name, SeriesKey};
use crate::sync::{LockExt, RwLockExt};

/// Directory of the snapshot files, under the store root.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Suffix of a snapshot file.
const SUFFIX: &str = ".snap";
/// First bytes of a snapshot file.
const MAGIC: &[u8; 8] = b"FASTKSNP";
/// Layout version of a snapshot file.
const FILE_VERSION: u32 = 1;
/// Most snapshots a store keeps at once.
pub const MAX_SNAPSHOTS: usize = 1024;
/// Most bytes of a snapshot's note.
pub const MAX_NOTE_BYTES: usize = 1024;

/// One series as a snapshot holds it.
#[derive(Debug, Clone)]
pub struct Held {
    /// The live series (its directory and handles); never deleted while held.
    pub series: Arc<Series>,
    /// The state pinned.
    pub state: Arc<Snapshot>,
}

/// A named snapshot.
#[derive(Debug)]
pub struct NamedSnapshot {
    pub name: String,
    pub created_ts: i64,
    pub note: String,
    pub series: BTreeMap<SeriesKey, Held>,
}

impl NamedSnapshot {
    /// Bytes of chunk files and sidecars the snapshot reads (shared ones included).
    pub fn bytes(&self) -> u64 {
        self.series.values().map(|h| h.state.bytes()).sum()
    }

    /// The snapshot file's bytes, as written on disk (what a publisher ships).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Each series held, with a manifest of the chunk files its state reads (rows in
    /// memory travel inside the snapshot file).
    pub fn file_manifests(&self) -> impl Iterator<Item = (&Held, Manifest)> {
        self.series.values().map(|h| (h, files_manifest(&h.state)))
    }
}

/// The chunk files of one series directory that snapshots need: the open's sweep
/// keeps them whatever the manifest says.
#[derive(Debug, Default)]
pub struct Pinned {
    /// Chunk files by (month, generation).
    pub files: HashSet<(i32, u64)>,
    /// Pack files by generation.
    pub packs: HashSet<u64>,
}

/// Pins by series directory (relative to the root).
pub type Pins = HashMap<String, Pinned>;

/// A snapshot file read back, before its series are attached.
#[derive(Debug)]
pub struct Decoded {
    pub(super) name: String,
    pub(super) created_ts: i64,
    pub(super) note: String,
    pub(super) series: Vec<DecodedSeries>,
}

#[derive(Debug)]
pub(super) struct DecodedSeries {
    pub(super) rel_dir: String,
    pub(super) manifest: Manifest,
    pub(super) memory: Vec<Vec<u8>>,
}

/// Handles of chunks no series serves, shared by the snapshots and kept versions that
/// name them at open (two handles of one file would unlink it when the first goes).
pub(super) type Extra = HashMap<(String, i32, u64), Arc<ChunkRef>>;

impl DecodedSeries {
    /// The files this series record names, added to `pins`.
    pub(super) fn pin(&self, pins: &mut Pins) {
        let p = pins.entry(self.rel_dir.clone()).or_default();
        for e in &self.manifest.entries {
            if e.pack.is_packed() {
                p.packs.insert(e.pack.generation);
            } else {
                p.files.insert((e.month, e.generation));
            }
        }
    }
}

/// The store's snapshots.
#[derive(Debug)]
pub struct Named {
    dir: PathBuf,
    map: RwLock<BTreeMap<String, Arc<NamedSnapshot>>>,
    /// Serializes creates, deletes and series deletes (a series delete checks no
    /// snapshot holds it, and no create may take it meanwhile).
    pub(super) change: Mutex<()>,
}

impl Named {
    /// Reads the snapshot files of the store at `root` (removing temp files of
    /// interrupted creates) and the pins they make. A file that fails its checks is
    /// renamed `<name>.snap.damaged` and reported; its files are not pinned.
    pub fn open(root: &Path) -> Result<(Named, Vec<Decoded>, Pins)> {
        let dir = root.join(SNAPSHOTS_DIR);
        let io = |e| StorageError::io(SNAPSHOTS_DIR, e);
        let mut decoded = Vec::new();
        if dir.is_dir() {
            let mut changed = false;
            let mut names: Vec<String> = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(io)? {
                let name = entry.map_err(io)?.file_name().to_string_lossy().to_string();
                if name.starts_with(fsio::TEMP_PREFIX) {
                    std::fs::remove_file(dir.join(&name)).map_err(io)?;
                    changed = true;
                } else if name.ends_with(SUFFIX) {
                    names.push(name);
                }
            }
            names.sort();
            for file in names {
                let path = dir.join(&file);
                let bytes = std::fs::read(&path).map_err(io)?;
                match decode(&bytes) {
                    Ok(d) if format!("{}{SUFFIX}", d.name) == file => decoded.push(d),
                    outcome => {
                        let why = outcome.map_or_else(|e| e, |_| "names another snapshot".into());
                        tracing::error!(file = %file, reason = %why,
                            "snapshot file damaged: renamed .damaged, its files are not kept");
                        fsio::rename(&path, &dir.join(format!("{file}.damaged"))).map_err(io)?;
                        changed = true;
                    }
                }
            }
            if changed {
                fsio::fsync_dir(&dir).map_err(io)?;
            }
        }
        let mut pins = Pins::new();
        for d in &decoded {
            for s in &d.series {
                s.pin(&mut pins);
            }
        }
        let named = Named {
            dir,
            map: RwLock::new(BTreeMap::new()),
            change: Mutex::new(()),
        };
        Ok((named, decoded, pins))
    }

    /// Rebuilds the states of `decoded` over the series just opened (`find` by key),
    /// before the log is replayed: each state shares the handle of every chunk still
    /// live in its series, and holds its own (obsolete) handle of every other one.
    pub fn attach(
        &self,
        decoded: Vec<Decoded>,
        find: impl Fn(&SeriesKey) -> Option<Arc<Series>>,
        extra: &mut Extra,
    ) {
        let mut map = self.map.write_now();
        for d in decoded {
            let mut series = BTreeMap::new();
            for s in d.series {
                let key = s.manifest.meta.key.clone();
                let Some(live) = find(&key).filter(|l| *l.rel_dir == *s.rel_dir) else {
                    tracing::error!(snapshot = %d.name, series = %key,
                        "a series the snapshot holds did not open: the snapshot reads without it");
                    continue;
                };
                match state_of(&live, s, extra, false) {
                    Ok(state) => {
                        series.insert(
                            key,
                            Held {
                                series: live,
                                state: Arc::new(state),
                            },
                        );
                    }
                    Err(e) => tracing::error!(snapshot = %d.name, series = %key, error = %e,
                        "a series of the snapshot could not be rebuilt: the snapshot reads without it"),
                }
            }
            let snap = NamedSnapshot {
                name: d.name.clone(),
                created_ts: d.created_ts,
                note: d.note,
                series,
            };
            map.insert(d.name, Arc::new(snap));
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<NamedSnapshot>> {
        self.map.read_now().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<NamedSnapshot>> {
        self.map.read_now().values().cloned().collect()
    }

    /// The first snapshot (by name) that holds `key`, if any.
    pub fn holder(&self, key: &SeriesKey) -> Option<String> {
        self.map
            .read_now()
            .values()
            .find(|s| s.series.contains_key(key))
            .map(|s| s.name.clone())
    }

    /// Checks a new snapshot's name and note; the caller holds `change`.
    pub fn check_new(&self, name: &str, note: &str) -> Result<()> {
        check_name(name)?;
        if note.len() > MAX_NOTE_BYTES {
            return Err(StorageError::InvalidArgument(format!(
                "a snapshot note is at most {MAX_NOTE_BYTES} bytes, this one is {}",
                note.len()
            )));
        }
        let map = self.map.read_now();
        if map.contains_key(name) {
            return Err(StorageError::Conflict(format!(
                "snapshot {name} already exists: pick another name, or delete it first"
            )));
        }
        if map.len() >= MAX_SNAPSHOTS {
            return Err(StorageError::PayloadTooLarge(format!(
                "the store keeps at most {MAX_SNAPSHOTS} snapshots: delete one first"
            )));
        }
        Ok(())
    }

    /// Makes `snap` durable and serves it; the caller holds `change` and checked the
    /// name ([`Named::check_new`]).
    pub fn add(&self, snap: NamedSnapshot) -> Result<Arc<NamedSnapshot>> {
        let bytes = encode(&snap);
        let io = |e| StorageError::io(SNAPSHOTS_DIR, e);
        fsio::create_dir_durable(&self.dir).map_err(io)?;
        fsio::write_atomic(&self.dir, &format!("{}{SUFFIX}", snap.name), &[&bytes]).map_err(io)?;
        let snap = Arc::new(snap);
        let prev = self
            .map
            .write_now()
            .insert(snap.name.clone(), Arc::clone(&snap));
        assert!(prev.is_none(), "a snapshot name is added once");
        Ok(snap)
    }

    /// The store is closing: the files of every snapshot's chunks stay on disk when
    /// their handles go (the next open pins them again from the snapshot files).
    pub(super) fn close(&self) {
        for snap in self.map.read_now().values() {
            for held in snap.series.values() {
                for c in held.state.chunks().filter(|c| !c.is_memory()) {
                    c.keep_files();
                }
            }
        }
    }

    /// Deletes snapshot `name`: its file first (durably), then its states.
    pub fn remove(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let _change = self.change.locked();
        if !self.map.read_now().contains_key(name) {
            return Err(StorageError::NotFound(format!(
                "snapshot {name} does not exist"
            )));
        }
        let file = format!("{name}{SUFFIX}");
        let io = |e| StorageError::io(format!("{SNAPSHOTS_DIR}/{file}"), e);
        std::fs::remove_file(self.dir.join(&file)).map_err(io)?;
        fsio::fsync_dir(&self.dir).map_err(io)?;
        let gone = self.map.write_now().remove(name);
        drop(gone);
        Ok(())
    }
}

/// A snapshot name follows the symbol rule; a name that does not is refused before
/// any lookup (and repeated only in part: [`crate::record::echo`]).
pub(super) fn check_name(name: &str) -> Result<()> {
    Name::parse("snapshot", name)
        .map(|_| ())
        .map_err(|e| StorageError::InvalidArgument(e.to_string()))
}

/// The state of `live` that snapshot series `s` describes. With `check_files`, a file
/// the series does not serve must exist (a kept version whose files went, `Corrupted`).
pub(super) fn state_of(
    live: &Arc<Series>,
    s: DecodedSeries,
    extra: &mut Extra,
    check_files: bool,
) -> Result<Snapshot> {
    let current = live.snapshot();
    let serving: HashMap<(i32, u64), &Arc<ChunkRef>> = current
        .chunks()
        .chain(current.superseded.iter())
        .filter(|c| !c.is_memory())
        .map(|c| ((c.entry.month, c.entry.generation), c))
        .collect();
    let mut months: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
    for e in &s.manifest.entries {
        let at = (e.month, e.generation);
        let handle = match serving.get(&at) {
            Some(c) if c.entry == *e => Arc::clone(c),
            _ if check_files
                && !extra.contains_key(&(s.rel_dir.clone(), e.month, e.generation))
                && !live.file_exists(e) =>
            {
                return Err(StorageError::corrupted(
                    s.rel_dir.clone(),
                    "a file of the kept state is gone",
                ));
            }
            _ => Arc::clone(
                extra
                    .entry((s.rel_dir.clone(), e.month, e.generation))
                    .or_insert_with(|| {
                        let c = live.chunk_ref(e.clone());
                        c.mark_obsolete();
                        c
                    }),
            ),
        };
        months.entry(e.month).or_default().push(handle);
    }
    let (mut rows, mut bytes) = (0u64, 0u64);
    for image in s.memory {
        let rel = format!("{}/{SNAPSHOTS_DIR}", s.rel_dir);
        let chunk = MappedChunk::verify(MappedFile::from_parts(&[&image]), &rel, None, None)?;
        if chunk.header.meta.key != s.manifest.meta.key {
            return Err(StorageError::corrupted(
                rel,
                "a chunk image of another series",
            ));
        }
        let c = ChunkRef::in_memory(chunk, Arc::clone(&live.dir), Arc::clone(&live.rel_dir));
        rows += c.entry.rows;
        bytes += c.entry.file_len;
        months.entry(c.entry.month).or_default().push(Arc::new(c));
    }
    for list in months.values() {
        if list
            .windows(2)
            .any(|w| w[0].entry.last_ts >= w[1].entry.first_ts)
        {
            return Err(StorageError::corrupted(
                s.rel_dir,
                "a snapshot's chunks overlap within a month",
            ));
        }
    }
    let m = s.manifest;
    Ok(Snapshot {
        meta: Arc::clone(&live.meta),
        version: m.version,
        next_generation: m.next_generation,
        retention_ms: m.retention_ms,
        irregular: m.irregular,
        live: month_lists(months),
        obsolete: Arc::default(),
        wal_lsn: m.wal_lsn,
        unfolded: (rows > 0).then(|| Unfolded {
            first_lsn: m.wal_lsn,
            since: std::time::Instant::now(),
            rows,
            bytes,
        }),
        superseded: Vec::new(),
    })
}

// ------------------------------------------------------------------ the file

pub(super) fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u64).to_le_bytes());
    b.extend_from_slice(v);
}

/// The snapshot file: `FASTKSNP`, u32 layout version, i64 `created_ts`, the name and
/// the note (u64 length, bytes), u32 series count, then per series its directory,
/// a manifest of its live chunk files and u32 count of in-memory chunk images (each
/// u64 length, bytes laid out as a chunk file); last the XXH3-64 of everything before
/// it. Little-endian throughout (docs/storage-format.md, "Snapshot files").
fn encode(snap: &NamedSnapshot) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    put_u32(&mut b, FILE_VERSION);
    b.extend_from_slice(&snap.created_ts.to_le_bytes());
    put_bytes(&mut b, snap.name.as_bytes());
    put_bytes(&mut b, snap.note.as_bytes());
    put_u32(
        &mut b,
        u32::try_from(snap.series.len()).expect("a snapshot holds < 2^32 series"),
    );
    for held in snap.series.values() {
        put_bytes(&mut b, held.series.rel_dir.as_bytes());
        put_state(&mut b, &held.state);
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

/// A state as a snapshot or versions file keeps it: a manifest of its chunk files, then
/// u32 count of in-memory chunk images, each u64 length and bytes.
pub(super) fn put_state(b: &mut Vec<u8>, st: &Snapshot) {
    put_bytes(b, &files_manifest(st).encode());
    let memory: Vec<Arc<MappedChunk>> = st
        .chunks()
        .filter(|c| c.is_memory())
        .map(|c| c.map().expect("a chunk in memory maps without i/o"))
        .collect();
    put_u32(
        b,
        u32::try_from(memory.len()).expect("< 2^32 chunks in memory"),
    );
    for m in memory {
        put_bytes(b, m.file.bytes());
    }
}

/// A manifest listing the chunk files `st` reads, every one live.
fn files_manifest(st: &Snapshot) -> Manifest {
    let files: Vec<ChunkEntry> = st
        .chunks()
        .filter(|c| !c.is_memory())
        .map(|c| ChunkEntry {
            state: STATE_LIVE,
            ..c.entry.clone()
        })
        .collect();
    Manifest {
        meta: (*st.meta).clone(),
        version: st.version,
        next_generation: st.next_generation,
        retention_ms: st.retention_ms,
        irregular: st.irregular,
        wal_lsn: st.wal_lsn,
        entries: files,
    }
}

/// Reads back what [`put_state`] wrote, for the series at `rel_dir`.
pub(super) fn read_state(
    r: &mut Reader<'_>,
    rel_dir: String,
) -> std::result::Result<DecodedSeries, String> {
    let manifest = Manifest::decode(r.bytes()?)?;
    let k = r.u32()? as usize;
    let mut memory = Vec::with_capacity(k.min(1 << 16));
    for _ in 0..k {
        memory.push(r.bytes()?.to_vec());
    }
    Ok(DecodedSeries {
        rel_dir,
        manifest,
        memory,
    })
}

/// Reads a little-endian snapshot file, checking its checksum first.
pub(super) struct Reader<'a> {
    pub(super) b: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(super) fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "length out of range")?;
        self.take(n)
    }
    pub(super) fn text(&mut self) -> std::result::Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "text is not UTF-8".into())
    }
}

/// A reader over the body of a file laid out as the snapshot and versions files are:
/// `magic`, a u32 layout version that must be `version`, the body, and the XXH3-64 of
/// everything before it (checked first). `what` names the file in the refusals.
pub(super) fn checked<'a>(
    all: &'a [u8],
    magic: &[u8; 8],
    version: u32,
    what: &str,
) -> std::result::Result<Reader<'a>, String> {
    if all.len() < magic.len() + 8 || &all[..magic.len()] != magic {
        return Err(format!("not a {what}"));
    }
    let (body, sum) = all.split_at(all.len() - 8);
    if xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader {
        b: body,
        at: magic.len(),
    };
    let found = r.u32()?;
    if found != version {
        return Err(format!("unknown {what} version {found}"));
    }
    Ok(r)
}

pub(super) fn decode(all: &[u8]) -> std::result::Result<Decoded, String> {
    let mut r = checked(all, MAGIC, FILE_VERSION, "snapshot file")?;
    let created_ts = r.u64()? as i64;
    let name = r.text()?;
    let note = r.text()?;
    let n = r.u32()? as usize;
    let mut series = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let rel_dir = r.text()?;
        series.push(read_state(&mut r, rel_dir)?);
    }
    if r.at != r.b.len() {
        return Err("trailing bytes".into());
    }
    Ok(Decoded {
        name,
        created_ts,
        note,
        series,
    })
}

/// Most series one snapshot may list by key (a snapshot of everything is `None`).
pub const MAX_LISTED_SERIES: usize = 1_000_000;

impl super::Store {
    /// Creates snapshot `name` of the series `keys` (`None`: every series), durable
    /// before it returns. Every state is taken under the log's install gate, so a
    /// many-series write is in all of them or none. Refused: a bad or taken name
    /// (`InvalidArgument`, `Conflict`), an unknown series (`NotFound` naming it).
    pub fn create_snapshot(
        &self,
        name: &str,
        keys: Option<&[SeriesKey]>,
        note: &str,
    ) -> Result<Arc<NamedSnapshot>> {
        let _change = self.named.change.locked();
        self.named.check_new(name, note)?;
        let series: Vec<Arc<Series>> = match keys {
            None => self.list(),
            Some(keys) if keys.len() > MAX_LISTED_SERIES => {
                return Err(StorageError::PayloadTooLarge(format!(
                    "a snapshot lists at most {MAX_LISTED_SERIES} series (\"*\" takes them all)"
                )));
            }
            Some(keys) => self.get_many(keys).into_iter().collect::<Result<_>>()?,
        };
        let held: BTreeMap<SeriesKey, Held> = {
            let _gate = self.wal.gate.write_now();
            series
                .into_iter()
                .map(|s| {
                    let state = s.snapshot();
                    (s.meta.key.clone(), Held { series: s, state })
                })
                .collect()
        };
        self.named.add(NamedSnapshot {
            name: name.to_string(),
            created_ts: super::now_ms(),
            note: note.to_string(),
            series: held,
        })
    }

    /// Every snapshot, by name.
    pub fn snapshots(&self) -> Vec<Arc<NamedSnapshot>> {
        self.named.list()
    }

    /// Snapshot `name`, or `NotFound`.
    pub fn snapshot_named(&self, name: &str) -> Result<Arc<NamedSnapshot>> {
        check_name(name)?;
        self.named
            .get(name)
            .ok_or_else(|| StorageError::NotFound(format!("snapshot {name} does not exist")))
    }

    /// Deletes snapshot `name` (`NotFound` if there is none).
    pub fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.named.remove(name)
    }

    /// Series `key` as snapshot `name` holds it: a read-only view whose reads answer
    /// the pinned state. `NotFound` names the snapshot or the series.
    pub fn series_at(&self, name: &str, key: &SeriesKey) -> Result<Arc<Series>> {
        let snap = self.snapshot_named(name)?;
        let held = snap.series.get(key).ok_or_else(|| {
            StorageError::NotFound(format!(
                "snapshot {name} does not hold {} series {key}",
                key.kind().as_str()
            ))
        })?;
        Ok(Arc::new(held.series.view(Arc::clone(&held.state))))
    }

    /// Bytes of chunk files and sidecars that only snapshots keep: read by some
    /// snapshot, served by no series now (each file counted once).
    pub fn snapshot_only_bytes(&self) -> u64 {
        let mut seen: HashSet<(usize, i32, u64)> = HashSet::new();
        let mut total = 0;
        for snap in self.named.list() {
            for held in snap.series.values() {
                let now = held.series.snapshot();
                let serving: HashSet<(i32, u64)> = now
                    .chunks()
                    .chain(now.superseded.iter())
                    .map(|c| (c.entry.month, c.entry.generation))
                    .collect();
                let id = Arc::as_ptr(&held.series) as usize;
                for c in held.state.chunks().filter(|c| !c.is_memory()) {
                    let at = (c.entry.month, c.entry.generation);
                    if !serving.contains(&at) && seen.insert((id, at.0, at.1)) {
                        total += c.entry.file_len + c.entry.zonemap.len + c.entry.vindex.len;
                    }
                }
            }
        }
        total
    }
}

//! The store's catalog (`CATALOG`): one append-only file that registers series, so a
//! registration writes no directory and no file per series.
//!
//! A series is made by one catalog record; its directory and `MANIFEST` are made
//! only by its first commit to files (a fold of its logged rows, a bulk write, a
//! settings change; `Series::materialize`). Until then its state is the catalog's
//! entry plus the rows the log holds for it. On open:
//! - a series directory always wins: the series is what its manifest says, and a
//!   catalog entry of the same key only means it was registered here once;
//! - a key whose last record registers it and that has no directory is an empty
//!   series with the recorded settings and log position (`wal_lsn`: log records of
//!   an earlier series under the key must not be replayed into it).
//!
//! One record is one write and one fsync, and holds any number of entries, so a
//! batch registration is all or nothing across a crash. A record that a crash cut
//! short is the file's tail (appends are serialized, and a failed append is cut
//! back before anything else is appended): it is dropped on open, as it was never
//! acknowledged. A record that fails its checksum with valid bytes after it is
//! damage, and the open refuses the store, naming the file (see the runbook in
//! docs/operations.md).
//!
//! Garbage (dropped keys, entries of series that have a directory now) is shed on
//! open once it outweighs the live entries: the file is rewritten whole (temp,
//! fsync, rename, directory fsync).
//!
//! **Resident rows.** A small series with no directory keeps its rows here too: the
//! fold writes the rows of many such series as one state record
//! ([`Catalog::put_states`]: per series its settings, version, log position and its
//! rows, month by month, column-major), so a factor library of 100,000 series of a
//! few rows each is one file, not a directory, a manifest and a chunk per series
//! (`storage::resident`, docs/storage-format.md, "Series catalog").

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Maps and sets by series key: hashed with foldhash (an open hashes 100,000 keys
/// several times; SipHash was a few percent of a start).
pub type KeyMap<V> = std::collections::HashMap<SeriesKey, V, foldhash::fast::RandomState>;
type KeySet = std::collections::HashSet<SeriesKey, foldhash::fast::RandomState>;

use super::format::Manifest;
use super::fsio::{self, failpoints};
use super::{Result, StorageError};
use crate::record::{SeriesKey, SeriesMeta, ValueType};
use crate::sync::LockExt;

/// Name of the catalog file in the store root.
pub const CATALOG_FILE: &str = "CATALOG";

const MAGIC: &[u8; 8] = b"FASTKCAT";
/// The version written (store format 3, `storage::upgrade`). Version 1 (store format
/// 2) has the same records; its header is rewritten as version 2 by the upgrade, so a
/// binary that reads only version 1 refuses the file rather than open a store without
/// the rows its state records hold.
const VERSION: u32 = 2;
const VERSION_MIN: u32 = 1;

// File header: magic, version, reserved.
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const HEADER_RESERVED_OFFSET: usize = VERSION_OFFSET + 4;
/// Bytes before the first record.
pub const HEADER_LEN: usize = HEADER_RESERVED_OFFSET + 4;

// Record: body length (u32), body, xxh3-64 of the body.
const RECORD_LEN_BYTES: usize = 4;
const RECORD_SUM_BYTES: usize = 8;
/// The largest record body: a registration of 1,000,000 series of the longest names
/// fits (`ENTRY_MAX` bytes each); anything longer is damage, not a record.
pub const RECORD_BODY_MAX: usize = 1_000_000 * ENTRY_MAX + BODY_FIXED;

// Record body: op (u8), reserved (3 bytes), entry count (u32), then the entries.
const BODY_OP_OFFSET: usize = 0;
const BODY_COUNT_OFFSET: usize = BODY_OP_OFFSET + 4;
const BODY_FIXED: usize = BODY_COUNT_OFFSET + 4;

// Entry: value type, irregular, key part count, reserved, then five integers, then
// the key's parts (each a length byte and its bytes).
const ENTRY_VALUE_TYPE: usize = 0;
const ENTRY_IRREGULAR: usize = ENTRY_VALUE_TYPE + 1;
const ENTRY_PARTS: usize = ENTRY_IRREGULAR + 1;
const ENTRY_TIMEFRAME_MS: usize = ENTRY_PARTS + 2;
const ENTRY_PRICE_SCALE: usize = ENTRY_TIMEFRAME_MS + 8;
const ENTRY_VOLUME_SCALE: usize = ENTRY_PRICE_SCALE + 8;
const ENTRY_RETENTION_MS: usize = ENTRY_VOLUME_SCALE + 8;
const ENTRY_WAL_LSN: usize = ENTRY_RETENTION_MS + 8;
const ENTRY_FIXED: usize = ENTRY_WAL_LSN + 8;
/// Key parts: the kind and at most four names of at most 64 bytes.
const KEY_PARTS_MAX: usize = 5;
const KEY_PART_MAX: usize = 64;
const ENTRY_MAX: usize = ENTRY_FIXED + KEY_PARTS_MAX * (1 + KEY_PART_MAX);

/// Most rows one series may keep in the catalog (`storage.resident_rows_max` is at
/// most this): a bound for the decoder too.
pub const RESIDENT_ROWS_MAX: u64 = 65_536;
/// A state record is cut at about this many bytes of body (the fold writes several).
pub const STATE_RECORD_TARGET: usize = 16 << 20;
// A state entry, after its key: version, next generation, month count; then per month
// its partition id, row count, and the columns.
const STATE_FIXED: usize = 8 + 8 + 4;
const STATE_MONTH_FIXED: usize = 4 + 4;

const _: () = assert!(HEADER_LEN == 16);
const _: () = assert!(BODY_FIXED == 8);
const _: () = assert!(ENTRY_FIXED == 44);

/// What a record does to the keys of its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Registers each entry's series (replacing an earlier entry of the key).
    Put = 1,
    /// The key's series is deleted.
    Drop = 2,
    /// Each entry's series with its rows (`Resident`): replaces an earlier entry.
    State = 3,
}

/// One partition of a series' resident rows, column-major (column 0 the timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentMonth {
    pub month: i32,
    pub cols: Vec<Vec<i64>>,
}

impl ResidentMonth {
    /// What building a series from these rows relies on: one column per column of
    /// `meta`'s kind, all of one length and not empty, keys increasing, every
    /// timestamp inside this partition. Checked once when the catalog is read
    /// (`seriesmap::Seed::check`), so that the build cannot fail; asserted again by
    /// the build in debug builds.
    pub fn check(&self, meta: &SeriesMeta) -> Result<()> {
        let parts = meta.partitioning();
        let (lo, hi) = parts.ts_bounds();
        let key_cols: Vec<&[i64]> = self.cols.iter().take(2).map(Vec::as_slice).collect();
        let sound = self.cols.len() == meta.key.kind().ncols()
            && self.cols.iter().all(|c| c.len() == self.cols[0].len())
            && !self.cols[0].is_empty()
            && crate::record::keys_increase(meta.layout().key, &key_cols)
            && self.cols[0]
                .iter()
                .all(|&ts| (lo..=hi).contains(&ts) && parts.of(ts) == self.month);
        if sound {
            Ok(())
        } else {
            Err(StorageError::corrupted(
                CATALOG_FILE,
                format!(
                    "the rows of {} in partition {} are not sorted or not in it",
                    meta.key, self.month
                ),
            ))
        }
    }
}

/// What the fold records of one small series: its state (settings, version,
/// `wal_lsn`; no chunk entries) and every row it has.
#[derive(Debug, Clone)]
pub struct ResidentState {
    pub manifest: Manifest,
    pub months: Vec<ResidentMonth>,
}

impl ResidentState {
    /// Rows over every month.
    pub fn rows(&self) -> u64 {
        self.months
            .iter()
            .map(|m| m.cols.first().map_or(0, Vec::len) as u64)
            .sum()
    }
}

/// The catalog of a store: appended to by registrations, settings changes and
/// deletes of series it lists.
#[derive(Debug)]
pub struct Catalog {
    root: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Open for appends once the file exists.
    file: Option<File>,
    len: u64,
    /// Keys whose last record registers them (whether or not they have a directory
    /// now): a delete of one must be recorded, or the next open brings it back.
    live: KeySet,
    /// An append failed and could not be cut back: the tail is unknown until the
    /// next open, so nothing more is appended.
    poisoned: bool,
    /// Entries the file holds (every record's: what the open read, and each append
    /// since): what a rewrite would shed.
    entries_read: u64,
    /// The rows of each key whose last record is a state record, as the open read
    /// them, until the store takes them ([`Catalog::take_resident`]).
    resident: KeyMap<Vec<ResidentMonth>>,
    /// The file's length after the open or the last rewrite: what the appends since
    /// are measured against ([`Catalog::compact_if_grown`]).
    base_len: u64,
    /// The header's version of the file as it is (0: no file yet; one is created at
    /// [`VERSION`]).
    version: u32,
}

/// What an open found in the catalog.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatalogOpen {
    /// Bytes of a record cut short by a crash, dropped.
    pub torn_tail_bytes: u64,
    /// The file was rewritten without its garbage (`Catalog::shed_garbage`).
    pub compacted: bool,
}

impl Catalog {
    /// Reads `CATALOG` under `root` (none: an empty catalog) and returns the
    /// manifests of every series it registers, in key order. The caller keeps those
    /// that have no directory and then calls [`Catalog::shed_garbage`] with them.
    pub fn open(root: &Path) -> Result<(Catalog, Vec<Manifest>, CatalogOpen)> {
        let path = root.join(CATALOG_FILE);
        let io = |e| StorageError::io(CATALOG_FILE, e);
        let mut report = CatalogOpen::default();
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let scan = if bytes.is_empty() {
            Scan::default()
        } else {
            scan(&bytes).map_err(|why| StorageError::corrupted(CATALOG_FILE, why))?
        };
        let mut len = bytes.len() as u64;
        if scan.valid_len < bytes.len() {
            report.torn_tail_bytes = (bytes.len() - scan.valid_len) as u64;
            tracing::warn!(
                bytes = report.torn_tail_bytes,
                "the catalog ends in a record a crash cut short; it was never acknowledged and is dropped"
            );
            let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
            f.set_len(scan.valid_len as u64).map_err(io)?;
            f.sync_all().map_err(io)?;
            len = scan.valid_len as u64;
        }
        let live: KeySet = scan.last.keys().cloned().collect();
        let resident = scan.rows;
        let mut listed: Vec<Manifest> = scan.last.into_values().collect();
        // Keys are unique; `SeriesKey`'s order is its parts' order.
        listed.sort_unstable_by(|a, b| a.meta.key.cmp(&b.meta.key));
        let catalog = Catalog {
            root: root.to_path_buf(),
            inner: Mutex::new(Inner {
                file: None,
                len,
                live,
                poisoned: false,
                entries_read: scan.entries,
                resident,
                base_len: len,
                version: scan.version,
            }),
        };
        Ok((catalog, listed, report))
    }

    /// The rows the open read for the series it lists (those whose last record is a
    /// state record), once: the store builds their in-memory chunks from them.
    pub fn take_resident(&self) -> KeyMap<Vec<ResidentMonth>> {
        std::mem::take(&mut self.inner.locked().resident)
    }

    /// Records the state and rows of small series with no directory, in records of
    /// about [`STATE_RECORD_TARGET`] bytes, each one write and one fsync (each series
    /// is in exactly one record, whole). Returns how many of `states` are recorded:
    /// all of them, or those before the record that failed (with its error).
    pub fn put_states(&self, states: &[ResidentState]) -> (usize, Result<()>) {
        let mut done = 0;
        while done < states.len() {
            let end = record_end(states, done);
            let batch = &states[done..end];
            let body = encode_states(batch);
            let mut inner = self.inner.locked();
            if let Err(e) = self.append(&mut inner, &body) {
                return (done, Err(e));
            }
            inner
                .live
                .extend(batch.iter().map(|s| s.manifest.meta.key.clone()));
            inner.entries_read += batch.len() as u64;
            drop(inner);
            done = end;
        }
        (done, Ok(()))
    }

    /// Rewrites the file with only `kept` (the series it lists that have no
    /// directory) once what it read on open is a quarter more than them: drops,
    /// entries of series that have a directory now, and entries a later one of the
    /// key replaced (a registration, then the state records of its folds: every open
    /// after them would decode both). Returns whether it did.
    pub fn shed_garbage(&self, kept: &[Manifest]) -> Result<bool> {
        let read = self.inner.locked().entries_read;
        let n = kept.len() as u64;
        if read <= n + n / 4 + 1024 {
            return Ok(false);
        }
        self.rewrite(kept)?;
        Ok(true)
    }

    /// Records `manifests` (empty series: registrations, or settings changes of a
    /// series without a directory) in one durable record.
    pub fn put(&self, manifests: &[&Manifest]) -> Result<()> {
        if manifests.is_empty() {
            return Ok(());
        }
        let body = encode_body(Op::Put, manifests.iter().map(|m| (&m.meta, Some(*m))));
        let mut inner = self.inner.locked();
        self.append(&mut inner, &body)?;
        inner
            .live
            .extend(manifests.iter().map(|m| m.meta.key.clone()));
        inner.entries_read += manifests.len() as u64;
        Ok(())
    }

    /// Records the delete of `meta`'s series if the catalog registers it (a series
    /// registered before the catalog existed has nothing here to undo).
    pub fn drop_series(&self, meta: &SeriesMeta) -> Result<()> {
        let mut inner = self.inner.locked();
        if !inner.live.contains(&meta.key) {
            return Ok(());
        }
        let body = encode_body(Op::Drop, std::iter::once((meta, None)));
        self.append(&mut inner, &body)?;
        inner.live.remove(&meta.key);
        inner.entries_read += 1;
        Ok(())
    }

    /// Whether the catalog registers `key` (its last record is a put).
    pub fn lists(&self, key: &SeriesKey) -> bool {
        self.inner.locked().live.contains(key)
    }

    fn append(&self, inner: &mut Inner, body: &[u8]) -> Result<()> {
        if inner.poisoned {
            return Err(StorageError::Unavailable(
                "the series catalog refused a change after a failed write; restart the server"
                    .into(),
            ));
        }
        assert!(
            body.len() <= RECORD_BODY_MAX,
            "a catalog record within its limit"
        );
        if inner.file.is_none() {
            inner.file = Some(self.create_or_open(inner.len)?);
            inner.len = inner.len.max(HEADER_LEN as u64);
            if inner.version == 0 {
                inner.version = VERSION;
            }
        }
        let path = self.root.join(CATALOG_FILE);
        let mut record = Vec::with_capacity(RECORD_LEN_BYTES + body.len() + RECORD_SUM_BYTES);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(body);
        record.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
        let file = inner.file.as_mut().expect("opened above");
        let written = (|| {
            failpoints::check(&path, failpoints::Op::Write)?;
            file.write_all(&record)?;
            failpoints::check(&path, failpoints::Op::Fsync)?;
            file.sync_data()
        })();
        match written {
            Ok(()) => {
                inner.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut back what may have reached the file, so the next record follows
                // the last good one; if that fails too, the tail is unknown until the
                // next open (which drops a torn tail).
                let cut = file.set_len(inner.len).and_then(|()| file.sync_data());
                if cut.is_err() {
                    inner.poisoned = true;
                }
                Err(StorageError::io(CATALOG_FILE, e))
            }
        }
    }

    /// Rewrites a version 1 file's header as [`VERSION`] (the records stay as they
    /// are): temp, fsync, rename, directory fsync. Nothing to do for a file at
    /// [`VERSION`] or no file (one is created at it). Part of the store's upgrade to
    /// format 3 (`storage::upgrade`).
    pub fn upgrade_header(&self) -> Result<()> {
        let mut inner = self.inner.locked();
        if inner.version == 0 || inner.version == VERSION {
            return Ok(());
        }
        let io = |e| StorageError::io(CATALOG_FILE, e);
        let mut bytes = std::fs::read(self.root.join(CATALOG_FILE)).map_err(io)?;
        assert_eq!(
            bytes.len() as u64,
            inner.len,
            "the catalog holds exactly the records read and appended"
        );
        bytes[VERSION_OFFSET..HEADER_RESERVED_OFFSET].copy_from_slice(&VERSION.to_le_bytes());
        fsio::write_atomic(&self.root, CATALOG_FILE, &[&bytes]).map_err(io)?;
        inner.file = None;
        inner.version = VERSION;
        Ok(())
    }

    /// Opens the file for appends, writing its header first if it has none yet.
    fn create_or_open(&self, len: u64) -> Result<File> {
        let io = |e| StorageError::io(CATALOG_FILE, e);
        if len >= HEADER_LEN as u64 {
            return OpenOptions::new()
                .append(true)
                .open(self.root.join(CATALOG_FILE))
                .map_err(io);
        }
        fsio::write_atomic(&self.root, CATALOG_FILE, &[&header()]).map_err(io)?;
        OpenOptions::new()
            .append(true)
            .open(self.root.join(CATALOG_FILE))
            .map_err(io)
    }

    /// Rewrites the file without its garbage once the appends since the open (or
    /// the last rewrite) have made it more than twice as long and `slack` bytes
    /// longer: the fold appends a series' whole state each time it folds it, so a
    /// running store sheds what later records replaced here, not only on open. The
    /// file is read back (it is the durable state) under the lock that orders appends.
    /// Returns whether it rewrote.
    pub fn compact_if_grown(&self, slack: u64) -> Result<bool> {
        let mut inner = self.inner.locked();
        let base = inner.base_len.max(HEADER_LEN as u64);
        if inner.poisoned || inner.len <= (2 * base).max(base + slack) {
            return Ok(false);
        }
        self.compact_locked(&mut inner)?;
        Ok(true)
    }

    /// Rewrites the file without what later records replaced once it holds a quarter
    /// more entries than the series it registers (the test [`Catalog::shed_garbage`]
    /// makes on open): a clean stop calls it after its fold into the catalog, so the
    /// next start does not spend its time on the rewrite.
    pub fn compact_if_garbage(&self) -> Result<bool> {
        let mut inner = self.inner.locked();
        let live = inner.live.len() as u64;
        if inner.poisoned || inner.entries_read <= live + live / 4 + 1024 {
            return Ok(false);
        }
        self.compact_locked(&mut inner)?;
        Ok(true)
    }

    /// The rewrite of [`Catalog::compact_if_grown`] and [`Catalog::compact_if_garbage`]:
    /// the file read and scanned again, each key's last entry and rows kept.
    fn compact_locked(&self, inner: &mut Inner) -> Result<()> {
        let bytes = std::fs::read(self.root.join(CATALOG_FILE))
            .map_err(|e| StorageError::io(CATALOG_FILE, e))?;
        let scan = scan(&bytes).map_err(|why| StorageError::corrupted(CATALOG_FILE, why))?;
        assert_eq!(
            scan.valid_len as u64, inner.len,
            "the catalog holds exactly the records appended"
        );
        let mut kept: Vec<Manifest> = scan.last.into_values().collect();
        kept.sort_unstable_by(|a, b| a.meta.key.cmp(&b.meta.key));
        self.rewrite_with(inner, &kept, &scan.rows)
    }

    /// Replaces the file by one record of `kept` (temp, fsync, rename, fsync), and
    /// state records of those of them that have resident rows.
    fn rewrite(&self, kept: &[Manifest]) -> Result<()> {
        let mut inner = self.inner.locked();
        let rows = std::mem::take(&mut inner.resident);
        let r = self.rewrite_with(&mut inner, kept, &rows);
        inner.resident = rows;
        r
    }

    fn rewrite_with(
        &self,
        inner: &mut Inner,
        kept: &[Manifest],
        rows: &KeyMap<Vec<ResidentMonth>>,
    ) -> Result<()> {
        let mut bytes = header().to_vec();
        let mut record = |body: &[u8]| {
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(body);
            bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
        };
        let (with_rows, empty): (Vec<&Manifest>, Vec<&Manifest>) =
            kept.iter().partition(|m| rows.contains_key(&m.meta.key));
        if !empty.is_empty() {
            record(&encode_body(
                Op::Put,
                empty.iter().map(|m| (&m.meta, Some(*m))),
            ));
        }
        let states: Vec<ResidentState> = with_rows
            .iter()
            .map(|m| ResidentState {
                manifest: (*m).clone(),
                months: rows[&m.meta.key].clone(),
            })
            .collect();
        let mut at = 0;
        while at < states.len() {
            let end = record_end(&states, at);
            record(&encode_states(&states[at..end]));
            at = end;
        }
        fsio::write_atomic(&self.root, CATALOG_FILE, &[&bytes])
            .map_err(|e| StorageError::io(CATALOG_FILE, e))?;
        inner.file = None;
        inner.len = bytes.len() as u64;
        inner.base_len = inner.len;
        inner.version = VERSION;
        inner.live = kept.iter().map(|m| m.meta.key.clone()).collect();
        inner.entries_read = kept.len() as u64;
        Ok(())
    }
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(MAGIC);
    h[VERSION_OFFSET..HEADER_RESERVED_OFFSET].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Where the state record that starts at `states[start]` ends: at least one state,
/// and about [`STATE_RECORD_TARGET`] bytes of body.
fn record_end(states: &[ResidentState], start: usize) -> usize {
    let mut size = BODY_FIXED;
    let mut end = start;
    while end < states.len() && (end == start || size < STATE_RECORD_TARGET) {
        size += state_entry_len(&states[end]);
        end += 1;
    }
    end
}

/// Bytes of one state entry (its fixed part, key, state and rows).
fn state_entry_len(s: &ResidentState) -> usize {
    let key: usize = s
        .manifest
        .meta
        .key
        .parts()
        .iter()
        .map(|p| 1 + p.len())
        .sum();
    let rows: usize = s
        .months
        .iter()
        .map(|m| STATE_MONTH_FIXED + m.cols.iter().map(|c| c.len() * 8).sum::<usize>())
        .sum();
    ENTRY_FIXED + key + STATE_FIXED + rows
}

/// The body of a state record: each entry as a put's, then its version, next
/// generation and months, each month its id, row count and columns.
fn encode_states(states: &[ResidentState]) -> Vec<u8> {
    let len = BODY_FIXED + states.iter().map(state_entry_len).sum::<usize>();
    assert!(
        len <= RECORD_BODY_MAX,
        "a state record within the record limit"
    );
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&[0u8; BODY_FIXED]);
    body[BODY_OP_OFFSET] = Op::State as u8;
    for s in states {
        let m = &s.manifest;
        let ncols = m.meta.key.kind().ncols();
        assert!(
            s.rows() <= RESIDENT_ROWS_MAX,
            "a resident series within the row limit"
        );
        let one = encode_body(Op::Put, std::iter::once((&m.meta, Some(m))));
        body.extend_from_slice(&one[BODY_FIXED..]);
        body.extend_from_slice(&m.version.to_le_bytes());
        body.extend_from_slice(&m.next_generation.to_le_bytes());
        body.extend_from_slice(&(s.months.len() as u32).to_le_bytes());
        for month in &s.months {
            assert_eq!(month.cols.len(), ncols, "a month has every column");
            let rows = month.cols[0].len();
            assert!(rows > 0, "a resident month holds rows");
            body.extend_from_slice(&month.month.to_le_bytes());
            body.extend_from_slice(&(rows as u32).to_le_bytes());
            for c in &month.cols {
                assert_eq!(c.len(), rows, "the columns of a month are as long");
                for v in c {
                    body.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    body[BODY_COUNT_OFFSET..BODY_FIXED].copy_from_slice(&(states.len() as u32).to_le_bytes());
    debug_assert_eq!(body.len(), len, "the state record's length as computed");
    body
}

/// The body of a record of `op` over `entries` (a drop carries no settings).
fn encode_body<'a>(
    op: Op,
    entries: impl Iterator<Item = (&'a SeriesMeta, Option<&'a Manifest>)>,
) -> Vec<u8> {
    let mut body = vec![0u8; BODY_FIXED];
    body[BODY_OP_OFFSET] = op as u8;
    let mut count: u32 = 0;
    for (meta, m) in entries {
        count += 1;
        let parts = meta.key.parts();
        assert!(
            parts.len() <= KEY_PARTS_MAX,
            "a series key has at most five parts"
        );
        let mut e = [0u8; ENTRY_FIXED];
        e[ENTRY_VALUE_TYPE] = meta.value_type.code();
        e[ENTRY_IRREGULAR] = u8::from(m.is_some_and(|m| m.irregular));
        e[ENTRY_PARTS] = parts.len() as u8;
        let put =
            |e: &mut [u8; ENTRY_FIXED], at: usize, v: [u8; 8]| e[at..at + 8].copy_from_slice(&v);
        put(&mut e, ENTRY_TIMEFRAME_MS, meta.timeframe_ms.to_le_bytes());
        put(&mut e, ENTRY_PRICE_SCALE, meta.price_scale.to_le_bytes());
        put(&mut e, ENTRY_VOLUME_SCALE, meta.volume_scale.to_le_bytes());
        put(
            &mut e,
            ENTRY_RETENTION_MS,
            m.map_or(0, |m| m.retention_ms).to_le_bytes(),
        );
        put(
            &mut e,
            ENTRY_WAL_LSN,
            m.map_or(0, |m| m.wal_lsn).to_le_bytes(),
        );
        body.extend_from_slice(&e);
        for p in &parts {
            assert!(p.len() <= KEY_PART_MAX, "a key part is a checked name");
            body.push(p.len() as u8);
            body.extend_from_slice(p.as_bytes());
        }
    }
    body[BODY_COUNT_OFFSET..BODY_FIXED].copy_from_slice(&count.to_le_bytes());
    body
}

#[derive(Debug, Default)]
struct Scan {
    /// Bytes of whole, valid records (and the header).
    valid_len: usize,
    /// Entries read, of every record.
    entries: u64,
    /// Each key's last put (a drop removes it).
    last: KeyMap<Manifest>,
    /// The rows of each key whose last record is a state record.
    rows: KeyMap<Vec<ResidentMonth>>,
    /// The header's version (0: no header).
    version: u32,
}

/// Reads every record; a bad record is a torn tail only when nothing follows it.
fn scan(bytes: &[u8]) -> std::result::Result<Scan, String> {
    if bytes.len() < HEADER_LEN {
        // A crash while the first header was written: nothing was ever recorded.
        return Ok(Scan::default());
    }
    if &bytes[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
        return Err("not a catalog file (bad magic)".into());
    }
    let version = u32::from_le_bytes(
        bytes[VERSION_OFFSET..HEADER_RESERVED_OFFSET]
            .try_into()
            .expect("4 bytes"),
    );
    if !(VERSION_MIN..=VERSION).contains(&version) {
        return Err(format!(
            "catalog format version {version} is not one this FastK reads \
             ({VERSION_MIN} to {VERSION})"
        ));
    }
    let mut out = Scan {
        valid_len: HEADER_LEN,
        version,
        ..Scan::default()
    };
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some(len) = rest.get(..RECORD_LEN_BYTES) else {
            break; // torn length
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let end = RECORD_LEN_BYTES + len + RECORD_SUM_BYTES;
        if len > RECORD_BODY_MAX || rest.len() < end {
            if len > RECORD_BODY_MAX && rest.len() >= RECORD_LEN_BYTES + RECORD_BODY_MAX {
                return Err(format!(
                    "record at byte {at}: length {len} is past the limit"
                ));
            }
            break; // cut short by a crash
        }
        let body = &rest[RECORD_LEN_BYTES..RECORD_LEN_BYTES + len];
        let sum = u64::from_le_bytes(rest[end - RECORD_SUM_BYTES..end].try_into().expect("8"));
        if sum != xxhash_rust::xxh3::xxh3_64(body) {
            if rest.len() == end {
                break; // the last record, cut short by a crash
            }
            return Err(format!(
                "record at byte {at}: checksum mismatch with records after it"
            ));
        }
        let (op, entries) =
            decode_body(body).map_err(|why| format!("record at byte {at}: {why}"))?;
        out.entries += entries.len() as u64;
        for (m, months) in entries {
            match op {
                Op::Put => {
                    out.rows.remove(&m.meta.key);
                    out.last.insert(m.meta.key.clone(), m);
                }
                Op::State => {
                    out.rows.insert(m.meta.key.clone(), months);
                    out.last.insert(m.meta.key.clone(), m);
                }
                Op::Drop => {
                    out.rows.remove(&m.meta.key);
                    out.last.remove(&m.meta.key);
                }
            }
        }
        at += end;
        out.valid_len = at;
    }
    Ok(out)
}

/// Decodes a record body whose checksum held: a decode failure is a bug or damage
/// the checksum missed, never a torn write.
type Decoded = (Manifest, Vec<ResidentMonth>);

fn decode_body(body: &[u8]) -> std::result::Result<(Op, Vec<Decoded>), String> {
    if body.len() < BODY_FIXED {
        return Err("record shorter than its fixed part".into());
    }
    let op = match body[BODY_OP_OFFSET] {
        1 => Op::Put,
        2 => Op::Drop,
        3 => Op::State,
        other => return Err(format!("unknown operation {other}")),
    };
    let count = u32::from_le_bytes(body[BODY_COUNT_OFFSET..BODY_FIXED].try_into().expect("4"));
    let mut out = Vec::with_capacity((count as usize).min(body.len() / ENTRY_FIXED));
    let mut at = BODY_FIXED;
    for i in 0..count {
        let e = body
            .get(at..at + ENTRY_FIXED)
            .ok_or_else(|| format!("entry {i} runs past the record"))?;
        let int = |off: usize| i64::from_le_bytes(e[off..off + 8].try_into().expect("8"));
        let value_type = ValueType::from_code(e[ENTRY_VALUE_TYPE])
            .ok_or(format!("entry {i}: unknown value type"))?;
        let irregular = match e[ENTRY_IRREGULAR] {
            0 => false,
            1 => true,
            v => return Err(format!("entry {i}: irregular flag {v}")),
        };
        let nparts = e[ENTRY_PARTS] as usize;
        if !(1..=KEY_PARTS_MAX).contains(&nparts) {
            return Err(format!("entry {i}: {nparts} key parts"));
        }
        at += ENTRY_FIXED;
        let mut parts = Vec::with_capacity(nparts);
        for _ in 0..nparts {
            let n = *body
                .get(at)
                .ok_or_else(|| format!("entry {i}: key runs past the record"))?
                as usize;
            let p = body
                .get(at + 1..at + 1 + n)
                .ok_or_else(|| format!("entry {i}: key runs past the record"))?;
            parts.push(std::str::from_utf8(p).map_err(|_| format!("entry {i}: key not UTF-8"))?);
            at += 1 + n;
        }
        let key = SeriesKey::from_parts(&parts).map_err(|e| format!("entry {i}: {e}"))?;
        let ncols = key.kind().ncols();
        let mut m = Manifest {
            meta: SeriesMeta {
                key,
                timeframe_ms: int(ENTRY_TIMEFRAME_MS),
                price_scale: int(ENTRY_PRICE_SCALE),
                volume_scale: int(ENTRY_VOLUME_SCALE),
                value_type,
            },
            version: 0,
            next_generation: 1,
            retention_ms: int(ENTRY_RETENTION_MS),
            irregular,
            wal_lsn: int(ENTRY_WAL_LSN) as u64,
            entries: Vec::new(),
        };
        let mut months = Vec::new();
        if op == Op::State {
            let (state, used) =
                decode_state(&body[at..], ncols).map_err(|why| format!("entry {i}: {why}"))?;
            (m.version, m.next_generation, months) = state;
            at += used;
        }
        if op != Op::Drop {
            m.validate().map_err(|why| format!("entry {i}: {why}"))?;
        }
        out.push((m, months));
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - at));
    }
    Ok((op, out))
}

/// Decodes a state entry's part after its key: (version, next generation, months)
/// and the bytes it took. Months ascend, each holds rows, and the rows of all of
/// them are at most [`RESIDENT_ROWS_MAX`].
#[allow(clippy::type_complexity)]
fn decode_state(
    b: &[u8],
    ncols: usize,
) -> std::result::Result<((u64, u64, Vec<ResidentMonth>), usize), String> {
    let short = || "resident rows run past the record".to_string();
    let u64_at = |at: usize| -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            b.get(at..at + 8).ok_or_else(short)?.try_into().expect("8"),
        ))
    };
    let u32_at = |at: usize| -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            b.get(at..at + 4).ok_or_else(short)?.try_into().expect("4"),
        ))
    };
    let version = u64_at(0)?;
    let next_generation = u64_at(8)?;
    let nmonths = u32_at(16)? as u64;
    if nmonths > RESIDENT_ROWS_MAX {
        return Err(format!("{nmonths} resident months"));
    }
    let mut at = STATE_FIXED;
    let mut total: u64 = 0;
    let mut months: Vec<ResidentMonth> = Vec::with_capacity(nmonths as usize);
    for _ in 0..nmonths {
        let month = u32_at(at)? as i32;
        let rows = u32_at(at + 4)? as u64;
        at += STATE_MONTH_FIXED;
        total += rows;
        if rows == 0 || total > RESIDENT_ROWS_MAX {
            return Err(format!("a resident month of {rows} rows"));
        }
        if months.last().is_some_and(|p| p.month >= month) {
            return Err("resident months out of order".into());
        }
        let rows = rows as usize;
        let bytes = b.get(at..at + ncols * rows * 8).ok_or_else(short)?;
        let cols: Vec<Vec<i64>> = bytes
            .chunks_exact(rows * 8)
            .map(|c| {
                c.chunks_exact(8)
                    .map(|v| i64::from_le_bytes(v.try_into().expect("8")))
                    .collect()
            })
            .collect();
        at += ncols * rows * 8;
        months.push(ResidentMonth { month, cols });
    }
    Ok(((version, next_generation, months), at))
}

/// Fuzz entry point: decodes a whole catalog file; an error or a value, never a
/// panic.
#[doc(hidden)]
pub fn decode_for_fuzz(bytes: &[u8]) -> std::result::Result<usize, String> {
    scan(bytes).map(|s| s.last.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn manifest(symbol: &str, lsn: u64) -> Manifest {
        Manifest {
            meta: SeriesMeta {
                key: SeriesKey::scalar(symbol, "1m", "factor", "mom").unwrap(),
                timeframe_ms: 60_000,
                price_scale: 1,
                volume_scale: 1,
                value_type: ValueType::F64,
            },
            version: 0,
            next_generation: 1,
            retention_ms: 86_400_000,
            irregular: false,
            wal_lsn: lsn,
            entries: Vec::new(),
        }
    }

    #[test]
    fn resident_rows_are_checked_for_width_order_and_partition() {
        let meta = manifest("AAA", 0).meta;
        let parts = meta.partitioning();
        let ts = [1_700_000_000_000_i64, 1_700_000_060_000, 1_700_000_120_000];
        let month = parts.of(ts[0]);
        let good = ResidentMonth {
            month,
            cols: vec![ts.to_vec(), vec![1, 2, 3]],
        };
        good.check(&meta).unwrap();
        let bad = |cols: Vec<Vec<i64>>, month: i32| ResidentMonth { month, cols };
        let cases = [
            ("one column", bad(vec![ts.to_vec()], month)),
            ("a column short", bad(vec![ts.to_vec(), vec![1, 2]], month)),
            ("no rows", bad(vec![vec![], vec![]], month)),
            (
                "ts not increasing",
                bad(vec![vec![ts[1], ts[0], ts[2]], vec![1, 2, 3]], month),
            ),
            (
                "ts repeated",
                bad(vec![vec![ts[0], ts[0], ts[2]], vec![1, 2, 3]], month),
            ),
            (
                "another partition",
                bad(vec![ts.to_vec(), vec![1, 2, 3]], month + 1),
            ),
        ];
        for (what, m) in cases {
            let e = m.check(&meta).expect_err(what);
            assert!(
                e.to_string().contains(CATALOG_FILE) && e.to_string().contains("AAA"),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn puts_and_drops_survive_a_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (c, listed, _) = Catalog::open(dir.path()).unwrap();
        assert!(listed.is_empty());
        let (a, b) = (manifest("AAA", 7), manifest("BBB", 9));
        c.put(&[&a, &b]).unwrap();
        c.drop_series(&a.meta).unwrap();
        drop(c);
        let path = dir.path().join(CATALOG_FILE);
        let good = fs::read(&path).unwrap();
        // A record cut short after the good ones.
        let mut torn = good.clone();
        torn.extend_from_slice(&40u32.to_le_bytes());
        torn.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &torn).unwrap();
        let (c, listed, report) = Catalog::open(dir.path()).unwrap();
        assert_eq!(listed, vec![b.clone()]);
        assert_eq!(report.torn_tail_bytes, 7);
        assert_eq!(fs::read(&path).unwrap(), good);
        assert!(c.lists(&b.meta.key) && !c.lists(&a.meta.key));
        c.drop_series(&b.meta).unwrap();
        drop(c);
        let (_, listed, _) = Catalog::open(dir.path()).unwrap();
        assert!(listed.is_empty());
    }

    #[test]
    fn damage_before_the_tail_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, _) = Catalog::open(dir.path()).unwrap();
        c.put(&[&manifest("AAA", 1)]).unwrap();
        c.put(&[&manifest("BBB", 2)]).unwrap();
        drop(c);
        let path = dir.path().join(CATALOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + RECORD_LEN_BYTES + BODY_FIXED + 2] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let err = Catalog::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(CATALOG_FILE) && err.contains("checksum"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_shed_once_it_outweighs_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, _) = Catalog::open(dir.path()).unwrap();
        let ms: Vec<Manifest> = (0..1500).map(|i| manifest(&format!("S{i}"), i)).collect();
        c.put(&ms.iter().collect::<Vec<_>>()).unwrap();
        for m in &ms[..1400] {
            c.drop_series(&m.meta).unwrap();
        }
        drop(c);
        let before = fs::metadata(dir.path().join(CATALOG_FILE)).unwrap().len();
        let (c, listed, _) = Catalog::open(dir.path()).unwrap();
        assert_eq!(listed.len(), 100);
        assert!(c.shed_garbage(&listed).unwrap());
        let after = fs::metadata(dir.path().join(CATALOG_FILE)).unwrap().len();
        assert!(after < before / 10, "{after} < {before} / 10");
        assert!(c.lists(&ms[1450].meta.key) && !c.lists(&ms[0].meta.key));
        drop(c);
        let (c, again, _) = Catalog::open(dir.path()).unwrap();
        assert_eq!(again, listed);
        assert!(!c.shed_garbage(&again).unwrap());
        // Kept entries of series that have a directory now are garbage too.
        let (c, _, _) = Catalog::open(dir.path()).unwrap();
        assert!(
            c.shed_garbage(&[]).is_ok_and(|shed| !shed),
            "100 entries are not worth a rewrite"
        );
    }

    #[test]
    fn state_records_round_trip_and_a_grown_file_is_rewritten_without_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, _) = Catalog::open(dir.path()).unwrap();
        let mut m = manifest("AAA", 5);
        m.version = 3;
        let state = |v: i64| ResidentState {
            manifest: m.clone(),
            months: vec![ResidentMonth {
                month: 648,
                cols: vec![vec![1_704_067_200_000, 1_704_067_260_000], vec![v, v + 1]],
            }],
        };
        c.put(&[&manifest("BBB", 1)]).unwrap();
        for v in 0..50 {
            let (done, r) = c.put_states(&[state(v)]);
            assert!(r.is_ok() && done == 1);
        }
        let path = dir.path().join(CATALOG_FILE);
        let before = fs::metadata(&path).unwrap().len();
        assert!(!c.compact_if_grown(before).unwrap(), "within the slack");
        assert!(c.compact_if_grown(0).unwrap());
        let after = fs::metadata(&path).unwrap().len();
        assert!(after * 10 < before, "{after} * 10 < {before}");
        // Appends after the rewrite land in the new file.
        let (_, r) = c.put_states(&[state(100)]);
        r.unwrap();
        drop(c);
        let (c, listed, _) = Catalog::open(dir.path()).unwrap();
        let keys: Vec<_> = listed
            .iter()
            .map(|m| m.meta.key.symbol().to_string())
            .collect();
        assert_eq!(keys, ["AAA", "BBB"]);
        assert_eq!((listed[0].version, listed[0].wal_lsn), (3, 5));
        let rows = c.take_resident();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[&m.meta.key], state(100).months);
        // A put of the key again (registered anew after a drop) has no rows.
        c.drop_series(&m.meta).unwrap();
        c.put(&[&manifest("AAA", 9)]).unwrap();
        drop(c);
        let (c, _, _) = Catalog::open(dir.path()).unwrap();
        assert!(c.take_resident().is_empty());
    }

    #[test]
    fn a_failed_append_is_cut_back_and_the_next_one_lands() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, _) = Catalog::open(dir.path()).unwrap();
        c.put(&[&manifest("AAA", 1)]).unwrap();
        let path = dir.path().join(CATALOG_FILE);
        let armed = failpoints::arm(&path, failpoints::Op::Fsync, 1);
        assert!(c.put(&[&manifest("BBB", 2)]).is_err());
        assert!(armed.fired());
        drop(armed);
        c.put(&[&manifest("CCC", 3)]).unwrap();
        drop(c);
        let (_, listed, report) = Catalog::open(dir.path()).unwrap();
        let names: Vec<_> = listed
            .iter()
            .map(|m| m.meta.key.symbol().to_string())
            .collect();
        assert_eq!(names, ["AAA", "CCC"]);
        assert_eq!(report.torn_tail_bytes, 0);
    }
}

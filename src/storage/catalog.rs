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

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::format::Manifest;
use super::fsio::{self, failpoints};
use super::{Result, StorageError};
use crate::record::{SeriesKey, SeriesMeta, ValueType};
use crate::sync::LockExt;

/// Name of the catalog file in the store root.
pub const CATALOG_FILE: &str = "CATALOG";

const MAGIC: &[u8; 8] = b"FASTKCAT";
const VERSION: u32 = 1;

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
    live: HashSet<SeriesKey>,
    /// An append failed and could not be cut back: the tail is unknown until the
    /// next open, so nothing more is appended.
    poisoned: bool,
    /// Entries the open read (every record's): what a rewrite would shed.
    entries_read: u64,
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
        let live: HashSet<SeriesKey> = scan.last.keys().cloned().collect();
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
            }),
        };
        Ok((catalog, listed, report))
    }

    /// Rewrites the file with only `kept` (the series it lists that have no
    /// directory) once what it read on open outweighs them: drops, and entries of
    /// series that have a directory now. Returns whether it did.
    pub fn shed_garbage(&self, kept: &[Manifest]) -> Result<bool> {
        let read = self.inner.locked().entries_read;
        if read <= 2 * kept.len() as u64 + 1024 {
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

    /// Replaces the file by one record of `kept` (temp, fsync, rename, fsync).
    fn rewrite(&self, kept: &[Manifest]) -> Result<()> {
        let mut inner = self.inner.locked();
        let mut bytes = header().to_vec();
        if !kept.is_empty() {
            let body = encode_body(Op::Put, kept.iter().map(|m| (&m.meta, Some(m))));
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        }
        fsio::write_atomic(&self.root, CATALOG_FILE, &[&bytes])
            .map_err(|e| StorageError::io(CATALOG_FILE, e))?;
        inner.file = None;
        inner.len = bytes.len() as u64;
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
    last: std::collections::HashMap<SeriesKey, Manifest>,
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
    if version != VERSION {
        return Err(format!(
            "catalog format version {version} is not one this FastK reads (1)"
        ));
    }
    let mut out = Scan {
        valid_len: HEADER_LEN,
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
        for m in entries {
            match op {
                Op::Put => {
                    out.last.insert(m.meta.key.clone(), m);
                }
                Op::Drop => {
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
fn decode_body(body: &[u8]) -> std::result::Result<(Op, Vec<Manifest>), String> {
    if body.len() < BODY_FIXED {
        return Err("record shorter than its fixed part".into());
    }
    let op = match body[BODY_OP_OFFSET] {
        1 => Op::Put,
        2 => Op::Drop,
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
        let m = Manifest {
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
        if op == Op::Put {
            m.validate().map_err(|why| format!("entry {i}: {why}"))?;
        }
        out.push(m);
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - at));
    }
    Ok((op, out))
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

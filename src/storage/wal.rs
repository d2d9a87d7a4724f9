//! The store's write-ahead log: small writes, to one series or to thousands, are made
//! durable here many at a time (group commit), applied to in-memory chunks that
//! readers see at once, and folded into chunk files later by size and age.
//!
//! ```text
//! <root>/wal/<first lsn, 16 hex digits>.wal    segments, in lsn order
//!
//! record = header, payload
//!   header (RECORD_HEADER_LEN bytes):
//!     magic      u32  "FKWR"
//!     payload    u32  payload length in bytes
//!     lsn        u64  log sequence number: the previous record's plus one
//!     xxh3       u64  of the first 16 header bytes and the payload
//!   payload:
//!     entries    u32
//!     per entry:
//!       kind     u8   the series kind's code (1 kline, 2 scalar)
//!       parts    (u8 length, bytes) for symbol, timeframe (and category, name)
//!       ncols    u8
//!       rows     u32
//!       columns  ncols x rows x i64 (ts first), column after column
//! ```
//!
//! One record is one write, all-or-nothing: a many-series write is one record. Every
//! integer is little-endian. Invariants:
//!
//! 1. A write is acknowledged only after its record and every record before it are on
//!    disk (`fdatasync` of the segment); the in-memory state is installed after that
//!    sync, so no reader sees a row that a crash could take back.
//! 2. Record lsns are consecutive across segments; a segment is named by its first.
//! 3. A series' manifest records the last lsn folded into its chunks (`wal_lsn`);
//!    replay applies exactly the later records, so replay is idempotent.
//! 4. A segment is removed only when every series holding rows of its records in
//!    memory has folded them ([`Wal::remove_folded`]).
//! 5. A large group of writes that can only append (no expected version, every row
//!    after its series' last) is written and synced by the sync helper while the
//!    committer applies it in memory ([`Wal::commit_group`]); should such a write still be
//!    refused, its records are cut off the log again before anything is answered, and
//!    the group is applied and logged again one write after the other, as any group.
//!
//! On open, a record that is cut short or fails its checksum at the end of the last
//! segment (a crash mid-append) is cut off, with a note. One followed by valid records
//! is corruption in the middle: the open fails with a clear error, and
//! `fastk admin repair` cuts the log there, reporting what it dropped.

use crate::sync::{CondvarExt, LockExt, RwLockExt};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use super::error::{Result, StorageError};
use super::fsio::{self, failpoints};
use super::series::{Series, WriteBatch, WriteReport};
use super::snapshot::Snapshot;
use crate::record::{SeriesKey, SeriesKind};

/// Directory of the log under the store root.
pub const WAL_DIR: &str = "wal";
/// Extension of a segment file.
pub const SEGMENT_EXT: &str = "wal";
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"FKWR");

const U8_LEN: usize = 1;
const U32_LEN: usize = 4;
const U64_LEN: usize = 8;
const MAGIC_OFFSET: usize = 0;
const PAYLOAD_LEN_OFFSET: usize = MAGIC_OFFSET + U32_LEN;
const LSN_OFFSET: usize = PAYLOAD_LEN_OFFSET + U32_LEN;
const XXH3_OFFSET: usize = LSN_OFFSET + U64_LEN;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = XXH3_OFFSET + U64_LEN;
const _: () = assert!(RECORD_HEADER_LEN == 24);
/// Most entries (series) one record may hold.
pub const MAX_RECORD_ENTRIES: usize = 1 << 20;

/// Tunables of the log and the fold (see `[storage]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment past this size is closed and a new one started.
    pub segment_bytes: u64,
    /// Most bytes of one record (one write); a larger many-series write is refused.
    pub max_record_bytes: usize,
    /// How long the committer waits for more writes before a sync (0: none; the
    /// sync in progress is the window, and writes arriving meanwhile share the next).
    pub group_window: Duration,
    /// A single-series write of more rows than this skips the log: it is written as
    /// chunk files directly (bulk loads), after the series' memory rows are folded.
    pub direct_rows: usize,
    /// A series is folded once this many rows wait in memory.
    pub fold_rows: u64,
    /// ... or once its oldest unfolded row has waited this long.
    pub fold_age: Duration,
    /// Past this many bytes of log, every series holding the oldest segment is folded.
    pub max_log_bytes: u64,
    /// Past this many bytes of rows in memory, every series is folded.
    pub memory_bytes: u64,
    /// How often the background fold looks at the series.
    pub fold_interval: Duration,
    /// How long queued writes wait for the fold while the log is over its limits
    /// (twice `max_log_bytes`, or rows in memory past twice `memory_bytes`) before
    /// they are refused as unavailable (retry).
    pub full_wait: Duration,
    /// Series one fold pass folds at once (each fold waits on a few fsyncs).
    pub fold_threads: usize,
    /// Most rows of one in-memory chunk: an append to a month's last in-memory chunk
    /// copies it, so past this size a new one starts instead, which bounds the copy a
    /// tiny write makes (a month's in-memory chunks are concatenated by the fold).
    pub memory_chunk_rows: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 256 << 20,
            group_window: Duration::ZERO,
            direct_rows: 8192,
            fold_rows: 8192,
            fold_age: Duration::from_secs(600),
            max_log_bytes: 1 << 30,
            memory_bytes: 512 << 20,
            fold_interval: Duration::from_secs(1),
            full_wait: Duration::from_secs(30),
            fold_threads: 4,
            memory_chunk_rows: 256,
        }
    }
}

/// Bytes of rows waiting in memory to be folded, over every series of a store. Each
/// series moves it by exactly the change of its own state (`Series::set_current`, the
/// one place a state is swapped, and its drop), so it is the sum of their shares
/// without visiting them: the committer checks it before every group.
#[derive(Debug, Default)]
pub struct UnfoldedBytes(AtomicU64);

impl UnfoldedBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// One series' share moved from `removed` to `added` bytes.
    pub(super) fn shift(&self, added: u64, removed: u64) {
        if added >= removed {
            self.0.fetch_add(added - removed, Ordering::SeqCst);
        } else {
            let before = self.0.fetch_sub(removed - added, Ordering::SeqCst);
            assert!(
                before >= removed - added,
                "unfolded bytes: the store's count holds every series' share"
            );
        }
    }
}

/// One count per open store: compared by identity, like the map cache.
impl PartialEq for UnfoldedBytes {
    fn eq(&self, other: &UnfoldedBytes) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for UnfoldedBytes {}

// ---------------------------------------------------------------- records

/// Why bytes at an offset are not a whole valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the header or its payload length: a torn append.
    Short,
    /// The bytes are there but wrong (magic, checksum, or the payload's structure).
    Bad(String),
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub lsn: u64,
    pub entries: Vec<(SeriesKey, WriteBatch)>,
}

/// Encodes one record. The columns of each batch must have equal lengths.
pub fn encode_record(lsn: u64, entries: &[(&SeriesKey, &WriteBatch)]) -> Vec<u8> {
    let payload_len: usize = U32_LEN
        + entries
            .iter()
            .map(|(k, b)| {
                U8_LEN
                    + k.name_parts().map(|p| U8_LEN + p.len()).sum::<usize>()
                    + U8_LEN
                    + U32_LEN
                    + b.cols.len() * b.len() * U64_LEN
            })
            .sum::<usize>();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload_len);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(payload_len)
            .expect("record fits u32")
            .to_le_bytes(),
    );
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&[0; U64_LEN]);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (key, batch) in entries {
        out.push(key.kind().code());
        for p in key.name_parts() {
            out.push(u8::try_from(p.len()).expect("names are at most 64 bytes"));
            out.extend_from_slice(p.as_bytes());
        }
        out.push(u8::try_from(batch.cols.len()).expect("a handful of columns"));
        out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
        for c in &batch.cols {
            assert_eq!(c.len(), batch.len(), "wal: ragged columns");
            out.extend_from_slice(bytemuck::cast_slice(c));
        }
    }
    assert_eq!(
        out.len(),
        RECORD_HEADER_LEN + payload_len,
        "wal: record length"
    );
    let sum = record_checksum(&out[..XXH3_OFFSET], &out[RECORD_HEADER_LEN..]);
    out[XXH3_OFFSET..RECORD_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    out
}

fn record_checksum(head: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(head);
    h.update(payload);
    h.digest()
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + U32_LEN].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + U64_LEN].try_into().expect("8 bytes"))
}

/// Decodes the record at the start of `b`; returns it and its length. Any bytes give
/// a record or an error, never a panic (`tests/fuzz_decoders.rs`).
pub fn decode_record(b: &[u8]) -> std::result::Result<(Record, usize), RecordError> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Short);
    }
    if get_u32(b, MAGIC_OFFSET) != RECORD_MAGIC {
        return Err(RecordError::Bad("bad record magic".into()));
    }
    let len = get_u32(b, PAYLOAD_LEN_OFFSET) as usize;
    let Some(payload) = b.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Err(RecordError::Short);
    };
    if record_checksum(&b[..XXH3_OFFSET], payload) != get_u64(b, XXH3_OFFSET) {
        return Err(RecordError::Bad("record checksum mismatch".into()));
    }
    let lsn = get_u64(b, LSN_OFFSET);
    let entries = decode_payload(payload).map_err(RecordError::Bad)?;
    Ok((Record { lsn, entries }, RECORD_HEADER_LEN + len))
}

fn decode_payload(p: &[u8]) -> std::result::Result<Vec<(SeriesKey, WriteBatch)>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let s = p
            .get(at..at.checked_add(n).ok_or("length overflows")?)
            .ok_or("payload ends inside an entry")?;
        at += n;
        Ok(s)
    };
    let count = u32::from_le_bytes(take(U32_LEN)?.try_into().expect("4 bytes")) as usize;
    if count > MAX_RECORD_ENTRIES {
        return Err(format!("{count} entries, more than {MAX_RECORD_ENTRIES}"));
    }
    let mut entries = Vec::new();
    for _ in 0..count {
        let kind = SeriesKind::from_code(take(U8_LEN)?[0]).ok_or("unknown series kind")?;
        // symbol and timeframe, and for a scalar its category and name
        let nparts = match kind {
            SeriesKind::Kline => 2,
            SeriesKind::Scalar => 4,
        };
        let mut parts = vec![kind.as_str().to_string()];
        for _ in 0..nparts {
            let n = take(U8_LEN)?[0] as usize;
            let s = std::str::from_utf8(take(n)?).map_err(|_| "a name is not UTF-8")?;
            parts.push(s.to_string());
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let key = SeriesKey::from_parts(&refs)?;
        let ncols = take(U8_LEN)?[0] as usize;
        if ncols != kind.ncols() {
            return Err(format!("{ncols} columns for a {} series", kind.as_str()));
        }
        let rows = u32::from_le_bytes(take(U32_LEN)?.try_into().expect("4 bytes")) as usize;
        let mut batch = WriteBatch::with_capacity(0, 0);
        for _ in 0..ncols {
            let bytes = take(rows.checked_mul(U64_LEN).ok_or("rows overflow")?)?;
            batch.cols.push(
                bytes
                    .chunks_exact(U64_LEN)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            );
        }
        entries.push((key, batch));
    }
    if at != p.len() {
        return Err("bytes after the last entry".into());
    }
    Ok(entries)
}

/// `wal/<lsn>.wal`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:016x}.{SEGMENT_EXT}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

// ---------------------------------------------------------------- reading the log

/// What reading the log on open found.
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Record>,
    /// Segments, ascending: (first lsn, last lsn or first - 1 when empty, bytes).
    pub segments: Vec<(u64, u64, u64)>,
    /// A torn tail cut off the last segment: (segment, offset, bytes cut).
    pub cut_tail: Option<(String, u64, u64)>,
}

/// A record in the middle of the log that is not valid: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub segment: String,
    pub offset: u64,
    pub detail: String,
}

/// Segment files in `dir`, ascending by first lsn.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                if let Some(lsn) = parse_segment_name(&e.file_name().to_string_lossy()) {
                    out.push((lsn, e.path()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Whether any valid record starts in `b` (after a bad one: then the bad one is in the
/// middle, not a torn tail).
fn any_valid_record(b: &[u8]) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    (0..b.len().saturating_sub(RECORD_HEADER_LEN - 1))
        .filter(|&i| b[i..i + U32_LEN] == magic)
        .any(|i| decode_record(&b[i..]).is_ok())
}

/// Reads every segment. A bad record with nothing valid after it in the last non-empty
/// segment is a torn tail: with `cut`, the segment is truncated there (and synced).
/// Any other bad record, or a break in the lsn sequence, is `Err(Corrupt)`.
pub fn scan(dir: &Path, cut: bool) -> Result<std::result::Result<Scan, Corrupt>> {
    let io_err = |what: &str, e| StorageError::io(format!("{WAL_DIR}/{what}"), e);
    let segments = list_segments(dir).map_err(|e| io_err("", e))?;
    let mut scan = Scan::default();
    let last_nonempty = segments
        .iter()
        .rposition(|(_, p)| fs::metadata(p).is_ok_and(|m| m.len() > 0));
    let mut expect: Option<u64> = None;
    for (i, (first, path)) in segments.iter().enumerate() {
        let name = segment_name(*first);
        let bytes = fs::read(path).map_err(|e| io_err(&name, e))?;
        let corrupt = |offset: usize, detail: String| Corrupt {
            segment: name.clone(),
            offset: offset as u64,
            detail,
        };
        if let Some(e) = expect
            && *first != e
        {
            return Ok(Err(corrupt(
                0,
                format!("segment starts at lsn {first}, the previous one ended before {e}"),
            )));
        }
        let mut at = 0usize;
        let mut next = *first;
        while at < bytes.len() {
            match decode_record(&bytes[at..]) {
                Ok((r, len)) => {
                    if r.lsn != next {
                        return Ok(Err(corrupt(
                            at,
                            format!("record lsn {} where {next} was expected", r.lsn),
                        )));
                    }
                    next += 1;
                    at += len;
                    scan.records.push(r);
                }
                Err(e) => {
                    let torn = Some(i) == last_nonempty && !any_valid_record(&bytes[at + 1..]);
                    if !torn {
                        let why = match e {
                            RecordError::Short => "record cut short".to_string(),
                            RecordError::Bad(w) => w,
                        };
                        return Ok(Err(corrupt(at, why)));
                    }
                    let cut_bytes = (bytes.len() - at) as u64;
                    if cut {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(|e| io_err(&name, e))?;
                        f.set_len(at as u64).map_err(|e| io_err(&name, e))?;
                        f.sync_all().map_err(|e| io_err(&name, e))?;
                    }
                    scan.cut_tail = Some((name.clone(), at as u64, cut_bytes));
                    break;
                }
            }
        }
        scan.segments.push((*first, next - 1, at as u64));
        // An empty segment (opened, never written) says nothing of what follows.
        if at > 0 {
            expect = Some(next);
        }
    }
    Ok(Ok(scan))
}

/// What [`repair_log`] found and did.
#[derive(Debug)]
pub enum LogRepair {
    /// The log reads whole.
    Clean,
    /// Corrupt at `at` (segment, byte and why); a dry run cut nothing.
    Corrupt { at: String },
    /// Cut at `at`: that record and every later one, `bytes` in all, are gone.
    Cut { at: String, bytes: u64 },
}

/// `fastk admin repair` of the log under `root`, before the store opens (a corrupt
/// record stops every open): with `apply`, cuts it at its first corrupt record
/// ([`cut_at_corruption`]); without, says where it would cut.
pub fn repair_log(root: &Path, apply: bool) -> Result<LogRepair> {
    let dir = root.join(WAL_DIR);
    let corrupt = match scan(&dir, false)? {
        Ok(_) => return Ok(LogRepair::Clean),
        Err(c) => c,
    };
    let at = format!(
        "{WAL_DIR}/{} at byte {} ({})",
        corrupt.segment, corrupt.offset, corrupt.detail
    );
    if !apply {
        return Ok(LogRepair::Corrupt { at });
    }
    Ok(match cut_at_corruption(root)? {
        Some((_, bytes)) => LogRepair::Cut { at, bytes },
        None => LogRepair::Clean,
    })
}

/// Cuts the log at its first corrupt record: that segment is truncated there and every
/// later segment removed (`admin repair`). Returns what was cut, or `None` when the
/// log reads whole. The store must be closed.
pub fn cut_at_corruption(root: &Path) -> Result<Option<(Corrupt, u64)>> {
    // The store's lock, so a running server's log is never cut under it.
    let _lock = super::lock_root(root)?;
    let dir = root.join(WAL_DIR);
    let Err(c) = scan(&dir, false)? else {
        return Ok(None);
    };
    let io_err = |what: String, e| StorageError::io(format!("{WAL_DIR}/{what}"), e);
    let mut dropped = 0u64;
    for (first, path) in list_segments(&dir).map_err(|e| io_err(String::new(), e))? {
        let name = segment_name(first);
        let len = fs::metadata(&path)
            .map_err(|e| io_err(name.clone(), e))?
            .len();
        if name == c.segment {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err(name.clone(), e))?;
            f.set_len(c.offset).map_err(|e| io_err(name.clone(), e))?;
            f.sync_all().map_err(|e| io_err(name.clone(), e))?;
            dropped += len - c.offset;
        } else if name > c.segment {
            fs::remove_file(&path).map_err(|e| io_err(name.clone(), e))?;
            dropped += len;
        }
    }
    fsio::fsync_dir(&dir).map_err(|e| io_err(String::new(), e))?;
    Ok(Some((c, dropped)))
}

// ---------------------------------------------------------------- the live log

/// One write waiting for the committer: its series and rows (sorted and checked), the
/// versions it expects, and where its outcome goes.
struct Request {
    /// Shared with the apply helper while it applies part of a many-series write.
    entries: Arc<Vec<Entry>>,
    reply: mpsc::SyncSender<Result<Vec<WriteReport>>>,
}

/// One series of a write: its rows (sorted and checked) and the version it expects.
type Entry = (Arc<Series>, WriteBatch, Option<u64>);

/// One entry checked and applied in memory, not yet durable: the series' new state
/// (none for an empty batch) and its report.
type Applied = (Option<Snapshot>, WriteReport);

/// One write checked and applied in memory, not yet durable: the new state of each of
/// its series (by index in the group) and its reports.
type Planned = (Vec<(usize, Snapshot)>, Vec<WriteReport>);

/// A write that names at least this many series is applied in memory by the
/// committer and the apply helper together, block by block ([`SharedApply`]; each
/// entry is independent: a series appears once in a write). Below it, handing over
/// costs more than it saves.
const PARALLEL_APPLY_ENTRIES: usize = 256;

/// A group that names at least this many series (over all its writes) is synced while
/// it applies, when it can only append (invariant 5). A smaller group applies in
/// microseconds, less than handing its records to the sync helper and waking it costs.
const OVERLAP_SYNC_ENTRIES: usize = PARALLEL_APPLY_ENTRIES;

/// Entries of a many-series write that one thread claims at a time while the
/// committer and the apply helper share it (about 80 µs of work for 1-bar appends).
/// Small enough that neither thread waits long for the other's last block, large
/// enough that claiming costs nothing beside it.
const APPLY_BLOCK_ENTRIES: usize = 64;

/// A many-series write that the committer and the apply helper apply together, in
/// blocks of `APPLY_BLOCK_ENTRIES` entries that each claims in turn. Neither owns a
/// half: if the helper wakes late, or the VM takes its core for a while, the
/// committer goes on with the blocks left, and the write waits at most for the one
/// block the helper holds (with fixed halves it waited for the helper's whole half).
struct SharedApply {
    entries: Arc<Vec<Entry>>,
    /// The state (or the error) of each entry's series, in entry order.
    states: Vec<std::result::Result<Arc<Snapshot>, StorageError>>,
    lsn: u64,
    now: Instant,
    /// The next block to claim; past the last, there is nothing left to claim.
    next: AtomicUsize,
    /// Each block's outcomes, set once by the thread that claimed it.
    outcomes: Vec<Mutex<Option<Vec<Result<Applied>>>>>,
    /// Blocks the helper applied (for the committer's debug event: how much of the
    /// write the helper took, which falls when it wakes late).
    helper_blocks: AtomicUsize,
    /// Blocks finished (their outcomes set), and the committer's wait for the last.
    done: Mutex<usize>,
    all_done: Condvar,
}

/// A block claimed by one thread: if that thread unwinds before the block is applied
/// (an assertion), the block is still answered, with an error, so the committer
/// never waits for it and refuses the write.
struct Claim<'a> {
    job: &'a SharedApply,
    block: usize,
    applied: Option<Vec<Result<Applied>>>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let out = self.applied.take().unwrap_or_else(|| {
            vec![Err(StorageError::Unavailable(
                "the log's apply helper stopped while applying this write".into(),
            ))]
        });
        *self.job.outcomes[self.block].locked() = Some(out);
        let mut done = self.job.done.locked();
        *done += 1;
        assert!(
            *done <= self.job.outcomes.len(),
            "wal: a block is done once"
        );
        if *done == self.job.outcomes.len() {
            self.job.all_done.notify_all();
        }
    }
}

impl SharedApply {
    fn new(
        entries: Arc<Vec<Entry>>,
        states: Vec<std::result::Result<Arc<Snapshot>, StorageError>>,
        lsn: u64,
        now: Instant,
    ) -> SharedApply {
        assert_eq!(states.len(), entries.len(), "one state per entry");
        let blocks = entries.len().div_ceil(APPLY_BLOCK_ENTRIES);
        SharedApply {
            entries,
            states,
            lsn,
            now,
            next: AtomicUsize::new(0),
            helper_blocks: AtomicUsize::new(0),
            outcomes: (0..blocks).map(|_| Mutex::new(None)).collect(),
            done: Mutex::new(0),
            all_done: Condvar::new(),
        }
    }

    /// Claims and applies blocks until none is left (both threads run this; `helper`
    /// says which one this is).
    fn work(&self, helper: bool) {
        loop {
            let block = self.next.fetch_add(1, Ordering::Relaxed);
            if block >= self.outcomes.len() {
                return;
            }
            let mut claim = Claim {
                job: self,
                block,
                applied: None,
            };
            let from = block * APPLY_BLOCK_ENTRIES;
            let to = (from + APPLY_BLOCK_ENTRIES).min(self.entries.len());
            claim.applied = Some(
                self.entries[from..to]
                    .iter()
                    .zip(&self.states[from..to])
                    .map(|((s, batch, expected), st)| {
                        apply_entry(s, st.as_ref(), batch, *expected, self.lsn, self.now)
                    })
                    .collect(),
            );
            if helper {
                self.helper_blocks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every block is applied, then the outcomes in entry order (a block
    /// whose thread stopped answers one error in its place, which refuses the write).
    fn outcomes(&self) -> Vec<Result<Applied>> {
        let mut done = self.done.locked();
        while *done < self.outcomes.len() {
            done = self.all_done.wait_now(done);
        }
        drop(done);
        let mut out = Vec::with_capacity(self.entries.len());
        for slot in &self.outcomes {
            out.extend(
                slot.locked()
                    .take()
                    .expect("every block is answered once done"),
            );
        }
        out
    }
}

/// What a helper thread does: the apply helper shares the apply of a large write; the
/// reaper frees what a group leaves behind, which the committer hands over so it can
/// take the next group at once (a many-series write replaces thousands of states, and
/// freeing them costs about as much as applying them).
enum HelperJob {
    Apply(Arc<SharedApply>),
    /// A group's records to append and sync while the group applies.
    Sync(SyncJob),
    /// The states a group replaced, and its writes' entries (thousands of row
    /// batches for a many-series write).
    Drop(Vec<Arc<Snapshot>>, Vec<Arc<Vec<Entry>>>),
}

/// The committer's helper threads (none without a second core, or if one could not
/// be spawned: the committer then does their work itself).
struct Helpers {
    /// Applies blocks of a large write beside the committer ([`SharedApply`]).
    apply: Option<mpsc::Sender<HelperJob>>,
    /// Frees the states a large group replaced, after its writers are answered.
    reap: Option<mpsc::Sender<HelperJob>>,
    /// Appends and syncs the records of an appends-only group while the committer
    /// applies it (the sync is disk time, not CPU: it overlaps on one core too).
    sync: Option<mpsc::Sender<HelperJob>>,
}

/// The records of a group, for the sync helper: `buf` holds records `first..=last`.
struct SyncJob {
    buf: Vec<u8>,
    first: u64,
    last: u64,
    reply: mpsc::SyncSender<Result<()>>,
}

/// A sync under way on the sync helper, and what undoing it takes.
struct PendingSync {
    reply: mpsc::Receiver<Result<()>>,
    /// The open segment's length before the records (they never start a segment).
    len_before: u64,
    bytes: u64,
    first: u64,
    last: u64,
}

/// Checks one entry of a write against its series' state (`Err`: why the series
/// cannot be written) and applies it in memory at `lsn`.
fn apply_entry(
    s: &Series,
    state: std::result::Result<&Arc<Snapshot>, &StorageError>,
    batch: &WriteBatch,
    expected: Option<u64>,
    lsn: u64,
    now: Instant,
) -> Result<Applied> {
    let snap = state.map_err(StorageError::clone_kind)?;
    Series::check_expected(snap, expected)?;
    if batch.is_empty() {
        let report = WriteReport {
            version: snap.version,
            ..WriteReport::default()
        };
        return Ok((None, report));
    }
    let (state, report) = s.apply_logged(snap, batch, lsn, now)?;
    Ok((Some(state), report))
}

/// The log record of write `req` at `lsn`: its non-empty entries.
fn record_of(req: &Request, lsn: u64) -> Vec<u8> {
    let entries: Vec<(&SeriesKey, &WriteBatch)> = req
        .entries
        .iter()
        .filter(|e| !e.1.is_empty())
        .map(|e| (&e.0.meta.key, &e.1))
        .collect();
    encode_record(lsn, &entries)
}

/// Whether every write of `group` can only succeed once applied, so its record may be
/// synced while it applies: no entry expects a version, every series is alive, and
/// every entry's rows come after its series' last row, as the writes before it in the
/// group leave it (an append never reads a file, so nothing it does can fail). `states`
/// and `dead` are the group's series by `index`.
fn appends_only(
    group: &[Request],
    states: &[Option<Arc<Snapshot>>],
    dead: &[Option<StorageError>],
    index: impl Fn(&Arc<Series>) -> usize,
) -> bool {
    // The last ts of each series, as the group's writes so far leave it.
    let mut last: Vec<Option<Option<i64>>> = vec![None; states.len()];
    for req in group {
        for (s, batch, expected) in req.entries.iter() {
            let i = index(s);
            if expected.is_some() || dead[i].is_some() {
                return false;
            }
            let Some(&first) = batch.cols.first().and_then(|ts| ts.first()) else {
                continue;
            };
            let before = *last[i].get_or_insert_with(|| {
                states[i]
                    .as_ref()
                    .expect("a live series has a state")
                    .last_ts()
            });
            if before.is_some_and(|b| first <= b) {
                return false;
            }
            last[i] = Some(batch.cols[0].last().copied());
        }
    }
    true
}

#[derive(Default)]
struct Queue {
    pending: Vec<Request>,
    stop: bool,
}

/// The open segment and the closed ones still held.
struct LogFile {
    file: File,
    /// First lsn of the open segment (its name).
    first: u64,
    /// Bytes of the open segment.
    len: u64,
    /// Closed segments: (first lsn, last lsn, bytes).
    closed: VecDeque<(u64, u64, u64)>,
}

/// The live log: a queue of writes, one committer thread that logs them in groups,
/// and the segments.
pub struct Wal {
    dir: PathBuf,
    pub(super) opts: WalOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    log: Mutex<LogFile>,
    /// The last lsn on disk (assigned and synced).
    committed: AtomicU64,
    /// Bytes of all segments.
    bytes: AtomicU64,
    /// Syncs of the log since open, and records they made durable (group commit
    /// makes the first smaller than the second under concurrent writes).
    syncs: AtomicU64,
    records: AtomicU64,
    /// Set when a failed sync could not be undone: the log refuses writes until the
    /// store is reopened (replay then decides what is durable).
    poisoned: Mutex<Option<String>>,
    /// Pokes the fold thread (a series crossed a threshold).
    pub(super) fold_wake: (Mutex<bool>, Condvar),
    /// Bytes of rows waiting in memory over every series (`StoreOptions::unfolded_bytes`,
    /// kept by the series as they swap states). Past twice `memory_bytes` the committer
    /// holds new writes until the fold has caught up ([`Wal::over_limits`]), so a
    /// sustained many-series load cannot grow memory and the log without bound.
    unfolded: Arc<UnfoldedBytes>,
    /// Held (read) while a group's states are installed, and (write) while a named
    /// snapshot takes its states (`named`): a snapshot never holds part of a
    /// many-series write.
    pub(super) gate: std::sync::RwLock<()>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("committed", &self.committed)
            .finish()
    }
}

impl Wal {
    /// Opens the log for appending after `last_lsn` (the highest lsn any record or
    /// manifest holds): a new segment starts at `last_lsn + 1`. `segments` are the
    /// ones [`scan`] found.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        unfolded: Arc<UnfoldedBytes>,
        last_lsn: u64,
        segments: &[(u64, u64, u64)],
    ) -> Result<Wal> {
        let io_err = |what: String, e| StorageError::io(format!("{WAL_DIR}/{what}"), e);
        fsio::create_dir_durable(dir).map_err(|e| io_err(String::new(), e))?;
        let first = last_lsn + 1;
        let mut closed: VecDeque<(u64, u64, u64)> = segments.iter().copied().collect();
        // An empty segment named `first` (left by an open that wrote nothing) is reused.
        if closed.back().is_some_and(|s| s.0 == first) {
            closed.pop_back();
        }
        let name = segment_name(first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(&name))
            .map_err(|e| io_err(name.clone(), e))?;
        let len = file.metadata().map_err(|e| io_err(name.clone(), e))?.len();
        assert_eq!(len, 0, "wal: the new segment is empty");
        fsio::fsync_dir(dir).map_err(|e| io_err(String::new(), e))?;
        let bytes = closed.iter().map(|s| s.2).sum();
        Ok(Wal {
            dir: dir.to_path_buf(),
            opts,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            log: Mutex::new(LogFile {
                file,
                first,
                len: 0,
                closed,
            }),
            committed: AtomicU64::new(last_lsn),
            bytes: AtomicU64::new(bytes),
            syncs: AtomicU64::new(0),
            records: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            fold_wake: (Mutex::new(false), Condvar::new()),
            unfolded,
            gate: std::sync::RwLock::new(()),
        })
    }

    /// The last lsn on disk.
    pub fn committed_lsn(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// (syncs, records) since open.
    pub fn sync_counts(&self) -> (u64, u64) {
        (
            self.syncs.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }

    /// Why the log refuses writes (a sync failed and could not be undone), if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.locked().clone()
    }

    /// Bytes of log on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// First lsn of the open segment: records before it are in closed segments.
    pub fn open_segment_first(&self) -> u64 {
        self.log.locked().first
    }

    /// Segments on disk, the open one included.
    pub fn segments(&self) -> usize {
        self.log.locked().closed.len() + 1
    }

    /// First lsn of the oldest segment.
    pub fn oldest_lsn(&self) -> u64 {
        let log = self.log.locked();
        log.closed.front().map_or(log.first, |s| s.0)
    }

    /// Logs one write of one or many series as one record and waits until it is
    /// durable and applied. Batches are sorted and checked by the caller; a series may
    /// appear once.
    pub fn submit(
        &self,
        entries: Vec<(Arc<Series>, WriteBatch, Option<u64>)>,
    ) -> Result<Vec<WriteReport>> {
        if let Some(why) = self.poisoned.locked().clone() {
            return Err(StorageError::Unavailable(why));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut q = self.queue.locked();
            if q.stop {
                return Err(StorageError::Unavailable("the store is closing".into()));
            }
            q.pending.push(Request {
                entries: Arc::new(entries),
                reply: tx,
            });
        }
        self.wake.notify_one();
        rx.recv().unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "the log's committer stopped before answering".into(),
            ))
        })
    }

    /// Asks the committer to finish the queued writes and stop.
    pub fn stop(&self) {
        self.queue.locked().stop = true;
        self.wake.notify_all();
        *self.fold_wake.0.locked() = true;
        self.fold_wake.1.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.queue.locked().stop
    }

    /// The committer: takes every queued write, logs them with one sync, installs their
    /// states and answers, until [`Wal::stop`] and an empty queue.
    pub fn run(&self) {
        // The apply helper lives as long as the committer (it is no thread per write):
        // it applies blocks of a many-series write beside the committer. Without a
        // second core, or if it cannot be spawned, the committer applies everything
        // itself.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        std::thread::scope(|scope| {
            let spawn = |name: &str| {
                let (tx, rx) = mpsc::channel::<HelperJob>();
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || {
                        while let Ok(job) = rx.recv() {
                            match job {
                                HelperJob::Apply(job) => job.work(true),
                                HelperJob::Drop(states, entries) => drop((states, entries)),
                                HelperJob::Sync(job) => {
                                    let synced = self.append(&job.buf, job.first, job.last);
                                    let _ = job.reply.send(synced);
                                }
                            }
                        }
                    })
                    .ok()
                    .map(|_| tx)
            };
            // Two threads, so that freeing what one group leaves never delays the
            // apply of the next.
            let helpers = Helpers {
                apply: (cores > 1).then(|| spawn("fastk-wal-apply")).flatten(),
                reap: (cores > 1).then(|| spawn("fastk-wal-reap")).flatten(),
                sync: spawn("fastk-wal-sync"),
            };
            self.run_with(&helpers);
            // Dropping the senders ends the helpers; the scope joins them.
            drop(helpers);
        });
    }

    fn run_with(&self, helpers: &Helpers) {
        loop {
            let mut group = {
                let mut q = self.queue.locked();
                while q.pending.is_empty() && !q.stop {
                    q = self.wake.wait_now(q);
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            if !self.opts.group_window.is_zero() {
                std::thread::sleep(self.opts.group_window);
                let mut q = self.queue.locked();
                group.append(&mut q.pending);
            }
            if !self.wait_for_room() {
                let why = "the write-ahead log is over its limits (twice storage.wal_max_bytes in closed \
                           segments, or rows in memory past twice storage.fold_memory_bytes) and the fold \
                           has not caught up; retry";
                for req in group {
                    let _ = req.reply.send(Err(StorageError::Unavailable(why.into())));
                }
                continue;
            }
            self.commit_group(group, helpers);
        }
    }

    /// Whether the log is over its hard limits: more than twice `max_log_bytes` in
    /// closed segments (which folds can always free; the open one cannot be dropped),
    /// or rows in memory past twice `memory_bytes`. The soft limits make the fold fold;
    /// these make writers wait for it. Checked before every group, so rows in memory
    /// pass the hard limit by at most one group (itself bounded by
    /// `storage.max_inflight_write_bytes`).
    pub fn over_limits(&self) -> bool {
        if self.unfolded_bytes() > self.opts.memory_bytes.saturating_mul(2) {
            return true;
        }
        let open = self.log.locked().len;
        self.bytes().saturating_sub(open) > self.opts.max_log_bytes.saturating_mul(2)
    }

    /// Bytes of rows waiting in memory to be folded, over every series.
    pub fn unfolded_bytes(&self) -> u64 {
        self.unfolded.get()
    }

    /// Waits, poking the fold, while the log is over its limits: false when
    /// `full_wait` passed and it still is (the group is refused). A closing store
    /// commits what is queued whatever the limits: its close folds everything.
    fn wait_for_room(&self) -> bool {
        let deadline = Instant::now() + self.opts.full_wait;
        while self.over_limits() && !self.is_stopping() {
            if Instant::now() >= deadline {
                return false;
            }
            *self.fold_wake.0.locked() = true;
            self.fold_wake.1.notify_all();
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Logs a group of writes with one sync. Each write is checked (series alive,
    /// expected versions) against the state the writes before it leave; a refused one
    /// is answered at once and logs nothing. The series' writer locks are held from the
    /// check to the install, so no other commit interleaves.
    ///
    /// Long on purpose: the group commit is one protocol whose steps share the series
    /// locks taken at its top (lock, check, log with one sync, apply, install,
    /// answer); split, every step would take the held guards as arguments.
    fn commit_group(&self, group: Vec<Request>, helpers: &Helpers) {
        let helper = helpers.apply.as_ref();
        let now = Instant::now();
        // Distinct series of the group, locked in address order (only the committer
        // holds more than one series lock, and other paths hold one at a time, so any
        // fixed order cannot deadlock; addresses sort without comparing key strings,
        // which cost a many-series write of thousands of symbols a fraction of its
        // time).
        let mut all: Vec<&Arc<Series>> = group
            .iter()
            .flat_map(|r| r.entries.iter().map(|e| &e.0))
            .collect();
        all.sort_unstable_by_key(|s| Arc::as_ptr(s) as usize);
        all.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut guards = Vec::with_capacity(all.len());
        let mut states: Vec<Option<Arc<Snapshot>>> = Vec::with_capacity(all.len());
        let mut dead: Vec<Option<StorageError>> = Vec::with_capacity(all.len());
        for s in &all {
            match s.lock_live() {
                Ok(g) => {
                    guards.push(Some(g));
                    states.push(Some(s.snapshot()));
                    dead.push(None);
                }
                Err(e) => {
                    guards.push(None);
                    states.push(None);
                    dead.push(Some(e));
                }
            }
        }
        // Position of each series in `all`, by identity (a many-series write names
        // thousands: a scan per entry would be quadratic).
        let positions: std::collections::HashMap<usize, usize, foldhash::fast::RandomState> = all
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::as_ptr(s) as usize, i))
            .collect();
        let index = |s: &Arc<Series>| {
            *positions
                .get(&(Arc::as_ptr(s) as usize))
                .expect("every series of the group is listed")
        };
        let locked_at = Instant::now();
        // An appends-only group is logged while it applies (invariant 5): its records
        // go to the sync helper now, and the apply below must log exactly them.
        let named: usize = group.iter().map(|r| r.entries.len()).sum();
        let mut try_overlap = helpers.sync.is_some()
            && named >= OVERLAP_SYNC_ENTRIES
            && appends_only(&group, &states, &dead, |s: &Arc<Series>| index(s));
        let mut changed = vec![false; all.len()];
        // Blocks of the group's large writes the apply helper applied, of all.
        let mut blocks = (0, 0);
        // Phase times of the group, for the debug event at its end.
        let mut applied_at;
        let (mut outcomes, lsn, log_bytes, synced) = loop {
            let mut lsn = self.committed_lsn();
            let mut buf = Vec::new();
            let mut outcomes: Vec<Option<Result<Vec<WriteReport>>>> =
                Vec::with_capacity(group.len());
            let overlap = if try_overlap {
                self.start_sync(&group, lsn, helpers)
            } else {
                None
            };
            for req in &group {
                let state_of = |s: &Arc<Series>| {
                    let i = index(s);
                    match &dead[i] {
                        Some(e) => Err(e),
                        None => Ok(states[i].as_ref().expect("a live series has a state")),
                    }
                };
                let n = req.entries.len();
                // A large write is applied by the committer and the helper together,
                // block by block (the entries are shared, each series' state an `Arc`).
                let shared = helper
                    .filter(|_| n >= PARALLEL_APPLY_ENTRIES)
                    .and_then(|helper| {
                        let job = Arc::new(SharedApply::new(
                            Arc::clone(&req.entries),
                            req.entries
                                .iter()
                                .map(|e| {
                                    state_of(&e.0)
                                        .map(Arc::clone)
                                        .map_err(StorageError::clone_kind)
                                })
                                .collect(),
                            lsn + 1,
                            now,
                        ));
                        helper
                            .send(HelperJob::Apply(Arc::clone(&job)))
                            .is_ok()
                            .then_some(job)
                    });
                let applied: Vec<Result<Applied>> = match shared {
                    Some(job) => {
                        job.work(false);
                        let out = job.outcomes();
                        blocks.0 += job.helper_blocks.load(Ordering::Relaxed);
                        blocks.1 += job.outcomes.len();
                        out
                    }
                    None => req
                        .entries
                        .iter()
                        .map(|(s, batch, expected)| {
                            apply_entry(s, state_of(s), batch, *expected, lsn + 1, now)
                        })
                        .collect(),
                };
                let attempt = (|| -> Result<Planned> {
                    let mut next = Vec::with_capacity(n);
                    let mut reports = Vec::with_capacity(n);
                    for (r, (s, _, _)) in applied.into_iter().zip(req.entries.iter()) {
                        let (state, report) = r?;
                        if let Some(state) = state {
                            next.push((index(s), state));
                        }
                        reports.push(report);
                    }
                    assert_eq!(reports.len(), n, "one report per entry of a write");
                    Ok((next, reports))
                })();
                match attempt {
                    Ok((next, reports)) if next.is_empty() => outcomes.push(Some(Ok(reports))),
                    Ok((next, reports)) => {
                        lsn += 1;
                        // An overlapped sync has the records already.
                        if overlap.is_none() {
                            buf.extend_from_slice(&record_of(req, lsn));
                        }
                        for (i, state) in next {
                            states[i] = Some(Arc::new(state));
                            changed[i] = true;
                        }
                        outcomes.push(Some(Ok(reports)));
                    }
                    Err(e) => outcomes.push(Some(Err(e))),
                }
            }
            applied_at = Instant::now();
            let logged = overlap.as_ref().map_or(buf.len() as u64, |p| p.bytes);
            let synced = match overlap {
                None if buf.is_empty() => Ok(()),
                None => self.append(&buf, self.committed_lsn() + 1, lsn),
                Some(p) => {
                    let synced = p.reply.recv().unwrap_or_else(|_| {
                        // The helper panicked (an assertion) part-way through an
                        // append that nothing cut back: refuse writes until a reopen,
                        // whose replay decides what is on disk.
                        let why = "the log's sync helper stopped while syncing a group; writes are refused until the server restarts".to_string();
                        tracing::error!("{why}");
                        *self.poisoned.locked() =
                            Some(why.clone());
                        Err(StorageError::Unavailable(why))
                    });
                    assert!(
                        lsn <= p.last,
                        "wal: an overlapped group applies no write it did not log"
                    );
                    if lsn == p.last || synced.is_err() {
                        // Every write logged applied (or the sync failed, which
                        // refuses every write that would have written, as always).
                        synced
                    } else {
                        // A write of the group was refused after all: its record must
                        // not stay in the log. Cut the group's records off, then apply
                        // and log the group again, one write after the other.
                        match self.undo_append(&p) {
                            Ok(()) => {
                                for (i, s) in all.iter().enumerate() {
                                    if dead[i].is_none() {
                                        states[i] = Some(s.snapshot());
                                    }
                                    changed[i] = false;
                                }
                                try_overlap = false;
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            break (outcomes, lsn, logged, synced);
        };
        let synced_at = Instant::now();
        // The states the group replaced: dropped once the writers are answered (a
        // many-series write replaces thousands, and freeing them is not the writers'
        // wait).
        let mut replaced = Vec::new();
        match synced {
            Ok(()) => {
                let _gate = self.gate.read_now();
                for (i, s) in all.iter().enumerate() {
                    if changed[i]
                        && let (Some(g), Some(state)) = (&guards[i], &states[i])
                    {
                        replaced.push(s.install_logged(g, Arc::clone(state)));
                    }
                }
                self.committed.store(lsn, Ordering::SeqCst);
            }
            Err(e) => {
                for o in outcomes.iter_mut() {
                    if matches!(o, Some(Ok(r)) if r.iter().any(|r| r.written > 0)) {
                        *o = Some(Err(e.clone_kind()));
                    }
                }
            }
        }
        drop(guards);
        // The states just installed (a refused group installed none: nothing to poke).
        let mut poke = false;
        for (i, state) in states.iter().enumerate() {
            if changed[i]
                && let Some(u) = state.as_ref().and_then(|s| s.unfolded)
            {
                poke |= u.rows >= self.opts.fold_rows;
            }
        }
        poke |= self.bytes() > self.opts.max_log_bytes;
        poke |= self.unfolded_bytes() > self.opts.memory_bytes;
        if poke {
            *self.fold_wake.0.locked() = true;
            self.fold_wake.1.notify_all();
        }
        let installed_at = Instant::now();
        let (writes, series) = (group.len(), all.len());
        drop(all);
        let mut entries = Vec::with_capacity(writes);
        for (req, o) in group.into_iter().zip(outcomes) {
            let _ = req.reply.send(o.expect("every write has an outcome"));
            entries.push(req.entries);
        }
        tracing::debug!(
            writes,
            series,
            log_bytes,
            lock_us = (locked_at - now).as_micros() as u64,
            apply_us = (applied_at - locked_at).as_micros() as u64,
            helper_blocks = blocks.0,
            blocks = blocks.1,
            sync_us = (synced_at - applied_at).as_micros() as u64,
            install_us = (installed_at - synced_at).as_micros() as u64,
            "wal: group committed"
        );
        // Freed by the reaper while this thread takes the next group (here, without
        // one, or if it is gone: a failed send hands them back to be dropped).
        if let Some(h) = helpers
            .reap
            .as_ref()
            .filter(|_| replaced.len() >= PARALLEL_APPLY_ENTRIES)
        {
            let _ = h.send(HelperJob::Drop(replaced, entries));
        }
    }

    /// Hands the records of an appends-only `group` (lsns from `committed + 1`) to the
    /// sync helper. None when there is nothing to log, no helper, or the records
    /// would start a new segment (an overlapped append stays undoable by cutting the
    /// open segment back).
    fn start_sync(
        &self,
        group: &[Request],
        committed: u64,
        helpers: &Helpers,
    ) -> Option<PendingSync> {
        let helper = helpers.sync.as_ref()?;
        let mut buf = Vec::new();
        let mut lsn = committed;
        for req in group
            .iter()
            .filter(|r| r.entries.iter().any(|e| !e.1.is_empty()))
        {
            lsn += 1;
            buf.extend_from_slice(&record_of(req, lsn));
        }
        if buf.is_empty() {
            return None;
        }
        let len_before = self.log.locked().len;
        if len_before > 0 && len_before + buf.len() as u64 > self.opts.segment_bytes {
            return None;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let bytes = buf.len() as u64;
        let job = SyncJob {
            buf,
            first: committed + 1,
            last: lsn,
            reply: tx,
        };
        helper.send(HelperJob::Sync(job)).ok()?;
        Some(PendingSync {
            reply: rx,
            len_before,
            bytes,
            first: committed + 1,
            last: lsn,
        })
    }

    /// Cuts the records of an overlapped sync off the open segment again, durably (a
    /// write of the group was refused). If that fails the log is poisoned: a record
    /// of a refused write would otherwise be replayed.
    fn undo_append(&self, p: &PendingSync) -> Result<()> {
        let mut log = self.log.locked();
        assert_eq!(
            log.len,
            p.len_before + p.bytes,
            "wal: an undone append is the last of the open segment"
        );
        let name = segment_name(log.first);
        match log
            .file
            .set_len(p.len_before)
            .and_then(|()| log.file.sync_all())
        {
            Ok(()) => {
                log.len = p.len_before;
                self.bytes.fetch_sub(p.bytes, Ordering::Relaxed);
                self.records
                    .fetch_sub(p.last + 1 - p.first, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let why = format!(
                    "records of a refused write could not be cut off the write-ahead log ({e}); writes are refused until the server restarts"
                );
                tracing::error!("{why}");
                *self.poisoned.locked() = Some(why);
                Err(StorageError::io(format!("{WAL_DIR}/{name}"), e))
            }
        }
    }

    /// Appends the records `first..=last` (already encoded in `buf`) and syncs. A new
    /// segment is started first when the open one is full. On a failed write or sync
    /// the segment is cut back to where it was, so the refusal is true; if even that
    /// fails the log is poisoned.
    fn append(&self, buf: &[u8], first: u64, last: u64) -> Result<()> {
        let mut log = self.log.locked();
        let io_err = |name: String, e| StorageError::io(format!("{WAL_DIR}/{name}"), e);
        if log.len > 0 && log.len + buf.len() as u64 > self.opts.segment_bytes {
            let name = segment_name(first);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(&name))
                .map_err(|e| io_err(name.clone(), e))?;
            fsio::fsync_dir(&self.dir).map_err(|e| io_err(String::new(), e))?;
            let old = (log.first, first - 1, log.len);
            log.closed.push_back(old);
            log.file = file;
            log.first = first;
            log.len = 0;
        }
        let name = segment_name(log.first);
        let path = self.dir.join(&name);
        let wrote = failpoints::check(&path, failpoints::Op::Write)
            .and_then(|()| log.file.write_all(buf))
            .and_then(|()| failpoints::check(&path, failpoints::Op::Fsync))
            .and_then(|()| log.file.sync_data());
        match wrote {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.records.fetch_add(last + 1 - first, Ordering::Relaxed);
                log.len += buf.len() as u64;
                self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                debug_assert_eq!(
                    log.file.metadata().map(|m| m.len()).ok(),
                    Some(log.len),
                    "wal: segment length"
                );
                Ok(())
            }
            Err(e) => {
                let back = log.len;
                let undone = log.file.set_len(back).and_then(|()| log.file.sync_all());
                if let Err(u) = undone {
                    let why = format!(
                        "the write-ahead log could not be synced ({e}) nor cut back ({u}); writes are refused until the server restarts"
                    );
                    tracing::error!("{why}");
                    *self.poisoned.locked() = Some(why);
                }
                Err(io_err(name, e))
            }
        }
    }

    /// Removes the closed segments whose records are all folded: `keep_from` is the
    /// first lsn some series still holds in memory only (or past the last committed).
    pub fn remove_folded(&self, keep_from: u64) -> Result<usize> {
        let mut log = self.log.locked();
        let mut removed = 0;
        while let Some(&(first, last, len)) = log.closed.front() {
            if last >= keep_from {
                break;
            }
            let name = segment_name(first);
            fs::remove_file(self.dir.join(&name))
                .map_err(|e| StorageError::io(format!("{WAL_DIR}/{name}"), e))?;
            log.closed.pop_front();
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            removed += 1;
        }
        if removed > 0 {
            let _ = fsio::fsync_dir(&self.dir);
        }
        Ok(removed)
    }

    /// Waits for a poke from the committer or `timeout`, whichever comes first.
    pub(super) fn wait_fold(&self, timeout: Duration) {
        let (m, c) = &self.fold_wake;
        let mut poked = m.locked();
        if !*poked {
            poked = c.wait_timeout_now(poked, timeout).0;
        }
        *poked = false;
    }
}

//! The log's segments on disk: their names, the scan of every record on open (a torn
//! tail cut off, corruption in the middle refused), and `admin repair`'s cut.

use super::*;

/// `wal/<lsn>.wal`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:016x}.{SEGMENT_EXT}")
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

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
pub(super) fn any_valid_record(b: &[u8]) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    (0..b.len().saturating_sub(RECORD_HEADER_LEN - 1))
        .filter(|&i| b[i..i + U32_LEN] == magic)
        .any(|i| decode_record(&b[i..]).is_ok())
}

/// Reads every segment. A bad record with nothing valid after it in the last non-empty
/// segment is a torn tail: with `cut`, the segment is truncated there (and synced).
/// Any other bad record, or a break in the lsn sequence, is `Err(Corrupt)`.
pub fn scan(dir: &Path, cut: bool) -> Result<std::result::Result<Scan, Corrupt>> {
    let mut records = Vec::new();
    let scanned = scan_each(dir, cut, |r| {
        records.push(r);
        Ok(())
    })?;
    Ok(scanned.map(|mut s| {
        s.records = records;
        s
    }))
}

/// [`scan`], handing each valid record to `each` in lsn order as it is decoded instead
/// of keeping them (`Scan::records` stays empty): the open replays a log of gigabytes
/// one segment at a time. A record handed over may be followed by a corrupt one, which
/// ends the scan with `Err(Corrupt)`: what `each` built from the records before must
/// then be dropped (the open fails). An error of `each` ends the scan with it.
pub fn scan_each(
    dir: &Path,
    cut: bool,
    mut each: impl FnMut(Record) -> Result<()>,
) -> Result<std::result::Result<Scan, Corrupt>> {
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
                    each(r)?;
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
    let _lock = crate::storage::lock_root(root)?;
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

//! An immutable view of one series at one version, and the reads made from it.
//!
//! Readers clone an `Arc<Snapshot>` and never block writers: a write builds a new
//! snapshot and swaps it in. Superseded chunk files stay on disk until the last
//! snapshot that lists them is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::chunk::{ChunkRef, MappedChunk};
use super::error::Result;
use super::format::{ChunkEntry, Manifest};
use crate::record::{MonthPartition, SeriesMeta, TS_MAX, TS_MIN, TsRange};

/// One month's live chunks, shared between states (see [`Snapshot::live`]); a writer
/// changes it with `Arc::make_mut`, which copies it only if another state holds it.
pub type MonthChunks = Arc<Vec<Arc<ChunkRef>>>;

/// `live` of a [`Snapshot`] from lists built month by month.
pub fn month_lists(lists: BTreeMap<i32, Vec<Arc<ChunkRef>>>) -> BTreeMap<i32, MonthChunks> {
    lists.into_iter().map(|(m, l)| (m, Arc::new(l))).collect()
}

/// One committed state of a series.
#[derive(Debug)]
pub struct Snapshot {
    pub meta: Arc<SeriesMeta>,
    pub version: u64,
    pub next_generation: u64,
    /// Months entirely older than `now - retention_ms` are dropped (0: keep forever,
    /// or the store's default).
    pub retention_ms: i64,
    /// Live chunks by month, ascending generation. Within a month, chunks are disjoint
    /// and ascending in `ts` (a delta is only ever written past the month's last ts).
    /// Each month's list is shared (`Arc`) between the states that did not change it:
    /// a write makes a new state, and copying the lists of every month of a series
    /// with years of history on every one-bar append would cost more than the append.
    pub live: BTreeMap<i32, MonthChunks>,
    /// Superseded entries still listed in the manifest until their files are gone.
    pub obsolete: Vec<ChunkEntry>,
    /// The last write-ahead log record applied to this state (0: none). Equal to the
    /// manifest's `wal_lsn` when nothing is waiting to be folded.
    pub wal_lsn: u64,
    /// Rows applied from the log and not yet folded into chunk files (`None`: this
    /// state is exactly the manifest on disk).
    pub unfolded: Option<Unfolded>,
    /// File chunks that an in-memory rewrite of their month took out of `live`: still
    /// live in the manifest on disk until the next fold lists them obsolete.
    pub superseded: Vec<Arc<ChunkRef>>,
}

/// What a series holds in memory only, waiting to be folded into chunk files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfolded {
    /// The first log record not in the manifest: the log keeps every record from
    /// here on until this series is folded.
    pub first_lsn: u64,
    /// When that record was applied (the fold's age threshold counts from here).
    pub since: std::time::Instant,
    /// Rows of the in-memory chunks (the fold's size threshold).
    pub rows: u64,
    /// Bytes of the in-memory chunks, laid out as files.
    pub bytes: u64,
}

/// Rows `start..end` of one verified chunk: a zero-copy view.
#[derive(Debug, Clone)]
pub struct ChunkSlice {
    pub chunk: Arc<MappedChunk>,
    pub start: usize,
    pub end: usize,
}

impl ChunkSlice {
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn ts(&self) -> &[i64] {
        &self.chunk.ts()[self.start..self.end]
    }
    pub fn col(&self, i: usize) -> &[i64] {
        &self.chunk.col(i)[self.start..self.end]
    }
    pub fn col_f64(&self, i: usize) -> &[f64] {
        &self.chunk.col_f64(i)[self.start..self.end]
    }
    /// Rows `a..b` of this slice (relative offsets).
    pub fn sub(&self, a: usize, b: usize) -> ChunkSlice {
        ChunkSlice {
            chunk: Arc::clone(&self.chunk),
            start: self.start + a,
            end: self.start + b,
        }
    }
}

impl Snapshot {
    pub fn empty(meta: Arc<SeriesMeta>) -> Snapshot {
        Snapshot {
            meta,
            version: 0,
            next_generation: 1,
            retention_ms: 0,
            live: BTreeMap::new(),
            obsolete: Vec::new(),
            wal_lsn: 0,
            unfolded: None,
            superseded: Vec::new(),
        }
    }

    pub fn chunks(&self) -> impl DoubleEndedIterator<Item = &Arc<ChunkRef>> {
        self.live.values().flat_map(|l| l.iter())
    }

    pub fn rows(&self) -> u64 {
        self.chunks().map(|c| c.entry.rows).sum()
    }

    /// Bytes of chunk files plus sidecars (rows held in memory only are not counted:
    /// see [`Snapshot::unfolded`]).
    pub fn bytes(&self) -> u64 {
        self.chunks()
            .filter(|c| !c.is_memory())
            .map(|c| c.entry.file_len + c.entry.zonemap.len + c.entry.vindex.len)
            .sum()
    }

    /// What [`Snapshot::bytes`] would be with every chunk stored raw (uncompressed).
    pub fn raw_bytes(&self) -> u64 {
        let ncols = self.meta.key.kind().ncols();
        self.chunks()
            .filter(|c| !c.is_memory())
            .map(|c| c.entry.raw_len(ncols) + c.entry.zonemap.len + c.entry.vindex.len)
            .sum()
    }

    pub fn first_ts(&self) -> Option<i64> {
        self.chunks().next().map(|c| c.entry.first_ts)
    }

    pub fn last_ts(&self) -> Option<i64> {
        self.chunks().next_back().map(|c| c.entry.last_ts)
    }

    /// The manifest this snapshot was committed as. Only a state with nothing in
    /// memory is a manifest: every commit path folds first.
    pub fn to_manifest(&self) -> Manifest {
        assert!(
            self.unfolded.is_none()
                && self.superseded.is_empty()
                && self.chunks().all(|c| !c.is_memory()),
            "a snapshot holding unfolded log rows is not a manifest"
        );
        let mut entries: Vec<ChunkEntry> = self.chunks().map(|c| c.entry.clone()).collect();
        entries.extend(self.obsolete.iter().cloned());
        Manifest {
            meta: (*self.meta).clone(),
            version: self.version,
            next_generation: self.next_generation,
            retention_ms: self.retention_ms,
            wal_lsn: self.wal_lsn,
            entries,
        }
    }

    /// Live chunks that may hold rows of `range`, in `ts` order.
    pub fn plan(&self, range: TsRange) -> Vec<Arc<ChunkRef>> {
        if range.is_empty() {
            return Vec::new();
        }
        let lo = MonthPartition::from_ts(range.lo().clamp(TS_MIN, TS_MAX)).0;
        let hi = MonthPartition::from_ts(range.hi().clamp(TS_MIN, TS_MAX)).0;
        if lo > hi {
            return Vec::new();
        }
        self.live
            .range(lo..=hi)
            .flat_map(|(_, v)| v.iter())
            .filter(|c| c.entry.last_ts >= range.lo() && c.entry.first_ts <= range.hi())
            .cloned()
            .collect()
    }

    /// Lazily mapped slices covering `range`, ascending. Chunks are mapped (and
    /// verified) only as the iterator reaches them, so a stream starts at once.
    pub fn range(&self, range: TsRange) -> RangeIter {
        RangeIter {
            chunks: self.plan(range).into_iter(),
            range,
        }
    }

    /// The last `n` rows of `range`, ascending.
    pub fn latest(&self, range: TsRange, n: usize) -> Result<Vec<ChunkSlice>> {
        let mut out = Vec::new();
        let mut need = n;
        for c in self.plan(range).iter().rev() {
            if need == 0 {
                break;
            }
            let s = slice_of(&c.map()?, range);
            if s.is_empty() {
                continue;
            }
            let take = need.min(s.len());
            out.push(s.sub(s.len() - take, s.len()));
            need -= take;
        }
        out.reverse();
        Ok(out)
    }

    /// Calls `f` with the last row of `range` (every column, `ts` first) and returns
    /// what it returns; `None` when the range holds no row. A chunk that ends inside
    /// the range answers from its kept last row ([`ChunkRef::last_row`]), mapping no
    /// file once warm; otherwise the chunk is mapped and searched. Allocates nothing:
    /// a cross section of 100,000 series asks this once per series.
    pub fn with_last_row<R>(
        &self,
        range: TsRange,
        f: impl FnOnce(&[i64]) -> R,
    ) -> Result<Option<R>> {
        if range.is_empty() {
            return Ok(None);
        }
        let lo = MonthPartition::from_ts(range.lo().clamp(TS_MIN, TS_MAX)).0;
        let hi = MonthPartition::from_ts(range.hi().clamp(TS_MIN, TS_MAX)).0;
        if lo > hi {
            return Ok(None);
        }
        // Months ascend and, within one, chunks ascend by ts: the first chunk from the
        // end that reaches into the range holds its last row.
        for (_, chunks) in self.live.range(lo..=hi).rev() {
            for c in chunks.iter().rev() {
                if c.entry.first_ts > range.hi() {
                    continue;
                }
                if c.entry.last_ts < range.lo() {
                    return Ok(None);
                }
                if range.contains(c.entry.last_ts) {
                    return Ok(Some(f(c.last_row()?)));
                }
                let s = slice_of(&c.map()?, range);
                if s.is_empty() {
                    continue;
                }
                let i = s.len() - 1;
                let row: Vec<i64> = (0..s.chunk.header.ncols).map(|k| s.col(k)[i]).collect();
                return Ok(Some(f(&row)));
            }
        }
        Ok(None)
    }

    /// Row at exactly `ts`, if stored.
    pub fn at(&self, ts: i64) -> Result<Option<ChunkSlice>> {
        for s in self.range(TsRange::new(Some(ts), Some(ts))) {
            let s = s?;
            if !s.is_empty() {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Counts the rows in `range` (exact; maps only the boundary chunks).
    pub fn count(&self, range: TsRange) -> Result<u64> {
        let mut n = 0;
        for c in self.plan(range) {
            if range.contains(c.entry.first_ts) && range.contains(c.entry.last_ts) {
                n += c.entry.rows;
            } else {
                n += slice_of(&c.map()?, range).len() as u64;
            }
        }
        Ok(n)
    }
}

/// The rows of `chunk` inside `range`.
pub fn slice_of(chunk: &Arc<MappedChunk>, range: TsRange) -> ChunkSlice {
    let ts = chunk.ts();
    let start = if range.lo() <= chunk.header.first_ts {
        0
    } else {
        ts.partition_point(|&t| t < range.lo())
    };
    let end = if range.hi() >= chunk.header.last_ts {
        ts.len()
    } else {
        ts.partition_point(|&t| t <= range.hi())
    };
    ChunkSlice {
        chunk: Arc::clone(chunk),
        start,
        end: end.max(start),
    }
}

/// Iterator of [`ChunkSlice`]s for a range; see [`Snapshot::range`].
pub struct RangeIter {
    chunks: std::vec::IntoIter<Arc<ChunkRef>>,
    range: TsRange,
}

impl Iterator for RangeIter {
    type Item = Result<ChunkSlice>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let c = self.chunks.next()?;
            match c.map() {
                Err(e) => return Some(Err(e)),
                Ok(m) => {
                    let s = slice_of(&m, self.range);
                    if !s.is_empty() {
                        return Some(Ok(s));
                    }
                }
            }
        }
    }
}

//! An immutable view of one series at one version, and the reads made from it.
//!
//! Readers clone an `Arc<Snapshot>` and never block writers: a write builds a new
//! snapshot and swaps it in. Superseded chunk files stay on disk until the last
//! snapshot that lists them is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::chunk::{ChunkRef, MappedChunk};
use super::error::Result;
use super::format::{ChunkEntry, Manifest, STATE_LIVE};
use crate::record::{SeriesMeta, TsRange};

/// Chunks of one month's list held inline: a month's files and its in-memory tail
/// are a handful, and a logged write makes a new list for every series it names
/// (thousands in a many-series write), one allocation each instead of two.
pub const MONTH_CHUNKS_INLINE: usize = 8;

/// The chunks of one month, oldest first.
pub type ChunkList = smallvec::SmallVec<[Arc<ChunkRef>; MONTH_CHUNKS_INLINE]>;

/// One month's live chunks, shared between states (see [`Snapshot::live`]); a writer
/// changes it with `Arc::make_mut`, which copies it only if another state holds it.
pub type MonthChunks = Arc<ChunkList>;

/// `live` of a [`Snapshot`] from lists built month by month.
pub fn month_lists(lists: BTreeMap<i32, Vec<Arc<ChunkRef>>>) -> MonthMap {
    let mut map = MonthMap::default();
    let mut lists: Vec<(i32, MonthChunks)> = lists
        .into_iter()
        .map(|(m, l)| (m, Arc::new(ChunkList::from_vec(l))))
        .collect();
    let split = lists.len().saturating_sub(RECENT_MONTHS_KEPT);
    map.recent = lists.split_off(split).into_iter().collect();
    map.old = Arc::new(lists.into_iter().collect());
    map.check();
    map
}

/// Months [`MonthMap::recent`] keeps after it spills the older ones.
const RECENT_MONTHS_KEPT: usize = 2;
/// Months [`MonthMap::recent`] may hold before it spills (see there).
const RECENT_MONTHS_MAX: usize = 6;

/// A series' live chunks by month, in two levels: every write makes a new state with
/// its own map, and a write almost always touches only the latest month or two. The
/// older months sit in one shared map that a new state takes by reference count, so
/// an append costs the same whatever the history of the series (with one map, each
/// write paid a reference count per month of history, twice: on clone and on drop).
#[derive(Debug, Clone, Default)]
pub struct MonthMap {
    /// The older months, shared by the states that did not change one of them (a
    /// rewrite of an old month, a compaction or retention copies it once).
    old: Arc<BTreeMap<i32, MonthChunks>>,
    /// The latest months, each after every month of `old`, ascending; at most
    /// `RECENT_MONTHS_MAX` after an insert (the oldest are spilled into `old` then,
    /// once a new month begins, not once a write). Inline, not a tree: every write
    /// clones this map, and a many-series write does it for thousands of series.
    recent: RecentMonths,
}

impl MonthMap {
    /// The invariant the two levels keep: every month of `old` before every month of
    /// `recent` (so iteration is `old` then `recent`, in order).
    fn check(&self) {
        debug_assert!(
            match (
                self.old.keys().next_back(),
                self.recent.first().map(|(m, _)| m)
            ) {
                (Some(a), Some(b)) => a < b,
                _ => true,
            },
            "every old month is before every recent month"
        );
        debug_assert!(
            self.recent.windows(2).all(|w| w[0].0 < w[1].0),
            "the recent months ascend"
        );
    }

    /// Where month `m` is in `recent`, if there.
    fn recent_at(&self, m: i32) -> Option<usize> {
        self.recent.binary_search_by_key(&m, |e| e.0).ok()
    }

    /// Whether month `m` belongs in `old` (it is not after `old`'s last month).
    fn in_old(&self, m: i32) -> bool {
        self.old.keys().next_back().is_some_and(|&last| m <= last)
    }

    pub fn get(&self, m: &i32) -> Option<&MonthChunks> {
        self.recent_at(*m)
            .map(|i| &self.recent[i].1)
            .or_else(|| self.old.get(m))
    }

    pub fn contains_key(&self, m: &i32) -> bool {
        self.get(m).is_some()
    }

    pub fn len(&self) -> usize {
        self.old.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> MonthIter<'_> {
        self.old
            .iter()
            .chain(self.recent.iter().map(pair as PairOf<'_>))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &MonthChunks> {
        self.iter().map(|(_, v)| v)
    }

    pub fn range(
        &self,
        r: std::ops::RangeInclusive<i32>,
    ) -> impl DoubleEndedIterator<Item = (&i32, &MonthChunks)> {
        self.old.range(r.clone()).chain(
            self.recent
                .iter()
                .filter(move |(m, _)| r.contains(m))
                .map(pair as PairOf<'_>),
        )
    }

    pub fn insert(&mut self, m: i32, v: MonthChunks) -> Option<MonthChunks> {
        let old = if self.in_old(m) {
            Arc::make_mut(&mut self.old).insert(m, v)
        } else {
            match self.recent.binary_search_by_key(&m, |e| e.0) {
                Ok(i) => Some(std::mem::replace(&mut self.recent[i].1, v)),
                Err(i) => {
                    self.recent.insert(i, (m, v));
                    None
                }
            }
        };
        self.spill();
        self.check();
        old
    }

    pub fn remove(&mut self, m: &i32) -> Option<MonthChunks> {
        if self.in_old(*m) {
            Arc::make_mut(&mut self.old).remove(m)
        } else {
            self.recent_at(*m).map(|i| self.recent.remove(i).1)
        }
    }

    /// Month `m`'s list, made empty if absent (`BTreeMap::entry(m).or_default()`).
    pub fn get_or_default_mut(&mut self, m: i32) -> &mut MonthChunks {
        if self.in_old(m) {
            Arc::make_mut(&mut self.old).entry(m).or_default()
        } else {
            let i = self
                .recent
                .binary_search_by_key(&m, |e| e.0)
                .unwrap_or_else(|i| {
                    self.recent.insert(i, (m, MonthChunks::default()));
                    i
                });
            &mut self.recent[i].1
        }
    }

    /// Moves the oldest recent months into `old` once `recent` holds more than
    /// `RECENT_MONTHS_MAX`, keeping `RECENT_MONTHS_KEPT`.
    fn spill(&mut self) {
        if self.recent.len() <= RECENT_MONTHS_MAX {
            return;
        }
        let spill = self.recent.len() - RECENT_MONTHS_KEPT;
        Arc::make_mut(&mut self.old).extend(self.recent.drain(..spill));
        assert!(
            self.recent.len() == RECENT_MONTHS_KEPT,
            "recent keeps its months"
        );
    }
}

/// [`MonthMap::recent`]: room for the months it holds before it spills.
type RecentMonths = smallvec::SmallVec<[(i32, MonthChunks); RECENT_MONTHS_MAX + 1]>;

/// A recent month as the map's iterators give it.
type PairOf<'a> = fn(&'a (i32, MonthChunks)) -> (&'a i32, &'a MonthChunks);

fn pair(e: &(i32, MonthChunks)) -> (&i32, &MonthChunks) {
    (&e.0, &e.1)
}

/// The months of a [`MonthMap`] in order.
pub type MonthIter<'a> = std::iter::Chain<
    std::collections::btree_map::Iter<'a, i32, MonthChunks>,
    std::iter::Map<std::slice::Iter<'a, (i32, MonthChunks)>, PairOf<'a>>,
>;

impl<'a> IntoIterator for &'a MonthMap {
    type Item = (&'a i32, &'a MonthChunks);
    type IntoIter = MonthIter<'a>;
    fn into_iter(self) -> MonthIter<'a> {
        self.iter()
    }
}

impl std::ops::Index<&i32> for MonthMap {
    type Output = MonthChunks;
    fn index(&self, m: &i32) -> &MonthChunks {
        self.get(m).expect("a month of the map")
    }
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
    /// Kline bars may sit off the timeframe's grid (`format::SERIES_IRREGULAR`).
    pub irregular: bool,
    /// Live chunks by month, ascending generation. Within a month, chunks are disjoint
    /// and ascending in `ts` (a delta is only ever written past the month's last ts).
    /// Each month's list is shared (`Arc`) between the states that did not change it:
    /// a write makes a new state, and copying the lists of every month of a series
    /// with years of history on every one-bar append would cost more than the append.
    pub live: MonthMap,
    /// Superseded entries still listed in the manifest until their files are gone;
    /// shared by the states that did not change them (a log write makes a new state
    /// and leaves them to the next fold or compaction).
    pub obsolete: Arc<Vec<ChunkEntry>>,
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
            irregular: false,
            live: MonthMap::default(),
            obsolete: Arc::default(),
            wal_lsn: 0,
            unfolded: None,
            superseded: Vec::new(),
        }
    }

    /// This state with `live` for its chunks and nothing unfolded or superseded: what
    /// is durable once a fold or a catalog record holds the rows.
    pub fn settled(&self, live: MonthMap) -> Snapshot {
        Snapshot {
            meta: Arc::clone(&self.meta),
            version: self.version,
            next_generation: self.next_generation,
            retention_ms: self.retention_ms,
            irregular: self.irregular,
            live,
            obsolete: self.obsolete.clone(),
            wal_lsn: self.wal_lsn,
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
            irregular: self.irregular,
            wal_lsn: self.wal_lsn,
            entries,
        }
    }

    /// Live chunks that may hold rows of `range`, in `ts` order.
    pub fn plan(&self, range: TsRange) -> Vec<Arc<ChunkRef>> {
        if range.is_empty() {
            return Vec::new();
        }
        let part = self.meta.partitioning();
        let (ts_min, ts_max) = part.ts_bounds();
        let lo = part.of(range.lo().clamp(ts_min, ts_max));
        let hi = part.of(range.hi().clamp(ts_min, ts_max));
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
        let part = self.meta.partitioning();
        let (ts_min, ts_max) = part.ts_bounds();
        let lo = part.of(range.lo().clamp(ts_min, ts_max));
        let hi = part.of(range.hi().clamp(ts_min, ts_max));
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
            let mapped = match self.range.end {
                Some(hi) => c.map_through(hi),
                None => c.map(),
            };
            match mapped {
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

impl Snapshot {
    /// Whether `next` continues the series whose state is `snap`: the same metadata, a
    /// version not below it, and every live entry either live here unchanged or of a
    /// generation at or past `snap.next_generation` (generations only grow within one
    /// incarnation of a key; a delete and re-registration restarts them, so such a
    /// manifest is a new series and replaces this one).
    pub fn continued_by(&self, next: &Manifest) -> bool {
        let snap = self;
        if *snap.meta != next.meta || next.version < snap.version {
            return false;
        }
        let here: std::collections::HashMap<(i32, u64), &ChunkEntry> = snap
            .chunks()
            .map(|c| ((c.entry.month, c.entry.generation), &c.entry))
            .collect();
        next.entries
            .iter()
            .filter(|e| e.state == STATE_LIVE)
            .all(|e| match here.get(&(e.month, e.generation)) {
                Some(mine) => *mine == e,
                None => e.generation >= snap.next_generation,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-level map answers as one ordered map (a `BTreeMap` model) under
    /// inserts, removes and in-place edits anywhere, with `recent` bounded, and a
    /// clone shares `old` until one of its months changes.
    #[test]
    fn month_map_matches_an_ordered_map() {
        let mut model: BTreeMap<i32, MonthChunks> = BTreeMap::new();
        let mut map = MonthMap::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..4_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly the latest months (a feed), sometimes anywhere (history).
            let m = if x.is_multiple_of(4) {
                (x >> 8) as i32 % 200
            } else {
                step / 20 + (x >> 8) as i32 % 3
            };
            match (x >> 4) % 5 {
                0..=2 => {
                    let v: MonthChunks = Arc::new(ChunkList::new());
                    let a = map.insert(m, Arc::clone(&v)).map(|o| Arc::as_ptr(&o));
                    let b = model.insert(m, v).map(|o| Arc::as_ptr(&o));
                    assert_eq!(a, b);
                }
                3 => {
                    let a = map.remove(&m).map(|o| Arc::as_ptr(&o));
                    let b = model.remove(&m).map(|o| Arc::as_ptr(&o));
                    assert_eq!(a, b);
                }
                _ => {
                    let v = Arc::clone(map.get_or_default_mut(m));
                    let w = model.entry(m).or_insert_with(|| Arc::clone(&v));
                    assert!(Arc::ptr_eq(&v, w) || (v.is_empty() && w.is_empty()));
                    *w = Arc::clone(&v);
                }
            }
            assert!(map.recent.len() <= RECENT_MONTHS_MAX + 1);
            map.check();
            let got: Vec<(i32, *const ChunkList)> =
                map.iter().map(|(k, v)| (*k, Arc::as_ptr(v))).collect();
            let want: Vec<(i32, *const ChunkList)> =
                model.iter().map(|(k, v)| (*k, Arc::as_ptr(v))).collect();
            assert_eq!(got, want, "step {step}");
            assert_eq!(map.len(), model.len());
            let (lo, hi) = (m - 5, m + 5);
            let r: Vec<i32> = map.range(lo..=hi).rev().map(|(k, _)| *k).collect();
            let w: Vec<i32> = model.range(lo..=hi).rev().map(|(k, _)| *k).collect();
            assert_eq!(r, w);
        }
        // A store's map (36 months, as recovery builds it) shares its older months
        // with a clone, and appends to the latest month do not copy them.
        let lists: BTreeMap<i32, Vec<Arc<ChunkRef>>> = (0..36).map(|m| (m, Vec::new())).collect();
        let map = month_lists(lists);
        assert_eq!((map.old.len(), map.recent.len()), (34, 2));
        let mut next = map.clone();
        for _ in 0..100 {
            next = next.clone();
            next.insert(35, Arc::new(ChunkList::new()));
            assert!(
                Arc::ptr_eq(&next.old, &map.old),
                "an append copies no old month"
            );
        }
        // Every new month past the limit spills into `old`: copied once, not per write.
        for m in 36..36 + RECENT_MONTHS_MAX as i32 {
            next.insert(m, Arc::new(ChunkList::new()));
        }
        assert!(!Arc::ptr_eq(&next.old, &map.old));
        assert!(next.recent.len() <= RECENT_MONTHS_MAX);
        assert_eq!(next.len(), 36 + RECENT_MONTHS_MAX);
    }
}

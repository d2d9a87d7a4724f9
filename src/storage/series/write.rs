//! The direct write path's first steps: a batch checked (shape, size, timestamps,
//! the expected version), sorted, refused on a repeated `ts`, split by month, then
//! planned and committed (`write`, `write_pieces`).

use super::*;

impl Series {
    /// Checks a write's shape, size and timestamps and sorts it by `ts` (refusing a
    /// `ts` repeated inside it): what every write path does before anything else.
    pub fn prepare(&self, batch: &mut WriteBatch) -> Result<()> {
        check_shape(&self.meta, batch)?;
        check_row_limit(batch.len(), self.opts.max_write_rows)?;
        check_ts_bounds(self.meta.partitioning(), &batch.cols[0])?;
        check_tick_rows(self.meta.key.kind(), batch)?;
        sort_and_check_duplicates(batch, self.meta.layout().key)
    }

    /// Writes `batch` (any order; upsert) as one all-or-nothing commit of chunk files,
    /// bypassing the write-ahead log (bulk writes; [`crate::storage::Store::write`] routes).
    pub fn write(
        &self,
        mut batch: WriteBatch,
        expected_version: Option<u64>,
    ) -> Result<WriteReport> {
        self.prepare(&mut batch)?;
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        check_expected(&snap, expected_version)?;
        if batch.is_empty() {
            return Ok(WriteReport {
                version: snap.version,
                ..WriteReport::default()
            });
        }
        // Under the series' lock: two appends at one `ts` get different numbers.
        assign_seq(&snap, &mut batch)?;
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::new();
        for (month, range) in month_groups(self.meta.partitioning(), &batch.cols[0]) {
            let new: Vec<&[i64]> = batch.cols.iter().map(|c| &c[range.clone()]).collect();
            plans.push(self.plan_month(&snap, month, &new, next_gen)?);
            next_gen += 1;
        }
        self.commit(&snap, plans, next_gen)
    }

    /// Writes rows given in pieces (a DoPut's received batches, read in place) as
    /// one all-or-nothing commit, like [`Series::write`] but without gathering them
    /// into one batch first: a month inside one piece is written from that piece's
    /// memory, a month that spans pieces is joined (at most a month's rows). The
    /// caller ([`crate::storage::Store::write_pieces`]) checked that every piece has the
    /// series' columns at equal lengths and that the timestamps increase strictly
    /// across all of them; anything else goes through [`Series::write`].
    pub(crate) fn write_pieces(
        &self,
        pieces: &[Vec<&[i64]>],
        expected_version: Option<u64>,
    ) -> Result<WriteReport> {
        let ncols = self.meta.key.kind().ncols();
        debug_assert!(
            pieces_in_order(pieces)
                && pieces
                    .iter()
                    .all(|p| p.len() == ncols && p.iter().all(|c| c.len() == p[0].len())),
            "pieces checked by the caller"
        );
        let rows: usize = pieces.iter().map(|p| p[0].len()).sum();
        check_row_limit(rows, self.opts.max_write_rows)?;
        let mut at = 0;
        for p in pieces {
            check_ts_bounds(self.meta.partitioning(), p[0]).map_err(|e| match e {
                StorageError::InvalidArgument(m) if at > 0 => {
                    StorageError::InvalidArgument(format!("{m} (piece starting at record {at})"))
                }
                e => e,
            })?;
            at += p[0].len();
        }
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        check_expected(&snap, expected_version)?;
        if rows == 0 {
            return Ok(WriteReport {
                version: snap.version,
                ..WriteReport::default()
            });
        }
        // Each month's runs, in order: (piece, rows of that piece).
        type Runs = Vec<(usize, std::ops::Range<usize>)>;
        let mut months: Vec<(i32, Runs)> = Vec::new();
        for (k, p) in pieces.iter().enumerate() {
            for (month, range) in month_groups(self.meta.partitioning(), p[0]) {
                match months.last_mut() {
                    Some((m, runs)) if *m == month => runs.push((k, range)),
                    _ => months.push((month, vec![(k, range)])),
                }
            }
        }
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::with_capacity(months.len());
        for (month, runs) in &months {
            let (k0, r0) = &runs[0];
            let plan = if runs.len() == 1 {
                let new: Vec<&[i64]> = pieces[*k0].iter().map(|c| &c[r0.clone()]).collect();
                self.plan_month(&snap, *month, &new, next_gen)?
            } else if self.appends_as_chunk(&snap, *month, pieces[*k0][0][r0.start]) {
                // A month across pieces, new or appended to: its runs stay in place
                // until a writer thread builds its chunk.
                let split: Vec<Vec<&[i64]>> = (0..ncols)
                    .map(|c| {
                        runs.iter()
                            .map(|(k, r)| &pieces[*k][c][r.clone()])
                            .collect()
                    })
                    .collect();
                let n: usize = runs.iter().map(|(_, r)| r.len()).sum();
                let existing = snap.live.get(month).map_or(0, |l| l.len());
                MonthPlan {
                    month: *month,
                    generation: next_gen,
                    full: existing == 0,
                    cols: Vec::new(),
                    split,
                    inserted: n as u64,
                    replaced: 0,
                    compressed: None,
                }
            } else {
                // A rewrite of the month merges from one joined copy of the new rows.
                let joined: Vec<Vec<i64>> = (0..ncols)
                    .map(|c| {
                        runs.iter()
                            .flat_map(|(k, r)| &pieces[*k][c][r.clone()])
                            .copied()
                            .collect()
                    })
                    .collect();
                let new: Vec<&[i64]> = joined.iter().map(|c| &c[..]).collect();
                self.merge_month(&snap, *month, &new, next_gen)?
            };
            plans.push(plan);
            next_gen += 1;
        }
        self.commit(&snap, plans, next_gen)
    }
}

pub(super) fn push_row(cols: &mut [Vec<i64>], src: &[&[i64]], j: usize) {
    for (c, out) in cols.iter_mut().enumerate() {
        out.push(src[c][j]);
    }
}

pub(super) fn check_shape(meta: &SeriesMeta, batch: &WriteBatch) -> Result<()> {
    let ncols = meta.key.kind().ncols();
    if batch.cols.len() != ncols {
        return Err(StorageError::InvalidArgument(format!(
            "a {} write needs {ncols} columns, got {}",
            meta.key.kind().as_str(),
            batch.cols.len()
        )));
    }
    let n = batch.len();
    if batch.cols.iter().any(|c| c.len() != n) {
        return Err(StorageError::InvalidArgument(
            "columns have different lengths".into(),
        ));
    }
    Ok(())
}

/// Refuses a write of more rows than `storage.max_write_rows`, whatever the front end.
pub(super) fn check_row_limit(rows: usize, max: usize) -> Result<()> {
    if rows > max {
        return Err(StorageError::PayloadTooLarge(format!(
            "a write may carry at most {max} rows (storage.max_write_rows), this one has {rows}; split it into several writes"
        )));
    }
    Ok(())
}

pub(super) fn check_ts_bounds(part: Partitioning, ts: &[i64]) -> Result<()> {
    let (lo, hi) = part.ts_bounds();
    // The smallest and largest first, a loop without an early exit that the compiler
    // vectorizes (a bulk write checks tens of millions); the offending record is
    // looked for only when there is one.
    let (min, max) = ts
        .iter()
        .fold((i64::MAX, i64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
    if ts.is_empty() || (lo <= min && max <= hi) {
        return Ok(());
    }
    if let Some(i) = ts.iter().position(|t| !(lo..=hi).contains(t)) {
        let what = match part {
            Partitioning::MonthMs => "years 1000 to 9999, in milliseconds",
            _ => "1970-01-01 to 2262-04-11, in nanoseconds",
        };
        return Err(StorageError::InvalidArgument(format!(
            "record {i}: ts {} is outside the supported range {lo}..={hi} ({what})",
            ts[i]
        )));
    }
    Ok(())
}

/// The contract's sanity checks of trade and quote records, refusing the first
/// record (in request order) that fails: a trade's `size` is `>= 0` and its `side`
/// -1, 0 or 1; a quote's sizes are `>= 0` and `bid <= ask` unless a side is 0 (an
/// empty book side). Other kinds are checked by their front ends.
pub(super) fn check_tick_rows(kind: SeriesKind, batch: &WriteBatch) -> Result<()> {
    if !kind.is_tick() {
        return Ok(());
    }
    let c = &batch.cols;
    for i in 0..batch.len() {
        if let Some(why) = crate::record::tick_row_error(kind, |k| c[k][i]) {
            return Err(StorageError::Unprocessable(format!("record {i}: {why}")));
        }
    }
    Ok(())
}

/// Gives every row of a sorted tick batch written without a `seq`
/// ([`SEQ_UNASSIGNED`]) the next `seq` of its `ts`, in arrival order: after the
/// largest stored for that `ts` and the largest given explicitly in the batch.
/// Sorting put such rows after the explicit ones of their `ts`, in arrival order
/// (a stable sort), so the batch stays sorted by `(ts, seq)`. A no-op for layouts
/// keyed by `ts` alone.
pub(super) fn assign_seq(snap: &Snapshot, batch: &mut WriteBatch) -> Result<()> {
    if snap.meta.layout().key != KeyShape::TsSeq {
        return Ok(());
    }
    // Rows past the series' last `ts` have nothing stored at their `ts`: no lookup.
    let last = snap.last_ts();
    number_seq(batch, |t| {
        if last.is_none_or(|l| t > l) {
            return Ok(None);
        }
        snap.with_last_row(TsRange::new(Some(t), Some(t)), |row| row[1] as u64)
    })
}

/// A tick batch as the log records it: `Some` of a copy with every placeholder
/// `seq` numbered against `snap` (the state the writes before it leave), `None` when
/// it has no placeholder (then it is logged as it is). The committer calls this under
/// the series' lock, so two appends at one `ts` get different numbers, and a log
/// record never holds a placeholder (the replay applies its rows as they are).
pub(in crate::storage) fn numbered(
    snap: &Snapshot,
    batch: &WriteBatch,
) -> Result<Option<WriteBatch>> {
    if !needs_seq(snap.meta.key.kind(), batch) {
        return Ok(None);
    }
    let mut b = batch.clone();
    assign_seq(snap, &mut b)?;
    debug_assert!(!needs_seq(snap.meta.key.kind(), &b), "every seq numbered");
    Ok(Some(b))
}

/// [`numbered`] for a batch that comes after every row of its series (the log's
/// overlapped sync encodes the records of an appends-only group before it applies):
/// nothing is stored at any of its `ts`, so its numbers depend on the batch alone,
/// and are the ones [`numbered`] gives it against the state.
pub(in crate::storage) fn numbered_append(
    kind: SeriesKind,
    batch: &WriteBatch,
) -> Result<Option<WriteBatch>> {
    if !needs_seq(kind, batch) {
        return Ok(None);
    }
    let mut b = batch.clone();
    number_seq(&mut b, |_| Ok(None))?;
    Ok(Some(b))
}

/// Whether `batch` is a tick batch with a row written without a `seq`.
pub(in crate::storage) fn needs_seq(kind: SeriesKind, batch: &WriteBatch) -> bool {
    kind.is_tick()
        && batch
            .cols
            .get(1)
            .is_some_and(|s| s.contains(&SEQ_UNASSIGNED))
}

/// Numbers the placeholder `seq`s of a sorted tick batch; `stored(ts)` is the
/// largest `seq` stored at `ts`.
fn number_seq(batch: &mut WriteBatch, stored: impl Fn(i64) -> Result<Option<u64>>) -> Result<()> {
    let n = batch.len();
    let mut i = 0;
    while i < n {
        let t = batch.cols[0][i];
        let end = i + batch.cols[0][i..].partition_point(|&x| x == t);
        if batch.cols[1][end - 1] == SEQ_UNASSIGNED {
            let seq = &batch.cols[1][i..end];
            let first = seq.iter().position(|&s| s == SEQ_UNASSIGNED).unwrap_or(0);
            let explicit = (first > 0).then(|| seq[first - 1] as u64);
            let stored = stored(t)?;
            let next = explicit.max(stored).map_or(0, |m| m.saturating_add(1));
            for (k, s) in (next..).zip(&mut batch.cols[1][i + first..end]) {
                if k == SEQ_UNASSIGNED as u64 {
                    return Err(StorageError::Unprocessable(format!(
                        "ts {t}: no seq is left after {} for a record written without one",
                        u64::MAX - 1
                    )));
                }
                *s = k as i64;
            }
        }
        i = end;
    }
    debug_assert!(keys_increase(
        KeyShape::TsSeq,
        &[&batch.cols[0], &batch.cols[1]]
    ));
    Ok(())
}

pub(super) fn check_expected(snap: &Snapshot, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(v) if v != snap.version => Err(StorageError::PreconditionFailed(format!(
            "expected version {v}, but the series is at version {}",
            snap.version
        ))),
        _ => Ok(()),
    }
}

/// Sorts all columns by key and refuses a key repeated inside the request, naming
/// the first record (in request order) that repeats an earlier one. For a tick
/// layout the key is `(ts, seq)`: rows without a `seq` ([`SEQ_UNASSIGNED`]) sort
/// after the others of their `ts`, in arrival order, and repeat nothing.
pub fn sort_and_check_duplicates(batch: &mut WriteBatch, key: KeyShape) -> Result<()> {
    if key == KeyShape::TsSeq {
        return sort_ticks(batch);
    }
    let ts = &batch.cols[0];
    if ts.windows(2).all(|w| w[0] < w[1]) {
        return Ok(());
    }
    let mut perm: Vec<u32> = (0..ts.len() as u32).collect();
    perm.sort_by_key(|&i| ts[i as usize]);
    let dup = perm
        .windows(2)
        .filter(|w| ts[w[0] as usize] == ts[w[1] as usize])
        .map(|w| w[0].max(w[1]) as usize)
        .min();
    if let Some(i) = dup {
        let first = (0..i).find(|&k| ts[k] == ts[i]).unwrap_or(0);
        return Err(StorageError::Unprocessable(format!(
            "record {i}: ts {} repeats record {first} of the same request",
            ts[i]
        )));
    }
    for col in batch.cols.iter_mut() {
        *col = perm.iter().map(|&i| col[i as usize]).collect();
    }
    Ok(())
}

/// [`sort_and_check_duplicates`] for `(ts, seq)` keys.
fn sort_ticks(batch: &mut WriteBatch) -> Result<()> {
    let (ts, seq) = (&batch.cols[0], &batch.cols[1]);
    let key = |i: usize| (ts[i], seq[i] as u64);
    if (1..ts.len()).all(|r| key(r - 1) < key(r)) {
        return Ok(());
    }
    let mut perm: Vec<u32> = (0..ts.len() as u32).collect();
    // Stable: rows without a seq keep their arrival order.
    perm.sort_by_key(|&i| key(i as usize));
    let dup = perm
        .windows(2)
        .filter(|w| {
            seq[w[0] as usize] != SEQ_UNASSIGNED && key(w[0] as usize) == key(w[1] as usize)
        })
        .map(|w| w[0].max(w[1]) as usize)
        .min();
    if let Some(i) = dup {
        let first = (0..i).find(|&k| key(k) == key(i)).unwrap_or(0);
        return Err(StorageError::Unprocessable(format!(
            "record {i}: ts {} seq {} repeats record {first} of the same request",
            ts[i], seq[i] as u64
        )));
    }
    for col in batch.cols.iter_mut() {
        *col = perm.iter().map(|&i| col[i as usize]).collect();
    }
    Ok(())
}

/// Whether the pieces of a write (their shapes already checked) can be written in
/// place by [`Series::write_pieces`]: the timestamps (column 0) increase strictly
/// within and across pieces.
pub fn pieces_in_order(pieces: &[Vec<&[i64]>]) -> bool {
    let mut last: Option<i64> = None;
    for p in pieces {
        let ts = p[0];
        let (Some(&first), Some(&end)) = (ts.first(), ts.last()) else {
            continue;
        };
        if last.is_some_and(|l| l >= first) || !strictly_increasing(ts) {
            return false;
        }
        last = Some(end);
    }
    true
}

/// Whether `ts` increases strictly: blocks of 4,096 checked without an early exit
/// inside a block (a loop the compiler vectorizes), each against the last of the one
/// before, so a bulk write's check runs at memory speed and an unordered batch still
/// stops at its first block out of order.
fn strictly_increasing(ts: &[i64]) -> bool {
    const BLOCK: usize = 4096;
    let mut prev: Option<i64> = None;
    for block in ts.chunks(BLOCK) {
        if prev.is_some_and(|p| p >= block[0]) {
            return false;
        }
        let ordered = block
            .iter()
            .zip(&block[1..])
            .fold(true, |ok, (a, b)| ok & (a < b));
        if !ordered {
            return false;
        }
        prev = block.last().copied();
    }
    true
}

/// [`month_groups`] as an iterator: the runs of one month each of sorted timestamps,
/// without a vector (the log's apply visits thousands of one-row batches per group).
pub(super) struct MonthRuns<'a> {
    part: Partitioning,
    ts: &'a [i64],
    start: usize,
}

impl<'a> MonthRuns<'a> {
    pub(super) fn new(part: Partitioning, ts: &'a [i64]) -> MonthRuns<'a> {
        MonthRuns { part, ts, start: 0 }
    }
}

impl Iterator for MonthRuns<'_> {
    type Item = (i32, std::ops::Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.start;
        let &first = self.ts.get(start)?;
        let month = self.part.of(first);
        let end_ts = self.part.end_ts(month);
        // One probe settles the common case: the rest of the batch is in this month.
        let len = if self.ts[self.ts.len() - 1] <= end_ts {
            self.ts.len() - start
        } else {
            self.ts[start..].partition_point(|&t| t <= end_ts)
        };
        self.start = start + len;
        Some((month, start..start + len))
    }
}

/// Splits sorted timestamps into runs of one partition each (a month for bars and
/// scalars, the series' hour, day or month for ticks).
pub fn month_groups(part: Partitioning, ts: &[i64]) -> Vec<(i32, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < ts.len() {
        let month = part.of(ts[start]);
        let end_ts = part.end_ts(month);
        let len = ts[start..].partition_point(|&t| t <= end_ts);
        out.push((month, start..start + len));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increasing_is_checked_inside_and_across_blocks_and_pieces() {
        let ts: Vec<i64> = (0..10_000).map(|i| i * 3).collect();
        assert!(strictly_increasing(&ts));
        assert!(strictly_increasing(&[]));
        assert!(strictly_increasing(&[7]));
        // A repeat or a step back anywhere: inside a block, at a block's start, last.
        for at in [1, 2_000, 4_095, 4_096, 4_097, 8_192, 9_999] {
            let mut bad = ts.clone();
            bad[at] = bad[at - 1];
            assert!(!strictly_increasing(&bad), "repeat at {at}");
            bad[at] = bad[at - 1] - 1;
            assert!(!strictly_increasing(&bad), "step back at {at}");
        }
        let (a, b) = ts.split_at(5_000);
        assert!(pieces_in_order(&[vec![a, a], vec![b, b]]));
        assert!(!pieces_in_order(&[vec![b, b], vec![a, a]]));
        // Pieces that touch at one `ts` are not strictly increasing.
        assert!(!pieces_in_order(&[
            vec![a, a],
            vec![&ts[4_999..], &ts[4_999..]]
        ]));
        assert!(pieces_in_order(&[vec![a, a], vec![&[], &[]], vec![b, b]]));
    }

    #[test]
    fn a_timestamp_out_of_range_is_named_by_its_record() {
        let part = Partitioning::MonthMs;
        let (lo, hi) = part.ts_bounds();
        let mut ts: Vec<i64> = (0..9_000).map(|i| lo + i).collect();
        assert!(check_ts_bounds(part, &ts).is_ok());
        assert!(check_ts_bounds(part, &[]).is_ok());
        assert!(check_ts_bounds(part, &[lo, hi]).is_ok());
        for (at, bad) in [
            (0, lo - 1),
            (4_500, hi + 1),
            (8_999, i64::MIN),
            (17, i64::MAX),
        ] {
            let keep = ts[at];
            ts[at] = bad;
            match check_ts_bounds(part, &ts) {
                Err(StorageError::InvalidArgument(m)) => {
                    assert!(m.starts_with(&format!("record {at}: ts {bad} ")), "{m}")
                }
                other => panic!("{other:?}"),
            }
            ts[at] = keep;
        }
    }
}

//! The logged write path of one series: a write the log has made durable applied to
//! in-memory chunks (`apply_logged`, `install_logged`), their tails merged as they grow,
//! and the fold that writes them into chunk files (`fold`).

use super::*;

impl Series {
    /// Folds the rows held in memory into chunk files now (see [`Series::fold_locked`]).
    /// Returns whether there was anything to fold.
    pub fn fold(&self) -> Result<bool> {
        let guard = self.lock_live()?;
        self.fold_locked(&guard)
    }

    /// Folds the rows that write-ahead log records put in memory into chunk files, in
    /// one commit whose manifest also records the log position they reach (from then
    /// on the log may drop those records). Per month: an in-memory rewrite of the month
    /// becomes a full chunk; appended rows become a delta chunk, or the month is merged
    /// into one chunk when it already has `max_chunks_per_month` files. The version is
    /// unchanged: each logged write already counted. The caller holds the writer lock.
    pub(super) fn fold_locked(&self, _guard: &MutexGuard<'_, ()>) -> Result<bool> {
        let snap = self.snapshot();
        // A series with no directory may hold rows the catalog keeps (resident) and
        // nothing unfolded: a commit to files takes them too, or the directory it
        // makes (which wins on open) would lose them.
        if snap.unfolded.is_none() && (self.is_materialized() || snap.live.is_empty()) {
            return Ok(false);
        }
        let ncols = self.meta.key.kind().ncols();
        // The state on disk: the file chunks, with those an in-memory rewrite
        // superseded put back where the manifest still has them.
        let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
        // Per month, the rows of its in-memory chunks (they are its last chunks, in
        // order) concatenated, and whether the first of them rewrote the month.
        let mut memory: Vec<(i32, Vec<Vec<i64>>, bool)> = Vec::new();
        for (&month, chunks) in &snap.live {
            for c in chunks.iter() {
                if !c.is_memory() {
                    live.entry(month).or_default().push(Arc::clone(c));
                    continue;
                }
                let m = c.map()?;
                if memory.last().is_none_or(|(mo, _, _)| *mo != month) {
                    let full = c.entry.flags & FLAG_FULL != 0;
                    memory.push((month, vec![Vec::new(); ncols], full));
                }
                let (_, cols, _) = memory.last_mut().expect("pushed above");
                for (i, out) in cols.iter_mut().enumerate() {
                    out.extend_from_slice(m.col(i));
                }
            }
        }
        for c in &snap.superseded {
            live.entry(c.entry.month).or_default().push(Arc::clone(c));
        }
        for v in live.values_mut() {
            v.sort_by_key(|c| c.entry.generation);
        }
        let base = snap.settled(crate::storage::snapshot::month_lists(live));
        let mut next_gen = base.next_generation;
        let mut plans = Vec::with_capacity(memory.len());
        for (month, m, full) in &memory {
            let cols: Vec<&[i64]> = m.iter().map(Vec::as_slice).collect();
            let files = base.live.get(month).map_or(0, |l| l.len());
            let plan = if *full || files == 0 {
                MonthPlan {
                    split: Vec::new(),
                    month: *month,
                    generation: next_gen,
                    full: true,
                    cols: cols.iter().map(|&c| Cow::Borrowed(c)).collect(),
                    inserted: 0,
                    replaced: 0,
                    compressed: None,
                }
            } else if files >= self.opts.max_chunks_per_month {
                self.merge_month(&base, *month, &cols, next_gen)?
            } else {
                MonthPlan {
                    split: Vec::new(),
                    month: *month,
                    generation: next_gen,
                    full: false,
                    cols: cols.iter().map(|&c| Cow::Borrowed(c)).collect(),
                    inserted: 0,
                    replaced: 0,
                    compressed: None,
                }
            };
            plans.push(plan);
            next_gen += 1;
        }
        assert!(
            !plans.is_empty(),
            "a series with unfolded rows holds a chunk in memory"
        );
        self.commit_dropping(&base, plans, &[], next_gen, false)?;
        Ok(true)
    }

    /// How many of a month's last chunks (`list`) an append of `n` rows merges with
    /// its rows: the trailing in-memory chunks, as long as the merged chunk stays
    /// within `memory_chunk_rows`, chosen as a binary counter.
    ///
    /// A write of several rows counts in sizes: it merges a chunk no larger than what
    /// it has gathered so far. A one-row append (a live feed's bar) counts in rows,
    /// offset by the series' `merge_phase`: the tail's rows sit at positions
    /// `phase + 0, phase + 1, ...` and a chunk is merged when the merged rows end on a
    /// multiple of their span rounded up to a power of two, so past the first (the rows
    /// up to the phase's next boundary) its chunks are aligned blocks of that position.
    /// Both bound the chunks and the copies alike, but the
    /// offset spreads the merges of many series fed in lockstep over the writes: with
    /// sizes alone, 2,000 symbols that get a bar each minute all copy their 16-row
    /// tails at the 16th write, their 32-row tails at the 32nd, and so on (the spikes
    /// of a many-series write's latency); with the phase, a write merges the same
    /// number of rows on average and about as many every time. Finding the position
    /// walks the month's in-memory chunks: at most `storage.fold_rows` rows (the fold
    /// folds a series there), so `fold_rows / memory_chunk_rows` full chunks and a few
    /// smaller ones; a live feed folds after `storage.fold_age_s` and holds a handful.
    pub(super) fn tail_merge(&self, list: &[Arc<ChunkRef>], n: u64) -> usize {
        let cap = self.opts.wal.memory_chunk_rows;
        let tail: &[Arc<ChunkRef>] = {
            let files = list
                .iter()
                .rposition(|c| !c.is_memory())
                .map_or(0, |i| i + 1);
            &list[files..]
        };
        let mut merge = 0;
        let mut acc = n;
        if n == 1 {
            let held: u64 = tail.iter().map(|c| c.entry.rows).sum();
            // The position past the new row, and where the merged run starts.
            let end = self.merge_phase.wrapping_add(held + 1);
            let mut start = end.wrapping_sub(1);
            for c in tail.iter().rev() {
                if acc + c.entry.rows > cap {
                    break;
                }
                start = start.wrapping_sub(c.entry.rows);
                let span = end.wrapping_sub(start);
                if end & (span.next_power_of_two() - 1) != 0 {
                    break;
                }
                acc += c.entry.rows;
                merge += 1;
            }
        } else {
            for c in tail.iter().rev() {
                if c.entry.rows > acc || acc + c.entry.rows > cap {
                    break;
                }
                acc += c.entry.rows;
                merge += 1;
            }
        }
        debug_assert!(acc <= cap.max(n), "a merged chunk stays within the cap");
        merge
    }

    /// The state after one logged write, applied at log position `lsn` at `now`:
    /// `batch` (sorted, unique, checked by the caller) goes into in-memory chunks laid
    /// out as files, always the month's last chunks. Rows past
    /// the month's last `ts` are appended (to its in-memory chunk, or as a new one
    /// after its files); anything else rewrites the month in memory as one full chunk,
    /// and its file chunks wait in `superseded` for the fold. Readers see the result
    /// as soon as it is installed; nothing touches the disk here. The caller holds
    /// the writer lock, and the log record is durable before the result is installed.
    ///
    /// Long on purpose: one loop over the write's months whose append and rewrite
    /// cases update the same new state (live and superseded lists, row and byte
    /// totals, the report) declared at its top.
    pub(in crate::storage) fn apply_logged(
        &self,
        snap: &Snapshot,
        batch: &WriteBatch,
        lsn: u64,
        now: std::time::Instant,
    ) -> Result<(Snapshot, WriteReport)> {
        assert!(!batch.is_empty(), "an empty write is not logged");
        assert!(lsn > snap.wal_lsn, "log records apply in order");
        failpoints::check(&self.dir, failpoints::Op::Apply)
            .map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
        let ncols = self.meta.key.kind().ncols();
        let version = snap.version + 1;
        let mut live = snap.live.clone();
        let mut superseded = snap.superseded.clone();
        let mut report = WriteReport {
            version,
            ..WriteReport::default()
        };
        // Rows and bytes of the in-memory chunks (`snap.unfolded`'s totals: none when
        // the state is exactly the manifest), kept up to date month by month.
        // A series with no directory counts its resident rows too (they are all in
        // memory, and folded together with the new ones).
        let (mut rows, mut bytes) = match snap.unfolded {
            Some(u) => (u.rows, u.bytes),
            None if !self.is_materialized() => snap
                .live
                .values()
                .map(|l| memory_totals(l))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            None => (0, 0),
        };
        // Column slices live in fixed arrays, not vectors: a many-series write applies
        // thousands of series per group, and each allocation here is paid twice (the
        // reaper frees what the apply helper allocated).
        assert!(
            ncols <= MAX_NCOLS,
            "a series has at most {MAX_NCOLS} columns"
        );
        for (month, range) in MonthRuns::new(self.meta.partitioning(), &batch.cols[0]) {
            let mut new_cols: [&[i64]; MAX_NCOLS] = [&[]; MAX_NCOLS];
            for (slot, c) in new_cols.iter_mut().zip(&batch.cols) {
                *slot = &c[range.clone()];
            }
            let new = &new_cols[..ncols];
            let n = new[0].len() as u64;
            // This month's list as the state before the write has it (shared: the
            // new state gets a new list, built once below).
            let old_list = live.get(&month).cloned().unwrap_or_default();
            let list = old_list.as_slice();
            let last = list.last();
            let appends = last.is_none_or(|c| new[0][0] > c.entry.last_ts);
            // An append merges some of the month's last in-memory chunks into one with
            // the new rows, a binary counter (`tail_merge`): a month holds
            // O(log memory_chunk_rows) small chunks past its full ones, and each row is
            // copied O(log) times, not once per write. The merged chunks (`heads`,
            // oldest first) and the new rows become one.
            let merge = if appends { self.tail_merge(list, n) } else { 0 };
            let heads: Pieces<Arc<crate::storage::chunk::MappedChunk>> = list[list.len() - merge..]
                .iter()
                .map(|c| c.map())
                .collect::<Result<_>>()?;
            let (merged, full, inserted, replaced, supersede) = if appends {
                // A month's first chunk is full (it holds the whole month); merged
                // chunks keep the flag of the oldest of them.
                let full = heads
                    .first()
                    .map_or(list.is_empty(), |m| m.header.flags & FLAG_FULL != 0);
                (None, full, n, 0, false)
            } else {
                let plan = self.merge_month(snap, month, new, 0)?;
                debug_assert!(plan.split.is_empty(), "a merged month owns its rows");
                let (i, r) = (plan.inserted, plan.replaced);
                (Some(plan), true, i, r, true)
            };
            // The rows the new chunk adds: the write's, or the merged month.
            let mut add_cols = new_cols;
            if let Some(plan) = &merged {
                for (slot, c) in add_cols.iter_mut().zip(&plan.cols) {
                    *slot = c;
                }
            }
            // What leaves the month's list: the merged heads of an append (all in
            // memory), or the whole list of a rewrite (its files stay listed in the
            // manifest until the next fold, as superseded).
            let (kept, gone) = if supersede {
                superseded.extend(list.iter().filter(|c| !c.is_memory()).cloned());
                (&[][..], list)
            } else {
                list.split_at(list.len() - merge)
            };
            let before = memory_totals(gone);
            let header = ChunkHeader {
                meta: Arc::clone(&self.meta),
                ncols,
                rows: 0,
                first_ts: 0,
                last_ts: 0,
                month,
                flags: if full { FLAG_FULL } else { 0 },
                generation: 0,
                write_version: version,
                write_chunks: 1,
                body_xxh3: 0,
                stride: 0,
                wal_lsn: lsn,
                body_len: 0,
                last_row: None,
            };
            let head_cols: Pieces<[&[i64]; MAX_NCOLS]> = heads
                .iter()
                .map(|m| std::array::from_fn(|i| if i < ncols { m.col(i) } else { &[] }))
                .collect();
            let mut pieces: Pieces<&[&[i64]]> = Pieces::new();
            pieces.extend(head_cols.iter().map(|c| &c[..ncols]));
            pieces.push(&add_cols[..ncols]);
            let chunk = crate::storage::chunk::MappedChunk::in_memory_joined(header, &pieces);
            let chunk = Arc::new(ChunkRef::in_memory(
                chunk,
                Arc::clone(&self.dir),
                Arc::clone(&self.rel_dir),
            ));
            // Only this month's in-memory chunks changed: the totals move by what left
            // and what came (a series with years of months is not walked per write).
            rows = rows - before.0 + chunk.entry.rows;
            bytes = bytes - before.1 + chunk.entry.file_len;
            let mut next_list = crate::storage::snapshot::ChunkList::with_capacity(kept.len() + 1);
            next_list.extend(kept.iter().cloned());
            next_list.push(chunk);
            live.insert(month, Arc::new(next_list));
            report.inserted += inserted;
            report.replaced += replaced;
            report.months.push(MonthPartition(month));
        }
        report.written = report.inserted + report.replaced;
        debug_assert_eq!(
            (rows, bytes),
            live.values()
                .map(|l| memory_totals(l))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            "the unfolded totals are those of the in-memory chunks"
        );
        let unfolded = crate::storage::snapshot::Unfolded {
            first_lsn: snap.unfolded.map_or(lsn, |u| u.first_lsn),
            since: snap.unfolded.map_or(now, |u| u.since),
            rows,
            bytes,
        };
        let next = Snapshot {
            meta: Arc::clone(&snap.meta),
            version,
            next_generation: snap.next_generation,
            retention_ms: snap.retention_ms,
            irregular: snap.irregular,
            live,
            obsolete: snap.obsolete.clone(),
            wal_lsn: lsn,
            unfolded: Some(unfolded),
            superseded,
        };
        Ok((next, report))
    }

    /// Checks a write's expected version against `snap` (the group commit checks each
    /// write against the state the writes before it in the group leave).
    pub(in crate::storage) fn check_expected(snap: &Snapshot, expected: Option<u64>) -> Result<()> {
        check_expected(snap, expected)
    }

    /// Installs a state made by [`Series::apply_logged`] once its log record is durable.
    /// Returns the state it replaced, for the caller to drop.
    pub(in crate::storage) fn install_logged(
        &self,
        _guard: &MutexGuard<'_, ()>,
        snap: Arc<Snapshot>,
    ) -> Arc<Snapshot> {
        self.set_current(snap)
    }
}

/// Bytes of a state's rows waiting in memory to be folded.
pub(super) fn unfolded_bytes(snap: &Snapshot) -> u64 {
    snap.unfolded.as_ref().map_or(0, |u| u.bytes)
}

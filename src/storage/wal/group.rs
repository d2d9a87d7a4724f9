//! The group commit, one step each: lock the group's series, apply its writes in
//! memory against the states the writes before them leave, log them with one sync
//! (or while they apply, for a group that only appends), install, answer.

use super::*;
use std::sync::MutexGuard;

impl Wal {
    /// Logs a group of writes with one sync. Each write is checked (series alive,
    /// expected versions) against the state the writes before it leave; a refused one
    /// is answered at once and logs nothing. The series' writer locks are held from the
    /// check to the install ([`Locked`]), so no other commit interleaves.
    pub(super) fn commit_group(&self, group: Vec<Request>, helpers: &Helpers) {
        let now = Instant::now();
        let mut locked = Locked::lock(&group);
        let locked_at = Instant::now();
        // An appends-only group is logged while it applies (invariant 5): its records
        // go to the sync helper now, and the apply below must log exactly them.
        let named: usize = group.iter().map(|r| r.entries.len()).sum();
        let mut try_overlap = helpers.sync.is_some()
            && named >= OVERLAP_SYNC_ENTRIES
            && appends_only(&group, &locked.states, &locked.dead, |s: &Arc<Series>| {
                locked.index(s)
            });
        // Blocks of the group's large writes the apply helper applied, of all.
        let mut blocks = (0, 0);
        let (outcomes, lsn, log_bytes, synced, applied_at) = loop {
            let overlap = if try_overlap {
                self.start_sync(&group, self.committed_lsn(), helpers)
            } else {
                None
            };
            let (outcomes, lsn, buf) = self.apply_group(
                &group,
                &mut locked,
                overlap.is_none(),
                helpers,
                now,
                &mut blocks,
            );
            let applied_at = Instant::now();
            let logged = overlap.as_ref().map_or(buf.len() as u64, |p| p.bytes);
            match self.log_group(&buf, lsn, overlap) {
                Logged::Done(synced) => break (outcomes, lsn, logged, synced, applied_at),
                Logged::Undone => {
                    locked.reset();
                    try_overlap = false;
                }
            }
        };
        let synced_at = Instant::now();
        let (outcomes, replaced) = self.install_group(&mut locked, outcomes, lsn, synced);
        let poke = self.fold_due(&locked);
        let series = locked.all.len();
        drop(locked);
        if poke {
            *self.fold_wake.0.locked() = true;
            self.fold_wake.1.notify_all();
        }
        let installed_at = Instant::now();
        let writes = group.len();
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

    /// Applies each write of `group` in memory, in order, against the states the
    /// writes before it leave (`locked.states`, updated). Returns each write's outcome,
    /// the last lsn given, and the records to log (none when `log` is false: an
    /// overlapped sync has them already).
    fn apply_group(
        &self,
        group: &[Request],
        locked: &mut Locked<'_>,
        log: bool,
        helpers: &Helpers,
        now: Instant,
        blocks: &mut (usize, usize),
    ) -> (Outcomes, u64, Vec<u8>) {
        let mut lsn = self.committed_lsn();
        let mut buf = Vec::new();
        let mut outcomes: Outcomes = Vec::with_capacity(group.len());
        for req in group {
            let applied = apply_write(req, locked, lsn + 1, helpers, now, blocks);
            let n = req.entries.len();
            let attempt = (|| -> Result<Planned> {
                let mut next = Vec::with_capacity(n);
                let mut reports = Vec::with_capacity(n);
                let mut numbered = Vec::with_capacity(n);
                for (r, (s, _, _)) in applied.into_iter().zip(req.entries.iter()) {
                    let (state, report, rows) = r?;
                    if let Some(state) = state {
                        next.push((locked.index(s), state));
                    }
                    reports.push(report);
                    numbered.push(rows);
                }
                assert_eq!(reports.len(), n, "one report per entry of a write");
                Ok((next, reports, numbered))
            })();
            match attempt {
                Ok((next, reports, _)) if next.is_empty() => outcomes.push(Some(Ok(reports))),
                Ok((next, reports, numbered)) => {
                    lsn += 1;
                    if log {
                        buf.extend_from_slice(&record_of(req, lsn, &numbered));
                    } else {
                        // The overlapped sync logged this write numbered from its rows
                        // alone: the apply must have numbered it the same way.
                        debug_assert!(
                            numbered_appends(req).is_ok_and(|n| n == numbered),
                            "wal: an overlapped write is logged as it applies"
                        );
                    }
                    for (i, state) in next {
                        locked.states[i] = Some(Arc::new(state));
                        locked.changed[i] = true;
                    }
                    outcomes.push(Some(Ok(reports)));
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        (outcomes, lsn, buf)
    }

    /// Makes the group's records durable: `buf` appended and synced here, or the sync
    /// helper's overlapped append awaited. When a write of an overlapped group was
    /// refused after all, its records are cut off the log again ([`Logged::Undone`]):
    /// the group is then applied and logged again, one write after the other.
    fn log_group(&self, buf: &[u8], lsn: u64, overlap: Option<PendingSync>) -> Logged {
        let Some(p) = overlap else {
            return Logged::Done(if buf.is_empty() {
                Ok(())
            } else {
                self.append(buf, self.committed_lsn() + 1, lsn)
            });
        };
        let synced = p.reply.recv().unwrap_or_else(|_| {
            // The helper panicked (an assertion) part-way through an append that
            // nothing cut back: refuse writes until a reopen, whose replay decides
            // what is on disk.
            let why = "the log's sync helper stopped while syncing a group; writes are refused until the server restarts".to_string();
            tracing::error!("{why}");
            *self.poisoned.locked() = Some(why.clone());
            Err(StorageError::Unavailable(why))
        });
        assert!(
            lsn <= p.last,
            "wal: an overlapped group applies no write it did not log"
        );
        if lsn == p.last || synced.is_err() {
            // Every write logged applied (or the sync failed, which refuses every
            // write that would have written, as always).
            return Logged::Done(synced);
        }
        match self.undo_append(&p) {
            Ok(()) => Logged::Undone,
            Err(e) => Logged::Done(Err(e)),
        }
    }

    /// Installs the group's new states once its records are durable, and moves the
    /// committed lsn; when the sync failed, refuses every write that would have
    /// written. Returns the outcomes and the states the group replaced (dropped once
    /// the writers are answered: a many-series write replaces thousands, and freeing
    /// them is not the writers' wait).
    fn install_group(
        &self,
        locked: &mut Locked<'_>,
        mut outcomes: Outcomes,
        lsn: u64,
        synced: Result<()>,
    ) -> (Outcomes, Vec<Arc<Snapshot>>) {
        let mut replaced = Vec::new();
        match synced {
            Ok(()) => {
                let _gate = self.gate.read_now();
                for (i, s) in locked.all.iter().enumerate() {
                    if locked.changed[i]
                        && let (Some(g), Some(state)) = (&locked.guards[i], &locked.states[i])
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
        (outcomes, replaced)
    }

    /// Whether the group's states call for a fold now: a series past `fold_rows` in
    /// memory, or the log or the memory past its limit. (A refused group installed
    /// nothing: nothing to poke.)
    fn fold_due(&self, locked: &Locked<'_>) -> bool {
        let mut poke = false;
        for (i, state) in locked.states.iter().enumerate() {
            if locked.changed[i]
                && let Some(u) = state.as_ref().and_then(|s| s.unfolded)
            {
                poke |= u.rows >= self.opts.fold_rows;
            }
        }
        poke || self.bytes() > self.opts.max_log_bytes
            || self.unfolded_bytes() > self.opts.memory_bytes
    }

    /// Hands the records of an appends-only `group` (lsns from `committed + 1`) to the
    /// sync helper. None when there is nothing to log, no helper, or the records
    /// would start a new segment (an overlapped append stays undoable by cutting the
    /// open segment back).
    pub(super) fn start_sync(
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
            // An appends-only group's tick rows are numbered from the rows alone
            // (a number past `u64::MAX - 1` is refused: the group then logs after its
            // apply, which answers that write's error).
            let numbered = numbered_appends(req).ok()?;
            buf.extend_from_slice(&record_of(req, lsn, &numbered));
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
    pub(super) fn undo_append(&self, p: &PendingSync) -> Result<()> {
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
}

/// Each write's outcome in a group, set once.
type Outcomes = Vec<Option<Result<Vec<WriteReport>>>>;

/// What logging a group came to.
enum Logged {
    /// Its records are durable (or the sync failed, with this error).
    Done(Result<()>),
    /// An overlapped group's records were cut off again: apply and log it once more.
    Undone,
}

/// The distinct series of a group, their writer locks held from the first check to
/// the install, and the state each next write is checked against.
struct Locked<'g> {
    /// In address order (only the committer holds more than one series lock, and
    /// other paths hold one at a time, so any fixed order cannot deadlock; addresses
    /// sort without comparing key strings, which cost a many-series write of
    /// thousands of symbols a fraction of its time).
    all: Vec<&'g Arc<Series>>,
    /// `None` for a series deleted before the group locked it.
    guards: Vec<Option<MutexGuard<'g, ()>>>,
    states: Vec<Option<Arc<Snapshot>>>,
    /// Why a series cannot be written (it was deleted).
    dead: Vec<Option<StorageError>>,
    /// Position of each series in `all`, by identity (a many-series write names
    /// thousands: a scan per entry would be quadratic).
    positions: std::collections::HashMap<usize, usize, foldhash::fast::RandomState>,
    /// Series whose state a write of the group changed.
    changed: Vec<bool>,
}

impl<'g> Locked<'g> {
    fn lock(group: &'g [Request]) -> Locked<'g> {
        let mut all: Vec<&Arc<Series>> = group
            .iter()
            .flat_map(|r| r.entries.iter().map(|e| &e.0))
            .collect();
        all.sort_unstable_by_key(|s| Arc::as_ptr(s) as usize);
        all.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let mut guards = Vec::with_capacity(all.len());
        let mut states = Vec::with_capacity(all.len());
        let mut dead = Vec::with_capacity(all.len());
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
        let positions = all
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::as_ptr(s) as usize, i))
            .collect();
        let changed = vec![false; all.len()];
        assert_eq!(guards.len(), all.len(), "wal: one guard slot per series");
        Locked {
            all,
            guards,
            states,
            dead,
            positions,
            changed,
        }
    }

    fn index(&self, s: &Arc<Series>) -> usize {
        *self
            .positions
            .get(&(Arc::as_ptr(s) as usize))
            .expect("every series of the group is listed")
    }

    /// The state a write to `s` is checked against, or why `s` cannot be written.
    fn state_of(&self, s: &Arc<Series>) -> std::result::Result<&Arc<Snapshot>, &StorageError> {
        let i = self.index(s);
        match &self.dead[i] {
            Some(e) => Err(e),
            None => Ok(self.states[i].as_ref().expect("a live series has a state")),
        }
    }

    /// Back to the states before the group (its records were cut off the log).
    fn reset(&mut self) {
        for (i, s) in self.all.iter().enumerate() {
            if self.dead[i].is_none() {
                self.states[i] = Some(s.snapshot());
            }
            self.changed[i] = false;
        }
    }
}

/// Applies one write in memory against `locked`'s states. A large write is applied by
/// the committer and the apply helper together, block by block (the entries are
/// shared, each series' state an `Arc`).
fn apply_write(
    req: &Request,
    locked: &Locked<'_>,
    lsn: u64,
    helpers: &Helpers,
    now: Instant,
    blocks: &mut (usize, usize),
) -> Vec<Result<Applied>> {
    let shared = helpers
        .apply
        .as_ref()
        .filter(|_| req.entries.len() >= PARALLEL_APPLY_ENTRIES)
        .and_then(|helper| {
            let job = Arc::new(SharedApply::new(
                Arc::clone(&req.entries),
                req.entries
                    .iter()
                    .map(|e| {
                        locked
                            .state_of(&e.0)
                            .map(Arc::clone)
                            .map_err(StorageError::clone_kind)
                    })
                    .collect(),
                lsn,
                now,
            ));
            helper
                .send(HelperJob::Apply(Arc::clone(&job)))
                .is_ok()
                .then_some(job)
        });
    match shared {
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
                apply_entry(s, locked.state_of(s), batch, *expected, lsn, now)
            })
            .collect(),
    }
}

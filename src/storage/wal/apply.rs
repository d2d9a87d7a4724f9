//! The committer's helpers: a many-series write applied by two threads block by
//! block, the sync helper's job, and the checks of one entry against its series.

use super::*;

/// A many-series write that the committer and the apply helper apply together, in
/// blocks of `APPLY_BLOCK_ENTRIES` entries that each claims in turn. Neither owns a
/// half: if the helper wakes late, or the VM takes its core for a while, the
/// committer goes on with the blocks left, and the write waits at most for the one
/// block the helper holds (with fixed halves it waited for the helper's whole half).
pub(super) struct SharedApply {
    pub(super) entries: Arc<Vec<Entry>>,
    /// The state (or the error) of each entry's series, in entry order.
    pub(super) states: Vec<std::result::Result<Arc<Snapshot>, StorageError>>,
    pub(super) lsn: u64,
    pub(super) now: Instant,
    /// The next block to claim; past the last, there is nothing left to claim.
    pub(super) next: AtomicUsize,
    /// Each block's outcomes, set once by the thread that claimed it.
    pub(super) outcomes: Vec<Mutex<Option<Vec<Result<Applied>>>>>,
    /// Blocks the helper applied (for the committer's debug event: how much of the
    /// write the helper took, which falls when it wakes late).
    pub(super) helper_blocks: AtomicUsize,
    /// Blocks finished (their outcomes set), and the committer's wait for the last.
    pub(super) done: Mutex<usize>,
    pub(super) all_done: Condvar,
}

/// A block claimed by one thread: if that thread unwinds before the block is applied
/// (an assertion), the block is still answered, with an error, so the committer
/// never waits for it and refuses the write.
pub(super) struct Claim<'a> {
    pub(super) job: &'a SharedApply,
    pub(super) block: usize,
    pub(super) applied: Option<Vec<Result<Applied>>>,
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
    pub(super) fn new(
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
    pub(super) fn work(&self, helper: bool) {
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
    pub(super) fn outcomes(&self) -> Vec<Result<Applied>> {
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
pub(super) enum HelperJob {
    Apply(Arc<SharedApply>),
    /// A group's records to append and sync while the group applies.
    Sync(SyncJob),
    /// The states a group replaced, and its writes' entries (thousands of row
    /// batches for a many-series write).
    Drop(Vec<Arc<Snapshot>>, Vec<Arc<Vec<Entry>>>),
}

/// The committer's helper threads (none without a second core, or if one could not
/// be spawned: the committer then does their work itself).
pub(super) struct Helpers {
    /// Applies blocks of a large write beside the committer ([`SharedApply`]).
    pub(super) apply: Option<mpsc::Sender<HelperJob>>,
    /// Frees the states a large group replaced, after its writers are answered.
    pub(super) reap: Option<mpsc::Sender<HelperJob>>,
    /// Appends and syncs the records of an appends-only group while the committer
    /// applies it (the sync is disk time, not CPU: it overlaps on one core too).
    pub(super) sync: Option<mpsc::Sender<HelperJob>>,
}

/// The records of a group, for the sync helper: `buf` holds records `first..=last`.
pub(super) struct SyncJob {
    pub(super) buf: Vec<u8>,
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) reply: mpsc::SyncSender<Result<()>>,
}

/// A sync under way on the sync helper, and what undoing it takes.
pub(super) struct PendingSync {
    pub(super) reply: mpsc::Receiver<Result<()>>,
    /// The open segment's length before the records (they never start a segment).
    pub(super) len_before: u64,
    pub(super) bytes: u64,
    pub(super) first: u64,
    pub(super) last: u64,
}

/// Checks one entry of a write against its series' state (`Err`: why the series
/// cannot be written) and applies it in memory at `lsn`.
pub(super) fn apply_entry(
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
        return Ok((None, report, None));
    }
    // A tick write's missing `seq`s are numbered here, against the state the writes
    // before it leave, and logged numbered.
    let numbered = crate::storage::series::numbered(snap, batch)?;
    let rows = numbered.as_ref().unwrap_or(batch);
    let (state, report) = s.apply_logged(snap, rows, lsn, now)?;
    Ok((Some(state), report, numbered))
}

/// The log record of write `req` at `lsn`: its non-empty entries, each as `numbered`
/// (by entry) has it when given, else as written.
pub(super) fn record_of(req: &Request, lsn: u64, numbered: &[Option<WriteBatch>]) -> Vec<u8> {
    assert_eq!(
        numbered.len(),
        req.entries.len(),
        "wal: one numbering slot per entry"
    );
    let entries: Vec<(&SeriesKey, &WriteBatch)> = req
        .entries
        .iter()
        .zip(numbered)
        .filter(|(e, _)| !e.1.is_empty())
        .map(|(e, n)| (&e.0.meta.key, n.as_ref().unwrap_or(&e.1)))
        .collect();
    encode_record(lsn, &entries)
}

/// The rows an appends-only write logs (see [`appends_only`]): its tick batches
/// numbered from the batch alone, which is what the apply numbers them against the
/// state (nothing is stored at or after their first `ts`).
pub(super) fn numbered_appends(req: &Request) -> Result<Vec<Option<WriteBatch>>> {
    req.entries
        .iter()
        .map(|(s, b, _)| crate::storage::series::numbered_append(s.meta.key.kind(), b))
        .collect()
}

/// Whether every write of `group` can only succeed once applied, so its record may be
/// synced while it applies: no entry expects a version, every series is alive, and
/// every entry's rows come after its series' last row, as the writes before it in the
/// group leave it (an append never reads a file, so nothing it does can fail). `states`
/// and `dead` are the group's series by `index`.
pub(super) fn appends_only(
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

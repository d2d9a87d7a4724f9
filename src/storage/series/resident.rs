//! A small series kept whole in the store's catalog: its rows built into in-memory
//! chunks when the series is built from its seed (`storage::seriesmap`, on first
//! use after an open), its state taken for a state record, and that record's commit
//! installed (`storage::resident` folds many series at once).
//!
//! Such a series has no directory (`materialized` is false) and every chunk it
//! serves is in memory. Its rows are durable in the catalog up to its `wal_lsn`, and
//! in the log after it: `unfolded` counts every in-memory row once a logged write
//! lands on it, so the fold takes them all, back into the catalog or into a
//! directory of its own (`fold_locked`, which writes every in-memory chunk).

use super::*;
use crate::storage::catalog::{ResidentMonth, ResidentState};
use crate::storage::chunk::MappedChunk;

/// What a series goes back to sleep with ([`Series::sleep_state`]).
#[derive(Debug)]
pub struct SleepState {
    /// The snapshot it was taken from: the series sleeps only if it is still current.
    pub then: Arc<Snapshot>,
    /// Its catalog entry and rows, as a state record keeps them.
    pub state: ResidentState,
    /// (committed_ts, exact) of its current version.
    pub committed: (i64, bool),
}

impl Series {
    /// The build of a dormant series (`storage::seriesmap`): the state of a catalog
    /// series whose entry holds `months` of rows, each month one in-memory chunk (a
    /// replay, or a write, goes on top of it).
    ///
    /// The rows passed [`ResidentMonth::check`] when the catalog was read
    /// (`seriesmap::Seed::check`); a debug build asserts it again.
    pub(in crate::storage) fn install_resident(&self, months: Vec<ResidentMonth>) {
        assert!(
            !self.is_materialized(),
            "resident rows belong to a series with no directory"
        );
        let snap = self.snapshot();
        let ncols = self.meta.key.kind().ncols();
        let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
        for m in months {
            debug_assert!(
                m.check(&self.meta).is_ok(),
                "the rows of {} were checked when the catalog was read",
                self.meta.key
            );
            let cols: Vec<&[i64]> = m.cols.iter().map(Vec::as_slice).collect();
            let header = ChunkHeader {
                meta: Arc::clone(&self.meta),
                ncols,
                rows: 0,
                first_ts: 0,
                last_ts: 0,
                month: m.month,
                flags: FLAG_FULL,
                generation: 0,
                write_version: snap.version,
                write_chunks: 1,
                body_xxh3: 0,
                stride: 0,
                wal_lsn: snap.wal_lsn,
                body_len: 0,
                last_row: None,
            };
            let chunk = MappedChunk::in_memory(header, &cols);
            let chunk =
                ChunkRef::in_memory(chunk, Arc::clone(&self.dir), Arc::clone(&self.rel_dir));
            live.insert(m.month, vec![Arc::new(chunk)]);
        }
        self.set_current(Arc::new(
            snap.settled(crate::storage::snapshot::month_lists(live)),
        ));
    }

    /// The writer lock if no one holds it (the catalog fold skips a busy series and
    /// takes it on its next pass; waiting could deadlock with a many-series write
    /// that holds locks in another order).
    pub(in crate::storage) fn try_lock_live(&self) -> Option<MutexGuard<'_, ()>> {
        let guard = self.write_lock.try_lock().ok()?;
        (!self.is_deleted()).then_some(guard)
    }

    /// What a state record keeps of `snap` (every in-memory chunk of a series with no
    /// directory): its settings, version, log position and rows, each month's chunks
    /// joined. `None` when the series has a directory or no rows.
    pub(in crate::storage) fn resident_state(
        &self,
        snap: &Snapshot,
    ) -> Result<Option<ResidentState>> {
        if self.is_materialized() || snap.live.is_empty() {
            return Ok(None);
        }
        self.joined_state(snap).map(Some)
    }

    /// The state this series goes back to sleep with (`storage::seriesmap`): the
    /// snapshot it was taken from, its catalog entry and rows (as a state record
    /// keeps them), and the current version's commit time. `None` unless the catalog
    /// holds that state whole: no directory, not deleted, nothing unfolded or
    /// superseded, and no past version kept (a dormant series keeps none).
    pub(in crate::storage) fn sleep_state(&self) -> Result<Option<SleepState>> {
        let (snap, history) = self.history();
        if self.is_materialized()
            || self.is_deleted()
            || snap.unfolded.is_some()
            || !snap.superseded.is_empty()
            || !snap.obsolete.is_empty()
            || !history.kept.is_empty()
            || snap.chunks().any(|c| !c.is_memory())
        {
            return Ok(None);
        }
        let state = self.joined_state(&snap)?;
        Ok(Some(SleepState {
            then: snap,
            state,
            committed: (history.committed_ts, history.exact),
        }))
    }

    /// [`Series::resident_state`] of a series with no directory, rows or none.
    fn joined_state(&self, snap: &Snapshot) -> Result<ResidentState> {
        let ncols = self.meta.key.kind().ncols();
        let mut months = Vec::with_capacity(snap.live.len());
        for (&month, chunks) in &snap.live {
            let mut cols = vec![Vec::new(); ncols];
            for c in chunks.iter() {
                assert!(
                    c.is_memory(),
                    "a series with no directory serves in-memory chunks only"
                );
                let m = c.map()?;
                for (i, out) in cols.iter_mut().enumerate() {
                    out.extend_from_slice(m.col(i));
                }
            }
            if !cols[0].is_empty() {
                months.push(ResidentMonth { month, cols });
            }
        }
        let mut manifest = self.on_disk_manifest();
        manifest.version = snap.version;
        manifest.next_generation = snap.next_generation;
        manifest.retention_ms = snap.retention_ms;
        manifest.irregular = snap.irregular;
        manifest.wal_lsn = snap.wal_lsn;
        manifest.entries.clear();
        Ok(ResidentState { manifest, months })
    }

    /// After the state record of `state` (taken from `snap`, under the writer lock
    /// still held) is durable: the rows are no longer the log's to keep, so the state
    /// holds nothing unfolded and the catalog's entry is the series' manifest.
    pub(in crate::storage) fn settle_resident(
        &self,
        _guard: &MutexGuard<'_, ()>,
        snap: &Snapshot,
        state: ResidentState,
    ) {
        assert_eq!(
            self.snapshot().version,
            snap.version,
            "the writer lock held from the state taken to its record"
        );
        *self.on_disk.locked() = state.manifest;
        self.set_current(Arc::new(snap.settled(snap.live.clone())));
    }
}

//! The replica side of one series: its published manifest, and a primary's manifest
//! committed here (`storage::follow` fetches the files first).

use super::*;

impl Series {
    /// The manifest on disk and the current snapshot, taken together under the writer
    /// lock (a replica publisher's consistent state). The snapshot holds a `ChunkRef`
    /// of every file the manifest lists as live (its live chunks, and those an
    /// in-memory rewrite of the log superseded), so none of them is unlinked while
    /// the caller copies it. Rows only in the log are not in the manifest.
    pub fn published(&self) -> Result<(crate::storage::format::Manifest, Arc<Snapshot>)> {
        let _guard = self.lock_live()?;
        let m = self.on_disk.locked().clone();
        Ok((m, self.snapshot()))
    }

    /// Replica side (`crate::storage::follow`): commits the primary's manifest `next`, whose
    /// new live files are already written, verified and fsynced in this directory,
    /// with this store's `wal_lsn`, and swaps the snapshot. `next` must continue this
    /// series (`Snapshot::continued_by`): an entry live here is reused (its mapping and
    /// verified identity survive), a new one has a generation at or past the current
    /// `next_generation`, so before this commit recovery treats it as uncommitted.
    /// Chunks no longer live are listed obsolete and unlinked once unread.
    pub(in crate::storage) fn apply_followed(
        &self,
        next: crate::storage::format::Manifest,
        wal_lsn: u64,
    ) -> Result<()> {
        let _guard = self.lock_live()?;
        let snap = self.snapshot();
        if !snap.continued_by(&next) {
            return Err(StorageError::Conflict(format!(
                "{}: the manifest does not continue the local series",
                self.rel_dir
            )));
        }
        let mut old: std::collections::HashMap<(i32, u64), Arc<ChunkRef>> = snap
            .live
            .values()
            .flat_map(|l| l.iter())
            .map(|c| ((c.entry.month, c.entry.generation), Arc::clone(c)))
            .collect();
        let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
        for e in next.entries.iter().filter(|e| e.state == STATE_LIVE) {
            let c = match old.remove(&(e.month, e.generation)) {
                Some(c) => c,
                None if self.file_exists(e) => self.chunk_ref(e.clone()),
                None => {
                    return Err(StorageError::NotFound(format!(
                        "{}: a file of the followed manifest is missing",
                        self.rel_dir
                    )));
                }
            };
            live.entry(e.month).or_default().push(c);
        }
        for v in live.values_mut() {
            v.sort_by_key(|c| c.entry.generation);
        }
        let superseded: Vec<Arc<ChunkRef>> = old.into_values().filter(|c| !c.is_memory()).collect();
        let obsolete = self.next_obsolete(&snap, &superseded);
        let state = Snapshot {
            meta: Arc::clone(&self.meta),
            version: next.version,
            next_generation: next.next_generation,
            retention_ms: next.retention_ms,
            irregular: next.irregular,
            live: crate::storage::snapshot::month_lists(live),
            obsolete: Arc::new(obsolete),
            wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        let manifest = state.to_manifest();
        manifest.validate().map_err(|why| {
            StorageError::corrupted(format!("{}/{MANIFEST_NAME}", self.rel_dir), why)
        })?;
        // The followed files stay when the previous manifest is back: they are past its
        // `next_generation`, so recovery removes them, and the next poll fetches again.
        self.publish_next(state, superseded, || {})
    }
}

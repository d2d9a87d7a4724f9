//! The commit of a write: its files written (several writer threads, packs), the
//! manifest published (the commit point), the new state installed, and superseded
//! files unlinked once no reader holds them.

use super::*;

impl Series {
    pub(super) fn commit(
        &self,
        snap: &Snapshot,
        plans: Vec<MonthPlan>,
        next_gen: u64,
    ) -> Result<WriteReport> {
        let report = WriteReport {
            written: plans.iter().map(|p| p.inserted + p.replaced).sum(),
            inserted: plans.iter().map(|p| p.inserted).sum(),
            replaced: plans.iter().map(|p| p.replaced).sum(),
            months: plans.iter().map(|p| MonthPartition(p.month)).collect(),
            version: snap.version + 1,
        };
        self.commit_inner(snap, plans, next_gen, true)?;
        Ok(report)
    }

    /// Publishes the planned chunks, commits the manifest, swaps the snapshot.
    /// The caller holds the writer lock of a live series ([`Series::lock_live`]).
    pub(in crate::storage) fn commit_inner(
        &self,
        snap: &Snapshot,
        plans: Vec<MonthPlan>,
        next_gen: u64,
        bump: bool,
    ) -> Result<()> {
        self.commit_dropping(snap, plans, &[], next_gen, bump)
    }

    /// As [`Series::commit_inner`], also dropping the months `dropped` whole (their
    /// chunks become obsolete like superseded ones).
    pub(super) fn commit_dropping(
        &self,
        snap: &Snapshot,
        plans: Vec<MonthPlan>,
        dropped: &[i32],
        next_gen: u64,
        bump: bool,
    ) -> Result<()> {
        let mut plans = plans;
        self.seal_plans(&mut plans);
        let version = if bump { snap.version + 1 } else { snap.version };
        let write_chunks = u32::try_from(plans.len()).expect("a write touches < 2^32 months");
        // Phase times, for the debug event at the end.
        let started = std::time::Instant::now();
        let (published, sealed, packs) =
            self.publish_chunks(&plans, (version, snap.wal_lsn, write_chunks), next_gen);
        let next_gen = next_gen + packs.len() as u64;
        let layout = (&plans[..], &packs[..], &sealed[..]);
        let entries = match published {
            Ok(e) => e,
            Err(e) => {
                self.remove_unpublished(layout);
                return Err(e);
            }
        };
        assert_plans(snap, &plans, dropped, next_gen);
        assert_packs(&plans, &packs, next_gen);
        assert_entries(&plans, &entries, version);
        let mut live = snap.live.clone();
        let mut superseded = Vec::new();
        for month in dropped {
            let gone = live.remove(month).expect("a dropped month is live");
            superseded.extend(gone.iter().cloned());
        }
        for (plan, entry) in plans.iter().zip(entries) {
            let list = Arc::make_mut(live.get_or_default_mut(plan.month));
            if plan.full {
                superseded.extend(list.drain(..));
            }
            list.push(self.chunk_ref(entry));
        }
        let obsolete = self.next_obsolete(snap, &superseded);
        let next = Snapshot {
            meta: Arc::clone(&self.meta),
            version,
            next_generation: next_gen,
            retention_ms: snap.retention_ms,
            irregular: snap.irregular,
            live,
            obsolete: Arc::new(obsolete),
            wal_lsn: snap.wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        assert_next(snap, &next, bump);
        let published = std::time::Instant::now();
        let r = self.publish_next(next, superseded, || self.remove_unpublished(layout));
        tracing::debug!(
            series = %self.meta.key,
            months = plans.len(),
            packs = packs.len(),
            files_ms = (published - started).as_secs_f64() * 1e3,
            manifest_ms = published.elapsed().as_secs_f64() * 1e3,
            "storage: commit"
        );
        r
    }

    /// The bytes month `plan` takes as a file of its own, by which a commit cuts
    /// its months into packs (`pipeline::PackCutter`): a compressed month (`pre`,
    /// built already) counts its exact size, so a run of sealed months is cut exactly
    /// where the pack pass would cut it (`storage::packer`) and a bulk load of
    /// finished months leaves that pass nothing to rewrite; a raw month counts the
    /// most its chunk and sidecars can take. Packs make a bulk write of years a few
    /// files instead of one per month (three for a scalar month, with its sidecars):
    /// on a filesystem that has deleted many files, creating one costs up to half a
    /// millisecond.
    pub(super) fn unit_size(&self, plan: &MonthPlan, pre: &sealed::Prebuilt) -> u64 {
        match pre.sealed() {
            // The entry as a file of its own: what the pack pass sizes packs by.
            Some(z) => crate::storage::pack::packed_size(
                &BuiltChunk::Sealed(z).entry(crate::storage::format::PackLoc::NONE),
            ),
            None => {
                let rows = plan.rows();
                let ncols = self.meta.key.kind().ncols();
                let chunk = CHUNK_HEADER_LEN as u64 + ncols as u64 * stride_of(rows as u64);
                // Each of the three parts starts aligned: at most one alignment's
                // padding after each.
                chunk + sidecar::max_len(&self.meta, rows, &self.opts) + 3 * COLUMN_ALIGN as u64
            }
        }
    }

    /// The commit point shared by writes, compression and packing: publishes `next`'s
    /// manifest and installs it; the chunks it `superseded` are marked obsolete. When
    /// the previous manifest is durably back, `remove_new` removes the files the
    /// commit wrote (they are past its `next_generation`, recovery would too).
    pub(in crate::storage) fn publish_next(
        &self,
        next: Snapshot,
        superseded: Vec<Arc<ChunkRef>>,
        remove_new: impl FnOnce(),
    ) -> Result<()> {
        match self.publish_manifest(&next.to_manifest()) {
            Ok(()) => {
                self.set_current(Arc::new(next));
                let mut retired = self.retired.locked();
                retired.retain(|_, c| c.strong_count() > 0);
                for c in superseded {
                    c.mark_obsolete();
                    retired.insert((c.entry.month, c.entry.generation), Arc::downgrade(&c));
                }
                Ok(())
            }
            Err((e, OnDisk::Previous { durable: true })) => {
                remove_new();
                Err(e)
            }
            // The new files stay for recovery: they are past the previous manifest's
            // `next_generation`, and needed if the new manifest is the durable one.
            Err((e, OnDisk::Previous { durable: false })) => Err(e),
            Err((e, OnDisk::Next)) => {
                // The chunks the write superseded are not unlinked, in case the old
                // manifest is the one a crash brings back.
                drop(superseded);
                self.set_current(Arc::new(next));
                Err(e)
            }
        }
    }

    /// Publishes `next` as the series' `MANIFEST` (temp, fsync, rename, directory
    /// fsync): the commit point of writes and of maintenance alike. On failure it says
    /// which manifest is on disk now, and the caller serves exactly that one:
    ///
    /// * writing or renaming the new manifest failed: the previous one is untouched;
    /// * the directory fsync after the rename failed, so the new manifest's
    ///   durability is unknown and the commit is about to be refused: the previous
    ///   manifest is put back so the refusal is true (`durable` says whether that put
    ///   back reached the disk too);
    /// * the previous manifest could not be put back: the new one is on disk and must
    ///   be served (the outcome is unknown to the client, as after a timeout).
    pub(in crate::storage) fn publish_manifest(
        &self,
        next: &crate::storage::format::Manifest,
    ) -> std::result::Result<(), (StorageError, OnDisk)> {
        let mut on_disk = self.on_disk.locked();
        let r = self.publish_manifest_over(&on_disk, next);
        if matches!(r, Ok(()) | Err((_, OnDisk::Next))) {
            *on_disk = next.clone();
        }
        r
    }

    pub(super) fn publish_manifest_over(
        &self,
        previous: &crate::storage::format::Manifest,
        next: &crate::storage::format::Manifest,
    ) -> std::result::Result<(), (StorageError, OnDisk)> {
        if let Err(e) = self.materialize() {
            return Err((e, OnDisk::Previous { durable: true }));
        }
        let first = !self.is_materialized();
        let rel = format!("{}/{MANIFEST_NAME}", self.rel_dir);
        if let Err(e) = fsio::write_file_synced(&self.dir, MANIFEST_NAME, &[&next.encode()]) {
            return Err((StorageError::io(rel, e), OnDisk::Previous { durable: true }));
        }
        // A MANIFEST is in the directory now (this one, or the previous put back below).
        self.set_materialized();
        let Err(e) = fsio::fsync_dir(&self.dir) else {
            return Ok(());
        };
        let err = StorageError::io(rel, e);
        if first {
            // The previous state is the catalog's entry (maybe with resident rows, which
            // no MANIFEST holds): the directory must not win on open, so its MANIFEST
            // goes, and the series has no directory again.
            return match std::fs::remove_file(self.dir.join(MANIFEST_NAME)) {
                Ok(()) => {
                    self.set_unmaterialized();
                    let durable = fsio::fsync_dir(&self.dir).is_ok();
                    Err((err, OnDisk::Previous { durable }))
                }
                Err(e) => {
                    tracing::error!(series = %self.rel_dir, error = %e,
                        "could not remove a first manifest after a failed directory fsync; serving the new one");
                    Err((err, OnDisk::Next))
                }
            };
        }
        match fsio::write_file_synced(&self.dir, MANIFEST_NAME, &[&previous.encode()]) {
            Ok(()) => {
                let durable = fsio::fsync_dir(&self.dir).is_ok();
                Err((err, OnDisk::Previous { durable }))
            }
            Err(e) => {
                tracing::error!(series = %self.rel_dir, error = %e,
                    "could not restore the previous manifest after a failed directory fsync; serving the new one");
                Err((err, OnDisk::Next))
            }
        }
    }

    /// The obsolete entries of the state after a commit: those of `snap` whose files
    /// are still there (recovery deletes the rest), then the chunks it `superseded`.
    pub(in crate::storage) fn next_obsolete(
        &self,
        snap: &Snapshot,
        superseded: &[Arc<ChunkRef>],
    ) -> Vec<ChunkEntry> {
        let mut obsolete: Vec<ChunkEntry> = snap
            .obsolete
            .iter()
            .filter(|e| self.file_exists(e))
            .cloned()
            .collect();
        obsolete.extend(superseded.iter().map(|c| ChunkEntry {
            state: STATE_OBSOLETE,
            ..c.entry.clone()
        }));
        obsolete
    }

    /// Replaces the current snapshot after recovery or maintenance committed a manifest.
    pub(crate) fn install(&self, snap: Snapshot) {
        *self.on_disk.locked() = snap.to_manifest();
        self.set_current(Arc::new(snap));
    }
}

/// Groups manifest entries into the live map of a snapshot.
pub(crate) fn live_map(
    series: &Series,
    entries: &[ChunkEntry],
) -> crate::storage::snapshot::MonthMap {
    let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.state == STATE_LIVE) {
        live.entry(e.month)
            .or_default()
            .push(series.chunk_ref(e.clone()));
    }
    for v in live.values_mut() {
        v.sort_by_key(|c| c.entry.generation);
    }
    crate::storage::snapshot::month_lists(live)
}

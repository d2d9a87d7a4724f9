//! Writing a commit's files before its manifest: each month's chunk and sidecars,
//! or a pack of several months, synced; and their removal when the commit fails.

use super::*;

impl Series {
    /// Builds and writes every planned chunk (and its sidecars), as files of their
    /// own or into packs, through the commit's pipeline (`series::pipeline`:
    /// `write_threads` threads, the caller's among them, and one more for a write of
    /// `direct_write_min_bytes` or more, build months and write
    /// units; `sync_threads` more fsync the files meanwhile, so the fsyncs of a
    /// many-month write wait on the device together instead of one after another),
    /// then fsyncs the directory. Returns the manifest entries in plan order, or the
    /// failure, with what the pipeline built and the packs it cut (what a failure
    /// leaves to remove). A one-month write spawns no thread at all. Every file is
    /// fsynced before this returns its entries.
    pub(super) fn publish_chunks(
        &self,
        plans: &[MonthPlan],
        stamp: (u64, u64, u32),
        next_gen: u64,
    ) -> (
        Result<Vec<ChunkEntry>>,
        Vec<sealed::Prebuilt>,
        Vec<WritePack>,
    ) {
        if let Err(e) = self.materialize() {
            let nothing = plans.iter().map(|_| sealed::Prebuilt::Nothing).collect();
            return (Err(e), nothing, Vec::new());
        }
        let sync_threads = self.sync_threads_for(plans);
        let (piped, synced) = fsio::SyncPool::run(&self.dir, sync_threads, |pool| {
            pipeline::run(self, plans, stamp, next_gen, pool)
        });
        let pipeline::Piped {
            prebuilt,
            packs,
            results,
        } = piped;
        let entries = (|| {
            let mut entries = Vec::with_capacity(plans.len());
            for r in results {
                entries.extend(r?);
            }
            synced.map_err(|(name, e)| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
            // Every plan has its entry unless a failure stopped the workers, and that
            // failure was returned above.
            assert_eq!(
                entries.len(),
                plans.len(),
                "a chunk of the write went missing"
            );
            fsio::fsync_dir(&self.dir)
                .map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
            Ok(entries)
        })();
        (entries, prebuilt, packs)
    }

    /// Syncer threads for a write of `plans`: one fewer than its units (packs, or
    /// without packing its months; the writer fsyncs what no syncer takes), at most
    /// `storage.sync_threads`. With packing on, the months go into packs of about
    /// `storage.pack_target_bytes`, and their raw bytes bound what the packs hold, so
    /// a year of small months (one pack) spawns no syncer: a load of many such series
    /// no longer starts and joins eight threads per series for one fsync. Only the
    /// parallelism of the fsyncs depends on this: every file is fsynced either way.
    fn sync_threads_for(&self, plans: &[MonthPlan]) -> usize {
        let pack = self.opts.pack_target_bytes;
        let files = if plans.len() > 1 && pack > 0 {
            usize::try_from(self.raw_bytes_of(plans).div_ceil(pack))
                .unwrap_or(usize::MAX)
                .clamp(1, plans.len())
        } else {
            plans.len()
        };
        files.saturating_sub(1).min(self.opts.sync_threads)
    }

    /// Bytes of `plans`' rows as raw int64 columns: what sizes a write's threads
    /// (`pipeline::run`) and its syncers ([`Series::sync_threads_for`]).
    pub(super) fn raw_bytes_of(&self, plans: &[MonthPlan]) -> u64 {
        let ncols = self.meta.key.kind().ncols() as u64;
        plans.iter().map(|p| p.rows() as u64 * ncols * 8).sum()
    }

    /// The header of `plan`'s chunk before its columns fill in rows, bounds, stride
    /// and checksum ([`ChunkParts::new`]).
    pub(super) fn chunk_header(
        &self,
        plan: &MonthPlan,
        (version, wal_lsn, write_chunks): (u64, u64, u32),
    ) -> ChunkHeader {
        ChunkHeader {
            meta: Arc::clone(&self.meta),
            ncols: plan.ncols(),
            rows: 0,
            first_ts: 0,
            last_ts: 0,
            month: plan.month,
            flags: if plan.full { FLAG_FULL } else { 0 },
            generation: plan.generation,
            write_version: version,
            write_chunks,
            body_xxh3: 0,
            stride: 0,
            wal_lsn,
            body_len: 0,
            last_row: None,
        }
    }

    /// One raw month's chunk and its sidecars, built from its plan (a compressed
    /// month, and the sidecars of a month in place, were built before the month was
    /// placed in a unit: [`sealed::prebuild_one`]).
    pub(super) fn build_chunk<'p>(
        &self,
        plan: &'p MonthPlan,
        stamp: (u64, u64, u32),
        cols: &'p [&'p [i64]],
        pre: &'p sealed::Prebuilt,
    ) -> BuiltChunk<'p> {
        assert!(
            plan.compressed.is_none(),
            "a compressed month is built before the layout of its write"
        );
        BuiltChunk::Raw {
            raw: Box::new(ChunkParts::new(self.chunk_header(plan, stamp), cols)),
            sidecars: match pre.sidecars() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(sidecar::build(&self.meta, cols, &self.opts)),
            },
        }
    }

    /// Builds and writes one month's chunk and sidecars as files of their own,
    /// queueing each file on `pool` for its fsync.
    pub(super) fn publish_one(
        &self,
        plan: &MonthPlan,
        pre: &sealed::Prebuilt,
        stamp: (u64, u64, u32),
        pool: &fsio::SyncPool<'_>,
        scratch: &mut Scratch,
    ) -> Result<ChunkEntry> {
        scratch.resize_with(1, Vec::new);
        let cols;
        let built = match pre.sealed() {
            Some(s) => BuiltChunk::Sealed(s),
            None => {
                cols = plan.columns(&mut scratch[0]);
                self.build_chunk(plan, stamp, &cols, pre)
            }
        };
        let write = |kind: FileKind, bytes: &[&[u8]]| -> Result<()> {
            let name = data_file_name(plan.month, plan.generation, kind);
            let direct = self.opts.direct_write_min_bytes;
            let file = fsio::write_unreferenced_sized(&self.dir, &name, bytes, direct)
                .map_err(|e| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
            pool.push(file, name);
            Ok(())
        };
        write(FileKind::Chunk, &built.slices())?;
        if let Some(z) = &built.sidecars().zonemap {
            write(FileKind::ZoneMap, &[z])?;
        }
        if let Some(v) = &built.sidecars().vindex {
            write(FileKind::ValueIndex, &[v])?;
        }
        Ok(built.entry(crate::storage::format::PackLoc::NONE))
    }

    /// Builds the months of `plans` (one [`WritePack`]) and writes them as one pack
    /// file (layout in `storage::pack`): the index, then each chunk image and its
    /// sidecars at the next aligned offsets, in one sequential write. The pack is
    /// queued on `pool` for its fsync. Returns the packed entries, in plan order.
    pub(super) fn publish_pack(
        &self,
        (plans, sealed): (&[MonthPlan], &[&sealed::Prebuilt]),
        pack: &WritePack,
        stamp: (u64, u64, u32),
        pool: &fsio::SyncPool<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<ChunkEntry>> {
        scratch.resize_with(plans.len(), Vec::new);
        // A sealed month's columns are not needed again: its bytes are built.
        let cols: Vec<Vec<&[i64]>> = plans
            .iter()
            .zip(sealed)
            .zip(scratch.iter_mut())
            .map(|((p, z), s)| {
                if z.sealed().is_some() {
                    Vec::new()
                } else {
                    p.columns(s)
                }
            })
            .collect();
        let built: Vec<BuiltChunk> = plans
            .iter()
            .zip(sealed)
            .zip(&cols)
            .map(|((p, z), c)| match z.sealed() {
                Some(s) => BuiltChunk::Sealed(s),
                None => self.build_chunk(p, stamp, c, z),
            })
            .collect();
        let mut index = PackIndex {
            generation: pack.generation,
            entries: Vec::with_capacity(built.len()),
        };
        // The manifest entries (sidecar checksums made once), placed below.
        let mut entries: Vec<ChunkEntry> = built
            .iter()
            .map(|b| b.entry(crate::storage::format::PackLoc::NONE))
            .collect();
        let mut offset = PackIndex::data_start(built.len());
        for c in &entries {
            let e = PackEntry {
                month: c.month,
                generation: c.generation,
                offset,
                chunk_len: c.file_len,
                zonemap: c.zonemap,
                vindex: c.vindex,
            };
            offset = align_up(e.end() as usize) as u64;
            index.entries.push(e);
        }
        let pack_len = offset;
        let head = index.encode();
        // The runs of the file in order, each after the padding up to its offset.
        let mut runs: Vec<&[u8]> = Vec::with_capacity(2 + built.len() * 16);
        let mut at = 0u64;
        put_at(&mut runs, &mut at, &head, 0);
        for (b, e) in built.iter().zip(&index.entries) {
            let (z, v) =
                crate::storage::pack::sidecar_offsets(e.offset, e.chunk_len, e.zonemap.len);
            let mut to = e.offset;
            for run in b.slices() {
                put_at(&mut runs, &mut at, run, to);
                to += run.len() as u64;
            }
            if let Some(zm) = &b.sidecars().zonemap {
                put_at(&mut runs, &mut at, zm, z);
            }
            if let Some(vi) = &b.sidecars().vindex {
                put_at(&mut runs, &mut at, vi, v);
            }
        }
        put_at(&mut runs, &mut at, &[], pack_len);
        assert_eq!(at, pack_len, "a pack ends where its index says");
        let name = pack_file_name(pack.generation);
        let direct = self.opts.direct_write_min_bytes;
        let file = fsio::write_unreferenced_sized(&self.dir, &name, &runs, direct)
            .map_err(|e| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
        pool.push(file, name);
        for (c, e) in entries.iter_mut().zip(&index.entries) {
            c.pack = crate::storage::format::PackLoc {
                generation: pack.generation,
                offset: e.offset,
                len: pack_len,
            };
        }
        Ok(entries)
    }

    /// Best-effort removal of files of a write that did not commit.
    pub(super) fn remove_unpublished(&self, (plans, packs, _): Layout<'_, '_>) {
        for p in plans {
            for kind in [FileKind::Chunk, FileKind::ZoneMap, FileKind::ValueIndex] {
                let _ = std::fs::remove_file(self.dir.join(data_file_name(
                    p.month,
                    p.generation,
                    kind,
                )));
            }
        }
        for pack in packs {
            let _ = std::fs::remove_file(self.dir.join(pack_file_name(pack.generation)));
        }
        let _ = fsio::fsync_dir(&self.dir);
    }
}

/// The manifest's record of sidecar `bytes`.
pub(super) fn sidecar_ref(bytes: &[u8]) -> SidecarRef {
    SidecarRef {
        len: bytes.len() as u64,
        xxh3: xxhash_rust::xxh3::xxh3_64(bytes),
    }
}

/// Appends to `runs` the padding from `at` up to `to`, then `run`, and moves `at` to
/// its end. Parts are laid out in ascending offsets, at most one alignment apart.
pub(super) fn put_at<'b>(runs: &mut Vec<&'b [u8]>, at: &mut u64, run: &'b [u8], to: u64) {
    assert!(
        to >= *at && to - *at < COLUMN_ALIGN as u64,
        "pack parts ascend and are at most one alignment apart"
    );
    runs.push(&PAD[..(to - *at) as usize]);
    runs.push(run);
    *at = to + run.len() as u64;
}

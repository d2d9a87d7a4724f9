//! Writing a commit's files before its manifest: each month's chunk and sidecars,
//! or a pack of several months, synced; and their removal when the commit fails.

use super::*;

impl Series {
    /// Writes every planned chunk (and its sidecars), as files of their own or into the
    /// write's `packs`, fsyncs them and the directory, and returns the manifest
    /// entries, in plan order. `write_threads` threads (the caller's among them) build
    /// and write the files (checksums, sidecars, copies into the page cache), a pack
    /// or a file's month at a time; `sync_threads` more fsync them meanwhile, so the
    /// fsyncs of a many-month write wait on the device together instead of one after
    /// another. A one-month write spawns no thread at all. Every file is fsynced
    /// before this returns.
    pub(super) fn publish_chunks(
        &self,
        layout: Layout<'_, '_>,
        (version, wal_lsn): (u64, u64),
        write_chunks: u32,
    ) -> Result<Vec<ChunkEntry>> {
        self.materialize()?;
        let plans = layout.0;
        let sync_threads = if plans.len() > 1 {
            self.opts.sync_threads
        } else {
            0
        };
        let (results, synced) = fsio::SyncPool::run(&self.dir, sync_threads, |pool| {
            self.publish_all(layout, (version, wal_lsn), write_chunks, pool)
        });
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
        fsio::fsync_dir(&self.dir).map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
        Ok(entries)
    }

    /// Runs the write's units (a pack, or one month's files) on the caller's thread
    /// and up to `write_threads - 1` helpers; stops at the first failure. Each unit's
    /// entries come back in its place, so the concatenation is in plan order. A helper
    /// that cannot be spawned only costs parallelism.
    pub(super) fn publish_all(
        &self,
        (plans, packs, sealed): Layout<'_, '_>,
        (version, wal_lsn): (u64, u64),
        write_chunks: u32,
        pool: &fsio::SyncPool<'_>,
    ) -> Vec<Result<Vec<ChunkEntry>>> {
        let units = write_units(plans.len(), packs);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Vec<ChunkEntry>>>>> =
            Mutex::new((0..units.len()).map(|_| None).collect());
        let stamp = (version, wal_lsn, write_chunks);
        let work = || {
            // This thread's buffers for split months, reused from unit to unit.
            let mut scratch = Scratch::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= units.len() || pool.failed() {
                    break;
                }
                let r = match units[i] {
                    WriteUnit::File(p) => self
                        .publish_one(&plans[p], sealed[p].as_ref(), stamp, pool, &mut scratch)
                        .map(|e| vec![e]),
                    WriteUnit::Pack(k) => self.publish_pack(
                        (
                            &plans[packs[k].plans.clone()],
                            &sealed[packs[k].plans.clone()],
                        ),
                        &packs[k],
                        stamp,
                        pool,
                        &mut scratch,
                    ),
                };
                let failed = r.is_err();
                results.locked()[i] = Some(r);
                if failed {
                    next.store(units.len(), Ordering::Relaxed);
                }
            }
        };
        let helpers = units
            .len()
            .min(self.opts.write_threads.max(1))
            .saturating_sub(1);
        if helpers == 0 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..helpers {
                    if fsio::spawn_scoped(s, &self.dir, "fastk-write", work).is_err() {
                        break;
                    }
                }
                work();
            });
        }
        // Units after a failure never ran: the failure comes first in unit order or
        // is among the results, and the caller stops at it.
        results.into_value().into_iter().map_while(|r| r).collect()
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
    /// month was built before the write was laid out: [`sealed::prebuild`]).
    pub(super) fn build_chunk<'p>(
        &self,
        plan: &'p MonthPlan,
        stamp: (u64, u64, u32),
        cols: &'p [&'p [i64]],
    ) -> BuiltChunk<'p> {
        assert!(
            plan.compressed.is_none(),
            "a compressed month is built before the layout of its write"
        );
        BuiltChunk::Raw {
            raw: Box::new(ChunkParts::new(self.chunk_header(plan, stamp), cols)),
            sidecars: sidecar::build(&self.meta, cols, &self.opts),
        }
    }

    /// Builds and writes one month's chunk and sidecars as files of their own,
    /// queueing each file on `pool` for its fsync.
    pub(super) fn publish_one(
        &self,
        plan: &MonthPlan,
        sealed: Option<&sealed::SealedChunk>,
        stamp: (u64, u64, u32),
        pool: &fsio::SyncPool<'_>,
        scratch: &mut Scratch,
    ) -> Result<ChunkEntry> {
        scratch.resize_with(1, Vec::new);
        let cols;
        let built = match sealed {
            Some(s) => BuiltChunk::Sealed(s),
            None => {
                cols = plan.columns(&mut scratch[0]);
                self.build_chunk(plan, stamp, &cols)
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
        (plans, sealed): (&[MonthPlan], &[Option<sealed::SealedChunk>]),
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
                if z.is_some() {
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
            .map(|((p, z), c)| match z {
                Some(z) => BuiltChunk::Sealed(z),
                None => self.build_chunk(p, stamp, c),
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

//! The pack pass: sealed months of small compressed chunks gathered into pack files
//! (`storage::pack`), committed like every other change of a series.
//!
//! Which months: sealed (ended more than `storage.compress_after_s` ago), one live
//! compressed chunk each, that chunk with its sidecars at most
//! `storage.pack_target_bytes`. In month order they are cut greedily into groups of at
//! most that many bytes; a group of two or more months whose chunks are not already
//! exactly the live chunks of one pack is written as a new pack (copy-on-write: a pack
//! is never modified, a later month joining it rewrites the group into a new pack and
//! the old one goes when its last chunk is superseded). Appending months in time order
//! thus rewrites only the last group.
//!
//! The commit: each pack is written under a generation at or past the manifest's
//! `next_generation` and fsynced, the directory is fsynced, and the manifest that
//! lists the packed entries (and marks the chunks they replace obsolete) is published
//! with the version unchanged: the rows are the same. A crash before the publication
//! leaves a pack past `next_generation`, which recovery removes.

use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::chunk::{ChunkRef, FileKind};
use super::error::{Result, StorageError};
use super::format::{
    CHUNK_HEADER_LEN, ChunkEntry, ChunkHeader, FLAG_COMPRESSED, PackLoc, STATE_LIVE, SidecarRef,
    align_up,
};
use super::fsio;
use super::pack::{PackEntry, PackIndex, pack_file_name};
use super::series::{Series, assert_next};
use super::snapshot::Snapshot;
use crate::record::partition_label;

impl Series {
    /// The groups of months the pack pass would write as one pack each at `now_ms`
    /// (nothing when compression or packing is off).
    pub fn pack_groups(&self, snap: &Snapshot, now_ms: i64) -> Vec<Vec<i32>> {
        let (Some(after), target) = (self.opts.compress_after_ms, self.opts.pack_target_bytes)
        else {
            return Vec::new();
        };
        if target == 0 {
            return Vec::new();
        }
        let sealed_before = now_ms.saturating_sub(after);
        let mut groups: Vec<Vec<&Arc<ChunkRef>>> = Vec::new();
        let mut current: Vec<&Arc<ChunkRef>> = Vec::new();
        let mut bytes = 0u64;
        for (&month, chunks) in &snap.live {
            let [c] = chunks.as_slice() else { continue };
            let size = super::pack::packed_size(&c.entry);
            let eligible = self.meta.partitioning().end_ms(month) < sealed_before
                && !c.is_memory()
                && c.entry.flags & FLAG_COMPRESSED != 0
                && PackIndex::data_start(1) + size <= target;
            if !eligible {
                continue;
            }
            // The pack's header and index count against the target too.
            let head = PackIndex::data_start(current.len() + 1);
            if !current.is_empty() && head + bytes + size > target {
                groups.push(std::mem::take(&mut current));
                bytes = 0;
            }
            current.push(c);
            bytes += size;
        }
        groups.push(current);
        groups
            .into_iter()
            .filter(|g| g.len() >= 2 && !settled(snap, g))
            .map(|g| g.iter().map(|c| c.entry.month).collect())
            .collect()
    }

    /// Packs the sealed months of this series (see the module notes) in one commit
    /// that keeps the version. Returns the months packed.
    pub fn pack_sealed(&self, now_ms: i64) -> Result<Vec<String>> {
        // No directory, no files to pack (see `Series::compact`).
        if !self.is_materialized() || self.pack_groups(&self.snapshot(), now_ms).is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        let groups = self.pack_groups(&snap, now_ms);
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut next_gen = snap.next_generation;
        let mut written: Vec<String> = Vec::new();
        let mut live = snap.live.clone();
        let mut superseded = Vec::new();
        let wrote = (|| -> Result<()> {
            for group in &groups {
                // The pack's generation follows its chunks', so it is the highest a
                // pack pass issues: a rebuild that cannot read a pack still moves
                // `next_generation` past every generation in it (from its name).
                let pack_gen = next_gen + group.len() as u64;
                let (bytes, entries) = self.build_pack(&snap, group, pack_gen, &mut next_gen)?;
                assert_eq!(
                    next_gen, pack_gen,
                    "a pack's chunks take the generations before it"
                );
                next_gen += 1;
                let name = pack_file_name(pack_gen);
                fsio::write_unreferenced_synced(&self.dir, &name, &[&bytes])
                    .map_err(|e| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
                written.push(name);
                for entry in entries {
                    let old = live.insert(
                        entry.month,
                        Arc::new(smallvec::smallvec![self.chunk_ref(entry)]),
                    );
                    superseded.extend(old.expect("a packed month is live").iter().cloned());
                }
            }
            fsio::fsync_dir(&self.dir).map_err(|e| StorageError::io(self.rel_dir.to_string(), e))
        })();
        let remove_new = |written: &[String]| {
            for name in written {
                let _ = std::fs::remove_file(self.dir.join(name));
            }
            let _ = fsio::fsync_dir(&self.dir);
        };
        if let Err(e) = wrote {
            remove_new(&written);
            return Err(e);
        }
        let obsolete = self.next_obsolete(&snap, &superseded);
        let next = Snapshot {
            meta: Arc::clone(&self.meta),
            version: snap.version,
            next_generation: next_gen,
            retention_ms: snap.retention_ms,
            irregular: snap.irregular,
            live,
            obsolete: Arc::new(obsolete),
            wal_lsn: snap.wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        assert_next(&snap, &next, false);
        self.publish_next(next, superseded, || remove_new(&written))?;
        Ok(groups
            .iter()
            .flatten()
            .map(|&m| partition_label(m))
            .collect())
    }

    /// The bytes of one pack holding the live chunk of each month of `group`, each
    /// under a fresh generation taken from `next_gen`, and the manifest entries of
    /// the packed chunks. Every byte copied is verified first, so a pack never
    /// carries a corruption forward.
    fn build_pack(
        &self,
        snap: &Snapshot,
        group: &[i32],
        pack_gen: u64,
        next_gen: &mut u64,
    ) -> Result<(Vec<u8>, Vec<ChunkEntry>)> {
        let mut index = PackIndex {
            generation: pack_gen,
            entries: Vec::with_capacity(group.len()),
        };
        let mut parts: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut entries = Vec::with_capacity(group.len());
        let mut offset = PackIndex::data_start(group.len());
        for month in group {
            let c = &snap.live[month][0];
            let (chunk, zonemap, vindex) = self.verified_images(c)?;
            let generation = *next_gen;
            *next_gen += 1;
            let e = PackEntry {
                month: *month,
                generation,
                offset,
                chunk_len: chunk.len() as u64,
                zonemap: c.entry.zonemap,
                vindex: c.entry.vindex,
            };
            let (z_at, v_at) = super::pack::sidecar_offsets(offset, e.chunk_len, e.zonemap.len);
            let mut chunk = chunk;
            let mut h = ChunkHeader::decode(&chunk).map_err(|d| self.corrupt(c, d))?;
            h.generation = generation;
            chunk[..CHUNK_HEADER_LEN].copy_from_slice(&h.encode());
            parts.push((offset, chunk));
            parts.push((z_at, zonemap));
            parts.push((v_at, vindex));
            entries.push(ChunkEntry {
                generation,
                state: STATE_LIVE,
                pack: PackLoc {
                    generation: pack_gen,
                    offset,
                    len: 0,
                },
                ..c.entry.clone()
            });
            offset = align_up(e.end() as usize) as u64;
            index.entries.push(e);
        }
        for e in &mut entries {
            e.pack.len = offset;
        }
        let mut bytes = vec![0u8; offset as usize];
        let head = index.encode();
        bytes[..head.len()].copy_from_slice(&head);
        for (at, part) in &parts {
            bytes[*at as usize..*at as usize + part.len()].copy_from_slice(part);
        }
        Ok((bytes, entries))
    }

    /// The stored chunk and sidecar bytes of `c`, each checked against its manifest
    /// entry (header agreement and body checksum; sidecar length and checksum).
    fn verified_images(&self, c: &ChunkRef) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let read = |kind: FileKind| {
            c.read_stored(kind)
                .map_err(|e| StorageError::io(c.rel_path(kind), e))
        };
        let chunk = read(FileKind::Chunk)?;
        let h = ChunkHeader::decode(&chunk).map_err(|d| self.corrupt(c, d))?;
        let e = &c.entry;
        let agrees = chunk.len() as u64 == e.file_len
            && h.file_len() == e.file_len
            && h.body_xxh3 == e.checksum
            && h.generation == e.generation
            && (h.month, h.rows, h.flags) == (e.month, e.rows, e.flags)
            && xxh3_64(&chunk[CHUNK_HEADER_LEN..]) == h.body_xxh3;
        if !agrees {
            return Err(self.corrupt(c, "chunk disagrees with its entry or checksum".into()));
        }
        let side = |kind: FileKind, sref: SidecarRef| -> Result<Vec<u8>> {
            if !sref.present() {
                return Ok(Vec::new());
            }
            let b = read(kind)?;
            if b.len() as u64 != sref.len || xxh3_64(&b) != sref.xxh3 {
                return Err(StorageError::corrupted(
                    c.rel_path(kind),
                    "sidecar disagrees with its manifest entry",
                ));
            }
            Ok(b)
        };
        let zonemap = side(FileKind::ZoneMap, e.zonemap)?;
        let vindex = side(FileKind::ValueIndex, e.vindex)?;
        Ok((chunk, zonemap, vindex))
    }

    fn corrupt(&self, c: &ChunkRef, detail: String) -> StorageError {
        StorageError::corrupted(c.rel_path(FileKind::Chunk), detail)
    }
}

/// Whether `group` is already exactly the live chunks of one pack.
fn settled(snap: &Snapshot, group: &[&Arc<ChunkRef>]) -> bool {
    let pack = group[0].entry.pack;
    if !pack.is_packed()
        || group
            .iter()
            .any(|c| c.entry.pack.generation != pack.generation)
    {
        return false;
    }
    let in_pack = snap
        .chunks()
        .filter(|c| c.entry.pack.generation == pack.generation)
        .count();
    in_pack == group.len()
}

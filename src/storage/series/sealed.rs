//! Sealed months compressed as they are written: a commit (a bulk write, a fold, a
//! rewrite) whose month ended more than `storage.compress_after_s` ago and becomes
//! that month's one chunk writes it compressed in the same pass, so the compression
//! pass finds nothing left to do for it and the disk never holds its raw form.
//!
//! The compressed chunks are built before the commit lays out its packs
//! (`Series::write_packs`), on up to `storage.write_threads` threads: a pack of
//! sealed months is cut by their exact sizes, as the pack pass cuts them.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{MonthPlan, Scratch, Series};
use crate::storage::format::{CHUNK_HEADER_LEN, ChunkHeader, ChunkParts, FLAG_COMPRESSED};
use crate::storage::{codec, fsio, sidecar};
use crate::sync::LockExt;

/// One sealed month's chunk, compressed, with its sidecars: built before the commit's
/// layout, written by it as a file or into a pack.
pub(in crate::storage) struct SealedChunk {
    pub(super) header_bytes: [u8; CHUNK_HEADER_LEN],
    pub(super) header: ChunkHeader,
    pub(super) body: Vec<u8>,
    pub(super) sidecars: sidecar::Sidecars,
}

impl Series {
    /// Marks the plans of a commit that are written compressed: with compression and
    /// `storage.compress_on_write` on, each month that ended more than
    /// `storage.compress_after_s` ago and that the commit makes its one chunk (a new
    /// month, or a rewrite of all of it). An append to a month that keeps chunks
    /// stays raw; the compression pass merges it later.
    pub(super) fn seal_plans(&self, plans: &mut [MonthPlan]) {
        let Some(after) = self.opts.compress_after_ms else {
            return;
        };
        if !self.opts.compress_on_write {
            return;
        }
        let sealed_before = crate::storage::now_ms().saturating_sub(after);
        // Ticks take pco's full search even on write: their timestamps are irregular
        // and their sizes repeat, which level 0 with first-order deltas codes badly
        // (6.2 against 2.3 bytes per trade on the `ticks` benchmark's data), and a
        // partition of ticks is large enough to pay for the search (codec::Effort).
        let effort = if self.meta.key.kind().is_tick() {
            codec::Effort::Thorough
        } else {
            codec::Effort::Fast
        };
        for p in plans.iter_mut() {
            let sealed = self.meta.partitioning().end_ms(p.month) < sealed_before;
            if p.compressed.is_none() && p.full && sealed {
                p.compressed = Some(effort);
            }
        }
    }
}

/// Builds the compressed chunk of each plan marked compressed (`None` for the raw
/// ones), on the caller's thread and up to `storage.write_threads - 1` helpers.
pub(super) fn prebuild(
    series: &Series,
    plans: &[MonthPlan],
    stamp: (u64, u64, u32),
) -> Vec<Option<SealedChunk>> {
    let todo: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].compressed.is_some())
        .collect();
    let mut out: Vec<Option<SealedChunk>> = (0..plans.len()).map(|_| None).collect();
    if todo.is_empty() {
        return out;
    }
    let next = AtomicUsize::new(0);
    let built = std::sync::Mutex::new(Vec::with_capacity(todo.len()));
    let work = || {
        let mut scratch = Scratch::new();
        scratch.resize_with(1, Vec::new);
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&i) = todo.get(k) else { break };
            let chunk = build(series, &plans[i], stamp, &mut scratch[0]);
            built.locked().push((i, chunk));
        }
    };
    let helpers = todo
        .len()
        .min(series.opts.write_threads.max(1))
        .saturating_sub(1);
    std::thread::scope(|s| {
        for _ in 0..helpers {
            // A helper that cannot be spawned only costs parallelism.
            if fsio::spawn_scoped(s, &series.dir, "fastk-seal", work).is_err() {
                break;
            }
        }
        work();
    });
    for (i, chunk) in built.into_value() {
        out[i] = Some(chunk);
    }
    assert!(
        (0..plans.len()).all(|i| out[i].is_some() == plans[i].compressed.is_some()),
        "every compressed plan is built, and only those"
    );
    out
}

/// One compressed chunk: the raw header (rows, stride, bounds) flagged compressed,
/// with the compressed body's length and checksum, then that body.
fn build(
    series: &Series,
    plan: &MonthPlan,
    stamp: (u64, u64, u32),
    scratch: &mut Vec<Vec<i64>>,
) -> SealedChunk {
    let cols = plan.columns(scratch);
    let raw = ChunkParts::new(series.chunk_header(plan, stamp), &cols);
    let mut header = raw.header.clone();
    let effort = plan.compressed.expect("built for a compressed plan");
    let body = codec::compress(&header, &cols, effort);
    header.flags |= FLAG_COMPRESSED;
    header.body_len = body.len() as u64;
    header.body_xxh3 = xxhash_rust::xxh3::xxh3_64(&body);
    SealedChunk {
        header_bytes: header.encode(),
        header,
        body,
        sidecars: sidecar::build(&series.meta, &cols, &series.opts),
    }
}

//! Sealed months compressed as they are written: a commit (a bulk write, a fold, a
//! rewrite) whose month ended more than `storage.compress_after_s` ago and becomes
//! that month's one chunk writes it compressed in the same pass, so the compression
//! pass finds nothing left to do for it and the disk never holds its raw form.
//!
//! A commit builds each compressed chunk before it places the month in a pack
//! (`series::pipeline`): a pack of sealed months is cut by their exact sizes, as the
//! pack pass cuts them. The raw months' sidecars (a value index sorts the month) are
//! built in the same step, so the CPU work of a write of many months is shared a
//! month at a time between its writer threads, whatever the packs' sizes.

use super::{MonthPlan, Series};
use crate::storage::format::{CHUNK_HEADER_LEN, ChunkHeader, ChunkParts, FLAG_COMPRESSED};
use crate::storage::{codec, sidecar};

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

/// What a commit built of one month before it laid out its files.
pub(in crate::storage) enum Prebuilt {
    /// Nothing: a raw month across pieces, whose writer joins its columns first.
    Nothing,
    /// A raw month's sidecars (empty when the series has none).
    Sidecars(sidecar::Sidecars),
    /// A sealed month's compressed chunk, with its sidecars (boxed: its header
    /// image alone is 512 bytes).
    Sealed(Box<SealedChunk>),
}

impl Prebuilt {
    pub(super) fn sealed(&self) -> Option<&SealedChunk> {
        match self {
            Prebuilt::Sealed(z) => Some(z),
            _ => None,
        }
    }

    /// A raw month's sidecars, when they were built ahead.
    pub(super) fn sidecars(&self) -> Option<&sidecar::Sidecars> {
        match self {
            Prebuilt::Sidecars(s) => Some(s),
            _ => None,
        }
    }
}

/// What a commit builds of `plan` before laying out its files: the compressed chunk
/// of a month marked compressed, the sidecars of a raw month whose columns are in
/// place, nothing for a raw month across pieces (its writer joins and builds it).
/// Pure CPU work, on any of the commit's writer threads (`series::pipeline`).
pub(super) fn prebuild_one(
    series: &Series,
    plan: &MonthPlan,
    stamp: (u64, u64, u32),
    scratch: &mut Vec<Vec<i64>>,
) -> Prebuilt {
    let built = if plan.compressed.is_some() {
        Prebuilt::Sealed(Box::new(build(series, plan, stamp, scratch)))
    } else if plan.split.is_empty() {
        let cols = plan.columns(scratch);
        Prebuilt::Sidecars(sidecar::build(&series.meta, &cols, &series.opts))
    } else {
        Prebuilt::Nothing
    };
    assert!(
        built.sealed().is_some() == plan.compressed.is_some()
            && built.sidecars().is_some() == (plan.compressed.is_none() && plan.split.is_empty()),
        "a compressed month is built whole, a raw month in place has its sidecars"
    );
    built
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

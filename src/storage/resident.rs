//! The catalog fold: small series with no directory fold their rows into state
//! records of the store's catalog instead of a directory, a `MANIFEST` and a chunk
//! file per series each (docs/storage-format.md, "Series catalog", "Resident rows").
//!
//! A pass takes the due series that have no directory and hold at most
//! `storage.resident_rows_max` rows in memory, while the rows every such series holds
//! stay within `storage.resident_bytes_max`; the others fold into files as before.
//! Each series is taken under its writer lock (skipped when busy: the next pass takes
//! it), its state joined month by month, and every state written in records of a few
//! megabytes, each one append and one fsync. A record is the commit point of the
//! series it holds: once it is durable their states hold nothing unfolded, so the log
//! segments they held can go. A failed append changes nothing: the rows stay in the
//! log and in memory, and the next pass tries again.

use std::sync::Arc;

use super::catalog::{Catalog, ResidentState};
use super::series::Series;

/// Default of `storage.resident_rows_max`: a year of daily rows.
pub const DEFAULT_RESIDENT_ROWS_MAX: u64 = 512;
/// Default of `storage.resident_bytes_max`: 256 MiB of in-memory chunks.
pub const DEFAULT_RESIDENT_BYTES_MAX: u64 = 256 << 20;

/// The catalog is rewritten without what later records replaced once the fold's
/// appends made it twice as long and this much longer than after the open.
pub const CATALOG_COMPACT_SLACK: u64 = 64 << 20;

/// What a catalog fold did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResidentFold {
    /// Series whose rows a state record now holds.
    pub folded: u64,
    /// Series whose record failed (their rows stay in the log).
    pub failed: u64,
}

/// Bytes of in-memory chunks the series with no directory hold (resident and
/// unfolded rows alike).
pub fn held_bytes(list: &[Arc<Series>]) -> u64 {
    list.iter()
        .filter(|s| !s.is_materialized())
        .map(|s| s.snapshot().chunks().map(|c| c.entry.file_len).sum::<u64>())
        .sum()
}

/// Splits `due` into the series the catalog fold takes (no directory, few rows, within
/// the byte budget `room`) and the rest, which fold into files.
pub fn split_due(
    due: Vec<&Arc<Series>>,
    rows_max: u64,
    mut room: u64,
) -> (Vec<&Arc<Series>>, Vec<&Arc<Series>>) {
    let mut take = Vec::new();
    let mut rest = Vec::new();
    for s in due {
        let snap = s.snapshot();
        let rows = snap.unfolded.map_or(u64::MAX, |u| u.rows);
        let bytes = snap.unfolded.map_or(u64::MAX, |u| u.bytes);
        if !s.is_materialized() && rows <= rows_max && bytes <= room {
            room -= bytes;
            take.push(s);
        } else {
            rest.push(s);
        }
    }
    (take, rest)
}

/// Folds `due` (series with no directory) into state records of `catalog`.
pub fn fold_into_catalog(catalog: &Catalog, due: &[&Arc<Series>]) -> ResidentFold {
    let mut out = ResidentFold::default();
    // Locks are taken and released a batch at a time: a batch is about one record.
    const BATCH: usize = 4096;
    for batch in due.chunks(BATCH) {
        let mut held = Vec::with_capacity(batch.len());
        let mut states: Vec<ResidentState> = Vec::with_capacity(batch.len());
        for s in batch {
            let Some(guard) = s.try_lock_live() else {
                continue;
            };
            let snap = s.snapshot();
            if snap.unfolded.is_none() {
                continue; // folded meanwhile
            }
            match s.resident_state(&snap) {
                Ok(Some(state)) => {
                    states.push(state);
                    held.push((s, guard, snap));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(series = %s.meta.key, error = %e, "could not take a series' rows for the catalog");
                    out.failed += 1;
                }
            }
        }
        let (done, r) = catalog.put_states(&states);
        if let Err(e) = &r {
            tracing::error!(error = %e, series = states.len() - done,
                "a catalog fold failed; the rows stay in the log and in memory");
            out.failed += (states.len() - done) as u64;
        }
        for ((s, guard, snap), state) in held.into_iter().zip(states).take(done) {
            s.settle_resident(&guard, &snap, state);
            out.folded += 1;
        }
    }
    if out.folded > 0
        && let Err(e) = catalog.compact_if_grown(CATALOG_COMPACT_SLACK)
    {
        tracing::error!(error = %e, "could not rewrite the catalog without its garbage; it is retried after the next catalog fold");
    }
    out
}

//! A read replica's side of named snapshots (docs/scale-out.md, section 2): adopting
//! a snapshot the primary made, once the follower has copied in the files it reads.
//!
//! [`Store::incoming_snapshot`] decodes the snapshot file the publisher shipped (every
//! rule of the snapshot file, its checksum first) and says, per series, which data
//! files this store lacks: those no handle here has (the current state, kept
//! versions, superseded chunks a reader still holds, other snapshots). The follower
//! checks each fetched file against the snapshot's manifest and stages it in the
//! series' directory under a temp name ([`stage_fetched`]): an open's sweep deletes
//! temp files, so a crash before the adoption leaves nothing behind.
//! [`Store::adopt_snapshot`] moves the staged files to their names, rebuilds the
//! states over this store's series sharing every handle in use (a file never gets a
//! second handle, whose drop would unlink it under a reader), and makes the snapshot
//! durable exactly as a create does: its file written and fsynced, then served.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::Store;
use super::chunk::ChunkRef;
use super::error::{Result, StorageError};
use super::follow::{DataFile, check_file, live_files};
use super::fsio::{self, TEMP_PREFIX};
use super::named::{
    Decoded, DecodedSeries, Extra, Held, NamedSnapshot, check_name, decode, state_of,
};
use super::series::Series;
use crate::record::{SeriesKey, SeriesMeta};
use crate::sync::LockExt;

/// A snapshot object decoded, with the files each of its series lacks here.
#[derive(Debug)]
pub struct Incoming {
    decoded: Decoded,
    pub needs: Vec<Needed>,
}

/// The files one series of an incoming snapshot lacks.
#[derive(Debug)]
pub struct Needed {
    pub key: SeriesKey,
    pub meta: SeriesMeta,
    /// The series' directory: staged files go there.
    pub dir: PathBuf,
    pub files: Vec<DataFile>,
}

impl Incoming {
    pub fn name(&self) -> &str {
        &self.decoded.name
    }

    /// Removes the staged files of an adoption that will not happen (best effort: an
    /// open's sweep deletes temp files anyway).
    pub fn abandon(&self) {
        remove_staged(&self.needs);
    }
}

fn remove_staged(needs: &[Needed]) {
    for n in needs {
        for f in &n.files {
            let _ = std::fs::remove_file(n.dir.join(staged_name(f)));
        }
    }
}

/// The temp name a fetched file waits under until its snapshot is adopted.
fn staged_name(f: &DataFile) -> String {
    format!("{TEMP_PREFIX}snapshot-{}", f.name)
}

/// Checks a fetched file against the snapshot's manifest and writes it, synced, under
/// its staged name in `dir` (the adoption fsyncs the directory).
pub fn stage_fetched(
    meta: &SeriesMeta,
    dir: &std::path::Path,
    f: &DataFile,
    body: &[u8],
) -> std::result::Result<(), String> {
    check_file(meta, f, body).map_err(|why| format!("object refused: {why}"))?;
    fsio::write_unreferenced_synced(dir, &staged_name(f), &[body]).map_err(|e| e.to_string())
}

/// Whether the snapshot's record of a series can be rebuilt over `live`: the same
/// directory and metadata, and no generation this store has not reached (a series
/// that lags the snapshot catches up first; its files would be past its
/// `next_generation`, which an open's sweep removes).
fn check_follows(name: &str, live: &Series, s: &DecodedSeries) -> Result<()> {
    let key = &s.manifest.meta.key;
    if *live.rel_dir != *s.rel_dir || s.manifest.meta != *live.meta {
        return Err(StorageError::Conflict(format!(
            "snapshot {name}: series {key} here is not the one the snapshot holds"
        )));
    }
    if s.manifest.next_generation > live.snapshot().next_generation {
        return Err(StorageError::Conflict(format!(
            "snapshot {name}: series {key} here is behind the snapshot; it is adopted once \
             the series catches up"
        )));
    }
    Ok(())
}

impl Store {
    /// Decodes a snapshot object a publisher shipped. `None`: this store holds that
    /// snapshot already (same name and creation time). Refused: a damaged object
    /// (`InvalidArgument`), a series this store does not hold (`NotFound`) or holds
    /// at an earlier state (`Conflict`).
    pub fn incoming_snapshot(&self, bytes: &[u8]) -> Result<Option<Incoming>> {
        let d = decode(bytes).map_err(|why| {
            StorageError::InvalidArgument(format!("snapshot object refused: {why}"))
        })?;
        check_name(&d.name)?;
        if self
            .named
            .get(&d.name)
            .is_some_and(|have| have.created_ts == d.created_ts)
        {
            return Ok(None);
        }
        let mut needs = Vec::with_capacity(d.series.len());
        for s in &d.series {
            let key = &s.manifest.meta.key;
            let live = self.get(key).map_err(|_| {
                StorageError::NotFound(format!(
                    "snapshot {} holds series {key}, which this store does not hold yet",
                    d.name
                ))
            })?;
            check_follows(&d.name, &live, s)?;
            let known = self.handles_of(&live);
            let has = |f: &DataFile| match f.packed.is_empty() {
                true => known.contains_key(&(f.entry.month, f.entry.generation)),
                false => {
                    live.pack_in_use(f.entry.pack.generation)
                        || f.packed
                            .iter()
                            .all(|e| known.contains_key(&(e.month, e.generation)))
                }
            };
            let files: Vec<DataFile> = live_files(&s.manifest)
                .into_iter()
                .filter(|f| !has(f))
                .collect();
            needs.push(Needed {
                key: key.clone(),
                meta: s.manifest.meta.clone(),
                dir: live.dir().to_path_buf(),
                files,
            });
        }
        Ok(Some(Incoming { decoded: d, needs }))
    }

    /// Serves `inc` once every file of its `needs` is staged ([`stage_fetched`]): the
    /// staged files move to their names, the states are rebuilt over this store's
    /// series, and the snapshot file is written as a create writes it. A snapshot of
    /// the same name and another creation time (deleted and made again on the
    /// primary) is replaced.
    pub fn adopt_snapshot(&self, inc: Incoming) -> Result<Arc<NamedSnapshot>> {
        let adopted = self.adopt(inc.decoded, &inc.needs);
        if adopted.is_err() {
            remove_staged(&inc.needs);
        }
        adopted
    }

    fn adopt(&self, d: Decoded, needs: &[Needed]) -> Result<Arc<NamedSnapshot>> {
        if let Some(have) = self.named.get(&d.name) {
            if have.created_ts == d.created_ts {
                return Ok(have);
            }
            self.named.remove(&d.name)?;
        }
        for n in needs {
            let io = |e| StorageError::io(n.dir.display().to_string(), e);
            for f in &n.files {
                fsio::rename(&n.dir.join(staged_name(f)), &n.dir.join(&f.name)).map_err(io)?;
            }
            if !n.files.is_empty() {
                fsio::fsync_dir(&n.dir).map_err(io)?;
            }
        }
        let _change = self.named.change.locked();
        self.named.check_new(&d.name, &d.note)?;
        let mut series = BTreeMap::new();
        for s in d.series {
            let key = s.manifest.meta.key.clone();
            let live = self.get(&key)?;
            check_follows(&d.name, &live, &s)?;
            let mut extra: Extra = self
                .handles_of(&live)
                .into_iter()
                .map(|((month, generation), c)| ((s.rel_dir.clone(), month, generation), c))
                .collect();
            let state = state_of(&live, s, &mut extra, true)?;
            series.insert(
                key,
                Held {
                    series: live,
                    state: Arc::new(state),
                },
            );
        }
        self.named.add(NamedSnapshot {
            name: d.name,
            created_ts: d.created_ts,
            note: d.note,
            series,
        })
    }

    /// Every file chunk handle of `live` in use: its own ([`Series::handles_in_use`])
    /// and those of the snapshots that hold it.
    fn handles_of(&self, live: &Arc<Series>) -> HashMap<(i32, u64), Arc<ChunkRef>> {
        let mut out = live.handles_in_use();
        for snap in self.named.list() {
            let Some(held) = snap.series.get(&live.meta.key) else {
                continue;
            };
            if !Arc::ptr_eq(&held.series, live) {
                continue;
            }
            for c in held.state.chunks().filter(|c| !c.is_memory()) {
                out.insert((c.entry.month, c.entry.generation), Arc::clone(c));
            }
        }
        out
    }
}

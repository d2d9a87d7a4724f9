//! The versions file: what makes past versions (`storage.keep_versions_s`) and the
//! commit time of each current version outlive a restart (docs/research.md, "Past
//! versions"; docs/storage-format.md, "Versions file").
//!
//! The histories live in memory ([`super::series::History`]). The file is written
//! whole (temp file, fsync, rename, directory fsync) by a clean stop and, while some
//! history changed, by the fold thread at most every [`CHECKPOINT_EVERY`]. At open,
//! before the series directories, it is read and the files of its kept versions are
//! pinned like a snapshot's; the states are rebuilt before the log is replayed and
//! given back to their series after it, when the series is still at the version the
//! file says. A series that the replay moved on (writes after the last checkpoint,
//! then a crash) starts with no past versions and a commit time that is a bound: the
//! versions it lost read 410 `gone`, never a wrong state.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::error::{Result, StorageError};
use super::fsio;
use super::named::{
    DecodedSeries, Extra, Pins, checked, put_bytes, put_state, put_u32, read_state, state_of,
};
use super::series::{History, Kept, MAX_KEPT_VERSIONS, Series};

/// The file, under the store root.
pub const VERSIONS_FILE: &str = "VERSIONS";
/// First bytes of the file.
const MAGIC: &[u8; 8] = b"FASTKVER";
/// Layout version of the file.
const FILE_VERSION: u32 = 1;
/// Longest a changed history waits in memory only (a crash forgets at most this much
/// of the past versions).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// One series' history as the file keeps it.
#[derive(Debug)]
pub struct DecodedHistory {
    rel_dir: String,
    version: u64,
    committed_ts: i64,
    exact: bool,
    kept: Vec<(i64, i64, DecodedSeries)>,
}

impl DecodedHistory {
    /// The directory name of its series (`series/<key>`).
    pub fn rel_dir(&self) -> &str {
        &self.rel_dir
    }

    /// The key of its series, from the directory name (`None`: not a series' name).
    pub fn key(&self) -> Option<crate::record::SeriesKey> {
        let parts: Vec<&str> = self.rel_dir.strip_prefix("series/")?.split('/').collect();
        crate::record::SeriesKey::from_parts(&parts).ok()
    }

    /// (version, committed_ts, exact) of a history that keeps no past version.
    pub fn plain(&self) -> Option<(u64, i64, bool)> {
        self.kept
            .is_empty()
            .then_some((self.version, self.committed_ts, self.exact))
    }
}

/// The history of a dormant series (`storage::seriesmap`): its current version's
/// commit time, no past version.
#[derive(Debug)]
pub struct Plain {
    pub rel_dir: String,
    pub version: u64,
    pub committed_ts: i64,
    pub exact: bool,
}

/// One series' history rebuilt at open, waiting for the replay to end.
#[derive(Debug)]
pub struct Attached {
    series: Arc<Series>,
    history: History,
}

/// Writes the versions file of `series` (built) and `dormant` under `root`.
pub fn write(root: &Path, series: &[Arc<Series>], dormant: &[Plain]) -> Result<()> {
    enum Row<'a> {
        Built(&'a Arc<Series>),
        Dormant(&'a Plain),
    }
    fn dir<'a>(r: &Row<'a>) -> &'a str {
        match r {
            Row::Built(s) => s.rel_dir(),
            Row::Dormant(p) => p.rel_dir.as_str(),
        }
    }
    let mut list: Vec<Row<'_>> = series
        .iter()
        .filter(|s| !s.is_deleted())
        .map(Row::Built)
        .chain(dormant.iter().map(Row::Dormant))
        .collect();
    list.sort_by(|a, b| dir(a).cmp(dir(b)));
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    put_u32(&mut b, FILE_VERSION);
    put_u32(
        &mut b,
        u32::try_from(list.len()).expect("a store holds < 2^32 series"),
    );
    for row in &list {
        match row {
            Row::Built(s) => {
                let (cur, h) = s.history();
                put_bytes(&mut b, s.rel_dir().as_bytes());
                b.extend_from_slice(&cur.version.to_le_bytes());
                b.extend_from_slice(&h.committed_ts.to_le_bytes());
                b.push(u8::from(h.exact));
                put_u32(
                    &mut b,
                    u32::try_from(h.kept.len()).expect("kept versions are bounded"),
                );
                for k in &h.kept {
                    b.extend_from_slice(&k.committed_ts.to_le_bytes());
                    b.extend_from_slice(&k.superseded_ts.to_le_bytes());
                    put_state(&mut b, &k.state);
                }
            }
            Row::Dormant(p) => {
                put_bytes(&mut b, p.rel_dir.as_bytes());
                b.extend_from_slice(&p.version.to_le_bytes());
                b.extend_from_slice(&p.committed_ts.to_le_bytes());
                b.push(u8::from(p.exact));
                put_u32(&mut b, 0);
            }
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    fsio::write_atomic(root, VERSIONS_FILE, &[&b]).map_err(|e| StorageError::io(VERSIONS_FILE, e))
}

/// Reads the versions file under `root` (none: an empty list), dropping the kept
/// versions past their time (`keep_ms` from now, or past [`MAX_KEPT_VERSIONS`]), and
/// adds the files of the others to `pins`. A file that fails its checks is renamed
/// `VERSIONS.damaged` and reported: the store opens with no past versions.
pub fn read(root: &Path, keep_ms: i64, now: i64, pins: &mut Pins) -> Result<Vec<DecodedHistory>> {
    let path = root.join(VERSIONS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(VERSIONS_FILE, e)),
    };
    let mut list = match decode(&bytes) {
        Ok(l) => l,
        Err(why) => {
            tracing::error!(reason = %why,
                "versions file damaged: renamed VERSIONS.damaged; the store opens with no past versions");
            let io = |e| StorageError::io(VERSIONS_FILE, e);
            fsio::rename(&path, &root.join(format!("{VERSIONS_FILE}.damaged"))).map_err(io)?;
            fsio::fsync_dir(root).map_err(io)?;
            return Ok(Vec::new());
        }
    };
    for h in &mut list {
        h.kept
            .retain(|(_, superseded, _)| keep_ms > 0 && superseded.saturating_add(keep_ms) > now);
        let over = h.kept.len().saturating_sub(MAX_KEPT_VERSIONS);
        h.kept.drain(..over);
        for (_, _, s) in &h.kept {
            s.pin(pins);
        }
    }
    Ok(list)
}

/// Rebuilds the kept states of `decoded` over the series just opened, before the log
/// is replayed (they share the handles of the chunks still live). A kept version that
/// cannot be rebuilt is dropped with every older one (the kept versions stay
/// consecutive up to the current one).
pub fn attach(
    decoded: Vec<DecodedHistory>,
    series: &HashMap<&str, &Arc<Series>, foldhash::fast::RandomState>,
    extra: &mut Extra,
) -> Vec<Attached> {
    let mut out = Vec::new();
    for d in decoded {
        let Some(&live) = series.get(d.rel_dir.as_str()) else {
            continue;
        };
        let mut kept = VecDeque::new();
        for (committed_ts, superseded_ts, s) in d.kept {
            if s.manifest.meta.key != live.meta.key {
                tracing::error!(series = %live.meta.key, "a kept version of another series: dropped");
                kept.clear();
                continue;
            }
            match state_of(live, s, extra, true) {
                Ok(state) => kept.push_back(Kept {
                    state: Arc::new(state),
                    committed_ts,
                    superseded_ts,
                }),
                Err(e) => {
                    tracing::warn!(series = %live.meta.key, error = %e,
                        "a kept version could not be rebuilt: it and every older one read 410 gone");
                    kept.clear();
                }
            }
        }
        if kept
            .iter()
            .zip(kept.iter().skip(1))
            .any(|(a, b)| a.state.version >= b.state.version)
            || kept.back().is_some_and(|k| k.state.version >= d.version)
        {
            tracing::error!(series = %live.meta.key, "kept versions out of order: dropped");
            kept.clear();
        }
        let mut history = History::new(d.version, d.committed_ts, d.exact);
        history.kept = kept;
        out.push(Attached {
            series: Arc::clone(live),
            history,
        });
    }
    out
}

/// After the replay: every series gets its history back when the replay left it at
/// the version the file says, and otherwise starts afresh (no past versions, its
/// commit time a bound: now).
pub fn restore(attached: Vec<Attached>, all: &[Arc<Series>], now: i64) {
    // By the series' address: an attached history is for that very `Series` (its
    // `Arc` is the one the map holds), so no key is formatted, copied or hashed.
    let mut by_series: HashMap<*const Series, Attached, foldhash::fast::RandomState> = attached
        .into_iter()
        .map(|a| (Arc::as_ptr(&a.series), a))
        .collect();
    for s in all {
        match by_series.remove(&Arc::as_ptr(s)) {
            Some(a) if a.history.version == s.version() => {
                debug_assert!(Arc::ptr_eq(&a.series, s), "versions: a history by address");
                s.restore_history(a.history);
            }
            // Built during this open from its seed (`storage::seriesmap`), which gave
            // it its history, and not moved on by the replay (that would have left
            // rows unfolded): the history stands.
            None if !s.is_materialized() && s.snapshot().unfolded.is_none() => {}
            _ => s.restore_history(History::new(s.version(), now, false)),
        }
    }
}

fn decode(all: &[u8]) -> std::result::Result<Vec<DecodedHistory>, String> {
    let mut r = checked(all, MAGIC, FILE_VERSION, "versions file")?;
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let rel_dir = r.text()?;
        let version = r.u64()?;
        let committed_ts = r.u64()? as i64;
        let exact = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err("a flag that is neither 0 nor 1".into()),
        };
        let k = r.u32()? as usize;
        let mut kept = Vec::with_capacity(k.min(MAX_KEPT_VERSIONS));
        for _ in 0..k {
            let committed = r.u64()? as i64;
            let superseded = r.u64()? as i64;
            kept.push((committed, superseded, read_state(&mut r, rel_dir.clone())?));
        }
        out.push(DecodedHistory {
            rel_dir,
            version,
            committed_ts,
            exact,
            kept,
        });
    }
    if r.at != r.b.len() {
        return Err("trailing bytes".into());
    }
    Ok(out)
}

impl super::Store {
    /// Series `key` at the version `pick` names: a read-only view whose reads answer
    /// that version (`None`: the series was registered after the time asked for).
    /// `NotFound` past the current version, `Gone` for a version no longer kept.
    pub fn series_version(
        &self,
        key: &crate::record::SeriesKey,
        pick: super::series::Pick,
    ) -> Result<Option<Arc<Series>>> {
        let live = self.get(key)?;
        match live.version_at(pick)? {
            super::series::Found::State(state) => Ok(Some(Arc::new(live.view(state)))),
            super::series::Found::NotYet => Ok(None),
        }
    }

    /// The readable versions of series `key`, oldest first, the current one last.
    pub fn versions_of(
        &self,
        key: &crate::record::SeriesKey,
    ) -> Result<Vec<super::series::VersionInfo>> {
        Ok(self.get(key)?.versions())
    }

    /// How long superseded versions stay readable (ms; 0: not at all).
    pub fn keep_versions_ms(&self) -> i64 {
        self.opts.keep_versions_ms
    }
}

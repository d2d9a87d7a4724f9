//! Past versions of one series: the states superseded less than
//! `storage.keep_versions_s` ago, each with when it was committed and when it was
//! superseded (docs/research.md, "Past versions").
//!
//! A state is immutable and holds the chunk handles it reads, so keeping a past version
//! is keeping its `Arc<Snapshot>`: its files stay until it goes, as for any reader. The
//! history is kept where the series' state is swapped ([`Series::set_current`]), under
//! the state's lock, so the current version and its commit time are never seen apart.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use super::Series;
use crate::storage::error::{Result, StorageError};
use crate::storage::snapshot::Snapshot;
use crate::sync::LockExt;

/// Most past versions one series keeps, whatever `keep_versions_s` says: past it the
/// oldest goes first (a read of it is 410 `gone`, saying so).
pub const MAX_KEPT_VERSIONS: usize = 1024;

/// The store-wide settings of the history, shared by every series of a store.
#[derive(Debug, Default)]
pub struct VersionSettings {
    /// How long a superseded version stays readable (ms; 0: not at all). Zero while the
    /// store replays its log on open: a replayed version's commit time is not known.
    keep_ms: AtomicI64,
    /// Some history changed since the versions file was last written.
    dirty: AtomicBool,
}

impl VersionSettings {
    pub fn keep_ms(&self) -> i64 {
        self.keep_ms.load(Ordering::Acquire)
    }
    pub fn set_keep_ms(&self, ms: i64) {
        assert!(ms >= 0, "keep_versions_ms is not negative");
        self.keep_ms.store(ms, Ordering::Release);
    }
    /// Whether a history changed since the last call (which clears it).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }
    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
    /// A checkpoint failed: the next one writes again.
    pub fn mark_dirty_again(&self) {
        self.mark_dirty();
    }
}

/// One store's settings: equal only to themselves (as the store's other shared parts).
impl PartialEq for VersionSettings {
    fn eq(&self, other: &VersionSettings) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for VersionSettings {}

/// One superseded version kept readable.
#[derive(Debug, Clone)]
pub struct Kept {
    pub state: Arc<Snapshot>,
    /// When it became the current version (ms since the epoch).
    pub committed_ts: i64,
    /// When the next version replaced it.
    pub superseded_ts: i64,
}

/// A series' current version's commit time and its kept past versions.
#[derive(Debug)]
pub struct History {
    /// The version `committed_ts` belongs to (the current one, once a swap is done).
    pub version: u64,
    /// When the current version was committed (ms). With `exact` false it is only a
    /// bound: the open that learnt it could not tell (a version replayed from the log,
    /// or a store without a versions file); the version may be older.
    pub committed_ts: i64,
    pub exact: bool,
    /// Superseded versions, ascending and consecutive up to the current one.
    pub kept: VecDeque<Kept>,
}

impl History {
    pub fn new(version: u64, committed_ts: i64, exact: bool) -> History {
        History {
            version,
            committed_ts,
            exact,
            kept: VecDeque::new(),
        }
    }
}

/// Which past version a read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Exactly this version.
    Version(u64),
    /// The version current at this wall-clock time (ms since the epoch).
    Commit(i64),
}

/// One readable version, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub committed_ts: i64,
    /// `committed_ts` is exact (false: the version was committed at or before it).
    pub exact: bool,
    pub rows: u64,
    /// When it was superseded (`None`: the current version).
    pub superseded_ts: Option<i64>,
}

/// What a pick found.
#[derive(Debug)]
pub enum Found {
    State(Arc<Snapshot>),
    /// The series was registered after the time asked for: it held nothing then.
    NotYet,
}

impl Series {
    /// The state swap's share of the history: `prev` (version `prev.version`) was just
    /// replaced by a state of a higher version. Called under the state's write lock.
    pub(super) fn note_superseded(&self, prev: &Arc<Snapshot>, next_version: u64) {
        assert!(
            next_version > prev.version,
            "a version is superseded by a later one"
        );
        let now = crate::storage::now_ms();
        let keep = self.opts.versions.keep_ms();
        let gone = {
            let mut h = self.history.locked();
            assert_eq!(h.version, prev.version, "the history follows the state");
            if keep > 0 && !self.is_deleted() {
                if let Some(last) = h.kept.back() {
                    assert!(last.state.version < prev.version, "kept versions ascend");
                }
                let committed_ts = h.committed_ts;
                h.kept.push_back(Kept {
                    state: Arc::clone(prev),
                    committed_ts,
                    superseded_ts: now.max(committed_ts),
                });
                self.opts.versions.mark_dirty();
            }
            h.version = next_version;
            h.committed_ts = now.max(h.committed_ts);
            h.exact = true;
            expire(&mut h, now, keep)
        };
        drop(gone);
    }

    /// Drops the kept versions superseded `keep_versions_s` ago or more (their files go
    /// with their last reader). Returns how many went.
    pub fn expire_versions(&self, now: i64) -> usize {
        let keep = self.opts.versions.keep_ms();
        let gone = expire(&mut self.history.locked(), now, keep);
        let n = gone.len();
        if n > 0 {
            self.opts.versions.mark_dirty();
        }
        drop(gone);
        n
    }

    /// The current state and a copy of the history, taken together.
    pub fn history(&self) -> (Arc<Snapshot>, History) {
        loop {
            let cur = self.snapshot();
            let h = self.history.locked();
            // A swap between the two reads: take both again (a swap updates the
            // history under the state's lock, so a match is one moment).
            if h.version == cur.version {
                let copy = History {
                    version: h.version,
                    committed_ts: h.committed_ts,
                    exact: h.exact,
                    kept: h.kept.clone(),
                };
                return (cur, copy);
            }
        }
    }

    /// Every readable version, oldest first, the current one last.
    pub fn versions(&self) -> Vec<VersionInfo> {
        let now = crate::storage::now_ms();
        let keep = self.opts.versions.keep_ms();
        let (cur, h) = self.history();
        let mut out: Vec<VersionInfo> = h
            .kept
            .iter()
            .filter(|k| alive(k, now, keep))
            .map(|k| VersionInfo {
                version: k.state.version,
                committed_ts: k.committed_ts,
                exact: true,
                rows: k.state.rows(),
                superseded_ts: Some(k.superseded_ts),
            })
            .collect();
        out.push(VersionInfo {
            version: cur.version,
            committed_ts: h.committed_ts,
            exact: h.exact,
            rows: cur.rows(),
            superseded_ts: None,
        });
        out
    }

    /// The state of the version `pick` names: `NotFound` past the current version,
    /// `Gone` for a version no longer kept.
    pub fn version_at(&self, pick: Pick) -> Result<Found> {
        let now = crate::storage::now_ms();
        let keep = self.opts.versions.keep_ms();
        let (cur, h) = self.history();
        let kept = || h.kept.iter().filter(|k| alive(k, now, keep));
        let key = &self.meta.key;
        let kept_note = || match (kept().next(), kept().next_back()) {
            (Some(a), Some(b)) => format!(
                "versions {} to {} are kept",
                a.state.version, b.state.version
            ),
            _ => "no past version is kept".to_string(),
        };
        match pick {
            Pick::Version(v) if v == cur.version => Ok(Found::State(cur)),
            Pick::Version(v) if v > cur.version => Err(StorageError::NotFound(format!(
                "{} series {key} is at version {}: version {v} does not exist",
                key.kind().as_str(),
                cur.version
            ))),
            Pick::Version(v) => kept()
                .find(|k| k.state.version == v)
                .map(|k| Found::State(Arc::clone(&k.state)))
                .ok_or_else(|| {
                    StorageError::Gone(format!(
                        "version {v} of {} series {key} is gone: superseded versions stay readable for storage.keep_versions_s ({} s here, at most {MAX_KEPT_VERSIONS} per series); {}, and the current one is {}",
                        key.kind().as_str(),
                        keep / 1000,
                        kept_note(),
                        cur.version
                    ))
                }),
            Pick::Commit(t) if t >= h.committed_ts => Ok(Found::State(cur)),
            Pick::Commit(t) => {
                // The newest kept version committed at or before `t`: the kept ones are
                // consecutive up to the current one, so it was current at `t`.
                if let Some(k) = kept().rfind(|k| k.committed_ts <= t) {
                    return Ok(Found::State(Arc::clone(&k.state)));
                }
                let first = kept().next();
                let (oldest_version, oldest_ts) = first
                    .map_or((cur.version, h.committed_ts), |k| {
                        (k.state.version, k.committed_ts)
                    });
                let exact = first.is_some() || h.exact;
                if oldest_version == 0 && exact {
                    return Ok(Found::NotYet);
                }
                Err(StorageError::Gone(format!(
                    "the version of {} series {key} current at {t} is gone: the oldest kept is version {oldest_version}, committed at {oldest_ts}{} (storage.keep_versions_s is {} s here)",
                    key.kind().as_str(),
                    if exact { "" } else { " or before" },
                    keep / 1000
                )))
            }
        }
    }

    /// The store is closing after writing the versions file: the files of the kept
    /// versions stay on disk when their handles go (the next open pins them again).
    pub(crate) fn keep_version_files(&self) {
        for k in &self.history.locked().kept {
            for c in k.state.chunks().filter(|c| !c.is_memory()) {
                c.keep_files();
            }
        }
    }

    /// Puts back the history a versions file kept, at open (before any write).
    pub(crate) fn restore_history(&self, h: History) {
        let cur = self.snapshot();
        assert_eq!(
            h.version, cur.version,
            "a restored history ends at the current version"
        );
        assert!(
            h.kept.iter().all(|k| k.state.version < cur.version),
            "kept versions precede the current one"
        );
        *self.history.locked() = h;
    }
}

fn alive(k: &Kept, now: i64, keep: i64) -> bool {
    keep > 0 && k.superseded_ts.saturating_add(keep) > now
}

/// Pops the versions past their time (or past [`MAX_KEPT_VERSIONS`]) off the front;
/// the caller drops them once its lock is released.
fn expire(h: &mut History, now: i64, keep: i64) -> Vec<Kept> {
    let mut gone = Vec::new();
    while let Some(k) = h.kept.front() {
        if alive(k, now, keep) && h.kept.len() <= MAX_KEPT_VERSIONS {
            break;
        }
        gone.extend(h.kept.pop_front());
    }
    gone
}

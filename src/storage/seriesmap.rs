//! The open series by key, each one built or dormant.
//!
//! A series the catalog holds whole (no directory, no row in the log) is **dormant**
//! after an open: the map keeps its catalog entry and its rows as the catalog read
//! them (a [`Seed`]), and builds its state (`Series`, snapshot, in-memory chunks,
//! history) the first time someone asks for it. So a start of 100,000 small series
//! builds none of them, and an idle store holds one compact entry per series
//! (docs/storage-format.md, "Series catalog", "Dormant series").
//!
//! A series is built at most once per slot: the build happens under the slot's seed
//! lock and publishes the series before it lets go, so every caller gets the same
//! `Arc`. Figures over every series (rows, the resident budget, the log's statistics,
//! the versions file) read a dormant series from its seed without building it.
//!
//! A built series goes **back to sleep** when no one has asked for it for a while
//! (`storage.dormant_after_s`, [`SeriesMap::idle_candidates`] then
//! [`SeriesMap::put_to_sleep`]): one whose state the catalog holds whole again (no
//! directory, nothing unfolded, no past version kept) and that no one holds. Its slot
//! is replaced by a new dormant one whose seed is that state, so a scan of every
//! series, or a snapshot of the store, does not leave every series built for good.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::catalog::ResidentMonth;
use super::format::{self, CHUNK_HEADER_LEN, stride_of};
use super::recover;
use super::series::{History, Series, SleepState};
use super::{Result, StoreOptions};
use crate::record::{SeriesKey, SeriesMeta};
use crate::sync::LockExt;

/// What a dormant series is built from: its catalog entry, its rows (month by month,
/// column-major) and the commit time the versions file kept for its version.
#[derive(Debug)]
pub struct Seed {
    pub manifest: format::Manifest,
    pub months: Vec<ResidentMonth>,
    /// (committed_ts, exact) of the current version: what the versions file kept for
    /// this very version, or else the open's time, a bound.
    pub committed: (i64, bool),
    /// The registration stamp of the series this seed was taken from when it went
    /// back to sleep ([`Series::born`]); `None` for a seed the open read, which is as
    /// old as the open.
    pub born: Option<u64>,
}

impl Seed {
    /// Checks what [`Series::install_resident`] will rely on
    /// ([`ResidentMonth::check`], month by month), so that building the series later
    /// cannot fail.
    pub fn check(&self) -> Result<()> {
        self.months
            .iter()
            .try_for_each(|m| m.check(&self.manifest.meta))
    }

    /// Rows over every month.
    pub fn rows(&self) -> u64 {
        self.months
            .iter()
            .map(|m| m.cols.first().map_or(0, Vec::len) as u64)
            .sum()
    }

    /// Bytes the series' in-memory chunks will take once built (one chunk image per
    /// month: a header and each column padded to its stride), which the resident
    /// budget (`storage.resident_bytes_max`) counts.
    pub fn memory_bytes(&self) -> u64 {
        self.months
            .iter()
            .map(|m| {
                let rows = m.cols.first().map_or(0, Vec::len) as u64;
                (CHUNK_HEADER_LEN as u64) + (m.cols.len() as u64) * stride_of(rows)
            })
            .sum()
    }
}

/// What building a dormant series needs from its store.
#[derive(Debug)]
pub struct BuildContext {
    pub root: PathBuf,
    pub opts: Arc<StoreOptions>,
    /// The registration stamp of the open (`series::registration_stamp`): a series
    /// built later is as old as the open, not as its build.
    pub born: u64,
}

impl BuildContext {
    fn build(&self, seed: Seed) -> Arc<Series> {
        let Seed {
            manifest,
            months,
            committed,
            born,
        } = seed;
        let rel = format!("series/{}", manifest.meta.key);
        let mut s = recover::series_from_manifest(self.root.join(&rel), rel, &self.opts, manifest);
        s.set_born(born.unwrap_or(self.born));
        s.set_unmaterialized();
        if !months.is_empty() {
            // `Seed::check` passed on open: these rows are what it checked.
            s.install_resident(months);
        }
        let (ts, exact) = committed;
        s.restore_history(History::new(s.version(), ts, exact));
        Arc::new(s)
    }
}

/// One series of the map: built, or dormant until first asked for.
#[derive(Debug)]
struct Slot {
    built: OnceLock<Arc<Series>>,
    /// The seed of a dormant series; taken, under this lock, by its build.
    seed: Mutex<Option<Box<Seed>>>,
    /// Set by every [`Slot::get`], cleared by each sweep for idle series
    /// ([`SeriesMap::idle_candidates`]): a built series found unused by a sweep was
    /// not asked for since the sweep before.
    used: AtomicBool,
}

/// A series as the figures over every series see it.
pub enum Peek<'a> {
    Built(Arc<Series>),
    Dormant(&'a Seed),
}

impl Slot {
    fn built(series: Arc<Series>) -> Arc<Slot> {
        let built = OnceLock::new();
        let _ = built.set(series);
        Arc::new(Slot {
            built,
            seed: Mutex::new(None),
            used: AtomicBool::new(true),
        })
    }

    fn dormant(seed: Box<Seed>) -> Arc<Slot> {
        Arc::new(Slot {
            built: OnceLock::new(),
            seed: Mutex::new(Some(seed)),
            used: AtomicBool::new(false),
        })
    }

    fn get(&self, ctx: &BuildContext) -> Arc<Series> {
        // Relaxed: the flag is a hint for the sweep, which checks again under the
        // map's write lock whether anyone holds the series before it lets it go.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        if let Some(s) = self.built.get() {
            return Arc::clone(s);
        }
        let mut seed = self.seed.locked();
        if let Some(s) = self.built.get() {
            return Arc::clone(s);
        }
        let taken = seed.take().expect("a slot is built or holds its seed");
        let s = ctx.build(*taken);
        assert!(
            self.built.set(Arc::clone(&s)).is_ok(),
            "a slot is built once, under its seed lock"
        );
        drop(seed);
        s
    }

    /// Calls `f` with the series if built, else with its seed (under the seed lock:
    /// a build waits for `f`).
    fn peek<R>(&self, f: impl FnOnce(Peek<'_>) -> R) -> R {
        if let Some(s) = self.built.get() {
            return f(Peek::Built(Arc::clone(s)));
        }
        let seed = self.seed.locked();
        match seed.as_deref() {
            Some(seed) => f(Peek::Dormant(seed)),
            // Built between the two looks: the build published it before unlocking.
            None => f(Peek::Built(Arc::clone(
                self.built.get().expect("a slot with no seed is built"),
            ))),
        }
    }

    fn built_series(&self) -> Option<Arc<Series>> {
        self.built.get().cloned()
    }
}

/// The open series by key: ordered (listings, `/inventory` and the fold pass walk it
/// in key order) and hashed (every read and write finds its series by key, and a
/// many-series write finds thousands: a lookup in the ordered map compares whole keys
/// about log2(n) times, the hashed one hashes the key once). Both hold the same
/// slots: they change only through `insert` and `remove`.
#[derive(Debug)]
pub struct SeriesMap {
    ordered: BTreeMap<SeriesKey, Arc<Slot>>,
    hashed: std::collections::HashMap<SeriesKey, Arc<Slot>, foldhash::fast::RandomState>,
    ctx: BuildContext,
}

impl SeriesMap {
    /// The map of an open's series, built whole (the ordered index in one bulk build
    /// from sorted keys): `built` ones and `dormant` ones.
    pub fn from_entries(
        built: Vec<(SeriesKey, Arc<Series>)>,
        dormant: Vec<(SeriesKey, Box<Seed>)>,
        ctx: BuildContext,
    ) -> SeriesMap {
        let mut entries: Vec<(SeriesKey, Arc<Slot>)> = built
            .into_iter()
            .map(|(k, s)| (k, Slot::built(s)))
            .chain(dormant.into_iter().map(|(k, s)| (k, Slot::dormant(s))))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut hashed = std::collections::HashMap::with_capacity_and_hasher(
            entries.len(),
            foldhash::fast::RandomState::default(),
        );
        for (k, s) in &entries {
            hashed.insert(k.clone(), Arc::clone(s));
        }
        let ordered: BTreeMap<SeriesKey, Arc<Slot>> = entries.into_iter().collect();
        assert_eq!(
            hashed.len(),
            ordered.len(),
            "series map: one series per key"
        );
        SeriesMap {
            ordered,
            hashed,
            ctx,
        }
    }

    pub fn len(&self) -> usize {
        self.hashed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashed.is_empty()
    }

    /// The series of `key`, built now if it was dormant.
    pub fn get(&self, key: &SeriesKey) -> Option<Arc<Series>> {
        self.hashed.get(key).map(|slot| slot.get(&self.ctx))
    }

    /// The series of `key` if it is built (a dormant one is not built for this).
    pub fn get_built(&self, key: &SeriesKey) -> Option<Arc<Series>> {
        self.hashed.get(key).and_then(|slot| slot.built_series())
    }

    /// Whether `key` is in the map and dormant.
    pub fn is_dormant(&self, key: &SeriesKey) -> bool {
        self.hashed
            .get(key)
            .is_some_and(|slot| slot.built.get().is_none())
    }

    /// Calls `f` with the seed of `key` while it is dormant (its committed time is
    /// set by the open, before anyone can build it).
    pub fn with_seed<R>(&self, key: &SeriesKey, f: impl FnOnce(&mut Seed) -> R) -> Option<R> {
        let slot = self.hashed.get(key)?;
        let mut seed = slot.seed.locked();
        seed.as_deref_mut().map(f)
    }

    pub fn insert(&mut self, key: SeriesKey, series: Arc<Series>) {
        let slot = Slot::built(series);
        self.hashed.insert(key.clone(), Arc::clone(&slot));
        self.ordered.insert(key, slot);
        debug_assert_eq!(
            self.hashed.len(),
            self.ordered.len(),
            "series map: both indexes"
        );
    }

    pub fn remove(&mut self, key: &SeriesKey) {
        self.hashed.remove(key);
        self.ordered.remove(key);
        debug_assert_eq!(
            self.hashed.len(),
            self.ordered.len(),
            "series map: both indexes"
        );
    }

    /// Every series in key order, each dormant one built now.
    pub fn all(&self) -> Vec<Arc<Series>> {
        self.ordered.values().map(|s| s.get(&self.ctx)).collect()
    }

    /// The built series in key order (the dormant ones hold nothing to fold, compress
    /// or pack: their rows are in the catalog, and they have no files).
    pub fn built(&self) -> Vec<Arc<Series>> {
        self.ordered
            .values()
            .filter_map(|s| s.built_series())
            .collect()
    }

    /// The built series plus the dormant ones `pick` chooses (built now), in key order.
    /// A pass over the store (a scrape, retention) is not a use: the built series are
    /// not marked used for it, so it does not keep idle series from going to sleep.
    pub fn built_and(&self, mut pick: impl FnMut(&Seed) -> bool) -> Vec<Arc<Series>> {
        self.ordered
            .values()
            .filter_map(|slot| {
                if let Some(s) = slot.built_series() {
                    return Some(s);
                }
                let wanted = slot.peek(|p| match p {
                    Peek::Built(_) => true,
                    Peek::Dormant(seed) => pick(seed),
                });
                wanted.then(|| slot.get(&self.ctx))
            })
            .collect()
    }

    /// Calls `f` for each series in key order, built or dormant, building none.
    pub fn peek_each(&self, mut f: impl FnMut(Peek<'_>)) {
        for slot in self.ordered.values() {
            slot.peek(&mut f);
        }
    }

    /// The first step of a sweep for idle series: every built series that no one
    /// asked for since the last sweep and whose state the catalog may hold whole
    /// ([`Series::sleep_state`] says for sure). Clears each built slot's `used` flag,
    /// so the next sweep finds those not asked for in between. Under the map's read
    /// lock; builds nothing.
    pub fn idle_candidates(&self) -> Vec<Idle> {
        let mut out = Vec::new();
        for (key, slot) in &self.ordered {
            let Some(series) = slot.built.get() else {
                continue;
            };
            if slot.used.swap(false, Ordering::Relaxed) {
                continue;
            }
            if series.is_materialized() || series.is_deleted() {
                continue;
            }
            out.push(Idle {
                key: key.clone(),
                slot: Arc::clone(slot),
                series: Arc::clone(series),
            });
        }
        out
    }

    /// The last step of a sweep, under the map's write lock: `idle`'s series goes back
    /// to sleep with `sleep.state` (taken from `sleep.then`, [`Series::sleep_state`]) as its seed,
    /// if it is still what the sweep saw: the same slot, not asked for since, held by
    /// no one but the map and the sweep, and in the state `then` (any write, delete,
    /// fold or settings change installs a new one). Returns whether it slept; the
    /// series itself goes when `idle` is dropped.
    pub fn put_to_sleep(&mut self, idle: &Idle, sleep: SleepState) -> bool {
        let SleepState {
            then,
            state,
            committed,
        } = sleep;
        let same_slot = self
            .hashed
            .get(&idle.key)
            .is_some_and(|s| Arc::ptr_eq(s, &idle.slot));
        // The map and `idle` hold the series; no one else can reach it while this
        // holds the write lock, and no one else holds it.
        let unheld = Arc::strong_count(&idle.series) == 2;
        if !same_slot
            || !unheld
            || idle.slot.used.load(Ordering::Relaxed)
            || !Arc::ptr_eq(&idle.series.snapshot(), &then)
            || idle.series.is_deleted()
        {
            return false;
        }
        let seed = Seed {
            manifest: state.manifest,
            months: state.months,
            committed,
            born: Some(idle.series.born()),
        };
        let checked = seed.check();
        debug_assert!(
            checked.is_ok(),
            "a sleeping series' rows pass the seed's check: {checked:?}"
        );
        if let Err(e) = checked {
            // What the build would rely on does not hold: keep the series built.
            tracing::error!(series = %idle.key, error = %e, "a series' state failed the seed's check; it stays built");
            return false;
        }
        debug_assert_eq!(
            seed.manifest.version, then.version,
            "the seed is the state the sweep saw"
        );
        let slot = Slot::dormant(Box::new(seed));
        self.hashed.insert(idle.key.clone(), Arc::clone(&slot));
        self.ordered.insert(idle.key.clone(), slot);
        debug_assert_eq!(
            self.hashed.len(),
            self.ordered.len(),
            "series map: both indexes"
        );
        true
    }

    /// Bytes the dormant series' chunk images will take once built (what the resident
    /// budget counts for them: [`Seed::memory_bytes`]).
    pub fn dormant_memory_bytes(&self) -> u64 {
        let mut bytes = 0;
        self.peek_each(|p| {
            if let Peek::Dormant(seed) = p {
                bytes += seed.memory_bytes();
            }
        });
        bytes
    }

    /// The metadata of every series in key order, building none.
    pub fn metas(&self) -> Vec<SeriesMeta> {
        let mut out = Vec::with_capacity(self.len());
        self.peek_each(|p| match p {
            Peek::Built(s) => out.push((*s.meta).clone()),
            Peek::Dormant(seed) => out.push(seed.manifest.meta.clone()),
        });
        out
    }
}

/// A built series a sweep found idle ([`SeriesMap::idle_candidates`]).
#[derive(Debug)]
pub struct Idle {
    key: SeriesKey,
    slot: Arc<Slot>,
    pub series: Arc<Series>,
}

impl Seed {
    /// A seed from a catalog entry and its rows, checked; its commit time a bound
    /// (`opened_ts`) until the versions file says better.
    pub fn new(
        manifest: format::Manifest,
        months: Vec<ResidentMonth>,
        opened_ts: i64,
    ) -> Result<Seed> {
        let seed = Seed {
            manifest,
            months,
            committed: (opened_ts, false),
            born: None,
        };
        seed.check()?;
        Ok(seed)
    }
}

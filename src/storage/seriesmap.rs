//! The open series by key, each one built or dormant.
//!
//! A series the catalog holds whole (no directory, no row in the log) is **dormant**
//! after an open: the map keeps its catalog entry and its rows as the catalog read
//! them (a [`Seed`]), and builds its state (`Series`, snapshot, in-memory chunks,
//! history) the first time someone asks for it. So a start of 100,000 small series
//! builds none of them, and an idle store holds one compact entry per series
//! (docs/storage-format.md, "Series catalog", "Dormant series").
//!
//! A series is built at most once: the build happens under the slot's seed lock and
//! publishes the series before it lets go, so every caller gets the same `Arc`.
//! Figures over every series (rows, the resident budget, the log's statistics, the
//! versions file) read a dormant series from its seed without building it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::catalog::ResidentMonth;
use super::format::{self, CHUNK_HEADER_LEN, stride_of};
use super::recover;
use super::series::{History, Series};
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
        } = seed;
        let rel = format!("series/{}", manifest.meta.key);
        let mut s = recover::series_from_manifest(self.root.join(&rel), rel, &self.opts, manifest);
        s.set_born(self.born);
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
        })
    }

    fn dormant(seed: Box<Seed>) -> Arc<Slot> {
        Arc::new(Slot {
            built: OnceLock::new(),
            seed: Mutex::new(Some(seed)),
        })
    }

    fn get(&self, ctx: &BuildContext) -> Arc<Series> {
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
    pub fn built_and(&self, mut pick: impl FnMut(&Seed) -> bool) -> Vec<Arc<Series>> {
        self.ordered
            .values()
            .filter_map(|slot| {
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
        };
        seed.check()?;
        Ok(seed)
    }
}

//! The store-wide cache of mappings and zone maps: a bounded, evicting resource.
//!
//! A mapping is a kernel resource (one `vm.max_map_count` entry each), and a zone map
//! is heap memory; a long-running server touches far more chunks than it may keep.
//! So the cache holds at most `storage.max_mapped_files` live mappings (chunk files
//! and value indexes) and `storage.zonemap_cache_bytes` of parsed zone maps, and lets
//! the least recently used go:
//!
//! * Every live mapping of the store occupies a [`Slot`], taken before the file is
//!   mapped and returned when the `MappedFile` drops. The count is exact: a mapping
//!   that only an Arrow buffer of an in-flight batch still holds keeps its slot.
//! * A new mapping at the budget first evicts the least recently used mapping that
//!   nothing outside the cache holds (evicting a mapping a reader still holds would
//!   free nothing). When every mapping is in use, the read fails `Unavailable`, naming
//!   the key: a retry can succeed once readers finish.
//! * Zone maps are evicted by bytes, in use or not (a reader's `Arc` keeps its copy).
//! * A compressed chunk is cached as its decompressed image (heap memory, one slot):
//!   past `storage.decompressed_cache_bytes` of images, the least recently used idle
//!   ones are dropped (decompressed again on their next read).
//! * A chunk whose [`ChunkRef`](super::chunk::ChunkRef) is dropped (superseded and no
//!   longer in any snapshot, or its series deleted) is forgotten at once, so the
//!   mapping of an unlinked file does not hold its disk space until it ages out.
//!
//! Failures (budget exhausted, kernel refusal) are counted and the last one is kept
//! for `/health` until a mapping succeeds again or [`FAILURE_WINDOW`] passes.

use crate::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::{Result, StorageError};
use super::mapped::MappedChunk;
use super::mmap::Slot;
use super::sidecar::{ValueIndex, Zone, ZoneMap};

/// Default of `storage.max_mapped_files`: a quarter of Linux's default
/// `vm.max_map_count` (65530), leaving the rest to thread stacks, the allocator,
/// shared libraries and admin's one-off mappings.
pub const DEFAULT_MAX_MAPPED_FILES: usize = 16_384;
/// Default of `storage.zonemap_cache_bytes`.
pub const DEFAULT_ZONEMAP_CACHE_BYTES: usize = 64 << 20;
/// Default of `storage.decompressed_cache_bytes`.
pub const DEFAULT_DECOMPRESSED_CACHE_BYTES: usize = 1 << 30;
/// How long a mapping failure keeps `/health` degraded unless a mapping succeeds.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What a cache entry of a chunk handle's id holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Held {
    /// The chunk file's mapping, or the whole decompressed image of a compressed one.
    Chunk,
    /// The image of the first rows of a compressed chunk ([`MapCache::chunk_through`]).
    Prefix,
    ValueIndex,
    ZoneMap,
}

type Key = (u64, Held);

/// A small LRU map: entries by key, and keys by the tick of their last use, with the
/// sum of a weight of its values kept as they come and go (the decompressed images'
/// bytes: summing them on every insert cost a pass over every cached mapping).
#[derive(Debug)]
struct Lru<V> {
    tick: u64,
    map: HashMap<Key, (V, u64)>,
    order: BTreeMap<u64, Key>,
    weigh: fn(&V) -> usize,
    weight: usize,
}

impl<V: Clone> Lru<V> {
    fn new() -> Lru<V> {
        Lru::weighed(|_| 0)
    }

    fn weighed(weigh: fn(&V) -> usize) -> Lru<V> {
        Lru {
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
            weigh,
            weight: 0,
        }
    }

    /// The sum of the weights of the values held.
    fn weight(&self) -> usize {
        debug_assert_eq!(
            self.weight,
            self.map
                .values()
                .map(|(v, _)| (self.weigh)(v))
                .sum::<usize>(),
            "the running weight is the sum of the values' weights"
        );
        self.weight
    }

    /// The value under `key`, marked most recently used.
    fn get(&mut self, key: &Key) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, t) = self.map.get_mut(key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, *key);
        Some(v.clone())
    }

    /// Inserts `v` as most recently used (the caller checked the key is absent).
    fn insert(&mut self, key: Key, v: V) {
        drop(self.insert_returning(key, v));
    }

    /// Inserts `v` as most recently used; returns the value it replaced, for the caller
    /// to drop outside its lock.
    fn insert_returning(&mut self, key: Key, v: V) -> Option<V> {
        self.tick += 1;
        self.weight += (self.weigh)(&v);
        let old = self.map.insert(key, (v, self.tick)).map(|(old, t)| {
            self.weight -= (self.weigh)(&old);
            self.order.remove(&t);
            old
        });
        self.order.insert(self.tick, key);
        old
    }

    fn remove(&mut self, key: &Key) -> Option<V> {
        let (v, t) = self.map.remove(key)?;
        self.order.remove(&t);
        self.weight -= (self.weigh)(&v);
        Some(v)
    }

    /// Removes and returns the least recently used value that `evictable` accepts.
    fn pop_oldest_where(&mut self, evictable: impl Fn(&V) -> bool) -> Option<V> {
        let key = *self
            .order
            .values()
            .find(|k| self.map.get(k).is_some_and(|(v, _)| evictable(v)))?;
        self.remove(&key)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(v, _)| v)
    }
}

/// A cached mapping.
#[derive(Debug, Clone)]
enum Mapping {
    Chunk(Arc<MappedChunk>),
    /// A prefix of a compressed chunk: every row of `ts <= through`.
    Prefix {
        chunk: Arc<MappedChunk>,
        through: i64,
    },
    Index(Arc<ValueIndex>),
}

impl Mapping {
    /// Bytes of a decompressed image (the cache's budget counts those); 0 for a
    /// mapping of a file.
    fn image_bytes(&self) -> usize {
        match self {
            Mapping::Chunk(c) if c.file.is_memory() => c.file.len(),
            Mapping::Prefix { chunk, .. } => chunk.file.len(),
            _ => 0,
        }
    }

    /// True when only the cache holds the mapping, so dropping it unmaps the file. A
    /// chunk's `MappedFile` is also held by the Arrow buffers of batches built from it.
    /// Called under the cache's lock: new holders are only made from the cache, under
    /// that lock, so an idle mapping cannot become busy while the lock is held.
    fn idle(&self) -> bool {
        match self {
            Mapping::Chunk(c) | Mapping::Prefix { chunk: c, .. } => {
                Arc::strong_count(c) == 1 && Arc::strong_count(&c.file) == 1
            }
            Mapping::Index(v) => Arc::strong_count(v) == 1,
        }
    }
}

#[derive(Debug)]
struct ZoneMaps {
    lru: Lru<Arc<ZoneMap>>,
    bytes: usize,
}

/// Heap bytes of a parsed zone map.
fn zonemap_bytes(z: &ZoneMap) -> usize {
    std::mem::size_of::<ZoneMap>() + z.zones.capacity() * std::mem::size_of::<Zone>()
}

/// The state of the cache, for `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapStats {
    /// Live mappings of the store (cached or held by readers).
    pub live: usize,
    /// The most live mappings there ever were at once (never above `max`).
    pub peak: usize,
    /// Live mappings that cannot be evicted now: held by a read in progress.
    pub in_use: usize,
    /// Mappings in the cache.
    pub cached: usize,
    /// `storage.max_mapped_files`.
    pub max: usize,
    pub zonemap_bytes: usize,
    pub zonemap_max_bytes: usize,
    /// Bytes of decompressed images of compressed chunks in the cache, and the budget.
    pub decompressed_bytes: usize,
    pub decompressed_max_bytes: usize,
    /// Idle images dropped, and their bytes, because the host ran short of memory
    /// ([`MapCache::release_decompressed`]).
    pub released_images_total: u64,
    pub released_bytes_total: u64,
    /// Mappings refused since the store opened (budget exhausted or kernel refusal).
    pub failures_total: u64,
    /// The last failure, if no mapping succeeded since and it is younger than
    /// [`FAILURE_WINDOW`]: seconds ago and what happened.
    pub recent_failure: Option<(u64, String)>,
}

impl MapStats {
    /// True when reads in progress hold at least 90% of the budget.
    pub fn near_budget(&self) -> bool {
        self.in_use * 10 >= self.max * 9
    }
}

/// The cache; one per store (`Store::open` makes it).
pub struct MapCache {
    max_mapped: usize,
    zonemap_max_bytes: usize,
    decompressed_max_bytes: usize,
    live: Arc<AtomicUsize>,
    peak: AtomicUsize,
    maps: Mutex<Lru<Mapping>>,
    zonemaps: Mutex<ZoneMaps>,
    next_id: AtomicU64,
    failures_total: AtomicU64,
    released_images: AtomicU64,
    released_bytes: AtomicU64,
    failing: AtomicBool,
    last_failure: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for MapCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapCache")
            .field("max_mapped", &self.max_mapped)
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("zonemap_max_bytes", &self.zonemap_max_bytes)
            .finish_non_exhaustive()
    }
}

/// Caches compare by identity: two handles are equal when they are the same cache.
impl PartialEq for MapCache {
    fn eq(&self, other: &MapCache) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for MapCache {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.locked()
}

impl MapCache {
    /// A cache of at most `max_mapped_files` mappings (at least one) and
    /// `zonemap_cache_bytes` of zone maps (0: zone maps are parsed on every use).
    pub fn new(max_mapped_files: usize, zonemap_cache_bytes: usize) -> Arc<MapCache> {
        MapCache::with_decompressed(
            max_mapped_files,
            zonemap_cache_bytes,
            DEFAULT_DECOMPRESSED_CACHE_BYTES,
        )
    }

    /// As [`MapCache::new`], with at most `decompressed_bytes` of decompressed images.
    pub fn with_decompressed(
        max_mapped_files: usize,
        zonemap_cache_bytes: usize,
        decompressed_bytes: usize,
    ) -> Arc<MapCache> {
        Arc::new(MapCache {
            max_mapped: max_mapped_files.max(1),
            zonemap_max_bytes: zonemap_cache_bytes,
            decompressed_max_bytes: decompressed_bytes,
            live: Arc::new(AtomicUsize::new(0)),
            peak: AtomicUsize::new(0),
            maps: Mutex::new(Lru::weighed(Mapping::image_bytes)),
            zonemaps: Mutex::new(ZoneMaps {
                lru: Lru::new(),
                bytes: 0,
            }),
            next_id: AtomicU64::new(1),
            failures_total: AtomicU64::new(0),
            released_images: AtomicU64::new(0),
            released_bytes: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_failure: Mutex::new(None),
        })
    }

    /// A fresh id for a chunk handle; cache keys are (id, file kind).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn max_mapped_files(&self) -> usize {
        self.max_mapped
    }

    /// Live mappings of this store right now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The verified mapping of chunk `id`: cached, or made by `load` in a slot.
    pub fn chunk(
        &self,
        id: u64,
        load: impl FnOnce(Slot) -> Result<MappedChunk>,
    ) -> Result<Arc<MappedChunk>> {
        let key = (id, Held::Chunk);
        if let Some(Mapping::Chunk(c)) = lock(&self.maps).get(&key) {
            return Ok(c);
        }
        let slot = self.reserve()?;
        let fresh = Arc::new(self.observe(load(slot))?);
        let (got, loser) = self.install(key, Mapping::Chunk(Arc::clone(&fresh)));
        drop(loser);
        if fresh.file.is_memory() {
            // The whole image serves every read a prefix of it served.
            let prefix = lock(&self.maps).remove(&(id, Held::Prefix));
            drop(prefix);
            self.trim_decompressed();
        }
        match got {
            Mapping::Chunk(c) => Ok(c),
            _ => Ok(fresh),
        }
    }

    /// Chunk `id` with every row of `ts <= hi`, for
    /// [`ChunkRef::map_through`](super::chunk::ChunkRef::map_through): its whole image or
    /// mapping when cached; else its cached prefix when that reaches `hi`; else the
    /// prefix `load` decompresses in a slot, cached in place of a shorter one. A prefix
    /// holds every row of `ts` up to the `hi` it was made for (`through`), so one made
    /// through `hi` or later holds every row this read wants. A prefix counts against
    /// the decompressed budget like a whole image and is dropped with its chunk.
    pub fn chunk_through(
        &self,
        id: u64,
        hi: i64,
        load: impl FnOnce(Slot) -> Result<MappedChunk>,
    ) -> Result<Arc<MappedChunk>> {
        {
            let mut maps = lock(&self.maps);
            if let Some(Mapping::Chunk(c)) = maps.get(&(id, Held::Chunk)) {
                return Ok(c);
            }
            if let Some(Mapping::Prefix { chunk, through }) = maps.get(&(id, Held::Prefix))
                && through >= hi
            {
                return Ok(chunk);
            }
        }
        let slot = self.reserve()?;
        let fresh = Arc::new(self.observe(load(slot))?);
        assert!(
            fresh.file.is_memory(),
            "a prefix is a decompressed image, never a file's mapping"
        );
        if fresh.header.rows > 0 {
            // A longer prefix another read made meanwhile is replaced too: both hold
            // every row this one wants, and the next read that needs more makes its own.
            let shorter = lock(&self.maps).insert_returning(
                (id, Held::Prefix),
                Mapping::Prefix {
                    chunk: Arc::clone(&fresh),
                    through: hi,
                },
            );
            drop(shorter);
            self.trim_decompressed();
        }
        Ok(fresh)
    }

    /// Bytes of decompressed images in the cache.
    fn decompressed_bytes(maps: &Lru<Mapping>) -> usize {
        maps.weight()
    }

    /// Drops the least recently used idle images while they are over their budget
    /// (images held by reads in progress stay: dropping them would free nothing).
    fn trim_decompressed(&self) -> (usize, usize) {
        self.trim_decompressed_to(self.decompressed_max_bytes)
    }

    /// Drops the least recently used idle images past the budget: images that reads
    /// held at once past it stay cached when the reads end (the cache trims when it
    /// installs an image, and a held image cannot go), until this runs (the server's
    /// memory task, every second). Returns the images and bytes dropped.
    pub fn trim_to_budget(&self) -> (usize, usize) {
        self.trim_decompressed()
    }

    /// Drops every idle decompressed image (the host is short of memory: they are
    /// process memory the kernel cannot reclaim); images held by reads in progress
    /// stay. Returns the images and bytes dropped, counted in [`MapStats`].
    pub fn release_decompressed(&self) -> (usize, usize) {
        let (images, bytes) = self.trim_decompressed_to(0);
        if images > 0 {
            self.released_images
                .fetch_add(images as u64, Ordering::Relaxed);
            self.released_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        (images, bytes)
    }

    /// Drops the least recently used idle images until at most `budget` bytes of
    /// images are cached or only images in use are left; returns what it dropped.
    fn trim_decompressed_to(&self, budget: usize) -> (usize, usize) {
        let mut evicted = Vec::new();
        let mut freed = 0;
        {
            let mut maps = lock(&self.maps);
            let mut bytes = Self::decompressed_bytes(&maps);
            while bytes > budget {
                let victim = maps.pop_oldest_where(|m| m.idle() && m.image_bytes() > 0);
                let Some(m) = victim else {
                    break;
                };
                bytes -= m.image_bytes();
                freed += m.image_bytes();
                evicted.push(m);
            }
        }
        let images = evicted.len();
        drop(evicted);
        (images, freed)
    }

    /// The verified value index of chunk `id`; an error is a reason to scan instead.
    pub fn vindex(
        &self,
        id: u64,
        load: impl FnOnce(Slot) -> Result<ValueIndex>,
    ) -> Result<Arc<ValueIndex>, String> {
        let key = (id, Held::ValueIndex);
        if let Some(Mapping::Index(v)) = lock(&self.maps).get(&key) {
            return Ok(v);
        }
        let slot = self.reserve().map_err(|e| e.to_string())?;
        let fresh = Arc::new(self.observe(load(slot)).map_err(|e| e.to_string())?);
        let (got, loser) = self.install(key, Mapping::Index(Arc::clone(&fresh)));
        drop(loser);
        match got {
            Mapping::Index(v) => Ok(v),
            _ => Ok(fresh),
        }
    }

    /// The parsed zone map of chunk `id`; an error is a reason to scan instead.
    pub fn zonemap(
        &self,
        id: u64,
        load: impl FnOnce() -> Result<ZoneMap, String>,
    ) -> Result<Arc<ZoneMap>, String> {
        let key = (id, Held::ZoneMap);
        if let Some(z) = lock(&self.zonemaps).lru.get(&key) {
            return Ok(z);
        }
        let fresh = Arc::new(load()?);
        let weight = zonemap_bytes(&fresh);
        if weight > self.zonemap_max_bytes {
            // Larger than the whole cache: used for this query only.
            return Ok(fresh);
        }
        let mut evicted = Vec::new();
        let mut g = lock(&self.zonemaps);
        if let Some(z) = g.lru.get(&key) {
            return Ok(z);
        }
        g.lru.insert(key, Arc::clone(&fresh));
        g.bytes += weight;
        while g.bytes > self.zonemap_max_bytes {
            let Some(old) = g.lru.pop_oldest_where(|_| true) else {
                break;
            };
            g.bytes -= zonemap_bytes(&old);
            evicted.push(old);
        }
        drop(g);
        drop(evicted);
        Ok(fresh)
    }

    /// Drops everything cached for chunk `id` (its handle is gone).
    pub fn forget(&self, id: u64) {
        let chunk = {
            let mut maps = lock(&self.maps);
            (
                maps.remove(&(id, Held::Chunk)),
                maps.remove(&(id, Held::Prefix)),
                maps.remove(&(id, Held::ValueIndex)),
            )
        };
        let zonemap = {
            let mut g = lock(&self.zonemaps);
            let z = g.lru.remove(&(id, Held::ZoneMap));
            if let Some(z) = &z {
                g.bytes -= zonemap_bytes(z);
            }
            z
        };
        // Unmapping happens here, outside the locks.
        drop((chunk, zonemap));
    }

    pub fn stats(&self) -> MapStats {
        let (idle, cached, decompressed_bytes) = {
            let maps = lock(&self.maps);
            (
                maps.values().filter(|m| m.idle()).count(),
                maps.len(),
                Self::decompressed_bytes(&maps),
            )
        };
        let (zonemap_bytes, recent_failure) = (lock(&self.zonemaps).bytes, self.recent_failure());
        let live = self.live();
        MapStats {
            live,
            peak: self.peak.load(Ordering::Relaxed),
            in_use: live.saturating_sub(idle),
            cached,
            max: self.max_mapped,
            zonemap_bytes,
            zonemap_max_bytes: self.zonemap_max_bytes,
            decompressed_bytes,
            decompressed_max_bytes: self.decompressed_max_bytes,
            released_images_total: self.released_images.load(Ordering::Relaxed),
            released_bytes_total: self.released_bytes.load(Ordering::Relaxed),
            failures_total: self.failures_total.load(Ordering::Relaxed),
            recent_failure,
        }
    }

    /// Takes a slot, evicting idle mappings while the budget is full.
    fn reserve(&self) -> Result<Slot> {
        loop {
            if let Some(slot) = Slot::try_take(&self.live, self.max_mapped) {
                self.peak.fetch_max(self.live(), Ordering::Relaxed);
                return Ok(slot);
            }
            // Dropped outside the lock; the unmapping returns the victim's slot.
            let victim = lock(&self.maps).pop_oldest_where(Mapping::idle);
            if victim.is_none() {
                let msg = format!(
                    "all {} file mappings allowed by storage.max_mapped_files are held by \
                     reads in progress. If other reads hold them, a retry succeeds once they \
                     end; a request that by itself reads more files at once than \
                     storage.max_mapped_files never will: narrow it (fewer series, a shorter \
                     range) or raise storage.max_mapped_files (keep it well below the kernel's \
                     vm.max_map_count)",
                    self.max_mapped
                );
                self.note_failure(&msg);
                return Err(StorageError::Unavailable(msg));
            }
        }
    }

    /// Caches `m` under `key` unless a racing reader cached the same file first.
    /// Returns the mapping to use, and the one to drop outside the lock.
    fn install(&self, key: Key, m: Mapping) -> (Mapping, Option<Mapping>) {
        let mut maps = lock(&self.maps);
        match maps.get(&key) {
            Some(first) => (first, Some(m)),
            None => {
                maps.insert(key, m.clone());
                (m, None)
            }
        }
    }

    /// Records the outcome of a load: a refusal by the kernel is a failure for health.
    fn observe<T>(&self, r: Result<T>) -> Result<T> {
        match &r {
            Ok(_) => self.note_success(),
            Err(e @ StorageError::Unavailable(_)) => self.note_failure(&e.to_string()),
            Err(_) => {}
        }
        r
    }

    fn note_failure(&self, msg: &str) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_failure) = Some((Instant::now(), msg.to_string()));
        self.failing.store(true, Ordering::Release);
    }

    fn note_success(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            *lock(&self.last_failure) = None;
        }
    }

    fn recent_failure(&self) -> Option<(u64, String)> {
        let g = lock(&self.last_failure);
        let (at, msg) = g.as_ref()?;
        let age = at.elapsed();
        (age < FAILURE_WINDOW).then(|| (age.as_secs(), msg.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mmap::MappedFile;
    use std::io::Write;

    fn chunk_file(dir: &std::path::Path, i: usize) -> std::path::PathBuf {
        let p = dir.join(format!("f{i}"));
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(&[i as u8; 64]).unwrap();
        p
    }

    /// A stand-in chunk over an arbitrary file: the cache never looks inside.
    fn load(path: &std::path::Path) -> impl FnOnce(Slot) -> Result<MappedChunk> + '_ {
        move |slot| {
            let file = MappedFile::open_in(path, slot).map_err(|e| StorageError::io("f", e))?;
            Ok(MappedChunk::unchecked_for_tests(file))
        }
    }

    #[test]
    fn lru_orders_by_last_use() {
        let mut l: Lru<u32> = Lru::new();
        for i in 0..4 {
            l.insert((i, Held::Chunk), i as u32);
        }
        assert_eq!(l.get(&(0, Held::Chunk)), Some(0));
        assert_eq!(l.pop_oldest_where(|_| true), Some(1));
        assert_eq!(l.pop_oldest_where(|&v| v != 2), Some(3));
        assert_eq!(l.pop_oldest_where(|_| true), Some(2));
        assert_eq!(l.pop_oldest_where(|_| true), Some(0));
        assert_eq!(l.pop_oldest_where(|_| true), None);
        assert_eq!((l.len(), l.order.len()), (0, 0));
    }

    #[test]
    fn live_mappings_stay_within_the_budget_and_idle_ones_are_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..10).map(|i| chunk_file(dir.path(), i)).collect();
        let cache = MapCache::new(3, 0);
        for round in 0..2 {
            for (i, p) in paths.iter().enumerate() {
                let c = cache.chunk(i as u64, load(p)).unwrap();
                assert_eq!(c.file.bytes()[0], i as u8, "round {round}");
                assert!(cache.live() <= 3, "live {} over the budget", cache.live());
            }
        }
        let s = cache.stats();
        assert_eq!((s.live, s.cached, s.in_use, s.failures_total), (3, 3, 0, 0));
        // The three most recent are cached: a hit maps nothing new.
        let again = cache.chunk(9, |_| panic!("9 is cached")).unwrap();
        assert_eq!(again.file.bytes()[0], 9);
    }

    #[test]
    fn a_full_budget_of_held_mappings_is_unavailable_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..4).map(|i| chunk_file(dir.path(), i)).collect();
        let cache = MapCache::new(3, 0);
        let held: Vec<_> = (0..3)
            .map(|i| cache.chunk(i as u64, load(&paths[i])).unwrap())
            .collect();
        // An Arrow buffer keeps only the file; it pins the slot just the same.
        let buffer = held[0].file.buffer(0, 8);
        drop(held);
        let pinned: Vec<_> = (1..3)
            .map(|i| cache.chunk(i as u64, load(&paths[i])).unwrap())
            .collect();
        let err = cache.chunk(3, load(&paths[3])).unwrap_err();
        assert!(
            matches!(err, StorageError::Unavailable(ref m) if m.contains("storage.max_mapped_files"))
        );
        let s = cache.stats();
        assert_eq!((s.live, s.in_use, s.failures_total), (3, 3, 1));
        assert!(s.near_budget() && s.recent_failure.is_some());
        drop(buffer);
        let c = cache.chunk(3, load(&paths[3])).unwrap();
        assert_eq!(c.file.bytes()[0], 3);
        let s = cache.stats();
        assert_eq!(s.live, 3);
        assert_eq!(s.recent_failure, None, "a success clears the failure");
        drop((pinned, c));
        assert_eq!(cache.stats().in_use, 0);
    }

    #[test]
    fn forget_unmaps_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = chunk_file(dir.path(), 1);
        let cache = MapCache::new(8, 0);
        drop(cache.chunk(1, load(&p)).unwrap());
        assert_eq!(cache.live(), 1);
        cache.forget(1);
        assert_eq!((cache.live(), cache.stats().cached), (0, 0));
    }

    #[test]
    fn zone_maps_are_bounded_by_bytes() {
        let zm = |n: usize| ZoneMap {
            block_rows: 1,
            rows: n,
            zones: vec![
                Zone {
                    min: 0,
                    max: 0,
                    first_ts: 0,
                    last_ts: 0,
                    nan_count: 0,
                    empty: false,
                };
                n
            ],
        };
        let one = zonemap_bytes(&zm(100));
        let cache = MapCache::new(8, one * 3);
        for id in 0..10 {
            cache.zonemap(id, || Ok(zm(100))).unwrap();
            assert!(cache.stats().zonemap_bytes <= one * 3);
        }
        assert_eq!(cache.stats().zonemap_bytes, one * 3);
        cache.zonemap(9, || panic!("9 is cached")).unwrap();
        // Larger than the whole cache: returned, not cached.
        let big = cache.zonemap(100, || Ok(zm(1000))).unwrap();
        assert_eq!(big.rows, 1000);
        assert_eq!(cache.stats().zonemap_bytes, one * 3);
        cache.forget(9);
        assert_eq!(cache.stats().zonemap_bytes, one * 2);
    }
}

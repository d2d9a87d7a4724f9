//! The process-wide memory guard of SQL: the last line behind the per-query pools.
//!
//! The pools bound what operators reserve and [`super::funcs`] what functions make,
//! but not every allocation a query causes passes through either (a literal copied
//! into every row of a batch, an engine's scratch space). So while the server runs,
//! [`watch`] reads the process's resident anonymous memory every
//! [`WATCH_INTERVAL`]. Above `sql.process_memory_limit_bytes` it refuses new
//! queries (503 / Unavailable, retry) and cancels the running query whose pool holds
//! the most (413 / ResourceExhausted), one query per reading, until the memory is back
//! under the limit. The kernel's out-of-memory killer acts only when the host runs
//! out, so a limit under the host's memory acts first.
//!
//! Invariant: a query is in [`Running`] from its admission until its stream (or
//! planned query) is dropped: [`Ticket`] removes it on drop.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::execution::memory_pool::MemoryPool;
use futures::task::AtomicWaker;

use super::pool::QueryPool;

/// How often the guard reads the process's memory.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// One admitted query as the guard sees it.
#[derive(Debug)]
pub struct Entry {
    pool: Arc<QueryPool>,
    started: Instant,
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl Entry {
    /// Whether the guard cancelled this query; `waker` is woken when it does.
    pub fn poll_cancelled(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        self.cancelled.load(Ordering::Acquire)
    }
}

/// Every running query, and whether the process is over its memory limit.
#[derive(Debug)]
pub struct Running {
    queries: Mutex<HashMap<u64, Arc<Entry>>>,
    next: AtomicU64,
    over: AtomicBool,
    /// `sql.process_memory_limit_bytes`, resolved (0: the guard is off).
    limit: u64,
    /// Resident anonymous bytes at the last reading.
    resident: AtomicU64,
    /// Queries the guard cancelled, and new ones it refused, since start.
    pub cancelled: AtomicU64,
    pub refused: AtomicU64,
}

/// A query's place in [`Running`]; leaving is dropping it.
#[derive(Debug)]
pub struct Ticket {
    running: Arc<Running>,
    id: u64,
    pub entry: Arc<Entry>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut q = self.running.queries.locked();
        let gone = q.remove(&self.id);
        debug_assert!(gone.is_some(), "a ticket leaves once");
    }
}

impl Running {
    pub fn new(limit: u64) -> Arc<Running> {
        Arc::new(Running {
            queries: Mutex::default(),
            next: AtomicU64::new(0),
            over: AtomicBool::new(false),
            limit,
            resident: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Resident anonymous bytes at the last reading (0 before the first).
    pub fn resident(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// Admits a query, unless the process is over its limit: then the resident bytes.
    pub fn admit(self: &Arc<Self>, pool: Arc<QueryPool>) -> Result<Ticket, u64> {
        if self.over.load(Ordering::Acquire) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(self.resident());
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            pool,
            started: Instant::now(),
            cancelled: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.queries.locked().insert(id, Arc::clone(&entry));
        Ok(Ticket {
            running: Arc::clone(self),
            id,
            entry,
        })
    }

    /// One reading of `resident` bytes: above the limit, new queries are refused and
    /// the query holding the most memory (the oldest among equals) not yet cancelled
    /// is cancelled. Returns whether one was.
    pub fn observe(&self, resident: u64) -> bool {
        self.resident.store(resident, Ordering::Relaxed);
        let over = self.limit > 0 && resident > self.limit;
        self.over.store(over, Ordering::Release);
        if !over {
            return false;
        }
        let victim = {
            let q = self.queries.locked();
            q.values()
                .filter(|e| !e.cancelled.load(Ordering::Acquire))
                .max_by(|a, b| {
                    a.pool
                        .reserved()
                        .cmp(&b.pool.reserved())
                        .then(b.started.cmp(&a.started))
                })
                .cloned()
        };
        let Some(victim) = victim else {
            return false;
        };
        victim.cancelled.store(true, Ordering::Release);
        victim.waker.wake();
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            resident,
            limit = self.limit,
            query_reserved = victim.pool.reserved(),
            running_s = victim.started.elapsed().as_secs_f64(),
            "sql: the process is over sql.process_memory_limit_bytes; cancelled the query holding the most memory"
        );
        true
    }
}

/// The limit `sql.process_memory_limit_bytes` resolves to: the value when set, else
/// four fifths of the host's memory or of the cgroup's limit when lower; 0 (off) where
/// neither can be read.
pub fn resolve_limit(configured: u64) -> u64 {
    if configured > 0 {
        return configured;
    }
    let host = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (host, cgroup) {
        (Some(h), Some(c)) => h.min(c) / 5 * 4,
        (Some(h), None) => h / 5 * 4,
        (None, Some(c)) => c / 5 * 4,
        (None, None) => 0,
    }
}

/// The process's resident anonymous memory (Linux: `RssAnon` of /proc/self/status).
pub fn resident_anon() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Reads the process's memory every [`WATCH_INTERVAL`] until `stop` changes.
pub async fn watch(running: Arc<Running>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if running.limit == 0 {
        return;
    }
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(r) = resident_anon() {
                    running.observe(r);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn over_the_limit_new_queries_wait_and_the_largest_is_cancelled() {
        let running = Running::new(1000);
        let total = super::super::pool::Total::new(1 << 20);
        let small = Arc::new(QueryPool::new(1 << 20, Arc::clone(&total)));
        let big = Arc::new(QueryPool::new(1 << 20, Arc::clone(&total)));
        let a = running.admit(Arc::clone(&small)).unwrap();
        let b = running.admit(Arc::clone(&big)).unwrap();
        let pool: Arc<dyn MemoryPool> = big.clone();
        let r = MemoryConsumer::new("sort").register(&pool);
        r.try_grow(500).unwrap();
        assert!(!running.observe(999), "under the limit nothing happens");
        running.admit(Arc::clone(&small)).map(drop).unwrap();
        assert!(running.observe(1001));
        let w = futures::task::noop_waker();
        assert!(
            b.entry.poll_cancelled(&w),
            "the query holding the most is cancelled"
        );
        assert!(!a.entry.poll_cancelled(&w));
        assert_eq!(running.admit(Arc::clone(&small)).unwrap_err(), 1001);
        assert!(
            running.observe(1001),
            "the next reading takes the next query"
        );
        assert!(a.entry.poll_cancelled(&w));
        assert!(!running.observe(1001), "nothing left to cancel");
        assert!(!running.observe(10));
        running.admit(small).map(drop).unwrap();
        drop(r);
        drop((a, b));
        assert!(running.queries.lock().unwrap().is_empty());
        assert_eq!(running.cancelled.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn zero_means_a_share_of_the_host() {
        assert_eq!(resolve_limit(123 << 20), 123 << 20);
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(resolve_limit(0) > 0);
        }
    }
}

//! Query memory: one pool per query, drawing on one budget shared by every query.
//!
//! DataFusion's operators that hold data (sorts, hash joins, aggregates) reserve
//! memory before they buffer it. A query's pool refuses a reservation that would take
//! the query past `sql.memory_per_query_bytes`, or all queries together past
//! `sql.memory_total_bytes`; the operator then fails the query with "resources
//! exhausted" (nothing spills: the disk manager is off), so an unbounded sort or a huge
//! cross join ends in a clear error instead of an out-of-memory kill.
//!
//! Invariant: `Total::used` is the sum of `QueryPool::used` over live pools, because
//! every change to one is made to the other in the same call, and a pool returns what
//! it still holds when it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};

/// The budget all queries share.
#[derive(Debug)]
pub struct Total {
    limit: usize,
    used: AtomicUsize,
}

impl Total {
    pub fn new(limit: usize) -> Arc<Total> {
        Arc::new(Total {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved by running queries now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Adds `n` to `counter` if the result stays at or under `limit`.
fn try_add(counter: &AtomicUsize, n: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            u.checked_add(n).filter(|&v| v <= limit)
        })
        .is_ok()
}

/// One query's pool.
#[derive(Debug)]
pub struct QueryPool {
    /// `sql.memory_per_query_bytes`.
    limit: usize,
    /// Bytes this query's operators hold now.
    used: AtomicUsize,
    total: Arc<Total>,
}

impl QueryPool {
    pub fn new(limit: usize, total: Arc<Total>) -> QueryPool {
        QueryPool {
            limit,
            used: AtomicUsize::new(0),
            total,
        }
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fastk query pool: {} of {} bytes",
            self.used.load(Ordering::Relaxed),
            self.limit
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "fastk_query"
    }

    /// An infallible reservation (DataFusion uses it for small, already-held memory):
    /// counted in both, never refused.
    fn grow(&self, _r: &MemoryReservation, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
        self.total.used.fetch_add(n, Ordering::AcqRel);
    }

    fn shrink(&self, _r: &MemoryReservation, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "a query released more than it reserved");
        self.total.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn try_grow(&self, r: &MemoryReservation, n: usize) -> Result<()> {
        if !try_add(&self.used, n, self.limit) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query needs more than sql.memory_per_query_bytes ({} bytes) for {}; \
                 narrow it with WHERE on symbol and ts, aggregate more, or add a LIMIT",
                self.limit,
                r.consumer().name()
            )));
        }
        if !try_add(&self.total.used, n, self.total.limit) {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "running queries together hold sql.memory_total_bytes ({} bytes); retry later",
                self.total.limit
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // Reservations are returned as operators drop; whatever a cancelled query
        // still held goes back to the shared budget here.
        let left = self.used.swap(0, Ordering::AcqRel);
        self.total.used.fetch_sub(left, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn a_query_is_held_to_its_limit_and_all_to_the_total() {
        let total = Total::new(300);
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(200, Arc::clone(&total)));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(200, Arc::clone(&total)));
        let ra = MemoryConsumer::new("sort").register(&a);
        let rb = MemoryConsumer::new("join").register(&b);
        ra.try_grow(150).unwrap();
        let e = ra.try_grow(100).unwrap_err().to_string();
        assert!(e.contains("sql.memory_per_query_bytes"), "{e}");
        rb.try_grow(100).unwrap();
        assert_eq!(total.used(), 250);
        let e = rb.try_grow(100).unwrap_err().to_string();
        assert!(e.contains("sql.memory_total_bytes"), "{e}");
        assert_eq!(total.used(), 250, "a refused reservation takes nothing");
        ra.shrink(50);
        assert_eq!(total.used(), 200);
        drop(ra);
        drop(a);
        assert_eq!(total.used(), 100, "a dropped query gives everything back");
        drop(rb);
        drop(b);
        assert_eq!(total.used(), 0);
    }
}

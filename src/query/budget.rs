//! The memory budget of in-flight writes (`storage.max_inflight_write_bytes`).
//!
//! A write holds its request in memory twice or more before it is durable: an HTTP
//! record POST keeps the JSON body, the parsed records and the column batch; a DoPut
//! keeps every received Arrow batch and then the column batch they are copied into.
//! Without a bound, ten parallel 55 MB HTTP writes peaked at 1.2 GB and one DoPut of
//! 10 M kline rows near 1 GB. Every write therefore reserves its estimated peak here
//! before it allocates (HTTP: before the body is read; DoPut: batch by batch as the
//! stream arrives) and gives it back when the write has ended, whichever way.
//!
//! A reservation that does not fit waits for room up to `storage.write_budget_wait_ms`
//! (the budget is a FIFO semaphore, so a large write is not starved by small ones),
//! then fails `Unavailable`: the budget is momentarily full and the same request
//! succeeds later. A single request larger than the whole budget can never fit and
//! fails `PayloadTooLarge` at once. Reads never touch the budget.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind, Result};

/// The budget counts in units of this many bytes (one semaphore permit each); at most
/// `u32::MAX` units (4 TiB), so any reservation fits the semaphore's `u32` argument.
const UNIT_BYTES: u64 = 1024;

/// How much memory an HTTP record POST holds per byte of its body: the body itself,
/// the parsed records (kline: 48 B per record of about 90 B of JSON; scalar: 24 B
/// per record of 20-40 B) and the column batch (48 / 16 B per record). Compact scalar
/// JSON (`{"ts":1,"value":2}`) is the worst case, just under 3; the issue's
/// measurement (10 × 55 MB kline bodies peaking at 1.2 GB) is 2.2.
pub const HTTP_BODY_EXPANSION: u64 = 3;

/// How much memory a DoPut holds per byte of Arrow column data received: the
/// received batches, then the column batch they are copied into.
pub const PUT_EXPANSION: u64 = 2;

/// The shared byte budget of in-flight writes.
#[derive(Debug)]
pub struct WriteBudget {
    units: Arc<Semaphore>,
    limit_units: u64,
    wait: Duration,
}

/// Bytes held by one write; returned to the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<WriteBudget>,
    permit: Option<OwnedSemaphorePermit>,
}

impl WriteBudget {
    /// A budget of `limit_bytes`; a reservation waits at most `wait` for room.
    pub fn new(limit_bytes: u64, wait: Duration) -> Arc<WriteBudget> {
        let limit_units = limit_bytes
            .div_ceil(UNIT_BYTES)
            .clamp(1, u64::from(u32::MAX));
        Arc::new(WriteBudget {
            units: Arc::new(Semaphore::new(limit_units as usize)),
            limit_units,
            wait,
        })
    }

    /// The budget in bytes.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_units * UNIT_BYTES
    }

    /// Bytes currently reserved by writes in flight.
    pub fn used_bytes(&self) -> u64 {
        (self.limit_units - self.units.available_permits() as u64) * UNIT_BYTES
    }

    /// An empty reservation, grown as a streamed write arrives.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            permit: None,
        }
    }

    /// Reserves `bytes`, waiting for room up to the configured bound.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        let mut r = self.empty();
        r.grow(bytes).await?;
        Ok(r)
    }
}

impl Reservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map_or(0, |p| p.num_permits() as u64 * UNIT_BYTES)
    }

    /// Adds `bytes` to the reservation, waiting for room up to the budget's bound.
    /// On failure the reservation keeps what it held; the caller drops it.
    pub async fn grow(&mut self, bytes: u64) -> Result<()> {
        let b = &self.budget;
        let units = bytes.div_ceil(UNIT_BYTES);
        if units == 0 {
            return Ok(());
        }
        let held = self.bytes() / UNIT_BYTES;
        if held + units > b.limit_units {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "this write needs about {} bytes of memory, more than all in-flight writes \
                     may hold together ({} bytes, storage.max_inflight_write_bytes); split it \
                     into smaller requests",
                    (held + units) * UNIT_BYTES,
                    b.limit_bytes()
                ),
            ));
        }
        // `held + units <= limit_units <= u32::MAX`, so the cast is exact.
        let acquire = Arc::clone(&b.units).acquire_many_owned(units as u32);
        let permit = match tokio::time::timeout(b.wait, acquire).await {
            Ok(Ok(p)) => p,
            // The semaphore is never closed; treat it like a full budget all the same.
            Ok(Err(_)) | Err(_) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "the in-flight write budget ({} bytes, storage.max_inflight_write_bytes) \
                         is full; retry shortly",
                        b.limit_bytes()
                    ),
                ));
            }
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_fail_and_return_their_bytes() {
        let b = WriteBudget::new(10 * UNIT_BYTES, Duration::from_millis(20));
        let mut a = b.reserve(4 * UNIT_BYTES).await.unwrap();
        a.grow(3 * UNIT_BYTES - 1).await.unwrap();
        assert_eq!(a.bytes(), 7 * UNIT_BYTES);
        assert_eq!(b.used_bytes(), 7 * UNIT_BYTES);
        // Momentarily full: Unavailable after the wait, and nothing is held.
        let e = b.reserve(4 * UNIT_BYTES).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(b.used_bytes(), 7 * UNIT_BYTES);
        // Larger than the whole budget: PayloadTooLarge at once.
        let e = b.reserve(11 * UNIT_BYTES).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::PayloadTooLarge);
        let e = a.grow(4 * UNIT_BYTES).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::PayloadTooLarge);
        drop(a);
        assert_eq!(b.used_bytes(), 0);

        // A waiter gets its room as soon as the holder lets go.
        let slow = WriteBudget::new(10 * UNIT_BYTES, Duration::from_secs(600));
        let held = slow.reserve(8 * UNIT_BYTES).await.unwrap();
        let s2 = Arc::clone(&slow);
        let waiter =
            tokio::spawn(async move { s2.reserve(5 * UNIT_BYTES).await.map(|r| r.bytes()) });
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 5 * UNIT_BYTES);
        assert_eq!(slow.used_bytes(), 0);
        assert_eq!(b.empty().bytes(), 0);
    }
}

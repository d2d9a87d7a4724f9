//! Slowing a client address that keeps presenting bad credentials: after
//! [`FREE_FAILURES`] failures within [`WINDOW`], each further failure is answered only
//! after a delay that starts at [`FIRST_DELAY`] and doubles up to [`MAX_DELAY`]. Good
//! credentials are never delayed.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FREE_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Most addresses remembered; past it the oldest windows are forgotten.
pub const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Throttle {
    /// Address -> (failures in the window, when the window began).
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Counts a failure from `ip`; the delay to answer it after, if any.
    pub fn failed(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut seen = self.seen.locked();
        if seen.len() >= MAX_ADDRESSES && !seen.contains_key(&ip) {
            seen.retain(|_, (_, start)| now.duration_since(*start) < WINDOW);
            if seen.len() >= MAX_ADDRESSES {
                seen.clear();
            }
        }
        let e = seen.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
        delay_after(e.0)
    }

    /// Forgets windows that have ended.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut seen = self.seen.locked();
        seen.retain(|_, (_, start)| now.duration_since(*start) < WINDOW);
    }
}

/// The delay for the `n`th failure in a window.
fn delay_after(n: u32) -> Option<Duration> {
    let over = n.checked_sub(FREE_FAILURES + 1)?;
    Some(
        FIRST_DELAY
            .saturating_mul(1u32 << over.min(16))
            .min(MAX_DELAY),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_and_are_capped() {
        assert_eq!(delay_after(FREE_FAILURES), None);
        assert_eq!(delay_after(FREE_FAILURES + 1), Some(FIRST_DELAY));
        assert_eq!(delay_after(FREE_FAILURES + 2), Some(FIRST_DELAY * 2));
        assert_eq!(delay_after(1000), Some(MAX_DELAY));
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(ip), None);
        }
        assert_eq!(t.failed(ip), Some(FIRST_DELAY));
        assert_eq!(t.failed(other), None, "addresses are counted apart");
    }
}

//! The one lock policy: a poisoned lock is recovered, not propagated.
//!
//! A lock is poisoned when a thread panicked while holding it. FastK keeps every value
//! behind a lock valid at each point where code can panic (state changes are built
//! aside and swapped in, or re-derived from disk), and a panic in one request is
//! already caught and answered as that request's error. Propagating the poison would
//! turn one failed request into a server whose every later request panics, so every
//! lock in the crate is taken through these methods instead of `lock().unwrap()`.

use std::sync::{
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, WaitTimeoutResult,
};
use std::time::Duration;

/// `Mutex::lock`, recovering a poisoned lock (see the module's policy).
pub trait LockExt<T: ?Sized> {
    fn locked(&self) -> MutexGuard<'_, T>;
    /// `Mutex::into_inner`, recovering a poisoned lock.
    fn into_value(self) -> T
    where
        Self: Sized,
        T: Sized;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn into_value(self) -> T
    where
        T: Sized,
    {
        self.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// `RwLock::read` / `write`, recovering a poisoned lock (see the module's policy).
pub trait RwLockExt<T: ?Sized> {
    fn read_now(&self) -> RwLockReadGuard<'_, T>;
    fn write_now(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_now(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_now(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Condvar` waits, recovering a poisoned lock (see the module's policy).
pub trait CondvarExt {
    fn wait_now<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
    fn wait_timeout_now<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult);
}

impl CondvarExt for Condvar {
    fn wait_now<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
    fn wait_timeout_now<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_timeout(guard, timeout)
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_mutex_and_rwlock_are_recovered_with_their_value() {
        let m = Arc::new(Mutex::new(7));
        let l = Arc::new(RwLock::new(8));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = l2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        assert_eq!(*m.locked(), 7);
        assert_eq!(*l.read_now(), 8);
        *l.write_now() = 9;
        assert_eq!(*l.read_now(), 9);
    }
}

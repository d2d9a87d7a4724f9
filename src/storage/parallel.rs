//! Work over many series on a few threads: each thread claims the next item until none
//! is left or the pass is told to stop, and the calling thread works too, so a helper
//! that cannot be spawned only costs parallelism. Used where each item is an
//! independent commit that waits on the disk or the codec: the fold pass, the
//! compression and pack pass, `admin compact`; and by the cross section of many
//! series (`query::stream`), whose parts each read a chunk header per series.

use crate::sync::LockExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `work(i, &items[i])` for every item, on `threads` threads in all (the caller's
/// included), until every item was claimed or `stop()` says to end (checked before
/// each claim). Returns each item's result, in item order; `None` for an item never
/// claimed because the pass stopped.
pub fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    name: &str,
    stop: impl Fn() -> bool + Sync,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = (0..items.len()).map(|_| Mutex::new(None)).collect();
    let run = || {
        while !stop() {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            let r = work(i, item);
            let before = out[i].locked().replace(r);
            assert!(before.is_none(), "parallel: item {i} claimed twice");
        }
    };
    let helpers = threads.max(1).min(items.len()).saturating_sub(1);
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            let _ = std::thread::Builder::new()
                .name(name.to_string())
                .spawn_scoped(scope, run);
        }
        run();
    });
    let out: Vec<Option<R>> = out.into_iter().map(LockExt::into_value).collect();
    assert!(
        stop() || out.iter().all(Option::is_some),
        "parallel: a pass that did not stop ran every item"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Every item runs once, its result in its place, whatever the thread count; a
    /// stopped pass leaves the items it never claimed as `None`.
    #[test]
    fn every_item_runs_once_and_results_keep_their_order() {
        let items: Vec<u64> = (0..1000).collect();
        for threads in [1, 2, 7, 64] {
            let ran = AtomicUsize::new(0);
            let out = map_in_order(
                &items,
                threads,
                "t",
                || false,
                |i, v| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(i as u64, *v);
                    v * 3
                },
            );
            assert_eq!(ran.into_inner(), items.len());
            let want: Vec<Option<u64>> = items.iter().map(|v| Some(v * 3)).collect();
            assert_eq!(out, want, "{threads} threads");
        }
        assert!(map_in_order(&[] as &[u8], 4, "t", || false, |_, _| 0).is_empty());
        let stopped = AtomicBool::new(false);
        let out = map_in_order(
            &items,
            3,
            "t",
            || stopped.load(Ordering::Relaxed),
            |i, _| {
                if i == 10 {
                    stopped.store(true, Ordering::Relaxed);
                }
                i
            },
        );
        let done = out.iter().filter(|o| o.is_some()).count();
        assert!((11..items.len()).contains(&done), "{done} items ran");
        assert!(out[10].is_some());
    }
}

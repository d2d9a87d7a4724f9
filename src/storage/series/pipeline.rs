//! A commit's files built and written as one pipeline. Each month is built first
//! (a sealed month compressed, a raw month's sidecars: CPU work), then placed, in
//! plan order, into the write's units (a pack of consecutive months, or one month's
//! own files) as their sizes become known; a unit is written as soon as it is
//! closed. `storage.write_threads` threads (the caller's among them; at most one
//! per month), and one more for a write large enough to go around the page cache,
//! take a closed unit to write before a month to build, so the device writes one
//! unit while `write_threads` threads compress the next months: a bulk load of years
//! costs about the longer of its CPU work and its disk writes, not their sum.
//!
//! Nothing here is visible to a reader: every file is unreferenced until the
//! manifest names it (`Series::publish_next`), and a failure stops the pipeline and
//! leaves the caller to remove what was written.

use std::collections::VecDeque;
use std::sync::{Condvar, OnceLock};

use super::sealed::{self, Prebuilt};
use super::*;

/// One unit of a commit's files, in plan order.
pub(super) enum Unit {
    /// One month's chunk (and sidecars) as files of their own.
    File(usize),
    /// Two or more consecutive months in one pack file.
    Pack(WritePack),
}

/// Cuts a commit's months into units as their sizes become known, in plan order, by
/// the pack pass's greedy rule (`storage::packer`): consecutive months of one kind
/// (raw or compressed) while the pack stays within `storage.pack_target_bytes`, at
/// least two months per pack; a month too large for any pack, or a run of one,
/// keeps files of its own. A target of 0, or a one-month write, makes no pack.
pub(super) struct PackCutter {
    target: u64,
    packing: bool,
    next_gen: u64,
    packs: u64,
    start: usize,
    bytes: u64,
    last_compressed: bool,
}

impl PackCutter {
    pub(super) fn new(target: u64, plans: usize, next_gen: u64) -> PackCutter {
        PackCutter {
            target,
            packing: target > 0 && plans >= 2,
            next_gen,
            packs: 0,
            start: 0,
            bytes: 0,
            last_compressed: false,
        }
    }

    fn fits(&self, count: usize, bytes: u64) -> bool {
        PackIndex::data_start(count) + bytes <= self.target
    }

    /// Month `i`, the next in plan order, of `size` bytes as a file of its own: the
    /// units it closes go to `out`.
    pub(super) fn push(&mut self, i: usize, size: u64, compressed: bool, out: &mut Vec<Unit>) {
        if !self.packing {
            out.push(Unit::File(i));
            self.start = i + 1;
            return;
        }
        if !self.fits(1, size) {
            self.close(i, out);
            out.push(Unit::File(i));
            (self.start, self.bytes) = (i + 1, 0);
            return;
        }
        let other_kind = i > self.start && self.last_compressed != compressed;
        if other_kind || !self.fits(i - self.start + 1, self.bytes + size) {
            self.close(i, out);
            (self.start, self.bytes) = (i, 0);
        }
        self.bytes += size;
        self.last_compressed = compressed;
    }

    /// After the last month (`plans` of them): the unit still open.
    pub(super) fn finish(&mut self, plans: usize, out: &mut Vec<Unit>) {
        if self.packing {
            self.close(plans, out);
        }
        assert_eq!(self.start, plans, "every month of a write is in a unit");
    }

    fn close(&mut self, end: usize, out: &mut Vec<Unit>) {
        let run = self.start..end;
        match run.len() {
            0 => {}
            1 => out.push(Unit::File(run.start)),
            _ => {
                out.push(Unit::Pack(WritePack {
                    plans: run,
                    generation: self.next_gen + self.packs,
                }));
                self.packs += 1;
            }
        }
        self.start = end;
    }
}

/// What the pipeline leaves: each month's prebuilt part (what a failure left unbuilt
/// is [`Prebuilt::Nothing`]), the packs it cut (every pack file it may have made),
/// and each unit's entries or failure, in plan order (a unit never started is left
/// out; the caller checks the count).
pub(super) struct Piped {
    pub(super) prebuilt: Vec<Prebuilt>,
    pub(super) packs: Vec<WritePack>,
    pub(super) results: Vec<Result<Vec<ChunkEntry>>>,
}

/// The shared state of the pipeline's threads.
struct Line {
    /// The next month to build.
    next_build: usize,
    /// Months placed into units so far (a prefix of the plans).
    placed: usize,
    cutter: PackCutter,
    /// Closed units not yet taken by a writer, with their number.
    ready: VecDeque<(usize, Unit)>,
    /// Units closed so far.
    closed: usize,
    /// Packs cut so far, in order.
    packs: Vec<WritePack>,
    /// Set by a failure: no thread starts anything new.
    stop: bool,
}

/// Runs the pipeline of `plans` on the caller's thread and up to `write_threads`
/// helpers (`write_threads - 1` for a write that stays in the page cache), queueing
/// each written file on `pool` for its fsync.
pub(super) fn run(
    series: &Series,
    plans: &[MonthPlan],
    stamp: (u64, u64, u32),
    next_gen: u64,
    pool: &fsio::SyncPool<'_>,
) -> Piped {
    let n = plans.len();
    let built: Vec<OnceLock<(Prebuilt, u64)>> = (0..n).map(|_| OnceLock::new()).collect();
    let line = Mutex::new(Line {
        next_build: 0,
        placed: 0,
        cutter: PackCutter::new(series.opts.pack_target_bytes, n, next_gen),
        ready: VecDeque::new(),
        closed: 0,
        packs: Vec::new(),
        stop: false,
    });
    let moved = Condvar::new();
    let results: Mutex<Vec<Option<Result<Vec<ChunkEntry>>>>> = Mutex::new(Vec::new());
    let work = || {
        // Declared before the lock guard, so dropped after it on a panic.
        let _wake = StopOnPanic(&line, &moved);
        let mut scratch = Scratch::new();
        let mut line_now = line.locked();
        loop {
            if line_now.stop || pool.failed() {
                line_now.stop = true;
                moved.notify_all();
                break;
            }
            if let Some((k, unit)) = line_now.ready.pop_front() {
                drop(line_now);
                let r = write_unit(series, plans, &built, &unit, stamp, pool, &mut scratch);
                let failed = r.is_err();
                {
                    let mut all = results.locked();
                    if all.len() <= k {
                        all.resize_with(k + 1, || None);
                    }
                    all[k] = Some(r);
                }
                line_now = line.locked();
                line_now.stop |= failed;
                moved.notify_all();
                continue;
            }
            if line_now.next_build < n {
                let i = line_now.next_build;
                line_now.next_build += 1;
                drop(line_now);
                scratch.resize_with(1, Vec::new);
                let pre = sealed::prebuild_one(series, &plans[i], stamp, &mut scratch[0]);
                let size = series.unit_size(&plans[i], &pre);
                assert!(built[i].set((pre, size)).is_ok(), "a month is built once");
                line_now = line.locked();
                place(&mut line_now, plans, &built);
                moved.notify_all();
                continue;
            }
            if line_now.placed == n && line_now.ready.is_empty() {
                break;
            }
            line_now = moved.wait(line_now).unwrap_or_else(|e| e.into_inner());
        }
    };
    // A write whose files go around the page cache (`storage.direct_write_min_bytes`)
    // gets one thread more than `write_threads`: each of its units' writes waits on
    // the device, and meanwhile `write_threads` others keep building. A smaller
    // write's files land in the page cache without waiting, and a thread more would
    // only crowd the cores (many such writes run at once in a load of many series).
    let raw_bytes = series.raw_bytes_of(plans);
    let direct = series.opts.direct_write_min_bytes;
    let waits = usize::from(direct > 0 && raw_bytes >= direct);
    let helpers = n
        .min(series.opts.write_threads.max(1) + waits)
        .saturating_sub(1);
    std::thread::scope(|s| {
        for _ in 0..helpers {
            // A helper that cannot be spawned only costs parallelism.
            if fsio::spawn_scoped(s, &series.dir, "fastk-write", work).is_err() {
                break;
            }
        }
        work();
    });
    let line = line.into_value();
    let results: Vec<Result<Vec<ChunkEntry>>> =
        results.into_value().into_iter().flatten().collect();
    if !line.stop {
        assert!(
            line.placed == n && results.len() == line.closed,
            "without a failure every month is placed and every unit written"
        );
    }
    Piped {
        prebuilt: built
            .into_iter()
            .map(|b| b.into_inner().map_or(Prebuilt::Nothing, |(p, _)| p))
            .collect(),
        packs: line.packs,
        results,
    }
}

/// Stops the pipeline when its thread panics (an assertion), so the threads waiting
/// for that thread's month or unit wake and end, and the scope re-raises the panic
/// instead of waiting forever.
struct StopOnPanic<'a>(&'a Mutex<Line>, &'a Condvar);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.locked().stop = true;
            self.1.notify_all();
        }
    }
}

/// Places the built months that follow the placed prefix into units, queueing the
/// units they close (the last month closes the last unit).
fn place(line: &mut Line, plans: &[MonthPlan], built: &[OnceLock<(Prebuilt, u64)>]) {
    let mut closed = Vec::new();
    while let Some((_, size)) = built.get(line.placed).and_then(OnceLock::get) {
        let i = line.placed;
        line.cutter
            .push(i, *size, plans[i].compressed.is_some(), &mut closed);
        line.placed += 1;
        if line.placed == plans.len() {
            line.cutter.finish(plans.len(), &mut closed);
        }
    }
    for unit in closed {
        if let Unit::Pack(p) = &unit {
            line.packs.push(WritePack {
                plans: p.plans.clone(),
                generation: p.generation,
            });
        }
        line.ready.push_back((line.closed, unit));
        line.closed += 1;
    }
}

/// Writes one closed unit: its months are all built.
fn write_unit(
    series: &Series,
    plans: &[MonthPlan],
    built: &[OnceLock<(Prebuilt, u64)>],
    unit: &Unit,
    stamp: (u64, u64, u32),
    pool: &fsio::SyncPool<'_>,
    scratch: &mut Scratch,
) -> Result<Vec<ChunkEntry>> {
    let pre = |i: usize| &built[i].get().expect("a closed unit's months are built").0;
    match unit {
        Unit::File(i) => series
            .publish_one(&plans[*i], pre(*i), stamp, pool, scratch)
            .map(|e| vec![e]),
        Unit::Pack(pack) => {
            let parts: Vec<&Prebuilt> = pack.plans.clone().map(pre).collect();
            series.publish_pack(
                (&plans[pack.plans.clone()], &parts),
                pack,
                stamp,
                pool,
                scratch,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The units of months of `sizes` (bytes, compressed or not), fed one by one.
    fn cut(target: u64, months: &[(u64, bool)], next_gen: u64) -> Vec<String> {
        let mut cutter = PackCutter::new(target, months.len(), next_gen);
        let mut out = Vec::new();
        for (i, &(size, compressed)) in months.iter().enumerate() {
            cutter.push(i, size, compressed, &mut out);
        }
        cutter.finish(months.len(), &mut out);
        out.iter()
            .map(|u| match u {
                Unit::File(i) => format!("f{i}"),
                Unit::Pack(p) => format!("p{}..{}@{}", p.plans.start, p.plans.end, p.generation),
            })
            .collect()
    }

    #[test]
    fn months_are_cut_into_units_in_plan_order() {
        let head = PackIndex::data_start(4);
        let target = head + 400;
        let raw = |s| (s, false);
        let sealed = |s| (s, true);
        // No packs: a target of 0, or one month.
        assert_eq!(cut(0, &[raw(10), raw(10)], 5), ["f0", "f1"]);
        assert_eq!(cut(target, &[raw(10)], 5), ["f0"]);
        // Runs up to the target; the generations follow `next_gen` in order.
        assert_eq!(
            cut(
                target,
                &[raw(100), raw(100), raw(100), raw(100), raw(100), raw(100)],
                9
            ),
            ["p0..4@9", "p4..6@10"]
        );
        // A change of kind closes the run; a run of one keeps its own files.
        assert_eq!(
            cut(target, &[raw(10), raw(10), sealed(10), raw(10), raw(10)], 1),
            ["p0..2@1", "f2", "p3..5@2"]
        );
        // A month too large for any pack is a unit of its own between runs.
        assert_eq!(
            cut(
                target,
                &[
                    sealed(10),
                    sealed(10),
                    sealed(10_000),
                    sealed(10),
                    sealed(10)
                ],
                0
            ),
            ["p0..2@0", "f2", "p3..5@1"]
        );
        assert_eq!(cut(target, &[raw(10_000), raw(10)], 0), ["f0", "f1"]);
    }
}

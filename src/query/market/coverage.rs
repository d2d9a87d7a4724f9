//! Coverage and gaps: which bars of a series' grid are stored, from the timestamps
//! alone, in one pass that takes whole runs of consecutive bars at a time.
//!
//! A chunk's runs of consecutive bars (rows one timeframe apart) are found once per
//! process and kept with the chunk (`ChunkRef::runs`, bounded to one run per 64 rows),
//! so a warm answer costs one step per run, plus a scan of the chunks the range cuts.
//!
//! The grid is `anchor + k * tf` (the anchor is the series' first bar); a calendar
//! excludes the grid points that start on some weekdays. A gap is a maximal run of
//! missing included grid points between two present ones (or a range end), so an
//! excluded weekend inside it does not split it.

use super::grid::{Calendar, DAY_MS, WEEK_MS};
use super::spec::{Coverage, CoverageRequest, DEFAULT_GAPS, Gap, MAX_GAPS, Run};
use crate::error::{Error, Result};
use crate::record::{TS_MAX, TS_MIN, TsRange};
use crate::storage::Snapshot;

/// Rows checked at once for being one unbroken run of the grid.
const BLOCK: usize = 1024;
/// The longest calendar period (lcm of the bar and a week) counted by pattern; a
/// longer one is counted day by day.
const MAX_PERIOD_MS: i64 = 1000 * WEEK_MS;

/// The grid and calendar of one coverage question, with the counting helpers.
#[derive(Debug, Clone, Copy)]
struct GridCal {
    anchor: i64,
    tf: i64,
    cal: Calendar,
    /// lcm(tf, week) and the included points in any window that long, when small.
    period: Option<(i64, u64)>,
}

impl GridCal {
    fn new(anchor: i64, tf: i64, cal: Calendar) -> GridCal {
        let mut g = GridCal {
            anchor,
            tf,
            cal,
            period: None,
        };
        if !cal.is_all() {
            let p = (tf / gcd(tf, WEEK_MS)).checked_mul(WEEK_MS);
            if let Some(p) = p.filter(|&p| p <= MAX_PERIOD_MS) {
                g.period = Some((p, g.count_days(anchor, anchor + p - 1)));
            }
        }
        g
    }

    fn on_grid(&self, t: i64) -> bool {
        (t - self.anchor).rem_euclid(self.tf) == 0
    }

    /// The first grid point at or after `t`.
    fn ceil(&self, t: i64) -> i64 {
        self.anchor
            + (t - self.anchor).div_euclid(self.tf) * self.tf
            + if self.on_grid(t) { 0 } else { self.tf }
    }

    /// The last grid point at or before `t`.
    fn floor(&self, t: i64) -> i64 {
        self.anchor + (t - self.anchor).div_euclid(self.tf) * self.tf
    }

    /// Grid points in `[lo, hi]`, every weekday.
    fn count_all(&self, lo: i64, hi: i64) -> u64 {
        if lo > hi {
            return 0;
        }
        let a = (self.ceil(lo) - self.anchor) / self.tf;
        let b = (self.floor(hi) - self.anchor) / self.tf;
        (b - a + 1).max(0) as u64
    }

    /// Included grid points in `[lo, hi]`, a day at a time.
    fn count_days(&self, lo: i64, hi: i64) -> u64 {
        let mut n = 0;
        let (d0, d1) = (lo.div_euclid(DAY_MS), hi.div_euclid(DAY_MS));
        for d in d0..=d1 {
            if self.cal.includes_day(d) {
                n += self.count_all(lo.max(d * DAY_MS), hi.min(d * DAY_MS + DAY_MS - 1));
            }
        }
        n
    }

    /// Included grid points in `[lo, hi]`.
    fn count(&self, lo: i64, hi: i64) -> u64 {
        if lo > hi {
            return 0;
        }
        if self.cal.is_all() {
            return self.count_all(lo, hi);
        }
        match self.period {
            // The pattern of included points repeats every period, so whole periods
            // count the same.
            Some((p, per)) => {
                let q = (hi - lo) / p;
                q as u64 * per + self.count_days(lo + q * p, hi)
            }
            None => self.count_days(lo, hi),
        }
    }

    /// The first included grid point in `[t, hi]`.
    fn next_included(&self, t: i64, hi: i64) -> Option<i64> {
        let mut g = self.ceil(t);
        while g <= hi {
            if self.cal.includes(g) {
                return Some(g);
            }
            g = self.ceil((g.div_euclid(DAY_MS) + 1) * DAY_MS);
        }
        None
    }

    /// The last included grid point in `[lo, t]`.
    fn prev_included(&self, t: i64, lo: i64) -> Option<i64> {
        let mut g = self.floor(t);
        while g >= lo {
            if self.cal.includes(g) {
                return Some(g);
            }
            g = self.floor(g.div_euclid(DAY_MS) * DAY_MS - 1);
        }
        None
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The pass over present bars.
struct Pass {
    g: GridCal,
    lo: i64,
    complete_n: u64,
    max_gaps: usize,
    prev: Option<i64>,
    run_start: i64,
    run_len: u64,
    present: u64,
    extra: u64,
    gaps: Vec<Gap>,
    gap_count: u64,
    last_run: Option<Run>,
}

impl Pass {
    /// Missing included points between the previous present point and `p` (excluded).
    fn gap_before(&mut self, p: i64) -> bool {
        let from = self.prev.map_or(self.lo, |q| q + 1);
        let missing = self.g.count(from, p - 1);
        if missing == 0 {
            return false;
        }
        self.gap_count += 1;
        if self.gaps.len() < self.max_gaps {
            let first = self.g.next_included(from, p - 1);
            let last = self.g.prev_included(p - 1, from);
            debug_assert!(first.is_some() && last.is_some());
            if let (Some(start_ts), Some(end_ts)) = (first, last) {
                self.gaps.push(Gap {
                    start_ts,
                    end_ts,
                    missing,
                });
            }
        }
        true
    }

    /// `k` present included points from `first` to `last`, consecutive on the grid.
    fn present_run(&mut self, first: i64, last: i64, k: u64) {
        if self.gap_before(first) || self.prev.is_none() {
            self.run_start = first;
            self.run_len = 0;
        }
        self.run_len += k;
        self.present += k;
        self.prev = Some(last);
        if self.run_len >= self.complete_n {
            self.last_run = Some(Run {
                start_ts: self.run_start,
                end_ts: last,
                bars: self.run_len,
            });
        }
    }

    /// `n` rows from `b0` to `bl`, every grid point between them present.
    fn unbroken(&mut self, b0: i64, bl: i64, n: u64) {
        let c = self.g.count(b0, bl);
        debug_assert!(c <= n);
        self.extra += n - c;
        if c > 0 {
            let first = self.g.next_included(b0, bl).expect("counted");
            let last = self.g.prev_included(bl, b0).expect("counted");
            self.present_run(first, last, c);
        }
    }

    fn block(&mut self, ts: &[i64]) {
        let (b0, bl) = (ts[0], ts[ts.len() - 1]);
        let tf = self.g.tf;
        let unbroken = self.g.on_grid(b0)
            && ts[1..]
                .iter()
                .zip(ts)
                .fold(true, |ok, (b, a)| ok & (b - a == tf));
        if unbroken {
            self.unbroken(b0, bl, ts.len() as u64);
            return;
        }
        for &t in ts {
            if self.g.on_grid(t) && self.g.cal.includes(t) {
                self.present_run(t, t, 1);
            } else {
                self.extra += 1;
            }
        }
    }
}

/// Coverage of `range` of a series of `tf` ms bars (see the module documentation).
pub fn run(snap: &Snapshot, tf: i64, req: &CoverageRequest) -> Result<Coverage> {
    let cal = Calendar::parse(req.calendar.as_deref().unwrap_or("24x7"))?;
    let max_gaps = req.max_gaps.unwrap_or(DEFAULT_GAPS);
    if max_gaps > MAX_GAPS {
        return Err(Error::invalid(format!(
            "max_gaps is at most {MAX_GAPS}, got {max_gaps}"
        )));
    }
    let complete_n = req.complete_n.unwrap_or(1).max(1);
    let start = req
        .start_ts
        .or(snap.first_ts())
        .map(|t| t.clamp(TS_MIN, TS_MAX));
    let end = req
        .end_ts
        .or(snap.last_ts())
        .map(|t| t.clamp(TS_MIN, TS_MAX));
    if let (Some(a), Some(b)) = (start, end)
        && a > b
    {
        return Err(Error::invalid(format!(
            "start_ts ({a}) must not be after end_ts ({b})"
        )));
    }
    let mut out = Coverage {
        start_ts: start,
        end_ts: end,
        calendar: cal.name(),
        timeframe_ms: tf,
        expected: 0,
        present: 0,
        extra: 0,
        ratio: 1.0,
        gaps: Vec::new(),
        gap_count: 0,
        gaps_truncated: false,
        last_complete_ts: None,
        last_run: None,
    };
    let (Some(lo), Some(hi)) = (start, end) else {
        return Ok(out);
    };
    let g = GridCal::new(snap.first_ts().unwrap_or(0), tf, cal);
    let mut pass = Pass {
        g,
        lo,
        complete_n,
        max_gaps,
        prev: None,
        run_start: lo,
        run_len: 0,
        present: 0,
        extra: 0,
        gaps: Vec::new(),
        gap_count: 0,
        last_run: None,
    };
    let range = TsRange::new(Some(lo), Some(hi));
    for c in snap.plan(range) {
        let e = &c.entry;
        // A chunk inside the range is answered from its runs of consecutive bars
        // (found once per process): a run on the grid counts as one unbroken stretch,
        // a run off it as extra rows.
        if range.contains(e.first_ts)
            && range.contains(e.last_ts)
            && let Some(runs) = c.runs(tf)?
        {
            for r in runs.iter() {
                if g.on_grid(r.first_ts) {
                    pass.unbroken(r.first_ts, r.first_ts + (r.rows as i64 - 1) * tf, r.rows);
                } else {
                    pass.extra += r.rows;
                }
            }
            continue;
        }
        let s = crate::storage::snapshot::slice_of(&c.map()?, range);
        for block in s.ts().chunks(BLOCK) {
            pass.block(block);
        }
    }
    // The missing points after the last present one.
    if pass.prev.is_none_or(|p| p < hi) {
        pass.gap_before(hi.saturating_add(1));
    }
    let expected = g.count(lo, hi);
    assert!(
        pass.present <= expected,
        "coverage counted {} present of {expected} expected",
        pass.present
    );
    out.expected = expected;
    out.present = pass.present;
    out.extra = pass.extra;
    out.ratio = if expected == 0 {
        1.0
    } else {
        pass.present as f64 / expected as f64
    };
    out.gaps_truncated = pass.gap_count > pass.gaps.len() as u64;
    out.gaps = pass.gaps;
    out.gap_count = pass.gap_count;
    out.last_complete_ts = pass.last_run.as_ref().map(|r| r.end_ts);
    out.last_run = pass.last_run;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: i64 = 1_704_067_200_000; // 2024-01-01, a Monday
    const M: i64 = 60_000;

    #[test]
    fn counting_by_period_matches_day_by_day() {
        for tf in [M, 7 * M, 60 * M, DAY_MS, 3 * DAY_MS] {
            let g = GridCal::new(MON + 3 * M, tf, Calendar::WEEKDAYS);
            for (lo, hi) in [
                (MON, MON + 30 * DAY_MS),
                (MON - 17 * DAY_MS + 5, MON + 400 * DAY_MS - 3),
                (MON + 5 * DAY_MS, MON + 6 * DAY_MS),
            ] {
                assert_eq!(
                    g.count(lo, hi),
                    g.count_days(lo, hi),
                    "tf {tf} [{lo}, {hi}]"
                );
            }
        }
    }

    #[test]
    fn included_neighbours_skip_weekends() {
        let g = GridCal::new(MON, 60 * M, Calendar::WEEKDAYS);
        let sat = MON + 5 * DAY_MS;
        assert_eq!(g.next_included(sat, i64::MAX), Some(MON + 7 * DAY_MS));
        assert_eq!(g.prev_included(sat + DAY_MS, 0), Some(sat - 60 * M));
        assert_eq!(g.next_included(sat, sat + DAY_MS), None);
    }
}

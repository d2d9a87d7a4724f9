//! Planning a write, month by month, before any file is written: an append as a
//! delta chunk, or a copy-on-write rewrite of the month merged with the new rows.

use super::*;

impl Series {
    /// `month` rewritten without the rows of `range`; also returns how many went.
    pub(super) fn month_without(
        &self,
        snap: &Snapshot,
        month: i32,
        range: TsRange,
        generation: u64,
    ) -> Result<(MonthPlan<'static>, u64)> {
        let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
        let mapped = existing
            .iter()
            .map(|c| c.map())
            .collect::<Result<Vec<_>>>()?;
        let ncols = self.meta.key.kind().ncols();
        let old_rows: usize = mapped.iter().map(|m| m.rows()).sum();
        let mut cols: Vec<Vec<i64>> = (0..ncols).map(|_| Vec::with_capacity(old_rows)).collect();
        for m in &mapped {
            for (r, &t) in m.ts().iter().enumerate() {
                if !range.contains(t) {
                    for (c, out) in cols.iter_mut().enumerate() {
                        out.push(m.col(c)[r]);
                    }
                }
            }
        }
        let removed = (old_rows - cols[0].len()) as u64;
        let plan = MonthPlan {
            split: Vec::new(),
            month,
            generation,
            full: true,
            cols: cols.into_iter().map(Cow::Owned).collect(),
            inserted: 0,
            replaced: 0,
            compressed: None,
        };
        Ok((plan, removed))
    }

    /// Whether rows of `month` from `first_ts` on go into a chunk of their own (the
    /// month is new, or they come after its last row and it has room for a chunk),
    /// rather than a rewrite of the month.
    pub(super) fn appends_as_chunk(&self, snap: &Snapshot, month: i32, first_ts: i64) -> bool {
        let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
        existing.last().is_none_or(|c| first_ts > c.entry.last_ts)
            && existing.len() < self.opts.max_chunks_per_month
    }

    pub(super) fn plan_month<'a>(
        &self,
        snap: &Snapshot,
        month: i32,
        new: &[&'a [i64]],
        generation: u64,
    ) -> Result<MonthPlan<'a>> {
        if self.appends_as_chunk(snap, month, new[0][0]) {
            let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
            let n = new[0].len() as u64;
            return Ok(MonthPlan {
                split: Vec::new(),
                month,
                generation,
                full: existing.is_empty(),
                cols: new.iter().map(|&c| Cow::Borrowed(c)).collect(),
                inserted: n,
                replaced: 0,
                compressed: None,
            });
        }
        self.merge_month(snap, month, new, generation)
    }

    /// Copy-on-write rewrite of `month`: existing rows merged with `new` by key (the
    /// layout's: `ts`, or `(ts, seq)` for ticks); on an equal key the new row wins.
    pub(in crate::storage) fn merge_month(
        &self,
        snap: &Snapshot,
        month: i32,
        new: &[&[i64]],
        generation: u64,
    ) -> Result<MonthPlan<'static>> {
        let ncols = new.len();
        let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
        let mapped = existing
            .iter()
            .map(|c| c.map())
            .collect::<Result<Vec<_>>>()?;
        let old_rows: usize = mapped.iter().map(|m| m.rows()).sum();
        let mut cols: Vec<Vec<i64>> = (0..ncols)
            .map(|_| Vec::with_capacity(old_rows + new[0].len()))
            .collect();
        let (mut replaced, mut j) = (0u64, 0usize);
        let new_ts = new[0];
        let key = self.meta.layout().key;
        for m in &mapped {
            let old: Vec<&[i64]> = (0..ncols.min(2)).map(|c| m.col(c)).collect();
            for r in 0..m.rows() {
                let k = row_key(key, &old, r);
                while j < new_ts.len() && row_key(key, new, j) < k {
                    push_row(&mut cols, new, j);
                    j += 1;
                }
                if j < new_ts.len() && row_key(key, new, j) == k {
                    push_row(&mut cols, new, j);
                    j += 1;
                    replaced += 1;
                } else {
                    for (c, out) in cols.iter_mut().enumerate() {
                        out.push(m.col(c)[r]);
                    }
                }
            }
        }
        while j < new_ts.len() {
            push_row(&mut cols, new, j);
            j += 1;
        }
        let inserted = new_ts.len() as u64 - replaced;
        Ok(MonthPlan {
            split: Vec::new(),
            month,
            generation,
            full: true,
            cols: cols.into_iter().map(Cow::Owned).collect(),
            inserted,
            replaced,
            compressed: None,
        })
    }
}
